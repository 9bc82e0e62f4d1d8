"""How many texts and views the invariance metrics need: the views budget, measured (issue 25).

For each model, one seeded sample of ``--texts`` texts of ``--dataset`` (the pool: 1,024 texts of the
bundled Rotten Tomatoes corpus by default, twice the default pair budget) gets its views as ``metrics`` and ``analyze`` would give them
with caps of ``--texts`` and ``--lidar-texts``: the first 256 texts of the plan's seeded permutation get
``--views-max`` (16) views, the others 2, encoded once through the embedding cache (the library's own
``plan_views`` and ``encode_planned``), texts and views cut at ``--max-length`` (128) tokens: the long
texts (Rotten Tomatoes' plot synopses) would otherwise take most of the time. Every smaller budget is a
subset of that one encoding:

- the *nested* sample of N texts is the first N of that permutation: the texts the plan gives views to
  with a cap of N (same seed), and for LiDAR their first J views (a text's first J views do not depend
  on how many are drawn);
- the *draws*: ``--draws`` random samples of N texts of the pool (without replacement), for N up to
  half the pool.

Per metric (LiDAR on N texts x J views; InfoNCE and DiME on N texts x 2 views), model and budget:

- ``rho``: Spearman rank correlation across layers between the nested sample's profile and the
  reference (the whole pool: 1,024 texts x 2 views for InfoNCE and DiME, 256 x 16 for LiDAR; each
  metric with the registry's default options, so LiDAR and DiME on as many texts as that are the means
  over blocks of ``LIDAR_BLOCK`` and ``DIME_BLOCK`` texts, their size-free forms);
  ``rho draws``: mean and minimum over the draws. The nested sample is part of the reference (half of
  it at N = M / 2), which lifts rho; the draws share less with it;
- ``layer (ref)``: the nested sample's selected layer (LiDAR's argmax; InfoNCE's and DiME's argmin, the
  registry's directions) and the reference's; ``draws at ref layer``: the share of draws selecting it;
- ``sd``: the resampling spread, per-layer standard deviation of the value over the draws (median over
  layers), scaled by 1 / sqrt(1 - (N - 1) / (M - 1)) (draws of N of M texts share texts: the finite-
  population factor of a mean) to read as that of independent samples; ``sd/range``: that spread over
  the reference profile's range across layers; ``shape sd/range``: the same for each draw's profile
  less its own mean over layers (a sample that moves every layer alike moves no rank: this is the
  noise against the differences between layers that the layer choice reads);
- ``mean``: the nested sample's value averaged over layers (how the value itself moves with N; for
  InfoNCE also its two forms that take log N out, the bound log N - L and 1 - L / log N).

The spread comes from draws without replacement, not a bootstrap with replacement: a resample holding
a text twice puts its own view among InfoNCE's negatives and identical rows into DiME's Grams, biasing
both.

Then the cost: ``layerscope metrics`` on ``--ratio-texts`` texts (2,000) with every metric at the
default budget against the same command with only the metrics that need no views, each a fresh
process with ``torch.set_num_threads(--threads)`` (and BLAS threads) fixed inside, without the cache,
the two alternating ``--repeats`` times, each keeping its fastest wall time (the CPU seconds beside);
the last line is ``ratio: <with / without>`` (the largest over ``--ratio-models``).

    python benchmarks/bench_views.py [--models smollm2-135m minilm-l6 gemma3-270m] [--texts 1024]
        [--lidar-texts 256] [--pair-sizes 64 128 256 512] [--lidar-sizes 16 32 64 128] [--views 2 4 8 16]
        [--draws 8] [--max-length 128] [--ratio-models minilm-l6] [--ratio-texts 2000] [--skip-ratio]
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
    parser.add_argument("--models", nargs="*", default=["smollm2-135m", "minilm-l6", "gemma3-270m"],
                        help="bundled aliases or hub ids of the study (gemma3-270m needs its optional packages); "
                        "none: only the timing")
    parser.add_argument("--dataset", default="rotten-tomatoes", help="text source (bundled corpus or file)")
    parser.add_argument("--texts", type=int, default=1024, help="texts in the pool (InfoNCE's and DiME's reference)")
    parser.add_argument("--lidar-texts", type=int, default=256, help="texts of the pool with --views-max views "
                        "(LiDAR's reference; their first 2 views serve the pairs)")
    parser.add_argument("--views-max", type=int, default=16, help="views per text of the pool (LiDAR's reference)")
    parser.add_argument("--pair-sizes", nargs="+", type=int, default=[64, 128, 256, 512],
                        help="texts with 2 views (InfoNCE, DiME)")
    parser.add_argument("--lidar-sizes", nargs="+", type=int, default=[16, 32, 64, 128], help="LiDAR texts")
    parser.add_argument("--views", nargs="+", type=int, default=[2, 4, 8, 16], help="LiDAR views per text")
    parser.add_argument("--draws", type=int, default=8, help="random samples per budget (spread)")
    parser.add_argument("--max-length", type=int, default=128, help="token cut of the study's texts and views "
                        "(the cost is in the long texts; the timed command keeps the model's own)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache-dir", default=None, help="embedding cache (default: layerscope's)")
    parser.add_argument("--ratio-models", nargs="+", default=["minilm-l6"], help="models of the timing")
    parser.add_argument("--ratio-texts", type=int, default=2000, help="texts of the timed metrics command")
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of each timed command (best kept)")
    parser.add_argument("--skip-ratio", action="store_true", help="no timing of the metrics command")
    args = parser.parse_args()
    if max(args.views) > args.views_max:
        parser.error(f"--views {max(args.views)} exceeds --views-max {args.views_max}")
    default = {"lidar": (DEFAULT_LIDAR_TEXTS, DEFAULT_N_VIEWS), "pair": (DEFAULT_VIEW_TEXTS, 2)}
    if not 2 <= args.lidar_texts <= args.texts:
        parser.error(f"--lidar-texts {args.lidar_texts} must lie between 2 and --texts {args.texts}")
    pools = {"lidar": args.lidar_texts, "pair": args.texts}
    sizes = {group: sorted({*given, *([default[group][0]] if default[group][0] < pools[group] else [])})
             for group, given in (("lidar", args.lidar_sizes), ("pair", args.pair_sizes))}
    too_big = [n for group in sizes for n in sizes[group] if not 2 <= n < pools[group]]
    if too_big:
        parser.error(f"sizes {too_big} are not between 2 and their pool (--texts, --lidar-texts)")

    import threadpoolctl
    import torch

    torch.set_num_threads(args.threads)
    threadpoolctl.threadpool_limits(args.threads)
    started = time.perf_counter()
    print(f"views budget study: {args.texts:,} texts of {args.dataset} x 2 views, {args.lidar_texts:,} of them x "
          f"{args.views_max} views, seed {args.seed}; pair sizes {sizes['pair']}, LiDAR sizes {sizes['lidar']} x views "
          f"{args.views}; {args.draws} draws up to half the pool; texts cut at {args.max_length} tokens; "
          f"{args.threads} threads; {_machine()}", flush=True)
    if args.models:
        rows: list[dict[str, Any]] = []
        for alias in args.models:
            rows += study_model(alias, args, sizes)
        frame = pd.DataFrame(rows)
        print("\nrho (mean over the draws) of each budget, per model (* = the default budget):\n")
        print(markdown(_summary(frame, default)))
        for metric in METRICS:
            print(f"\n{_title(metric, args)}\n")
            print(markdown(_table(frame[frame["metric"] == metric], metric, default)))
        _target_line(frame, default)
        print(f"\nstudy: {time.perf_counter() - started:.0f} s")
    if not args.skip_ratio:
        time_metrics_command(args)


# ------------------------------------------------------------------------------------------ study


def encode_pools(model: Any, texts: list[str], args: argparse.Namespace) -> tuple[Any, Any, np.ndarray, np.ndarray]:
    """The pools' views, encoded as ``analyze`` and ``metrics`` encode them (one plan, one encoding).

    The plan of a set of all the texts with caps ``--texts`` (2 views) and ``--lidar-texts``
    (``--views-max`` views): the LiDAR pool is the first ``--lidar-texts`` of the plan's permutation and
    its first 2 views serve the pairs. Returns the pair views (layers, texts, 2, d) by row, the LiDAR
    views (layers, lidar texts, views, d; None with ``--lidar-texts 0``), the rows these are (ascending)
    and the plan's permutation.
    """
    import torch

    from layerscope.cli import default_cache_dir
    from layerscope.metrics.views import encode_planned, plan_views

    plan = plan_views({"pool": range(len(texts))}, n_views=args.views_max, view_texts=len(texts),
                      lidar_texts=args.lidar_texts, needs_pairs=True, needs_lidar=args.lidar_texts > 0,
                      seed=args.seed)
    pair_views, lidar_views = encode_planned(model, texts, plan, args.seed, max_length=args.max_length,
                                             cache_dir=args.cache_dir or default_cache_dir(), progress=True)
    assert pair_views is not None
    by_row = torch.as_tensor(np.argsort(plan.pair_order))  # pair_order holds the LiDAR rows first
    pairs = pair_views[:, :, by_row].transpose(1, 2).contiguous()  # (layers, texts, 2, d)
    # (layers, lidar texts, views, d), rows plan.lidar_rows
    lidar = None if lidar_views is None else lidar_views.transpose(1, 2).contiguous()
    order = np.random.default_rng(args.seed).permutation(len(texts))  # plan_views' order of this set
    return pairs, lidar, plan.lidar_rows, order


def profile(spec: Any, views: Any, rows: np.ndarray, n_views: int) -> np.ndarray:
    """The metric's main value at every layer on the texts ``rows`` ((layers,) float64)."""
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
    from layerscope import load_model
    from layerscope.data import load_rows
    from layerscope.metrics.registry import get

    started = time.perf_counter()
    model = load_model(alias)
    texts = [text for text in load_rows(args.dataset, limit=args.texts, seed=args.seed).texts if text.strip()]
    pairs, lidar, lidar_rows, order = encode_pools(model, texts, args)
    encoded = time.perf_counter() - started
    draw_rng = np.random.default_rng(args.seed + 1)
    rows = []
    for metric in METRICS:
        spec = get(metric)
        group = "pair" if spec.n_views == 2 else "lidar"
        pool = np.sort(order[: len(texts) if group == "pair" else args.lidar_texts])
        views = pairs if group == "pair" else lidar
        # rows -> positions in the views tensor (the LiDAR one holds the LiDAR pool only)
        where = (lambda rows: rows) if group == "pair" else (lambda rows: np.searchsorted(lidar_rows, rows))
        reference = profile(spec, views, where(pool), 2 if group == "pair" else args.views_max)
        for n in sizes[group]:
            # random samples of the pool (half of it at most: beyond, the draws share most of their texts)
            draws = [np.sort(draw_rng.choice(pool, n, replace=False)) for _ in range(args.draws)] \
                if n <= len(pool) // 2 else []
            for n_views in ([2] if group == "pair" else sorted(args.views)):
                nested = profile(spec, views, where(np.sort(order[:n])), n_views)
                drawn = np.array([profile(spec, views, where(sample), n_views) for sample in draws])  # (draws, layers)
                rows.append(budget_row(alias, spec, n, n_views, nested, drawn, reference, len(pool)))
        rows.append(budget_row(alias, spec, len(pool), 2 if group == "pair" else args.views_max, reference,
                               np.empty((0, len(reference))), reference, len(pool)))
    print(f"{alias}: {model.num_layers + 1} layers; views of {len(texts):,} texts ({args.lidar_texts:,} of them x "
          f"{args.views_max}) encoded in {encoded:.0f} s, metrics in {time.perf_counter() - started - encoded:.0f} s",
          flush=True)
    return rows


