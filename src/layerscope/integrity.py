"""Checked cache entries: each carries what it takes to prove it whole before it is used.

Every cache layerscope keeps (embedding entries, token-metric checkpoints, the dequantized GGUF models,
the assembled Gemma GGUF) is read through this module. An entry is written with a **manifest**: each
file's byte size and sha256, the entry's identity (its cache key, so a file or a whole manifest copied
in from another entry is told apart) and what the reader expects (shape, dtype). Reading verifies all
of it, every time: a missing, short, overwritten or foreign file, or a missing or garbled manifest,
raises :class:`DamagedEntry` saying what; the caller logs the one line of :func:`report_damaged`,
removes the entry and recomputes it. Small arrays kept in one ``.npz`` (:func:`save_checked_npz`)
carry their identity and digest inside the file, so one atomic rename writes data and check together.

Cost of verifying (the whole file is read and hashed once per load): sha256 in 1 MiB chunks, with
OpenSSL using the CPU's SHA instructions, ran at 0.8-1.7 GB/s on the shared 2-core Xeon of development
(``python benchmarks/bench_cache_check.py``: 64-134 ms for a 31 x 1,500 x 576 float32 entry of 107 MB,
file in the page cache, against 0.1 ms to memory-map it unchecked; blake2b took 1.7-2x as long). For
SmolLM2-135M's 538 MB of dequantized float32 weights it measured 0.7-0.9 s (``load_model`` 6.4-7.4 s
against 5.6-6.7 s unchecked, same machine, three runs each). Verifying on every load is the point: an
overwritten middle keeps the file's size, so only a digest finds it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DamagedEntry", "file_digest", "load_checked_npz", "report_damaged", "save_checked_npz", "verify_manifest",
    "write_manifest",
]

#: Version of the manifest layout (a manifest of another version is stale: the entry is recomputed).
MANIFEST_FORMAT = 1
#: Bytes read per hashing step: large enough for OpenSSL's speed, small enough to stay in the cache.
CHUNK_BYTES = 1 << 20
_NPZ_IDENTITY = "__layerscope_identity__"
_NPZ_DIGEST = "__layerscope_sha256__"


class DamagedEntry(Exception):
    """A cache entry that fails its check: ``what`` says how, in a few words.

    ``stale`` marks an entry written before entries carried checks (an older layerscope): not damaged,
    but not provably whole either, so it is recomputed all the same.
    """

    def __init__(self, what: str, *, stale: bool = False) -> None:
        super().__init__(what)
        self.what = what
        self.stale = stale


def damaged_line(key: str, error: DamagedEntry) -> str:
    """The one line that says an entry is recomputed, and why."""
    if error.stale:
        return f"cache entry {key} has no checksums (written by an older layerscope): recomputing"
    return f"cache entry {key} was damaged ({error.what}): recomputing"


def report_damaged(logger: logging.Logger, key: str, error: DamagedEntry) -> None:
    """Log :func:`damaged_line` as a warning (the CLI shows warnings on stderr)."""
    logger.warning("%s", damaged_line(key, error))


def file_digest(path: str | os.PathLike[str]) -> str:
    """sha256 of a file's bytes (hex), read in :data:`CHUNK_BYTES` chunks into one reused buffer."""
    digest = hashlib.sha256()
    buffer = bytearray(CHUNK_BYTES)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while True:
            count = handle.readinto(view)
            if not count:
                break
            digest.update(view[:count])
    return digest.hexdigest()


def write_manifest(path: str | os.PathLike[str], files: Mapping[str, str | os.PathLike[str]], *, identity: str,
                   **fields: Any) -> dict[str, Any]:
    """Write (atomically) the manifest of an entry and return it.

    Parameters
    ----------
    path : str or os.PathLike
        The manifest file; the files it lists are named relative to its folder.
    files : mapping of str to path
        Name in the entry -> file to describe now (it may still sit under a temporary name, e.g. a
        memory map renamed into place after the manifest is written).
    identity : str
        What the entry is (its cache key): a manifest found under another key is foreign.
    **fields
        Anything else the reader checks (shape, dtype) or needs (a source fingerprint).
    """
    from layerscope.atomic import atomic_write_json

    described = {name: {"bytes": os.path.getsize(source), "sha256": file_digest(source)}
                 for name, source in files.items()}
    manifest = {"layerscope_manifest": MANIFEST_FORMAT, "identity": identity, "files": described, **fields}
    atomic_write_json(path, manifest)
    return manifest


