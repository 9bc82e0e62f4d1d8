"""How many labels does it take to choose a layer better than the last one? (issue 13, "use a few labels")

For each model, the classification tasks of the offline suite are scored at every layer with MTEB's
evaluators (one encoding pass), then for each K (labelled training examples per class) and each seed
the few-label choice of ``layerscope select --labels-per-class K`` is made
(:func:`~layerscope.evaluate.select.few_label_choice`: the layer with the best mean cross-validated
accuracy over the tasks, "best CV", taken only when its gain over the last layer on the held-out
labelled examples is beyond the noise, "guarded") and scored on the tasks' test sets against the best
layer (regret) and the last layer. Beside it, the label-free choices on the same tasks: the last layer (``auto``'s pick) and
depth 75% (the held-out pick on the authors' models alone).

The draws of one seed are nested (K=2 is a subset of K=4 ...: the first K of one permutation per class),
so one encoding pass covers every K.

The last line is ``ratio: <mean regret of the guarded few-label choice at --ratio-k over models and
seeds> / <mean regret of the last layer>`` (below 1: a few labels choose better than the last layer).

    python benchmarks/bench_few_labels.py [--models minilm-l6 smollm2-135m] [--k 2 4 8 16] [--seeds 10]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["minilm-l6", "smollm2-135m"],
                        help="bundled aliases or hub ids (default: minilm-l6 smollm2-135m)")
    parser.add_argument("--k", nargs="+", type=int, default=[2, 4, 8, 16], help="labels per class")
    parser.add_argument("--seeds", type=int, default=10, help="draws (and folds) per K")
    parser.add_argument("--ratio-k", type=int, default=8, help="the K of the last line's ratio")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache-dir", default=None, help="embedding cache (default: layerscope's)")
    args = parser.parse_args()
    if args.ratio_k not in args.k:
        parser.error(f"--ratio-k {args.ratio_k} is not among --k {args.k}")

    import threadpoolctl
    import torch

    from layerscope import load_model
    from layerscope.analysis import format_table
    from layerscope.analysis.selection import depth_layer
    from layerscope.cli import default_cache_dir
    from layerscope.evaluate import evaluate_layers
    from layerscope.evaluate.catalog import resolve
    from layerscope.evaluate.few_labels import draw_labels, is_classification
    from layerscope.evaluate.runner import _load, collect_texts
    from layerscope.evaluate.select import AVERAGE, few_label_choice
    from layerscope.extract import extract

    torch.set_num_threads(args.threads)
    threadpoolctl.threadpool_limits(args.threads)
    tasks = [task for task in resolve("offline") if is_classification(task)]
    _load(tasks)
    estimators = {task.metadata.name: task.evaluator_model for task in tasks}
    print(f"tasks: {', '.join(task.metadata.name for task in tasks)}; K = {args.k}; {args.seeds} seeds; "
          f"{args.threads} threads")
    cache_dir = args.cache_dir or default_cache_dir()
    largest = max(args.k)
    totals: dict[str, list[float]] = {}
    for alias in args.models:
        started = time.perf_counter()
        model = load_model(alias)
        draws = {seed: [draw for task in tasks for draw in draw_labels(task, largest, seed)]
                 for seed in range(args.seeds)}
        texts = collect_texts(tasks)
        known = set(texts)
        texts += [text for text in dict.fromkeys(t for seed_draws in draws.values() for d in seed_draws
                                                 for t in d.texts) if text not in known]
        extraction = extract(model, texts, layers="all", cache_dir=cache_dir, progress=True)
        scores = evaluate_layers(model, tasks, layers="all", extraction=extraction, progress=True)
        test = scores.groupby("layer")["main_score"].mean() * 100
        layers = [int(layer) for layer in test.index]
        best, last = float(test.max()), float(test.iloc[-1])
        depth = depth_layer(0.75, layers[-1], layers)
        rows = []
        for k in sorted(args.k):
            picks = []
            for seed in range(args.seeds):
                drawn = [draw for task in tasks for draw in draw_labels(task, k, seed)]  # inside the largest draw
                few, _, _ = few_label_choice(extraction, drawn, scores, seed=seed, estimators=estimators)
                picks.append(few[few["task"] == AVERAGE].iloc[0])
            frame = pd.DataFrame(picks)
            for label, layer, regret in (("best CV", "cv_best_layer", "cv_best_regret"),
                                         ("guarded", "chosen_layer", "regret")):
                gains = best - frame[regret] - last
                wins, losses = int((gains > 1e-9).sum()), int((gains < -1e-9).sum())
                totals.setdefault(f"{label} K={k}", []).extend(frame[regret].tolist())
                rows.append({"choice": f"{k} labels per class, {label}", "labelled": int(frame["n_labelled"].iloc[0]),
                             "layers chosen": _spread(frame[layer]),
                             "regret": f"{frame[regret].mean():.2f} [{frame[regret].min():.2f}, "
                                       f"{frame[regret].max():.2f}]",
                             "vs last": f"{round(gains.mean(), 2) + 0.0:+.2f}",
                             "wins/ties/losses vs last": f"{wins}/{args.seeds - wins - losses}/{losses}"})
        totals.setdefault("last", []).extend([best - last] * args.seeds)
        rows.append({"choice": "last layer (auto)", "labelled": 0, "layers chosen": str(layers[-1]),
                     "regret": f"{best - last:.2f}", "vs last": "+0.00", "wins/ties/losses vs last": "-"})
        rows.append({"choice": "depth 75%", "labelled": 0, "layers chosen": str(depth),
                     "regret": f"{best - float(test.loc[depth]):.2f}", "vs last": f"{float(test.loc[depth]) - last:+.2f}",
                     "wins/ties/losses vs last": "-"})
        print(f"\n{model.model_id}: classification average x 100, best layer {int(test.idxmax())} ({best:.1f}), "
              f"last layer {layers[-1]} ({last:.1f}); {time.perf_counter() - started:.0f} s")
        print(format_table(pd.DataFrame(rows)))
    base = float(np.mean(totals["last"]))
    print(f"\nmean regret over {len(args.models)} model(s) and {args.seeds} seeds: last layer {base:.2f}; "
          + "; ".join(f"{key} {np.mean(values):.2f}" for key, values in totals.items() if key != "last"))
    guarded = float(np.mean(totals[f"guarded K={args.ratio_k}"]))
    print(f"ratio: {guarded / base:.3f}" if base > 0 else "ratio: nan (the last layer is best on every model)")


def _spread(chosen: pd.Series) -> str:
    counts = chosen.astype(int).value_counts().sort_index()
    return ", ".join(f"{layer}" + (f" x{count}" if count > 1 else "") for layer, count in counts.items())


if __name__ == "__main__":
    main()