def budget_row(alias: str, spec: Any, n: int, n_views: int, nested: np.ndarray, drawn: np.ndarray,
               reference: np.ndarray, pool: int) -> dict[str, Any]:
    """The statistics of one budget (n texts x n_views) against the reference profile.

    The draws' spread is scaled by 1 / sqrt(1 - (n - 1) / (pool - 1)), the finite-population factor of a
    mean over draws without replacement, to read as the spread of independent samples of n texts.
    """
    from scipy.stats import spearmanr

    higher = spec.higher_is_better
    best = _extreme(reference, higher)
    span = float(reference.max() - reference.min())
    rhos = [float(spearmanr(values, reference).statistic) for values in drawn]
    factor = 1 / math.sqrt(1 - (n - 1) / (pool - 1)) if n < pool else math.nan
    spread = float(np.median(drawn.std(axis=0, ddof=1))) * factor if len(drawn) > 1 else math.nan
    # the shape's spread: each draw's profile less its mean over layers (what moves the ranks and the choice)
    shape = drawn - drawn.mean(axis=1, keepdims=True)
    shape_spread = float(np.median(shape.std(axis=0, ddof=1))) * factor if len(drawn) > 1 else math.nan
    row = {
        "model": alias, "metric": spec.name, "texts": n, "views": n_views,
        "rho": float(spearmanr(nested, reference).statistic) if n < pool else 1.0,
        "rho_mean": float(np.mean(rhos)) if rhos else math.nan,
        "rho_min": float(np.min(rhos)) if rhos else math.nan,
        "layer": _extreme(nested, higher), "ref_layer": best,
        "match_share": float(np.mean([_extreme(v, higher) == best for v in drawn])) if len(drawn) else math.nan,
        "sd": spread, "sd_range": spread / span if span > 0 else math.nan,
        "shape_range": shape_spread / span if span > 0 else math.nan,
        "mean": float(nested.mean()),
    }
    if spec.name == "infonce":  # the loss L and its two forms that divide out or subtract log N
        row["bound"] = float(math.log(n) - nested.mean())
        row["size_free"] = float(1 - nested.mean() / math.log(n))
    return row


