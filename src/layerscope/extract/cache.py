"""Disk cache of pooled embeddings, keyed per SPEC section 3, written so that nothing is lost.

Layout of one entry, ``<cache_dir>/<key>/``:

- ``pooled.npy``: (L+1, N, D) array, memory-mappable; present only once complete.
- ``record.json``: how the embeddings were made.
- while running: ``pooled.partial.npy`` (a memory map written in place) and ``done.npy`` (which
  texts are finished). A killed run keeps both; the next run resumes from them.
- ``tokens-<hook key>.npz``: what a token hook (prompt entropy, curvature...) accumulated from the
  same pass, keyed by the hook's metrics and options, with its own ``done`` mask; a run with that hook
  resumes from it (or, once complete, needs no forward pass at all).

An entry is locked (``<cache_dir>/<key>.lock``, an advisory file lock) while a process writes it;
another process wanting the same entry waits for it, then reads what it finds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from layerscope.atomic import atomic_save_npy, atomic_write_bytes

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1
#: (hook key, token hook, positions of the cached rows in the hook's prompt list)
HookState = tuple[str, Any, np.ndarray]


def texts_hash(texts: Sequence[str]) -> str:
    """sha256 of the texts in order (a record separator keeps ``["ab"]`` and ``["a", "b"]`` apart)."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8", "surrogatepass"))
        digest.update(b"\x1e")
    return digest.hexdigest()


def cache_key(fields: dict[str, Any]) -> str:
    payload = json.dumps({**fields, "format": CACHE_FORMAT}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


class EmbeddingCache:
    """One cache entry: complete arrays, or a partial run that can be resumed."""

    def __init__(self, root: str | os.PathLike[str], key: str) -> None:
        self.folder = Path(root).expanduser() / key
        self.key = key

    @property
    def complete_path(self) -> Path:
        return self.folder / "pooled.npy"

    def is_complete(self) -> bool:
        return self.complete_path.is_file() and (self.folder / "record.json").is_file()

    def load(self) -> tuple[np.ndarray, dict[str, Any]]:
        pooled = np.load(self.complete_path, mmap_mode="r", allow_pickle=False)
        record = json.loads((self.folder / "record.json").read_text())
        return pooled, record

    def open_partial(self, shape: tuple[int, int, int], dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
        """The in-progress array (memory map) and the boolean ``done`` vector, resumed if present."""
        self.folder.mkdir(parents=True, exist_ok=True)
        partial = self.folder / "pooled.partial.npy"
        done_path = self.folder / "done.npy"
        if partial.is_file() and done_path.is_file():
            try:
                array = np.load(partial, mmap_mode="r+", allow_pickle=False)
                done = np.load(done_path, allow_pickle=False)
                if array.shape == shape and array.dtype == dtype and done.shape == (shape[1],):
                    return array, done
            except (ValueError, OSError):
                pass  # a damaged partial file: start over
        array = np.lib.format.open_memmap(partial, mode="w+", dtype=dtype, shape=shape)
        return array, np.zeros(shape[1], dtype=bool)

    def save_progress(self, array: np.ndarray, done: np.ndarray, hook: HookState | None = None) -> None:
        """Flush the rows written so far and the hook's state, then record which rows are done (in that
        order, so done => on disk)."""
        if isinstance(array, np.memmap):
            array.flush()
        if hook is not None:
            self._save_hook(hook, done)
        atomic_save_npy(self.folder / "done.npy", done)

    def finish(self, array: np.ndarray, record: dict[str, Any], hook: HookState | None = None) -> None:
        if isinstance(array, np.memmap):
            array.flush()
        if hook is not None:
            self._save_hook(hook, np.ones(array.shape[1], dtype=bool))
        os.replace(self.folder / "pooled.partial.npy", self.complete_path)
        atomic_write_bytes(self.folder / "record.json", json.dumps(record, indent=1, default=str).encode())
        (self.folder / "done.npy").unlink(missing_ok=True)
        for extra in self.folder.glob("*.partial.npy"):  # side arrays of the run, now in the record
            extra.unlink(missing_ok=True)

    def save_extra(self, name: str, array: np.ndarray) -> None:
        """A side array of the partial run (e.g. per-text counts), saved atomically."""
        atomic_save_npy(self.folder / f"{name}.partial.npy", array)

    def load_extra(self, name: str, shape: tuple[int, ...]) -> np.ndarray | None:
        """A side array saved by :meth:`save_extra`, if it is there with this shape."""
        path = self.folder / f"{name}.partial.npy"
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            return None
        return array if array.shape == shape else None

    # -- token hooks -----------------------------------------------------------------------------

    def _hook_path(self, key: str) -> Path:
        return self.folder / f"tokens-{key}.npz"

    def _save_hook(self, hook: HookState, done: np.ndarray) -> None:
        from layerscope.errors import LayerscopeError

        key, token_hook, positions = hook
        try:
            state = token_hook.state(positions)
        except LayerscopeError:  # nothing accumulated yet
            return
        from layerscope.atomic import atomic_open

        with atomic_open(self._hook_path(key), "wb") as handle:
            np.savez(handle, done=done, **state)

    def restore_hook(self, key: str | None, token_hook: Any, positions: np.ndarray, *,
                     partial: bool = False) -> Any:
        """Load a token hook's kept state into it.

        Returns True when it covers every row (``partial=False``), or (``partial=True``) the boolean mask
        of the rows it covers (all False when there is none).
        """
        rows = np.zeros(len(positions), dtype=bool)
        path = self._hook_path(key) if key else None
        if path is not None and path.is_file():
            try:
                with np.load(path, allow_pickle=False) as stored:
                    state = {name: stored[name] for name in stored.files}
            except (OSError, ValueError) as error:  # a damaged file: start the hook over
                logger.warning("ignoring unreadable token-metric checkpoint %s: %s", path, error)
            else:
                done = state.pop("done")
                if done.shape == rows.shape and (partial or done.all()):
                    token_hook.load_state(state, positions)
                    rows = done
        return rows if partial else bool(rows.all())

    # -- locking ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the entry's write lock (blocking; a message says when another process holds it)."""
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks, entries are not shared safely
            yield
            return
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        with open(self.folder.parent / f"{self.key}.lock", "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                logger.warning("another process is writing the cache entry %s: waiting for it", self.key)
                fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
