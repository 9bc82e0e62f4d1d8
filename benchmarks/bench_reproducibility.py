"""How much do embeddings, metrics and task scores move with the BLAS configuration? (issue 21)

One small computation on the bundled all-MiniLM-L6-v2 (7 layers) is run in fresh subprocesses: the
texts of a few offline tasks (one classification, one clustering, one STS by default) are encoded
once (``layerscope.extract``), the label-free metrics that need no augmented views are computed on the
first ``--n-texts`` of them (``compute_metrics``), and every layer is scored on the tasks with MTEB's
evaluators (``evaluate_layers``). It runs under

- the default configuration (this machine's BLAS kernels, ``--threads`` threads), twice: a rerun;
- the configuration of CI's second test pass (``.ci/blas_variant.py``: one thread, another OpenBLAS
  kernel, MKL and ATen one instruction set lower), which stands for another machine.

Each run saves its float32 pooled embeddings, metrics and scores (parquet) to a temporary folder; the
parent prints how many embedding entries differ and by how much, each metric's largest relative
difference and each task's largest score difference (points = score x 100).

Then the one-ulp experiment, in the default run: a seeded random ``--ulp-fraction`` of the pooled
embedding entries is moved by one float32 ulp (``np.nextafter`` toward +inf) and every layer is
scored again with MTEB's evaluators, to see which of them amplify a last-bit difference: a fitted
classifier (logistic regression) or clustering (k-means) can flip whole predictions, a similarity
ranking (STS) only swaps two near-equal similarities.

The last line is ``ratio: <largest relative metric difference between the configurations> / <float32
epsilon>``: how many float32 ulps the metrics (float64, computed from the float32 embeddings) move.

    python benchmarks/bench_reproducibility.py [--tasks RottenTomatoesClassification,...] [--n-texts 200]
                                               [--threads 2] [--ulp-fraction 0.5] [--ulp-seeds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TASKS = "RottenTomatoesClassification,TwentyNewsgroupsClusteringOffline,LeeDocumentSTS"
#: Metrics computed from the texts alone (no augmented views).
METRICS = "prompt_entropy,curvature,dataset_entropy,effective_rank,entropy_rank,rankme"
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "RAY_USAGE_STATS_ENABLED": "0"}


def worker(args: argparse.Namespace) -> None:
    """One run in this process (started by :func:`main` under a BLAS configuration): saves to ``--out``."""
    os.environ.setdefault("MTEB_CACHE", tempfile.mkdtemp(prefix="layerscope-bench-mteb-"))
    import dataclasses

    import numpy as np
    import pandas as pd
    import torch
    from threadpoolctl import threadpool_info

    import layerscope as ls
    from layerscope.evaluate import evaluate_layers, resolve
    from layerscope.evaluate.runner import _load, collect_texts

    out = Path(args.out)
    start = time.perf_counter()
    model = ls.load_model(args.model)
    tasks = resolve(args.tasks)
    _load(tasks)
    texts = collect_texts(tasks)
    extraction = ls.extract(model, texts, progress=False)
    np.save(out / "pooled.npy", extraction.pooled)
    metrics = ls.compute_metrics(model, texts[: args.n_texts], metrics=METRICS, progress=False)
    metrics.to_parquet(out / "metrics.parquet")
    scores = evaluate_layers(model, tasks, extraction=extraction, progress=False, eval_workers=1)
    scores.drop(columns="scores").to_parquet(out / "scores.parquet")
    kernels = sorted({str(info.get("architecture")) for info in threadpool_info() if info["internal_api"] == "openblas"})
    record = {"seconds": time.perf_counter() - start, "n_texts": len(extraction.texts), "torch_threads": torch.get_num_threads(),
              "aten": torch.backends.cpu.get_cpu_capability(), "openblas": kernels, "torch": torch.__version__,
              "numpy": np.__version__}
    moved = []
    for seed in range(args.ulp_seeds):  # the one-ulp experiment
        rng = np.random.default_rng(seed)
        pooled = extraction.pooled.copy()  # (layers, n, dim) float32
        chosen = rng.random(pooled.shape) < args.ulp_fraction
        pooled[chosen] = np.nextafter(pooled[chosen], np.float32(np.inf))
        nudged = evaluate_layers(model, tasks, extraction=dataclasses.replace(extraction, pooled=pooled),
                                 progress=False, eval_workers=1)
        moved.append(nudged.drop(columns="scores").assign(seed=seed))
    if moved:
        pd.concat(moved).to_parquet(out / "ulp_scores.parquet")
    (out / "record.json").write_text(json.dumps(record))


def run_under(variables: dict[str, str], out: Path, args: argparse.Namespace, ulp_seeds: int) -> dict:
    out.mkdir(parents=True)
    command = [sys.executable, __file__, "--worker", "--out", str(out), "--model", args.model, "--tasks", args.tasks,
               "--n-texts", str(args.n_texts), "--ulp-fraction", str(args.ulp_fraction), "--ulp-seeds", str(ulp_seeds)]
    env = {**os.environ, **OFFLINE, **variables, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"),
                                                                                        os.environ.get("PYTHONPATH")]))}
    subprocess.run(command, env=env, check=True)
    return json.loads((out / "record.json").read_text())


def ci_variant() -> dict[str, str]:
    """The variables of CI's second pass (``.ci/blas_variant.py``, run in this environment)."""
    done = subprocess.run([sys.executable, str(ROOT / ".ci" / "blas_variant.py")], capture_output=True, text=True,
                          check=True, env={**os.environ, **OFFLINE})
    return dict(line.split("=", 1) for line in done.stdout.split())


