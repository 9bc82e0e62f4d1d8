"""How many texts and views the invariance metrics need: the views budget, measured (issue 25).

For each model, one seeded sample of ``--texts`` texts of ``--dataset`` (the pool, default 1,024 texts
of the bundled Rotten Tomatoes corpus) gets ``--views-max`` augmented views each (16; layerscope's
seeded nlpaug views) and is encoded once, through the embedding cache; every smaller budget is a subset
of that one encoding:

- the *nested* sample of N texts is the first N of one seeded permutation of the pool: the texts
  ``plan_views`` gives views to (with the same seed), and for LiDAR their first J views (a text's first
  J views do not depend on how many are drawn);
- the *draws*: ``--draws`` random samples of N texts of the pool (without replacement), for N up to a
  quarter of the pool.

Per metric (LiDAR on N texts x J views; InfoNCE and DiME on N texts x 2 views), model and budget:

- ``rho``: Spearman rank correlation across layers between the nested sample's profile and the
  reference (the whole pool, all views); ``rho draws``: mean and minimum over the draws;
- ``extreme``: whether the nested sample's selected layer (LiDAR's argmax; InfoNCE's and DiME's argmin,
  the registry's directions) is the reference's, and in what share of the draws;
- ``sd``: the resampling spread, per-layer standard deviation of the value over the draws (median over
  layers), and ``sd/range``: that spread over the reference profile's range across layers (the noise
  against the differences between layers);
- ``mean``: the nested sample's value averaged over layers (how the value itself moves with N; for
  InfoNCE also the size-free form 1 - L / log N).

The spread comes from draws without replacement, not a bootstrap with replacement: a resample holding
a text twice puts its own view among InfoNCE's negatives and identical rows into DiME's Grams, biasing
both. Draws of N from a pool of M share texts; for N <= M / 4 their spread is at least
sqrt(1 - 1/4) = 0.87 of that of independent samples.

Then the cost: ``layerscope metrics`` on ``--ratio-texts`` texts (2,000) with every metric at the
default budget against the same command with only the metrics that need no views, each a fresh
process with ``torch.set_num_threads(--threads)`` (and BLAS threads) fixed inside, without the cache;
the last line is ``ratio: <with / without>`` (the largest over ``--ratio-models``).

    python benchmarks/bench_views.py [--models smollm2-135m minilm-l6 gemma3-270m] [--texts 1024]
        [--pair-sizes 32 64 128 256 512] [--lidar-sizes 32 64 128 256] [--views 2 4 8 16] [--draws 8]
        [--ratio-models smollm2-135m] [--ratio-texts 2000] [--skip-ratio]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import subprocess
import sys
import time
from typing import Any

import numpy as np
import pandas as pd

METRICS = ("lidar", "infonce", "dime")
THREADS_PRELUDE = ("import sys, torch, threadpoolctl; torch.set_num_threads({threads}); "
                   "threadpoolctl.threadpool_limits({threads}); sys.argv = ['layerscope', *{argv!r}]; "
                   "from layerscope.cli import main; main()")


def main() -> None:
    from layerscope.config import DEFAULT_LIDAR_TEXTS, DEFAULT_N_VIEWS, DEFAULT_VIEW_TEXTS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["smollm2-135m", "minilm-l6", "gemma3-270m"],
                        help="bundled aliases or hub ids (gemma3-270m needs its optional packages)")
    parser.add_argument("--dataset", default="rotten-tomatoes", help="text source (bundled corpus or file)")
    parser.add_argument("--texts", type=int, default=1024, help="texts in the pool (the reference)")
    parser.add_argument("--views-max", type=int, default=16, help="views per text of the pool (LiDAR's reference)")
    parser.add_argument("--pair-sizes", nargs="+", type=int, default=[32, 64, 128, 256, 512],
                        help="texts with 2 views (InfoNCE, DiME)")
    parser.add_argument("--lidar-sizes", nargs="+", type=int, default=[32, 64, 128, 256], help="LiDAR texts")
    parser.add_argument("--views", nargs="+", type=int, default=[2, 4, 8, 16], help="LiDAR views per text")
    parser.add_argument("--draws", type=int, default=8, help="random samples per budget (spread)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache-dir", default=None, help="embedding cache (default: layerscope's)")
    parser.add_argument("--ratio-models", nargs="+", default=["smollm2-135m"], help="models of the timing")
    parser.add_argument("--ratio-texts", type=int, default=2000, help="texts of the timed metrics command")
    parser.add_argument("--skip-ratio", action="store_true", help="no timing of the metrics command")
    args = parser.parse_args()
    if max(args.views) > args.views_max:
        parser.error(f"--views {max(args.views)} exceeds --views-max {args.views_max}")
    default = {"lidar": (DEFAULT_LIDAR_TEXTS, DEFAULT_N_VIEWS), "pair": (DEFAULT_VIEW_TEXTS, 2)}
    sizes = {"lidar": sorted({*args.lidar_sizes, DEFAULT_LIDAR_TEXTS}),
             "pair": sorted({*args.pair_sizes, DEFAULT_VIEW_TEXTS})}
    too_big = [n for group in sizes.values() for n in group if n >= args.texts]
    if too_big:
        parser.error(f"sizes {too_big} are not below the pool of --texts {args.texts}")

    import threadpoolctl
    import torch

    torch.set_num_threads(args.threads)
    threadpoolctl.threadpool_limits(args.threads)
    started = time.perf_counter()
    print(f"views budget study: pool of {args.texts:,} texts of {args.dataset} x {args.views_max} views, seed "
          f"{args.seed}; pair sizes {sizes['pair']}, LiDAR sizes {sizes['lidar']} x views {args.views}; "
          f"{args.draws} draws (N <= {args.texts // 4}); {args.threads} threads; {_machine()}")
    rows: list[dict[str, Any]] = []
    for alias in args.models:
        rows += study_model(alias, args, sizes)
    frame = pd.DataFrame(rows)
    for metric in METRICS:
        print(f"\n{_title(metric, args)}\n")
        print(markdown(_table(frame[frame["metric"] == metric], metric, default)))
    _target_line(frame, default)
    print(f"\nstudy: {time.perf_counter() - started:.0f} s")
    if not args.skip_ratio:
        time_metrics_command(args)


# ------------------------------------------------------------------------------------------ study


def encode_pool(model: Any, texts: list[str], n_views: int, seed: int, cache_dir: str | None) -> Any:
    """Pooled embeddings of ``n_views`` views of every text, (layers, texts, views, dim) float32.

    The same views and the same extraction as :func:`layerscope.metrics.views.encode_views` (so the
    cache entry is shared), kept in float32: the metrics cast their chunks to float64 as they use them.
    """
    import torch

    from layerscope.augment import text_views
    from layerscope.extract import extract

    views = text_views(texts, n_views, seed=seed)  # (views, n)
    flat = [view if view.strip() else original for row in views for view, original in zip(row, texts, strict=True)]
    encoded = extract(model, flat, cache_dir=cache_dir, progress=True)
    pooled = torch.from_numpy(np.asarray(encoded.pooled, dtype=np.float32))  # (layers, views * n, d)
    return pooled.reshape(pooled.shape[0], n_views, len(texts), -1).transpose(1, 2).contiguous()


def profile(spec: Any, views: Any, rows: np.ndarray, n_views: int) -> np.ndarray:
    """The metric's main value at every layer on the pool's ``rows`` ((layers,) float64)."""
    import torch

    index = torch.as_tensor(rows)
    if spec.n_views == 2:
        values = spec.compute(views[:, index, 0], views[:, index, 1])
    else:
        values = spec.compute(views[:, index, :n_views])  # (layers, n, J, d)
    return values[spec.main].numpy()


def _extreme(values: np.ndarray, higher: bool) -> int:
    return int(np.argmax(values) if higher else np.argmin(values))


def study_model(alias: str, args: argparse.Namespace, sizes: dict[str, list[int]]) -> list[dict[str, Any]]:
    """Every budget's statistics for one model (rows of the metric tables)."""
    from scipy.stats import spearmanr

    from layerscope import load_model
    from layerscope.cli import default_cache_dir
    from layerscope.data import load_rows
    from layerscope.metrics.registry import get

    started = time.perf_counter()
    model = load_model(alias)
    texts = [text for text in load_rows(args.dataset, limit=args.texts, seed=args.seed).texts if text.strip()]
    pool = len(texts)
    views = encode_pool(model, texts, args.views_max, args.seed, args.cache_dir or default_cache_dir())
    encoded = time.perf_counter() - started
    order = np.random.default_rng(args.seed).permutation(pool)  # plan_views' order for a set of the pool
    draw_rng = np.random.default_rng(args.seed + 1)
    everything = np.arange(pool)
    rows = []
    for metric in METRICS:
        spec = get(metric)
        group = "pair" if spec.n_views == 2 else "lidar"
        view_counts = [2] if group == "pair" else sorted(args.views)
        reference = profile(spec, views, everything, args.views_max)
        span = float(reference.max() - reference.min())
        best = _extreme(reference, spec.higher_is_better)
        for n in sizes[group]:
            draws = [np.sort(draw_rng.permutation(pool)[:n]) for _ in range(args.draws)] if n <= pool // 4 else []
            for n_views in view_counts:
                nested = profile(spec, views, np.sort(order[:n]), n_views)
                drawn = np.array([profile(spec, views, rows_, n_views) for rows_ in draws])  # (draws, layers)
                rhos = [float(spearmanr(values, reference).statistic) for values in drawn]
                spread = np.median(drawn.std(axis=0, ddof=1)) if len(drawn) > 1 else math.nan
                row = {
                    "model": alias, "metric": metric, "texts": n, "views": n_views,
                    "rho": float(spearmanr(nested, reference).statistic),
                    "rho_mean": float(np.mean(rhos)) if rhos else math.nan,
                    "rho_min": float(np.min(rhos)) if rhos else math.nan,
                    "layer": _extreme(nested, spec.higher_is_better), "ref_layer": best,
                    "match_share": (float(np.mean([_extreme(v, spec.higher_is_better) == best for v in drawn]))
                                    if len(drawn) else math.nan),
                    "sd": float(spread), "sd_range": float(spread / span) if span > 0 else math.nan,
                    "mean": float(nested.mean()),
                }
                if metric == "infonce":
                    row["size_free"] = float(1 - nested.mean() / math.log(n))
                rows.append(row)
        rows.append({"model": alias, "metric": metric, "texts": pool, "views": args.views_max if group == "lidar"
                     else 2, "rho": 1.0, "layer": best, "ref_layer": best, "mean": float(reference.mean()),
                     **({"size_free": float(1 - reference.mean() / math.log(pool))} if metric == "infonce" else {})})
    print(f"{alias}: {model.num_layers + 1} layers, {pool:,} texts x {args.views_max} views encoded in "
          f"{encoded:.0f} s, metrics in {time.perf_counter() - started - encoded:.0f} s", flush=True)
    return rows


