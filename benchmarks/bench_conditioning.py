"""What label-free conditioning does to each layer: analyze runs of one model compared side by side.

Give the run folders of ``layerscope analyze`` on the same model and tasks, the first without
conditioning (e.g. ``runs/smollm2-none runs/smollm2-whiten runs/smollm2-remove-top1
runs/smollm2-standardize runs/smollm2-outliers10``, made with ``layerscope analyze --condition whiten``,
``--outlier-tokens 10``...). For each run it prints:

(a) the task-average score per layer, and the average of the cosine-based tasks (STS, clustering,
    reranking, pair classification) and of classification, at every layer;
(b) the best layer, the last layer, the label-free layers of a rule (``--rule``, default depth 75%: the
    held-out pick on the authors' models alone) and of min-DiME on all texts, with their scores;
(c) how well the metrics computed on the (conditioned) embeddings track the scores: the mean over
    tasks of the per-task distance correlation across layers, and the Spearman correlation with
    the task-averaged curve, per metric.

The last line is ``ratio: <mean over metrics of per-task dcor with the first conditioning /
without>`` (above 1: the metrics track the scores better after conditioning).

    python benchmarks/bench_conditioning.py RUN_FOLDER [RUN_FOLDER ...] [--rule depth:0.75]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from layerscope.analysis import format_table, summarize
from layerscope.analysis.choice import choose_layer, parse_rule
from layerscope.store.runs import load_run

COSINE = ("STS", "Clustering", "Reranking", "PairClassification")


def describe(folder: Path, rule: str) -> dict:
    run = load_run(folder)
    config = run.config
    extraction = config.get("extraction", {})
    label = extraction.get("condition", "none")
    if extraction.get("outlier_tokens"):
        label += f", outliers > {extraction['outlier_tokens']:g}x median"
    scores = run.scores
    average = scores.groupby("layer")["main_score"].mean() * 100
    kinds = scores.assign(cosine=scores["task_type"].isin(COSINE))
    cosine = kinds[kinds["cosine"]].groupby("layer")["main_score"].mean() * 100
    classification = kinds[kinds["task_type"] == "Classification"].groupby("layer")["main_score"].mean() * 100
    mapping = {task: task for task in config.get("tasks", [])}
    summary = summarize(run.metrics, scores, select_by="dime", task_to_dataset=mapping)
    on_all = run.metrics[run.metrics["dataset"] == "all"]
    chosen = choose_layer(on_all, parse_rule(rule), last_layer=summary.last_layer)
    dime = choose_layer(on_all, parse_rule("dime"), last_layer=summary.last_layer)
    correlations = summary.correlations
    return {"folder": folder, "label": label, "average": average, "cosine": cosine,
            "classification": classification, "summary": summary, "rule": chosen, "dime": dime,
            "correlations": correlations}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--rule", default="depth:0.75", help="label-free rule shown beside min DiME (--select-by text; "
                        "default depth:0.75, the held-out pick on the authors' models alone)")
    args = parser.parse_args()
    runs = [describe(folder, args.rule) for folder in args.runs]
    print(f"model {load_run(args.runs[0]).model}; runs: " + "; ".join(f"{run['folder']} ({run['label']})" for run in runs))

    print("\n(a) average score x 100 per layer: all tasks / cosine-based tasks / classification")
    table = pd.DataFrame({"layer": runs[0]["average"].index})
    for run in runs:
        for key, short in (("average", "all"), ("cosine", "cos"), ("classification", "cls")):
            table[f"{run['label'][:14]} {short}"] = table["layer"].map(run[key])
    print(format_table(table, decimals=1))

    print("\n(b) layers chosen (score x 100)")
    rows = []
    rule = parse_rule(args.rule)
    for run in runs:
        summary, average = run["summary"], run["average"]
        last = summary.last_layer

        def cell(layer: int | None, average: pd.Series = average) -> str:
            return "-" if layer is None else f"{layer} ({average[layer]:.1f})"

        rows.append({"conditioning": run["label"], "best (labels)": cell(summary.best_layer), "last": cell(last),
                     rule.name: cell(run["rule"]), "min DiME on all texts": cell(run["dime"]),
                     f"{rule.name} vs last": f"{average[run['rule']] - average[last]:+.1f}" if run["rule"] is not None
                     else "-"})
    print(format_table(pd.DataFrame(rows)))

    print("\n(c) metric vs task score: mean per-task distance correlation / Spearman on the task-average curve")
    tracks = []
    for run in runs:
        frame = run["correlations"]
        if frame is None or frame.empty:
            continue
        per_task = frame[(frame["scope"] == "per_task") & (frame["method"] == "dcor")].set_index("metric")["value"]
        curve = frame[(frame["scope"] == "average_curve") & (frame["method"] == "spearman")].set_index("metric")["value"]
        tracks.append((run["label"], per_task))
        print(f"  {run['label']}: " + ", ".join(f"{metric} {per_task[metric]:.2f}/{curve.get(metric, float('nan')):+.2f}"
                                              for metric in per_task.index))
    if len(tracks) >= 2:
        base, other = tracks[0][1], tracks[1][1]
        common = base.index.intersection(other.index)
        print(f"ratio: {other[common].mean() / base[common].mean():.3f}")


if __name__ == "__main__":
    main()
