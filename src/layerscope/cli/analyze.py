"""``layerscope analyze``: every metric and every task score at every layer; which layer, and why."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from layerscope.cli.options import (
    CacheOptions,
    EvalWorkersOption,
    Group,
    configured,
    output_folder,
    workers,
)
from layerscope.cli.output import console, kept_text, print_layer_table, print_text_table, say
from layerscope.config import (
    AnalysisConfig,
    ExtractConfig,
    IntervalConfig,
    ModelConfig,
    TaskFileConfig,
    TextConfig,
    ViewConfig,
)


@configured(model=ModelConfig, extraction=ExtractConfig, views=ViewConfig,
            dataset=Group(TextConfig, {"dataset": None}, optional=True), config=AnalysisConfig, cache=CacheOptions,
            task_files=TaskFileConfig, intervals=Group(IntervalConfig, {"bootstrap": 0}))
def analyze_command(
    config: AnalysisConfig, cache: CacheOptions, model: ModelConfig, extraction: ExtractConfig, views: ViewConfig,
    dataset: TextConfig | None, task_files: TaskFileConfig, intervals: IntervalConfig,
    out: Annotated[Path, typer.Option(help="Output folder: results.duckdb, plots, report.html.")] = Path("runs/analyze"),
    eval_workers: EvalWorkersOption = "auto",
) -> None:
    """The main job: every metric and every task score at every layer; which layer, and why."""
    from layerscope.evaluate import resolve
    from layerscope.pipeline import run_analysis
    from layerscope.store import ResultsStore

    folder = output_folder(out)
    assert folder is not None
    # task names and task files are read and checked before the model loads
    task_list = resolve(list(config.tasks), seed=config.eval_seed, files=task_files)
    ResultsStore.in_directory(folder).close()  # another process writing this --out fails now, not after loading
    result = run_analysis(config, out=folder, tasks=task_list, cache_dir=cache.resolve(),
                          eval_workers=workers(eval_workers), intervals=intervals, notify=say)
    print_analysis(result)


def print_analysis(result: Any) -> None:
    """The per-layer table with the best and the label-free layers marked, then the selection summary."""
    summary = result.summary
    marks: dict[int, str] = {}
    if summary.chosen_layer is not None:
        marks[summary.chosen_layer] = f"<- {summary.chosen_label} (no labels)"
    if summary.best_layer is not None:
        marks[summary.best_layer] = "<- best (labels)" + (" = no labels" if summary.best_layer == summary.chosen_layer
                                                         else "")
    model = result.record["model"]
    per_layer, interval_note = summary.per_layer, ""
    if summary.intervals is not None and "avg_score" in per_layer.columns:
        from layerscope.evaluate.uncertainty import layer_interval_texts

        attrs = summary.intervals.attrs
        column = layer_interval_texts(summary.intervals, per_layer["layer"].tolist())
        per_layer = per_layer.copy()
        per_layer.insert(per_layer.columns.get_loc("avg_score") + 1, "interval", column)
        interval_note = (f"; {100 * attrs['confidence']:g}% interval from {attrs['n_resamples']} bootstrap resamples "
                         "of each task's evaluation examples")
    from layerscope.analysis.by_type import scores_by_type_table, selection_text_table, without_type_columns
    from layerscope.analysis.recipe_runs import recipe_headline_text, recipe_text_table

    print_layer_table(without_type_columns(per_layer), f"{model['model_id']}: {model['num_layers'] + 1} layers, "
                      f"{result.record['n_kept']} texts, {result.scores['task'].nunique()} tasks "
                      f"(metrics on all task texts; avg score x 100{interval_note})", marks)
    print_text_table(scores_by_type_table(summary, marks))
    print_text_table(selection_text_table(summary))
    print_text_table(recipe_text_table(summary))
    last, best, chosen = summary.last_layer, summary.best_layer, summary.chosen_layer
    last_score = summary.score_at(last)
    if best is not None and last_score is not None:
        console.print(f"best layer with labels: {best} ({summary.score_at(best):.1f}), "
                      f"last layer {last} ({last_score:.1f}): {summary.score_at(best) - last_score:+.1f} points")
    if summary.verdict is not None:
        console.print(f"with intervals: {summary.verdict.describe()}", highlight=False)
    if recipe_headline_text(summary) is not None:
        console.print(recipe_headline_text(summary), highlight=False)
    elif chosen is not None and last_score is not None:
        where = " on all texts" if summary.chosen_uses_metrics else ""
        console.print(f"chosen without labels ({summary.chosen_label}{where}): layer {chosen} "
                      f"({summary.score_at(chosen):.1f}, {summary.score_at(chosen) - last_score:+.1f} vs last)")
        loses = summary.label_free_loses()
        if loses is not None:
            console.print(f"on this model the label-free choice trails the last layer by {loses:.1f} points: "
                          "use a few labels instead (layerscope select --labels-per-class 8)")
        if summary.last_by_default:
            console.print("(no label-free rule beat the last layer on models it was not chosen on: --select-by "
                          "applies one anyway, e.g. dime or depth:0.75; layerscope select --labels-per-class 8 "
                          "chooses with a few labels)")
    console.print(f"results: {result.out / 'results.duckdb'}" + (f"; report: {result.report}" if result.report else "")
                  + f"; {result.record['timings'].get('total_s', 0):.0f} s" + kept_text(result.record.get("kept")))