# ------------------------------------------------------------------------------------------ tables


def _title(metric: str, args: argparse.Namespace) -> str:
    from layerscope.metrics.registry import get

    spec = get(metric)
    direction = "argmax" if spec.higher_is_better else "argmin"
    return (f"{spec.display} ({spec.main}; selected layer = {direction}): budget vs the pool of {args.texts:,} texts"
            + (f" x {args.views_max} views" if spec.n_views > 2 else " x 2 views"))


def _table(frame: pd.DataFrame, metric: str, default: dict[str, tuple[int, int]]) -> pd.DataFrame:
    chosen = default["lidar" if metric == "lidar" else "pair"]
    out = pd.DataFrame({
        "model": frame["model"],
        "budget": [f"{t:,} x {v}" + (" *" if (t, v) == chosen else "") for t, v in zip(frame["texts"], frame["views"],
                                                                                          strict=True)],
        "rho": frame["rho"].map(lambda v: f"{v:.3f}"),
        "rho draws mean [min]": [_cell(a, b) for a, b in zip(frame["rho_mean"], frame["rho_min"], strict=True)],
        "layer (ref)": [f"{int(a)} ({int(b)})" for a, b in zip(frame["layer"], frame["ref_layer"], strict=True)],
        "draws at ref layer": frame["match_share"].map(lambda v: "-" if pd.isna(v) else f"{100 * v:.0f}%"),
        "sd": frame["sd"].map(lambda v: "-" if pd.isna(v) else f"{v:.3g}"),
        "sd/range": frame["sd_range"].map(lambda v: "-" if pd.isna(v) else f"{100 * v:.1f}%"),
        "mean": frame["mean"].map(lambda v: f"{v:.3f}"),
    })
    if metric == "infonce":
        out["1 - L/log N"] = frame["size_free"].map(lambda v: f"{v:.3f}")
    return out


