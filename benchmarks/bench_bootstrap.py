"""The bootstrap's cost: every resample evaluated by MTEB as before against rescoring what one evaluation recorded.

Tasks: a classification task file (``--per-class`` BBC articles per topic, cut to 300 characters, as
the README's ``select`` example) and the offline suite's STS and pair-classification tasks, scored at
every layer of a model, then bootstrapped (``--resamples``) twice in one process:

- before: classification scored each resample of its recorded predictions with MTEB's own
  ``_calculate_scores``, one call per resample and experiment; STS and pair classification ran MTEB's
  whole evaluation on every resampled copy of the task;
- now (the default): the classification main score is counted for every resample at once
  (:func:`~layerscope.evaluate.uncertainty.counted_scores`), and STS and pair classification rescore
  each pair's recorded similarities with MTEB's own scoring.

Prints each task's two times and the largest difference between the two sets of resampled scores,
and last ``ratio: <before, all tasks> / <now, all tasks>`` (above 1: now is faster).

    python benchmarks/bench_bootstrap.py [--model minilm-l6] [--resamples 100] [--workers 1]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np


def _resamples(frame) -> np.ndarray:
    return np.array([json.loads(text)["bootstrap"]["main_scores"] for text in frame["scores"]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm-l6", help="bundled alias or hub id (default minilm-l6)")
    parser.add_argument("--resamples", type=int, default=100)
    parser.add_argument("--per-class", type=int, default=30, help="BBC articles per topic (default 30)")
    parser.add_argument("--workers", type=int, default=1, help="evaluation processes (default 1)")
    args = parser.parse_args()
    from sklearn.exceptions import UndefinedMetricWarning

    warnings.filterwarnings("ignore", category=UndefinedMetricWarning)  # classes a resample never predicts
    import layerscope.data as data
    from layerscope.evaluate import evaluate_layers, resolve, uncertainty
    from layerscope.evaluate.runner import _load, collect_texts
    from layerscope.extract import extract
    from layerscope.models import load_model

    frame = data.load_labelled("bbc").groupby("label").sample(args.per_class, random_state=0)
    frame["text"] = frame["text"].str.split().str.join(" ").str.slice(0, 300)
    folder = Path(tempfile.mkdtemp(prefix="bench-bootstrap-"))
    frame[["text", "label"]].to_csv(folder / "bbc_topics.csv", index=False)
    offline = [task for task in resolve(["offline"]) if task.metadata.type in ("STS", "PairClassification")]
    tasks = resolve([folder / "bbc_topics.csv"]) + offline
    _load(tasks)
    model = load_model(args.model)
    extraction = extract(model, collect_texts(tasks), progress=False)
    print(f"{args.model}: {len(extraction.layers)} layers, {args.resamples} resamples, {args.workers} worker(s)")

    def boot(task, scores) -> tuple[float, np.ndarray]:
        started = time.perf_counter()
        frame = uncertainty.bootstrap_layers(scores, extraction, [task], n_resamples=args.resamples, progress=False,
                                             eval_workers=args.workers)
        return time.perf_counter() - started, _resamples(frame)

    now = uncertainty._RESCORED, uncertainty.COUNTED_METRICS
    totals = np.zeros(2)
    print(f"{'task':36s} {'type':20s} {'before':>8s} {'now':>8s}  largest difference")
    for task in tasks:
        scores = evaluate_layers(model, [task], extraction=extraction, progress=False, eval_workers=args.workers)
        uncertainty._RESCORED, uncertainty.COUNTED_METRICS = ("classification",), ()  # as before
        try:
            before, before_values = boot(task, scores)
        finally:
            uncertainty._RESCORED, uncertainty.COUNTED_METRICS = now
        seconds, values = boot(task, scores)
        totals += (before, seconds)
        print(f"{task.metadata.name:36s} {task.metadata.type:20s} {before:7.1f}s {seconds:7.1f}s  "
              f"{np.abs(before_values - values).max():.1e}")
    print(f"{'all':57s} {totals[0]:7.1f}s {totals[1]:7.1f}s")
    print(f"ratio: {totals[0] / totals[1]:.2f}")


if __name__ == "__main__":
    main()
