"""Resumable evaluations: each finished unit of task scoring kept on disk, keyed by everything it read.

Scoring every layer on every task, and above all bootstrapping it (``n_resamples`` evaluations per
layer and task), takes minutes to hours. Each finished unit is saved (atomically, with a checksum:
:func:`~layerscope.integrity.save_checked_npz`) as soon as it finishes: a layer's scores on every task
(:func:`~layerscope.evaluate.runner.evaluate_layers`, kind ``scores``) and a (layer, task)'s resampled
scores (:func:`~layerscope.evaluate.uncertainty.bootstrap_layers`, kind ``bootstrap``). An interrupted
run, rerun with the same settings, evaluates only the units it had not finished, and gets the same
numbers as an uninterrupted one.

A unit's key is a sha256 over everything its scores depend on:

- the layer's embeddings (every pooled row, bytes and shape) and the texts they belong to, in order;
- the tasks: class, name, main score and splits, simple settings (seed, subsets, ...) and loaded data,
  walked value by value (every ``datasets.Dataset`` as its Arrow table, labels included);
- for the bootstrap, the draws of the resamples (:class:`~layerscope.evaluate.resampling.BootstrapPlan`);
- the evaluation seed, the model name and revision MTEB records, the layer's number;
- the versions of layerscope, mteb and scikit-learn.

A task whose data holds something this walk does not know is evaluated without a checkpoint (a wrong
hit is worse than a recomputation). A damaged file is reported in one line and recomputed; a folder
that cannot be written is said once and the run goes on without it.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np

from layerscope.integrity import DamagedEntry, load_checked_npz, report_damaged, save_checked_npz

__all__ = ["UnitCheckpoints", "checkpoint_folder", "kept_counts", "layer_digests", "task_digest", "unit_digests"]

logger = logging.getLogger(__name__)

#: Format of the keys and files; a change makes older checkpoints unreachable (never wrongly reused).
CHECKPOINT_FORMAT = 1
_SIMPLE = (str, int, float, bool, type(None))


class _Unknown(Exception):
    """A value the digest cannot read."""


def _feed(digest: Any, value: Any) -> None:
    """Add ``value`` to ``digest``, tagged by kind, so that different values give different bytes."""
    import datasets

    if isinstance(value, _SIMPLE):
        digest.update(b"s" + json.dumps(value).encode() + b"\x1e")
    elif isinstance(value, datasets.Dataset):  # its table and, after a select or shuffle, its row mapping
        digest.update(b"d")
        _feed_table(digest, value.data.table)
        if value._indices is not None:
            digest.update(b"i")
            _feed_table(digest, value._indices.table)
    elif isinstance(value, np.ndarray):
        digest.update(b"a" + json.dumps([value.dtype.str, list(value.shape)]).encode())
        digest.update(memoryview(np.ascontiguousarray(value)).cast("B") if value.size else b"")
    elif isinstance(value, Mapping):
        digest.update(b"m%d" % len(value))
        for key in sorted(value, key=repr):
            _feed(digest, repr(key))
            _feed(digest, value[key])
    elif isinstance(value, (list, tuple)):
        digest.update(b"l%d" % len(value))
        for item in value:
            _feed(digest, item)
    elif is_dataclass(value) and not isinstance(value, type):
        _feed(digest, {item.name: getattr(value, item.name) for item in fields(value)})
    else:
        raise _Unknown(type(value).__name__)


class _Hashing(io.RawIOBase):
    """A write-only file that feeds a digest: Arrow streams a table into it without holding a copy."""

    def __init__(self, digest: Any) -> None:
        super().__init__()
        self.digest = digest

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.digest.update(data)
        return len(memoryview(data))


def _feed_table(digest: Any, table: Any) -> None:
    """An Arrow table's IPC stream (schema, then every batch: values, offsets and validity as read)."""
    import pyarrow as pa

    with pa.PythonFile(_Hashing(digest), mode="w") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)


def task_digest(task: Any) -> str | None:
    """sha256 of a loaded task's identity, settings and data; None when its data cannot be read safely.

    Random generators among the task's attributes are left out: every evaluation reseeds them from
    the task's seed (:func:`~layerscope.evaluate.runner.run_task`); so are the markers layerscope's
    runner sets on a task it has evaluated (``_layerscope_*``), so that a task digests the same before
    and after its point estimate.
    """
    digest = hashlib.sha256()
    cls = type(task)
    metadata = task.metadata
    head = {"class": f"{cls.__module__}.{cls.__qualname__}", "name": metadata.name,
            "main_score": metadata.main_score, "splits": list(metadata.eval_splits)}
    settings = {key: value for key, value in vars(task).items()
                if key != "dataset" and not key.startswith("_layerscope") and isinstance(value, (*_SIMPLE, list, tuple))}
    try:
        _feed(digest, head)
        _feed(digest, settings)
        _feed(digest, getattr(task, "dataset", None))
    except _Unknown as error:
        logger.debug("task %s: no checkpoint (its data holds a %s)", metadata.name, error)
        return None
    return digest.hexdigest()


