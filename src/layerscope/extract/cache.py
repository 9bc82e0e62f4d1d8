"""Disk cache of pooled embeddings, keyed per SPEC section 3, written so that nothing is lost.

Layout of one entry, ``<cache_dir>/<key>/``:

- ``pooled.npy``: (L+1, N, D) array, memory-mappable; present only once complete.
- ``record.json``: how the embeddings were made.
- ``manifest.json``: the byte size and sha256 of both, the entry's key, the array's shape and dtype
  (:mod:`layerscope.integrity`). Written before ``pooled.npy`` is renamed into place, and checked on
  every load (~0.1 s per 100 MB): a missing, cut short, overwritten or foreign ``pooled.npy``, or a
  missing or garbled ``record.json``/``manifest.json``, is reported in one line (``cache entry <key>
  was damaged (...): recomputing``), the entry removed and recomputed. An entry of an older
  layerscope (no manifest, no ``cache_format`` in its record) is recomputed the same way, said so.
- while running: ``pooled.partial.npy`` (a memory map written in place, its blocks allocated up front
  so that a full disk fails at once, with the size it needs, rather than as a SIGBUS mid-run) and
  ``done.npy`` (which texts are finished). A killed run keeps both; the next run resumes from them.
- ``tokens-<hook key>.npz``: what a token hook (prompt entropy, curvature...) accumulated from the
  same pass, keyed by the hook's metrics and options, with its own ``done`` mask, the entry's key and
  a sha256 of its arrays inside it; a run with that hook resumes from it (or, once complete, needs no
  forward pass at all).

An entry is locked (``<cache_dir>/<key>.lock``, an advisory file lock) while a process writes it;
another process wanting the same entry waits for it, then reads what it finds.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from layerscope.atomic import atomic_save_npy, atomic_write_bytes
from layerscope.integrity import (
    DamagedEntry,
    load_checked_npz,
    report_damaged,
    save_checked_npz,
    verify_manifest,
    write_manifest,
)

logger = logging.getLogger(__name__)

#: Format of the cache keys: unchanged by the checksums, so that an entry of an older layerscope is
#: found, said to be stale and replaced in place rather than left orphaned on the disk.
CACHE_FORMAT = 1
#: Format of what an entry holds (kept in its record): 2 = with ``manifest.json`` and checked ``.npz``.
ENTRY_FORMAT = 2
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

    @property
    def _record_path(self) -> Path:
        return self.folder / "record.json"

    @property
    def _manifest_path(self) -> Path:
        return self.folder / "manifest.json"

    def read(self) -> tuple[np.ndarray, dict[str, Any]] | None:
        """The complete entry, proven whole: the (L+1, N, D) memory map and the record; None when there
        is no complete entry. A damaged or stale one is reported in one line and removed (the caller
        recomputes it). Call it holding the entry's :meth:`lock`."""
        try:
            return self.load()
        except FileNotFoundError:
            return None
        except DamagedEntry as error:
            report_damaged(logger, self.key, error)
            self.remove()
            return None

    def load(self) -> tuple[np.ndarray, dict[str, Any]]:
        """The complete entry, verified against its manifest.

        Raises
        ------
        FileNotFoundError
            No complete entry (none yet, or a run in progress: ``pooled.partial.npy`` is there).
        DamagedEntry
            What is wrong with it.
        """
        if not self.complete_path.is_file():
            if (self.folder / "pooled.partial.npy").is_file() or not (
                    self._manifest_path.is_file() or self._record_path.is_file()):
                raise FileNotFoundError(self.complete_path)
            raise DamagedEntry("pooled.npy is missing")
        if not self._manifest_path.is_file():
            raise DamagedEntry("manifest.json is missing", stale=self._older_record())
        manifest = verify_manifest(self._manifest_path, identity=self.key)
        try:
            pooled = np.load(self.complete_path, mmap_mode="r", allow_pickle=False)
            record = json.loads(self._record_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:  # only if written so: the bytes match the manifest
            raise DamagedEntry(f"unreadable: {str(error).splitlines()[0]}") from None
        if [list(pooled.shape), pooled.dtype.str] != [manifest.get("shape"), manifest.get("dtype")]:
            raise DamagedEntry(f"pooled.npy holds a {pooled.dtype} array of shape {pooled.shape}, the manifest "
                               f"says {manifest.get('dtype')} {manifest.get('shape')}")
        record.pop("cache_format", None)
        return pooled, record

    def _older_record(self) -> bool:
        """Whether the record is of an entry written before manifests (no ``cache_format`` in it)."""
        try:
            record = json.loads(self._record_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return isinstance(record, dict) and "cache_format" not in record

    def remove(self) -> None:
        """Delete the entry's folder (its lock file beside it stays)."""
        shutil.rmtree(self.folder, ignore_errors=True)

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
                    _allocate(partial, self.complete_path, fresh=False)  # an older layerscope's is sparse
                    return array, done
            except (ValueError, OSError):
                pass  # a damaged partial file: start over
        array = np.lib.format.open_memmap(partial, mode="w+", dtype=dtype, shape=shape)
        _allocate(partial, self.complete_path, fresh=True)
        return array, np.zeros(shape[1], dtype=bool)

    def save_progress(self, array: np.ndarray, done: np.ndarray, hook: HookState | None = None) -> None:
        """Flush the rows written so far and the hook's state, then record which rows are done (in that
        order, so done => on disk)."""
        if isinstance(array, np.memmap):
            array.flush()
        if hook is not None:
            self._save_hook(hook, done)
        atomic_save_npy(self.folder / "done.npy", done)

    def finish(self, array: np.ndarray, record: dict[str, Any],
               hook: HookState | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Make the partial run the complete entry; return it as :meth:`load` would (not re-hashed).

        The record and the manifest (the digest of ``pooled.partial.npy``) are written before the
        rename that makes ``pooled.npy`` appear, so a complete-looking entry always has its check; a
        run killed before the rename leaves the partial files, and the next run finishes from them.
        """
        if isinstance(array, np.memmap):
            array.flush()
        if hook is not None:
            self._save_hook(hook, np.ones(array.shape[1], dtype=bool))
        partial = self.folder / "pooled.partial.npy"
        self.complete_path.unlink(missing_ok=True)  # an older complete array (recomputed for a token hook)
        atomic_write_bytes(self._record_path,
                           json.dumps({**record, "cache_format": ENTRY_FORMAT}, indent=1, default=str).encode())
        write_manifest(self._manifest_path, {"pooled.npy": partial, "record.json": self._record_path},
                       identity=self.key, shape=list(array.shape), dtype=array.dtype.str)
        os.replace(partial, self.complete_path)
        (self.folder / "done.npy").unlink(missing_ok=True)
        for extra in self.folder.glob("*.partial.npy"):  # side arrays of the run, now in the record
            extra.unlink(missing_ok=True)
        pooled = np.load(self.complete_path, mmap_mode="r", allow_pickle=False)
        return pooled, json.loads(json.dumps(record, default=str))  # as read back from record.json

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

    def _hook_identity(self, key: str) -> str:
        return f"{self.key}/tokens-{key}"

    def _save_hook(self, hook: HookState, done: np.ndarray) -> None:
        from layerscope.errors import LayerscopeError

        key, token_hook, positions = hook
        try:
            state = token_hook.state(positions)
        except LayerscopeError:  # nothing accumulated yet
            return
        save_checked_npz(self._hook_path(key), {**state, "done": done}, identity=self._hook_identity(key))

    def restore_hook(self, key: str | None, token_hook: Any, positions: np.ndarray, *,
                     partial: bool = False) -> Any:
        """Load a token hook's kept state into it.

        Returns True when it covers every row (``partial=False``), or (``partial=True``) the boolean mask
        of the rows it covers (all False when there is none). A damaged or stale state file is
        reported in one line and removed: the hook starts over.
        """
        rows = np.zeros(len(positions), dtype=bool)
        if key:
            path = self._hook_path(key)
            try:
                state = load_checked_npz(path, identity=self._hook_identity(key))
            except FileNotFoundError:
                pass
            except DamagedEntry as error:
                report_damaged(logger, self.key, error)
                path.unlink(missing_ok=True)
            else:
                done = state.pop("done", None)
                if done is not None and done.shape == rows.shape and (partial or done.all()):
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


def _allocate(path: Path, final: Path, *, fresh: bool) -> None:
    """Allocate the whole memory-mapped file now: a full disk then fails here, in one line saying what
    the entry needs, instead of killing the process with SIGBUS when a page of the map is first written
    (or leaving a file with holes). A no-op where the file system cannot preallocate."""
    from layerscope.errors import disk_full

    allocate = getattr(os, "posix_fallocate", None)
    if allocate is None:  # macOS, Windows
        return
    size = path.stat().st_size
    try:
        with open(path, "rb+") as handle:
            allocate(handle.fileno(), 0, size)
    except OSError as error:
        full = disk_full(error, final, size)
        if full is not None:
            if fresh:  # nothing was written to it yet; a resumed file keeps its finished rows
                path.unlink(missing_ok=True)
            raise full from error
        if error.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
