"""``layerscope evaluate`` (offline tasks and task files) and ``layerscope mteb`` (MTEB hub tasks): every
layer scored with MTEB's evaluators."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table

from layerscope.cli.options import CacheOptions, Group, ScoringOptions, configured, load, output_folder
from layerscope.cli.output import console
from layerscope.config import ExtractConfig, ModelConfig, TaskFileConfig


def print_scores(frame: Any, out: Path | None, title: str, paper: bool = False) -> None:
    """The per-layer averages (best layer starred), best vs last; with ``out``, the files written there."""
    from layerscope.evaluate import best_and_last, layer_table, paper32_average
    from layerscope.evaluate.runner import save_scores

    summary = layer_table(frame)
    if paper:
        summary = summary.merge(paper32_average(frame)[["layer", "average"]].rename(columns={"average": "paper32"}), on="layer")
    best = best_and_last(frame)
    table = Table(title=title)
    columns = [c for c in summary.columns if c != "layer"]
    table.add_column("layer", justify="right")
    for column in columns:
        table.add_column("depth %" if column == "depth_pct" else column, justify="right")
    for row in summary.itertuples(index=False):
        values = row._asdict()
        mark = " *" if values["layer"] == best["best_layer"] else ""
        table.add_row(f"{values['layer']}{mark}", *(f"{values[c]:.0f}" if c == "depth_pct" else f"{values[c]:.2f}" for c in columns))
    console.print(table)
    seconds = frame.attrs.get("record", {}).get("seconds", {})
    console.print(f"best layer {best['best_layer']} ({best['best_average']:.2f}) vs last layer {best['last_layer']} "
                  f"({best['last_average']:.2f}); scores are MTEB main scores x 100"
                  + (f"; {seconds['total']:.0f} s" if "total" in seconds else ""))
    if out is not None:
        written = save_scores(frame, summary, out)
        console.print(f"scores -> {written['scores']}, per-layer summary -> {written['layers']}, "
                      f"record -> {written['record']}")


@configured(scoring=ScoringOptions, model=ModelConfig, extraction=ExtractConfig, cache=CacheOptions,
            task_files=TaskFileConfig)
def evaluate_command(scoring: ScoringOptions, model: ModelConfig, extraction: ExtractConfig, cache: CacheOptions,
                     task_files: TaskFileConfig) -> None:
    """Score every layer on downstream tasks with MTEB's evaluators (texts encoded once).

    --tasks also takes labelled files: text + label (classification; --clustering adds clustering),
    sentence1 + sentence2 + score (STS) or + 0/1 label (pair classification), query + positive
    [+ negative] (reranking).
    """
    from layerscope.evaluate import evaluate_layers, resolve

    folder = output_folder(scoring.out)
    # bad names and files fail before the model loads
    task_list = resolve(scoring.tasks, seed=scoring.seed, files=task_files)
    loaded = load(model, extraction)
    frame = evaluate_layers(loaded, task_list, **scoring.run_options(cache, extraction))
    print_scores(frame, folder, f"{loaded.model_id}: {len(task_list)} tasks, {extraction.pooling} pooling, "
                 "average per layer")


@configured(scoring=Group(ScoringOptions, {"tasks": "paper32"}), model=ModelConfig, extraction=ExtractConfig,
            cache=CacheOptions)
def mteb_command(scoring: ScoringOptions, model: ModelConfig, extraction: ExtractConfig, cache: CacheOptions) -> None:
    """Score every layer on real MTEB tasks from the hub (default: the paper's 32; needs the network)."""
    from layerscope.evaluate import paper32, resolve, run_mteb
    from layerscope.hub import require_hub

    folder = output_folder(scoring.out)
    task_list = resolve(scoring.tasks, seed=scoring.seed)
    require_hub("layerscope mteb (MTEB hub tasks)")  # before loading the model
    loaded = load(model, extraction)
    frame = run_mteb(loaded, task_list, **scoring.run_options(cache, extraction))
    paper = set(paper32()) <= set(frame["task"])
    print_scores(frame, folder, f"{loaded.model_id}: MTEB, {len(task_list)} tasks, average per layer", paper=paper)
