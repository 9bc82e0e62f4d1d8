"""What verifying a cache entry costs: sha256 of an embedding entry's ``pooled.npy``, per load.

Writes a float32 array of the given shape (default 31 x 1,500 x 576: SmolLM2-135M's 31 layers over
1,500 texts, 107 MB) with ``np.save``, reads it once into the page cache (as a cache entry just written
or read is), then times :func:`layerscope.integrity.file_digest` (best and median of ``--repeats``) and,
for comparison, memory-mapping the file unchecked and hashing it with blake2b.

    python benchmarks/bench_cache_check.py [31 1500 576] [--repeats 5]
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from pathlib import Path

import numpy as np

from layerscope.integrity import CHUNK_BYTES, file_digest


def _blake2b(path: Path) -> str:
    digest = hashlib.blake2b()
    with open(path, "rb", buffering=0) as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _timed(function, path: Path, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function(path)
        times.append(time.perf_counter() - start)
    return sorted(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shape", nargs="*", type=int, default=[31, 1500, 576])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    array = np.random.default_rng(0).standard_normal(tuple(args.shape), dtype=np.float32)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "pooled.npy"
        np.save(path, array)
        size = path.stat().st_size
        file_digest(path)  # into the page cache
        sha = _timed(file_digest, path, args.repeats)
        blake = _timed(_blake2b, path, args.repeats)
        mapped = _timed(lambda p: np.load(p, mmap_mode="r"), path, args.repeats)
    shape = " x ".join(f"{value:,}" for value in args.shape)
    print(f"{shape} float32 ({size / 1e6:.1f} MB), best/median of {args.repeats}:")
    print(f"  sha256 (file_digest): {sha[0] * 1e3:.0f} / {sha[len(sha) // 2] * 1e3:.0f} ms "
          f"({size / sha[0] / 1e9:.2f} GB/s)")
    print(f"  blake2b:              {blake[0] * 1e3:.0f} / {blake[len(blake) // 2] * 1e3:.0f} ms "
          f"({size / blake[0] / 1e9:.2f} GB/s)")
    print(f"  memory-map unchecked: {mapped[0] * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