def compare(a: Path, b: Path, label: str) -> float:
    """Print the differences of run ``b`` from run ``a``; returns the largest relative metric difference."""
    import numpy as np
    import pandas as pd

    x, y = np.load(a / "pooled.npy"), np.load(b / "pooled.npy")  # (layers, n, dim) float32
    differ = x != y
    scale = np.abs(x).max(axis=(1, 2), keepdims=True)  # per layer
    print(f"{label}: embeddings {differ.sum()} of {differ.size} float32 entries differ ({differ.mean():.1%}), "
          f"max |diff| {np.abs(x - y).max():.2e}, max |diff| / max |value| of the layer {(np.abs(x - y) / scale).max():.2e}")
    key = ["metric", "normalization", "layer"]
    metrics = pd.read_parquet(a / "metrics.parquet").merge(pd.read_parquet(b / "metrics.parquet"), on=key)
    metrics["relative"] = (metrics["value_x"] - metrics["value_y"]).abs() / metrics["value_x"].abs().where(
        metrics["value_x"] != 0)
    per_metric = metrics.groupby(["metric", "normalization"])["relative"].max()
    worst = float(per_metric.max()) if len(per_metric) else 0.0
    print(f"{label}: metrics, max relative difference over layers: "
          + ", ".join(f"{metric}/{norm} {value:.1e}" for (metric, norm), value in per_metric.items()))
    scores = pd.read_parquet(a / "scores.parquet").merge(pd.read_parquet(b / "scores.parquet"), on=["task", "layer"])
    points = (100 * (scores["main_score_x"] - scores["main_score_y"]).abs()).groupby(scores["task"]).max()
    print(f"{label}: task scores, max |diff| over layers (points): "
          + ", ".join(f"{task} {value:.3g}" for task, value in points.items()))
    return worst


def report_ulp(run: Path, fraction: float) -> None:
    import pandas as pd

    base = pd.read_parquet(run / "scores.parquet")
    nudged = pd.read_parquet(run / "ulp_scores.parquet").merge(base, on=["task", "layer"], suffixes=("", "_base"))
    nudged["points"] = 100 * (nudged["main_score"] - nudged["main_score_base"]).abs()
    for task, rows in nudged.groupby("task", sort=False):
        print(f"one ulp on {fraction:.0%} of the entries, {task} ({rows['task_type'].iloc[0]}): the score moved at "
              f"{(rows['points'] > 0).sum()} of {len(rows)} (layer, seed), by up to {rows['points'].max():.3g} points "
              f"(mean {rows['points'].mean():.3g})")


def machine() -> str:
    """The CPU's model name (Linux) and core count."""
    name = platform.processor() or platform.machine()
    info = Path("/proc/cpuinfo")
    if info.exists():
        lines = [line for line in info.read_text().splitlines() if line.startswith("model name")]
        name = lines[0].split(":", 1)[1].strip() if lines else name
    return f"{name}, {os.cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm-l6")
    parser.add_argument("--tasks", default=TASKS, help="offline tasks, comma-separated")
    parser.add_argument("--n-texts", type=int, default=200, help="texts the metrics are computed on")
    parser.add_argument("--threads", type=int, default=2, help="threads of the default configuration")
    parser.add_argument("--ulp-fraction", type=float, default=0.5, help="share of entries moved by one ulp")
    parser.add_argument("--ulp-seeds", type=int, default=3, help="draws of the one-ulp experiment")
    parser.add_argument("--no-rerun", action="store_true", help="skip the rerun under the default configuration")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    threads = {name: str(args.threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    variant = ci_variant()
    with tempfile.TemporaryDirectory(prefix="layerscope-repro-") as folder:
        root = Path(folder)
        default = run_under(threads, root / "default", args, args.ulp_seeds)
        print(f"machine: {machine()}; torch {default['torch']} (ATen {default['aten']}), numpy {default['numpy']} "
              f"(OpenBLAS {'/'.join(default['openblas'])}); {args.model}, {default['n_texts']} texts of {args.tasks}, "
              f"metrics on the first {args.n_texts}")
        print(f"default: {' '.join(f'{k}={v}' for k, v in threads.items())} ({default['seconds']:.0f} s)")
        if not args.no_rerun:
            again = run_under(threads, root / "again", args, 0)
            print(f"rerun: the same ({again['seconds']:.0f} s)")
            compare(root / "default", root / "again", "rerun")
        other = run_under(variant, root / "variant", args, 0)
        print(f"variant: {' '.join(f'{k}={v}' for k, v in variant.items())} (OpenBLAS {'/'.join(other['openblas'])}, "
              f"ATen {other['aten']}, torch {other['torch_threads']} thread; {other['seconds']:.0f} s)")
        worst = compare(root / "default", root / "variant", "variant")
        if args.ulp_seeds:
            report_ulp(root / "default", args.ulp_fraction)
    import numpy as np

    print(f"ratio: {worst / np.finfo(np.float32).eps:.3g} (largest relative metric difference between the "
          f"configurations, {worst:.2e}, in float32 epsilons)")


if __name__ == "__main__":
    main()