def read_manifest(path: str | os.PathLike[str], *, identity: str) -> dict[str, Any]:
    """The manifest at ``path`` if it is readable, of this format and of this entry (no file is hashed)."""
    path = Path(path)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DamagedEntry(f"{path.name} is missing") from None
    except (OSError, UnicodeDecodeError, ValueError):
        raise DamagedEntry(f"{path.name} is unreadable") from None
    if not isinstance(manifest, dict) or "layerscope_manifest" not in manifest:
        raise DamagedEntry(f"{path.name} holds no checksums", stale=True)
    if manifest["layerscope_manifest"] != MANIFEST_FORMAT or not isinstance(manifest.get("files"), dict):
        raise DamagedEntry(f"{path.name} is of another format", stale=True)
    if manifest.get("identity") != identity:
        raise DamagedEntry(f"{path.name} belongs to another entry ({manifest.get('identity')})")
    return manifest


def verify_manifest(path: str | os.PathLike[str], *, identity: str) -> dict[str, Any]:
    """Check every file a manifest lists against its size and sha256; return the manifest.

    Raises
    ------
    DamagedEntry
        The manifest is missing, unreadable, stale or foreign, or a file is missing, of another size
        (cut short, appended to) or of other bytes (overwritten, another entry's file).
    """
    path = Path(path)
    manifest = read_manifest(path, identity=identity)
    for name, expected in manifest["files"].items():
        check_file(path.parent / name, expected)
    return manifest


def check_file(path: Path, expected: Mapping[str, Any]) -> None:
    """Raise :class:`DamagedEntry` unless ``path`` has the ``bytes`` and ``sha256`` of ``expected``."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise DamagedEntry(f"{path.name} is missing") from None
    if size != expected.get("bytes"):
        raise DamagedEntry(f"{path.name} is {size:,} bytes, expected {expected.get('bytes'):,}")
    if file_digest(path) != expected.get("sha256"):
        raise DamagedEntry(f"{path.name} does not match its sha256")


def _arrays_digest(arrays: Mapping[str, np.ndarray]) -> str:
    """sha256 over each array's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(json.dumps([name, array.dtype.str, list(array.shape)]).encode())
        digest.update(memoryview(array).cast("B") if array.size else b"")
    return digest.hexdigest()


def save_checked_npz(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray], *, identity: str) -> None:
    """Save arrays to an ``.npz`` atomically, with the entry's identity and their digest inside it."""
    from layerscope.atomic import atomic_open

    arrays = {name: np.asarray(value) for name, value in arrays.items()}
    with atomic_open(path, "wb") as handle:
        np.savez(handle, **arrays, **{_NPZ_IDENTITY: np.array(identity), _NPZ_DIGEST: np.array(_arrays_digest(arrays))})


def load_checked_npz(path: str | os.PathLike[str], *, identity: str) -> dict[str, np.ndarray]:
    """The arrays of a :func:`save_checked_npz` file, proven whole and of this entry.

    Raises
    ------
    FileNotFoundError
        There is no such file (nothing was kept: not damage).
    DamagedEntry
        The file is cut short or unreadable, of another entry, or its arrays do not match the digest
        inside it (stale: written before files carried one).
    """
    import zipfile

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(path)
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as error:
        reason = str(error).strip('"').splitlines()[0] if str(error).strip('"') else type(error).__name__
        raise DamagedEntry(f"{path.name} is unreadable: {reason}") from None
    if _NPZ_IDENTITY not in arrays or _NPZ_DIGEST not in arrays:
        raise DamagedEntry(f"{path.name} holds no checksum", stale=True)
    found, digest = str(arrays.pop(_NPZ_IDENTITY)), str(arrays.pop(_NPZ_DIGEST))
    if found != identity:
        raise DamagedEntry(f"{path.name} belongs to another entry ({found})")
    if _arrays_digest(arrays) != digest:
        raise DamagedEntry(f"{path.name} does not match its sha256")
    return arrays