def _cell(mean: float, low: float) -> str:
    return "-" if pd.isna(mean) else f"{mean:.3f} [{low:.3f}]"


def markdown(frame: pd.DataFrame) -> str:
    """A pipe table (what the README shows)."""
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "|".join("---" for _ in frame.columns) + "|"]
    lines += ["| " + " | ".join(str(value) for value in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def _target_line(frame: pd.DataFrame, default: dict[str, tuple[int, int]]) -> None:
    parts = []
    for metric in METRICS:
        texts, views = default["lidar" if metric == "lidar" else "pair"]
        at = frame[(frame["metric"] == metric) & (frame["texts"] == texts) & (frame["views"] == views)]
        parts.append(f"{metric} rho {at['rho'].min():.3f} (min over {len(at)} models)")
    print(f"\nat the default budget (LiDAR {default['lidar'][0]} x {default['lidar'][1]}, InfoNCE and DiME "
          f"{default['pair'][0]} x 2): " + "; ".join(parts) + " (target: >= 0.95)")


# ------------------------------------------------------------------------------------------ cost


def _machine() -> str:
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            name = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()} CPUs ({name}), load average {os.getloadavg()[0]:.1f} at the start"


def run_command(argv: list[str], threads: int) -> tuple[float, list[str]]:
    """Wall seconds of one ``layerscope`` command in a fresh process, and its stderr lines."""
    code = THREADS_PRELUDE.format(threads=threads, argv=argv)
    env = {**os.environ, "COLUMNS": "200"}
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"layerscope {' '.join(argv)} failed: {result.stderr.strip()[-2000:]}")
    return seconds, [line.strip() for line in result.stderr.splitlines() if line.strip()]


