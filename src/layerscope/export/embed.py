"""Embeddings of one layer, or of a recipe, for new texts, each with its text's row id (``layerscope embed``).

Texts go through the model in chunks; each chunk is one extraction of the chosen layer only (the
forward pass stops after it and the cache keeps that layer alone), so a long file streams with bounded
memory and an interrupted run resumes from the cache. The output is written next to its final name
and moved into place at the end: a ``.parquet`` file (columns ``id`` and ``embedding``) or a ``.npy``
structured array (fields ``id`` and ``embedding``), one row per non-empty text, in the file's order;
its record (model, layer or recipe, normalization, what a recipe was fitted on) beside it, ``NAME.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from layerscope.errors import LayerscopeError

__all__ = ["EmbedResult", "embed_chunks", "embed_layer", "output_file", "record_path", "write_embeddings"]

FORMATS = (".parquet", ".npy")


@dataclass
class EmbedResult:
    """What :func:`embed_layer` or :func:`~layerscope.analysis.recipe_export.embed_recipe` wrote: ``n_written`` rows of dimension ``dim`` to
    ``out`` (its record beside it, :func:`record_path`)."""

    out: Path
    layer: int | None
    n_written: int
    n_skipped: int
    dim: int
    record: dict[str, Any] = field(default_factory=dict)
    recipe: str | None = None


def record_path(out: str | Path) -> Path:
    """Where the record of an embedding file is written: beside it, ``NAME.json`` (``vectors.npy.json``)."""
    out = Path(out).expanduser()
    return out.with_name(out.name + ".json")


def embed_layer(
    model: Any,
    rows: Any,
    layer: int,
    out: str | Path,
    *,
    extraction: Any = None,
    cache_dir: str | None = None,
    chunk_size: int = 4096,
    progress: bool = True,
) -> EmbedResult:
    """Write the layer-``layer`` embeddings of ``rows`` (texts with ids) to ``out``.

    Parameters
    ----------
    model : LoadedModel
    rows : layerscope.data.Rows
        The texts and their row ids (from :func:`layerscope.data.load_rows`).
    layer : int
        Canonical layer (negative counts from the last).
    out : str or Path
        ``.parquet`` or ``.npy`` file.
    extraction : ExtractConfig, optional
        Pooling, max length, batch size, ``normalize`` (by default the last layer of a model that
        ships normalized is L2-normalized, as it ships); a ``condition`` is not applied here (give a
        recipe, :func:`~layerscope.analysis.recipe_export.embed_recipe`), and outlier tokens are left out of the pooling when asked.
    cache_dir : str, optional
        Embedding cache: a rerun reads the chunks already encoded.
    chunk_size : int
        Texts per extraction.
    progress : bool
        A bar per chunk.
    """
    from layerscope.config import ExtractConfig
    from layerscope.extract import resolve_layers

    extraction = extraction or ExtractConfig()
    target = output_file(out)
    if extraction.condition != "none":
        raise LayerscopeError("embed writes the layer as it is (or L2-normalized): give the conditioning in a recipe, "
                              "e.g. --recipe 'last+standardize' (fitted on the texts embedded)")
    (layer,) = resolve_layers([int(layer)], model.num_layers)
    normalize = bool(extraction.normalize) or layer in extraction.normalized_layers(model)
    ids, pooled, skipped = embed_chunks(model, rows, [layer], extraction, cache_dir, chunk_size, progress)
    matrix = pooled[0]  # (n, d)
    if normalize:
        matrix = matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-30)
    from layerscope.extract.conditioning import normalize_record

    record = {"model": model.describe(), "layer": layer, "n_written": len(ids), "n_skipped_empty": skipped,
              "dim": int(matrix.shape[1]), "source": rows.source, **extraction.to_dict(),
              "normalize": normalize_record(extraction, model), "normalized": normalize}
    write_embeddings(target, ids, matrix, record)
    return EmbedResult(target, layer, len(ids), skipped, int(matrix.shape[1]), record)


def output_file(out: str | Path) -> Path:
    """The output file, checked (format, writable folder) before any work."""
    from layerscope.atomic import writable_directory

    target = Path(out).expanduser()
    if target.suffix.lower() not in FORMATS:
        raise LayerscopeError(f"--out must be a .parquet or .npy file, got '{target.name}'")
    writable_directory(target.parent, "output folder")
    return target


def embed_chunks(model: Any, rows: Any, layers: list[int], extraction: Any, cache_dir: str | None,
                  chunk_size: int, progress: bool) -> tuple[list[Any], np.ndarray, int]:
    """The ids of the non-empty texts, their pooled embeddings of ``layers`` (float32, (w, n, d)) and the
    number of empty texts, one extraction per chunk of ``chunk_size`` texts."""
    from layerscope.extract import extract

    ids, chunks, skipped = [], [], 0
    named = ", ".join(str(layer) for layer in layers)
    for start in range(0, len(rows.texts), chunk_size):
        texts = rows.texts[start:start + chunk_size]
        if not any(isinstance(text, str) and text.strip() for text in texts):
            skipped += len(texts)
            continue
        label = (f"layer{'s' if len(layers) > 1 else ''} {named}, texts {start + 1}-{start + len(texts)} of "
                 f"{len(rows.texts)}") if progress else False
        result = extract(model, texts, layers=layers, cache_dir=cache_dir, progress=label,
                         **extraction.extract_options())
        chunks.append(np.asarray(result.pooled, dtype=np.float32))  # (w, chunk, d)
        ids += [rows.ids[start + int(i)] for i in result.kept]
        skipped += len(texts) - len(result.kept)
    if not chunks:
        raise LayerscopeError(f"all {len(rows.texts)} texts are empty: nothing to embed")
    return ids, np.concatenate(chunks, axis=1), skipped


def write_embeddings(target: Path, ids: list[Any], matrix: np.ndarray, record: dict[str, Any]) -> None:
    """The embeddings, then their record beside them (both through a temporary file and a rename)."""
    from layerscope.atomic import atomic_path, atomic_write_json

    with atomic_path(target, needs=matrix.nbytes) as temporary:  # a full disk: one line with the size
        _write(temporary, ids, matrix)
    atomic_write_json(record_path(target), {**record, "file": target.name})


def _write(path: Path, ids: list[Any], matrix: np.ndarray) -> None:
    if path.suffix.lower() == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        embedding = pa.FixedSizeListArray.from_arrays(pa.array(matrix.ravel()), matrix.shape[1])
        pq.write_table(pa.table({"id": pa.array(ids), "embedding": embedding}), path)
        return
    id_values = np.asarray(ids)
    if id_values.dtype == object:  # mixed or text ids: fixed-width unicode keeps the file pickle-free
        id_values = id_values.astype(str)
    array = np.empty(len(ids), dtype=[("id", id_values.dtype), ("embedding", np.float32, (matrix.shape[1],))])
    array["id"], array["embedding"] = id_values, matrix
    np.save(path, array, allow_pickle=False)