# ------------------------------------------------------------------------------------------ tables


def _title(metric: str, args: argparse.Namespace) -> str:
    from layerscope.metrics.registry import get

    spec = get(metric)
    direction = "argmax" if spec.higher_is_better else "argmin"
    pool = f"{args.lidar_texts:,} texts x {args.views_max} views" if spec.n_views > 2 else f"{args.texts:,} texts x 2 views"
    return f"{spec.display} ({spec.main}; selected layer = its {direction}): budgets vs the reference, {pool}"


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
        "sd/range": frame["sd_range"].map(lambda v: "-" if pd.isna(v) else f"{100 * v:.0f}%"),
        "shape sd/range": frame["shape_range"].map(lambda v: "-" if pd.isna(v) else f"{100 * v:.0f}%"),
        "mean": frame["mean"].map(lambda v: f"{v:.3f}"),
    })
    if metric == "infonce":
        out["log N - L"] = frame["bound"].map(lambda v: f"{v:.3f}")
        out["1 - L/log N"] = frame["size_free"].map(lambda v: f"{v:.3f}")
    return out


def _summary(frame: pd.DataFrame, default: dict[str, tuple[int, int]]) -> pd.DataFrame:
    """One row per metric and budget, one column per model: the nested sample's rho (the draws' mean)."""
    from layerscope.metrics.registry import get

    cells: dict[tuple[str, int, int], dict[str, str]] = {}
    for row in frame.itertuples(index=False):
        text = f"{row.rho:.3f}" + ("" if pd.isna(row.rho_mean) else f" ({row.rho_mean:.3f})")
        cells.setdefault((row.metric, row.texts, row.views), {})[row.model] = text
    models = list(dict.fromkeys(frame["model"]))
    out = []
    for (metric, texts, views), by_model in cells.items():
        chosen = default["lidar" if metric == "lidar" else "pair"]
        out.append({"metric": get(metric).display,
                    "budget": f"{texts:,} x {views}" + (" *" if (texts, views) == chosen else ""),
                    **{model: by_model.get(model, "-") for model in models}})
    return pd.DataFrame(out)


