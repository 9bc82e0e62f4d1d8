"""Atomic artifact files: a reader sees the old file or the new one, never half of one.

Every file layerscope writes next to ``results.duckdb`` (PNG plots, ``report.html``, JSON
side-cars) goes through these helpers: the content is written to a temporary file in the same
directory, flushed and fsynced, then moved over the target with :func:`os.replace`, which is atomic
on POSIX and Windows when source and target are on the same file system. A run killed mid-write
leaves at most a stray ``.<name>.*.tmp<suffix>`` file, never a truncated artifact (SPEC section 9).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = [
    "atomic_open", "atomic_path", "atomic_save_npy", "atomic_write_bytes", "atomic_write_json", "atomic_write_text",
    "writable_directory",
]


def _default_mode() -> int:
    """The mode a plain ``open`` would give a new file (0666 minus the umask), not mkstemp's 0600."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _temporary_sibling(path: Path) -> Path:
    """Create an empty temporary file next to ``path`` that keeps its suffix (for format sniffing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(handle)
    os.chmod(name, _default_mode())  # reports and plots are meant to be shared
    return Path(name)


def _fsync_directory(directory: Path) -> None:
    """Persist the rename itself; a no-op where directories cannot be opened (Windows)."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], needs: int | None = None) -> Iterator[Path]:
    """Yield a temporary path to write to; on success it replaces ``path`` atomically.

    Use it with writers that want a file name rather than a file object, e.g.
    ``with atomic_path(out / "curves.png") as tmp: fig.savefig(tmp)``. The temporary name keeps
    the target's suffix, so libraries that pick a format from the extension still work.

    Parameters
    ----------
    path : str or os.PathLike
        Final location of the file. Parent directories are created.
    needs : int, optional
        Bytes the file will take, when known: a full disk's one line says it.

    Yields
    ------
    pathlib.Path
        Temporary file in the same directory as ``path`` (already created, empty).

    Raises
    ------
    DiskFullError
        The disk is full (or the quota exceeded) while writing, whoever raised it (the OS, numpy,
        pyarrow...): one line naming ``path``, which is left untouched.

    Notes
    -----
    If the body raises, the temporary file is removed and ``path`` is left untouched.
    """
    target = Path(path)
    try:
        temporary = _temporary_sibling(target)
    except OSError as error:
        _raise_if_disk_full(error, target, needs)
        raise
    try:
        yield temporary
        with open(temporary, "rb+") as written:
            os.fsync(written.fileno())  # a delayed allocation fails here, before the rename
        os.replace(temporary, target)
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        _raise_if_disk_full(error, target, needs)
        raise
    _fsync_directory(target.parent)


def _raise_if_disk_full(error: BaseException, target: Path, needs: int | None) -> None:
    """Raise the one-line :class:`DiskFullError` for ``target`` if ``error`` is a full disk."""
    from layerscope.errors import DiskFullError, disk_full

    if isinstance(error, DiskFullError):
        return
    full = disk_full(error, target, needs)
    if full is not None:
        raise full from error


@contextlib.contextmanager
def atomic_open(
    path: str | os.PathLike[str], mode: str = "w", encoding: str | None = "utf-8", needs: int | None = None
) -> Iterator[IO[Any]]:
    """Open a file for writing that appears at ``path`` only once it is complete.

    Parameters
    ----------
    path : str or os.PathLike
        Final location of the file.
    mode : {"w", "wb"}, default "w"
        Text or binary write mode.
    encoding : str or None, default "utf-8"
        Text encoding; ignored in binary mode.
    needs : int, optional
        Bytes the file will take, for the one line of a full disk (see :func:`atomic_path`).

    Yields
    ------
    file object
        Writable file object on a temporary sibling of ``path``.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open supports modes 'w' and 'wb', not {mode!r}")
    with atomic_path(path, needs) as temporary:
        if mode == "wb":
            with open(temporary, "wb") as handle:
                yield handle
        else:
            with open(temporary, "w", encoding=encoding) as handle:
                yield handle


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    with atomic_open(path, "wb", needs=len(data)) as handle:
        handle.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically and return the path."""
    with atomic_open(path, "w", encoding=encoding, needs=len(text.encode(encoding, "replace"))) as handle:
        handle.write(text)
    return Path(path)


def atomic_write_json(path: str | os.PathLike[str], obj: Any, *, indent: int | None = 2) -> Path:
    """Serialise ``obj`` as JSON (keys sorted, non-JSON values through ``str``) to ``path`` atomically."""
    text = json.dumps(obj, indent=indent, sort_keys=True, default=str, ensure_ascii=False)
    return atomic_write_text(path, text + "\n")


def atomic_save_npy(path: str | os.PathLike[str], array: Any) -> Path:
    """Save a NumPy array (no pickle) to ``path`` atomically and return the path."""
    import numpy as np

    array = np.asanyarray(array)
    with atomic_open(path, "wb", needs=array.nbytes + 128) as handle:  # + the .npy header (64-128 bytes)
        np.save(handle, array, allow_pickle=False)
    return Path(path)


def writable_directory(path: str | os.PathLike[str], what: str = "output folder") -> Path:
    """Create ``path`` if needed and prove it writable with a probe file, before any work is done.

    Raises
    ------
    LayerscopeError
        One line: ``path`` is a file, lies under a file, or cannot be written (a read-only mount,
        no permission); the check writes a real file, so it holds for root too.
    """
    from layerscope.errors import LayerscopeError

    target = Path(path).expanduser()
    if target.is_file():
        raise LayerscopeError(f"{what} {target} is a file; give a folder")
    for parent in target.parents:
        if parent.exists():
            if not parent.is_dir():
                raise LayerscopeError(f"{what} {target} lies under {parent}, which is a file")
            break
    try:
        target.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".layerscope-probe-", dir=target)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        _raise_if_disk_full(error, target, None)
        reason = error.strerror or type(error).__name__
        raise LayerscopeError(f"cannot write to {what} {target}: {reason.lower()}") from None
    return target
