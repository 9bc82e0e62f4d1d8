"""The batched eigenvalue solver against LAPACK on the CPU, for stacks of symmetric matrices.

For each (matrices, m) shape: ``torch.linalg.eigvalsh`` (LAPACK inside torch), ``numpy.linalg.eigvalsh``
and ``layerscope.metrics.eigen.eigvalsh`` on the same random float64 Gram matrices (rank m / 2, like
the Grams of short prompts), best of ``--repeats`` after a warm-up, at a fixed thread count; and the
largest error of the batched solver relative to the largest eigenvalue. The batched solver is built
for GPUs (few kernel launches per row for the whole stack); on the CPU its bisection does about
``50 m^2`` divisions per matrix against LAPACK's ``O(m^2)`` tridiagonal step, so it is expected to
lose, which is why ``layerscope.metrics.functional.eigvalsh`` keeps LAPACK on the CPU. The last
line is ``ratio: <batched time / torch.linalg.eigvalsh time>`` on the largest shape.

    python benchmarks/bench_eigvalsh.py [--threads 1] [--repeats 3] [--shapes 2000x8,500x32,...]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable


def _requested_threads(argv: list[str]) -> str:
    for i, argument in enumerate(argv):
        if argument == "--threads" and i + 1 < len(argv):
            return argv[i + 1]
        if argument.startswith("--threads="):
            return argument.split("=", 1)[1]
    return "1"


# NumPy's BLAS fixes its thread pool when it loads: set it before numpy (and torch) are imported.
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = _requested_threads(sys.argv[1:])

import numpy as np  # noqa: E402
import torch  # noqa: E402

from layerscope.metrics import eigen  # noqa: E402

DEFAULT_SHAPES = "4000x8,2000x16,1000x32,400x64,100x128,40x256,10x512"


def best_time(function: Callable[[], object], repeats: int) -> float:
    function()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shapes", default=DEFAULT_SHAPES, help="comma list of <matrices>x<m>")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    print(f"{args.threads} thread(s), best of {args.repeats}, float64, times in seconds")
    print(f"{'matrices':>8} {'m':>5} {'torch':>9} {'numpy':>9} {'batched':>9} {'batched/torch':>14} {'max rel err':>12}")
    ratio = float("nan")
    for shape in args.shapes.split(","):
        matrices, m = (int(part) for part in shape.split("x"))
        rows = torch.randn(matrices, m, max(1, m // 2), dtype=torch.float64, generator=generator)
        grams = rows @ rows.mT  # (matrices, m, m)
        t_torch = best_time(lambda grams=grams: torch.linalg.eigvalsh(grams), args.repeats)
        t_numpy = best_time(lambda grams=grams: np.linalg.eigvalsh(grams.numpy()), args.repeats)
        t_batched = best_time(lambda grams=grams: eigen.eigvalsh(grams), args.repeats)
        reference = np.linalg.eigvalsh(grams.numpy())
        error = np.abs(eigen.eigvalsh(grams).numpy() - reference).max() / np.abs(reference).max()
        ratio = t_batched / t_torch
        print(f"{matrices:>8} {m:>5} {t_torch:>9.4f} {t_numpy:>9.4f} {t_batched:>9.4f} {ratio:>14.2f} {error:>12.1e}")
    print(f"ratio: {ratio:.2f}")


if __name__ == "__main__":
    main()