def _cell(mean: float, low: float) -> str:
    return "-" if pd.isna(mean) else f"{mean:.3f} [{low:.3f}]"


def markdown(frame: pd.DataFrame) -> str:
    """A pipe table (what the README shows)."""
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "|".join("---" for _ in frame.columns) + "|"]
    lines += ["| " + " | ".join(str(value) for value in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def _target_line(frame: pd.DataFrame, default: dict[str, tuple[int, int]]) -> None:
    """The default budget against the target (rho >= 0.95 with the reference on every metric and model)."""
    parts = []
    for metric in METRICS:
        texts, views = default["lidar" if metric == "lidar" else "pair"]
        at = frame[(frame["metric"] == metric) & (frame["texts"] == texts) & (frame["views"] == views)]
        parts.append(f"{metric} {at['rho_mean'].min():.3f} ({at['rho'].min():.3f}; {at['rho_min'].min():.3f})")
    print(f"\nat the default budget (LiDAR {default['lidar'][0]} x {default['lidar'][1]}, InfoNCE and DiME "
          f"{default['pair'][0]} x 2), the lowest over the models of rho's mean over the draws (of the nested "
          "sample; of any draw): " + "; ".join(parts) + " (target: >= 0.95)")


# ------------------------------------------------------------------------------------------ cost


def _machine() -> str:
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            name = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()} CPUs ({name}), load average {os.getloadavg()[0]:.1f} at the start"


def run_command(argv: list[str], threads: int) -> tuple[float, float, list[str]]:
    """Wall and CPU seconds of one ``layerscope`` command in a fresh process, and its stderr lines."""
    import resource

    code = THREADS_PRELUDE.format(threads=threads, argv=argv)
    env = {**os.environ, "COLUMNS": "200"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"layerscope {' '.join(argv)} failed: {result.stderr.strip()[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return seconds, cpu, [line.strip() for line in result.stderr.splitlines() if line.strip()]


def time_metrics_command(args: argparse.Namespace) -> None:
    """``layerscope metrics`` with every metric vs without the view metrics, per model; the last line the ratio.

    The two commands alternate ``--repeats`` times and each keeps its fastest run: other jobs sharing the
    cores slow a run down, never speed it up.
    """
    from layerscope.metrics.registry import available

    plain = ",".join(spec.name for spec in available() if spec.n_views == 0)
    rows, ratios = [], []
    for alias in args.ratio_models:
        common = ["metrics", "--model", alias, "--dataset", args.dataset, "--limit", str(args.ratio_texts),
                  "--seed", str(args.seed), "--no-cache"]
        runs: dict[str, list[tuple[float, float]]] = {"without": [], "with": []}
        said: list[str] = []
        for _ in range(args.repeats):
            wall, cpu, _ = run_command([*common, "--metrics", plain], args.threads)
            runs["without"].append((wall, cpu))
            wall, cpu, said = run_command([*common, "--metrics", "all"], args.threads)
            runs["with"].append((wall, cpu))
        without, with_views = min(runs["without"]), min(runs["with"])
        budget = next((line for line in said if "extra forward passes" in line), "-")
        estimate = next((line for line in said if line.startswith("about ")), "-")
        ratios.append((with_views[0] / without[0], alias))
        rows.append({"model": alias, "texts": args.ratio_texts,
                     "without view metrics: wall s (CPU s)": f"{without[0]:.1f} ({without[1]:.0f})",
                     "every metric: wall s (CPU s)": f"{with_views[0]:.1f} ({with_views[1]:.0f})",
                     "with / without": f"{with_views[0] / without[0]:.2f}",
                     "all runs, wall s": ", ".join(f"{w:.0f}" for w, _ in runs["without"]) + " / "
                                         + ", ".join(f"{w:.0f}" for w, _ in runs["with"]),
                     "views said": budget, "estimate said": estimate})
    print(f"\n`layerscope metrics --dataset {args.dataset} --limit {args.ratio_texts} --no-cache`, every metric vs "
          f"--metrics {plain} ({args.threads} threads, a fresh process each, best of {args.repeats} alternating "
          f"runs; load average {os.getloadavg()[0]:.1f} at the end):\n")
    print(markdown(pd.DataFrame(rows)))
    worst, alias = max(ratios)
    print(f"\nratio: {worst:.2f}" + (f" ({alias}, the largest of {len(ratios)} models)" if len(ratios) > 1 else ""))


if __name__ == "__main__":
    main()
