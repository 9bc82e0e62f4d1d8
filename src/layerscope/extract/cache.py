"""Disk cache of pooled embeddings, keyed per SPEC section 3, written so that nothing is lost.

Layout of one entry, ``<cache_dir>/<key>/``:

- ``pooled.npy``: (L+1, N, D) array, memory-mappable; present only once complete.
- ``record.json``: how the embeddings were made.
- while running: ``pooled.partial.npy`` (a memory map written in place) and ``done.npy`` (which
  texts are finished). A killed run keeps both; the next run resumes from them.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from layerscope.atomic import atomic_save_npy, atomic_write_bytes

CACHE_FORMAT = 1


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

    def save_progress(self, array: np.ndarray, done: np.ndarray) -> None:
        """Flush the rows written so far, then record which are done (in that order, so done => on disk)."""
        if isinstance(array, np.memmap):
            array.flush()
        atomic_save_npy(self.folder / "done.npy", done)

    def finish(self, array: np.ndarray, record: dict[str, Any]) -> None:
        if isinstance(array, np.memmap):
            array.flush()
        os.replace(self.folder / "pooled.partial.npy", self.complete_path)
        atomic_write_bytes(self.folder / "record.json", json.dumps(record, indent=1, default=str).encode())
        (self.folder / "done.npy").unlink(missing_ok=True)
