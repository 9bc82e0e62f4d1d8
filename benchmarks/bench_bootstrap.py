"""The classification bootstrap: MTEB's scoring resample by resample against counting every resample at once.

A classification task file (``--per-class`` BBC articles per topic, cut to 300 characters, as the README's
``select`` example) is scored at every layer of a model, then bootstrapped (``--resamples`` resamples of the
test examples) twice in one process: through MTEB's own ``_calculate_scores`` for every resample and
experiment (how layerscope scored resamples before), and through
:func:`~layerscope.evaluate.uncertainty.counted_scores` (the default). Both train MTEB's classifiers
once per layer; they differ only in how the resampled predictions are scored. Prints both times, the
largest difference between the two sets of resampled scores, and last ``ratio: <MTEB's scoring time>
/ <counted time>`` (above 1: counting is faster).

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
    tasks = resolve([folder / "bbc_topics.csv"])
    _load(tasks)
    model = load_model(args.model)
    extraction = extract(model, collect_texts(tasks), progress=False)
    scores = evaluate_layers(model, tasks, extraction=extraction, progress=False, eval_workers=args.workers)
    print(f"{args.model}: {len(extraction.layers)} layers, {len(frame)} texts ({args.per_class} per topic), "
          f"{args.resamples} resamples, main score {tasks[0].metadata.main_score}, {args.workers} worker(s)")

    def run() -> tuple[float, np.ndarray]:
        started = time.perf_counter()
        boot = uncertainty.bootstrap_layers(scores, extraction, tasks, n_resamples=args.resamples, progress=False,
                                            eval_workers=args.workers)
        return time.perf_counter() - started, _resamples(boot)

    counted_metrics = uncertainty.COUNTED_METRICS
    uncertainty.COUNTED_METRICS = ()  # every resample through MTEB's _calculate_scores
    try:
        mteb_seconds, mteb_values = run()
    finally:
        uncertainty.COUNTED_METRICS = counted_metrics
    counted_seconds, counted_values = run()
    print(f"MTEB's scoring, resample by resample: {mteb_seconds:.1f} s")
    print(f"counted, every resample at once:      {counted_seconds:.1f} s")
    print(f"largest difference between the resampled scores: {np.abs(mteb_values - counted_values).max():.1e}")
    print(f"ratio: {mteb_seconds / counted_seconds:.2f}")


if __name__ == "__main__":
    main()