def time_metrics_command(args: argparse.Namespace) -> None:
    """``layerscope metrics`` with every metric vs without the view metrics, per model; the last line the ratio."""
    from layerscope.metrics.registry import available

    plain = ",".join(spec.name for spec in available() if spec.n_views == 0)
    rows, ratios = [], []
    for alias in args.ratio_models:
        common = ["metrics", "--model", alias, "--dataset", args.dataset, "--limit", str(args.ratio_texts),
                  "--seed", str(args.seed), "--no-cache"]
        without, _ = run_command([*common, "--metrics", plain], args.threads)
        with_views, said = run_command([*common, "--metrics", "all"], args.threads)
        budget = next((line for line in said if "extra forward passes" in line), "-")
        estimate = next((line for line in said if line.startswith("about ")), "-")
        ratios.append((with_views / without, alias))
        rows.append({"model": alias, "texts": args.ratio_texts, "without view metrics (s)": f"{without:.1f}",
                     "every metric (s)": f"{with_views:.1f}", "with / without": f"{with_views / without:.2f}",
                     "views": budget, "estimate said": estimate})
    print(f"\n`layerscope metrics --dataset {args.dataset} --limit {args.ratio_texts} --no-cache`, every metric vs "
          f"--metrics {plain} ({args.threads} threads, a fresh process each):\n")
    print(markdown(pd.DataFrame(rows)))
    worst, alias = max(ratios)
    print(f"\nratio: {worst:.2f}" + (f" ({alias}, the largest of {len(ratios)} models)" if len(ratios) > 1 else ""))


if __name__ == "__main__":
    main()