def layer_digests(texts: Sequence[str], pooled: Any) -> list[str]:
    """sha256 of each layer's pooled rows (an (L, N, D) array) with the texts they embed, in order."""
    from layerscope.extract.cache import texts_hash

    names = texts_hash(texts)
    out = []
    for layer in range(len(pooled)):
        digest = hashlib.sha256(names.encode())
        _feed(digest, np.asarray(pooled[layer]))
        out.append(digest.hexdigest())
    return out


def _versions() -> dict[str, str]:
    import mteb
    import sklearn

    from layerscope import __version__

    return {"layerscope": __version__, "mteb": getattr(mteb, "__version__", "?"), "sklearn": sklearn.__version__}


class UnitCheckpoints:
    """Finished units of one kind of evaluation, one ``.npz`` per unit under ``folder``.

    Parameters
    ----------
    folder : str or Path, optional
        Where the units are kept; None keeps nothing (every lookup misses, every save is skipped).
    kind : str
        What the units are (part of every key, e.g. ``"bootstrap"``).
    settings : mapping
        What every unit of this run shares (seeds, model name, ...), part of every key.
    """

    def __init__(self, folder: str | os.PathLike[str] | None, kind: str, settings: Mapping[str, Any]) -> None:
        self.folder = None if folder is None else Path(folder).expanduser()
        self._base = {"kind": kind, "format": CHECKPOINT_FORMAT, "settings": dict(settings), **_versions()}

    def key(self, *parts: Any) -> str:
        """The key of one unit: ``parts`` (digests of what it reads) with the run's settings."""
        digest = hashlib.sha256()
        _feed(digest, [self._base, list(parts)])
        return digest.hexdigest()[:32]

    def _path(self, key: str) -> Path:
        assert self.folder is not None
        return self.folder / f"{key}.npz"

    def load(self, key: str) -> np.ndarray | None:
        """The unit's kept values, or None (not kept, or damaged: then reported and removed)."""
        if self.folder is None:
            return None
        try:
            return load_checked_npz(self._path(key), identity=key)["values"]
        except FileNotFoundError:
            return None
        except DamagedEntry as error:
            report_damaged(logger, key, error)
            self._path(key).unlink(missing_ok=True)
            return None

    def save(self, key: str, values: Any) -> None:
        """Keep a finished unit's values, an array (skipped, said once in the log, where the folder cannot be written)."""
        if self.folder is None:
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            save_checked_npz(self._path(key), {"values": np.asarray(values)}, identity=key)
        except OSError as error:
            logger.warning("could not keep a finished %s unit in %s (%s): an interrupted run will redo it",
                           self._base["kind"], self.folder, error)
            self.folder = None


def unit_digests(
    checkpoints: UnitCheckpoints, extraction: Any, positions: Sequence[int], tasks: Sequence[Any],
) -> tuple[dict[int, str], list[str | None]]:
    """Digests of the layers at ``positions`` of an extraction and of each task; nothing when nothing is kept."""
    if checkpoints.folder is None:
        return {}, [None] * len(tasks)
    layers = layer_digests(extraction.texts, [extraction.pooled[position] for position in positions])
    return dict(zip(positions, layers, strict=True)), [task_digest(task) for task in tasks]


def checkpoint_folder(cache_dir: str | os.PathLike[str] | None, kind: str) -> Path | None:
    """Where the units of ``kind`` are kept beside an embedding cache (``<cache_dir>/<kind>``); None: nowhere."""
    return None if cache_dir is None else Path(cache_dir).expanduser() / kind


def kept_counts(scores: Any) -> dict[str, int]:
    """How many units a scoring read back instead of evaluating, from its frame's records: ``layers``
    (:func:`~layerscope.evaluate.runner.evaluate_layers`) and ``bootstrap_units`` (0 without a bootstrap)."""
    return {"layers": int(scores.attrs.get("record", {}).get("layers_kept", 0)),
            "bootstrap_units": int(scores.attrs.get("bootstrap", {}).get("units_kept", 0))}
