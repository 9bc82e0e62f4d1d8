"""``layerscope select``: a layer chosen with labels, every layer's score with a bootstrap interval and,
with a few labels per class, a layer chosen by cross-validation."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from layerscope.cli.options import (
    CacheOptions,
    EvalSeedOption,
    EvalWorkersOption,
    LayersOption,
    configured,
    load,
    output_folder,
    workers,
)
from layerscope.cli.output import console, kept_text
from layerscope.config import ExtractConfig, ModelConfig, SelectConfig, TaskFileConfig


@configured(model=ModelConfig, extraction=ExtractConfig, cache=CacheOptions, task_files=TaskFileConfig,
            choice=SelectConfig)
def select_command(
    model: ModelConfig, extraction: ExtractConfig, cache: CacheOptions, task_files: TaskFileConfig, choice: SelectConfig,
    tasks: Annotated[str, typer.Option("--tasks", "-t", help="Task files (.csv, .tsv, .jsonl, .parquet) and task "
                                       "names, comma-separated.")],
    layers: LayersOption = "all",
    seed: EvalSeedOption = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (select.json, layers.csv, task_scores.csv, "
                                             "scores.csv, few_labels.csv, cv_scores.csv, resamples.npz).")] = None,
    eval_workers: EvalWorkersOption = "auto",
) -> None:
    """Choose a layer with labels: every layer's score with a bootstrap interval, best vs last beyond the noise.

    The interval resamples each task's evaluation examples (test examples, pairs, texts or queries)
    and scores every resample at every layer with MTEB's evaluator from the cached embeddings.
    --labels-per-class K also chooses the layer by cross-validation on K labelled examples per class
    of each classification task and reports how that choice scores on the test set.
    """
    from layerscope.analysis.recipe_runs import recipe_candidates, resolve_recipes
    from layerscope.evaluate import resolve
    from layerscope.evaluate.select import check_choice, select_layer_with_labels

    folder = output_folder(out)
    task_list = resolve(tasks, seed=seed, files=task_files)  # bad names and files fail before the model loads
    check_choice(task_list, bootstrap=choice.bootstrap, labels_per_class=choice.labels_per_class)
    recipe_sets = resolve_recipes(choice.recipes)  # a bad recipe set too
    loaded = load(model, extraction)
    recipe_sets = resolve_recipes(choice.recipes, kind=loaded.kind)  # auto: the set for the model's kind
    if "auto" in choice.recipes and not any(item.source == "auto" for item in recipe_sets):
        console.print(f"--recipes auto is the last layer for a {loaded.kind} (no recipe set beat it held out on "
                      "models of its kind)", highlight=False)
    candidates = recipe_candidates(recipe_sets, [task.metadata.type for task in task_list], loaded.num_layers,
                                   normalized=extraction.normalized_layers(loaded))
    result = select_layer_with_labels(
        loaded, task_list, bootstrap=choice.bootstrap, confidence=choice.confidence,
        labels_per_class=choice.labels_per_class, resample_seed=choice.resample_seed, seed=seed, layers=layers,
        cache_dir=cache.resolve(), eval_workers=workers(eval_workers), candidates=candidates,
        condition=extraction.condition, normalize=extraction.normalize, **extraction.extract_options())
    print_choice(result, f"{loaded.model_id}: {len(task_list)} task{'s' if len(task_list) != 1 else ''}, "
                 f"{extraction.pooling} pooling")
    if folder is not None:
        write_choice(result, folder, {"model": model.to_dict(), "extraction": extraction.to_dict(),
                                      "task_files": task_files.to_dict(), "select": choice.to_dict(),
                                      "tasks": tasks, "layers": layers, "seed": seed})


def use_hint(result: Any) -> str | None:
    """The export command of what the choice took over the last layer (the best beyond the noise, or the
    few-label choice), or None when it keeps the last layer."""
    pick = None
    if result.verdict is not None and result.verdict.beyond_noise:
        pick = result.verdict.best_layer
    few = result.few_labels
    if few is not None and int(few["chosen_layer"].iloc[-1]) != result.last_layer:
        pick = int(few["chosen_layer"].iloc[-1])
    if pick is None or pick == result.last_layer:
        return None
    model = (result.record.get("model") or {}).get("model_id", "MODEL")
    if pick >= 0:
        what = f"--layer {pick}"
    else:
        from layerscope.analysis.recipe_runs import candidate_recipe

        recipe, per_type = candidate_recipe(result.name(pick))
        types = "|".join(sorted({str(kind).lower() for kind in result.scores["task_type"].unique()}))
        what = f"--recipe '{recipe}'" + (f" --task-type {types}" if per_type else "")
    return f"to use it: layerscope export --model {model} {what} --fit-dataset YOUR_TEXTS --out DIR"


def _label(result: Any, layer: Any) -> str:
    """A layer's number, or a candidate's name (a recipe), for the tables."""
    layer = int(layer)
    return str(layer) if layer >= 0 else result.name(layer)


def _units_text(units: dict[str, str]) -> str:
    kinds = sorted(set(units.values()))
    return f"the {kinds[0]}" if len(kinds) == 1 else "each task's evaluation examples"


def print_choice(result: Any, title: str) -> None:
    """The per-layer table of :func:`layerscope.evaluate.select.select_layer_with_labels`, the verdict, the few-label choice."""
    from layerscope.evaluate.uncertainty import interval_text

    layers = result.layers
    bootstrapped = result.verdict is not None
    marks: dict[int, list[str]] = {result.best_layer: ["best"]}
    marks.setdefault(result.last_layer, []).append("last")
    few = result.few_labels
    if few is not None:
        k = result.record["labels_per_class"]
        chosen, cv_best = int(few["chosen_layer"].iloc[-1]), int(few["cv_best_layer"].iloc[-1])
        marks.setdefault(chosen, []).append(f"chosen from {k} labels/class")
        if cv_best != chosen:
            marks.setdefault(cv_best, []).append(f"best CV on {k} labels/class, not beyond the noise")
    if bootstrapped:
        level = f"{100 * layers.attrs['confidence']:g}%"
        title += (f"; score = MTEB main score x 100 (task average), {level} intervals from "
                  f"{layers.attrs['n_resamples']} bootstrap resamples of {_units_text(layers.attrs['units'])}")
    table = Table(title=title, title_justify="left")
    headers = ["layer", "depth %", "score"]
    if bootstrapped:
        headers += [f"{level} interval", "vs last", f"{level} interval (paired)", "<= last"]
    for header in headers:
        table.add_column(header, justify="right")
    table.add_column("", justify="left")
    for row in layers.itertuples(index=False):
        cells = [_label(result, row.layer), "-" if row.layer < 0 else f"{row.depth_pct:.0f}", f"{row.score:.1f}"]
        if bootstrapped:
            last = int(row.layer) == result.last_layer
            cells += [interval_text(row.low, row.high), "" if last else f"{row.vs_last:+.1f}",
                      "" if last else interval_text(row.vs_last_low, row.vs_last_high, signed=True),
                      "" if last else f"{100 * row.not_above_last:.0f}%"]
        layer_marks = marks.get(int(row.layer), [])
        table.add_row(*cells, ", ".join(layer_marks), style="bold green" if "best" in layer_marks else None)
    console.print(table)
    if bootstrapped:
        console.print(result.verdict.describe() + " (beyond the noise = the interval of the paired difference lies "
                      "above 0; '<= last' is the share of resamples where a layer does not beat the last)",
                      highlight=False)
    else:
        console.print(f"best: {result.name(result.best_layer)}, last layer {result.last_layer} (no intervals: --bootstrap 0)",
                      highlight=False)
    if len(set(result.task_scores["task"])) > 1:
        _print_task_table(result, bootstrapped)
    if few is not None:
        _print_few_labels(result)
    hint = use_hint(result)
    if hint is not None:
        console.print(hint, highlight=False)
    for note_text in result.notes:
        console.print(f"note: {note_text}", highlight=False)
    console.print(f"{result.record['seconds']['total']:.0f} s (bootstrap {result.record['seconds']['bootstrap']:.0f} s)"
                  + kept_text(result.record.get("kept")), highlight=False)


def _print_task_table(result: Any, bootstrapped: bool) -> None:
    from layerscope.evaluate.uncertainty import interval_text

    frame = result.task_scores
    tasks = list(dict.fromkeys(frame["task"]))
    table = Table(title="Per task: score x 100" + (" [interval]" if bootstrapped else ""), title_justify="left")
    table.add_column("layer", justify="right")
    for task in tasks:
        table.add_column(task, justify="right", overflow="fold")
    for layer, rows in frame.groupby("layer", sort=True):
        by_task = rows.set_index("task")
        table.add_row(_label(result, layer), *(f"{by_task.loc[task, 'score']:.1f}" + (
            f" {interval_text(by_task.loc[task, 'low'], by_task.loc[task, 'high'])}" if bootstrapped else "")
            for task in tasks))
    console.print(table)


def _print_few_labels(result: Any) -> None:
    from layerscope.evaluate.uncertainty import interval_text

    few = result.few_labels
    k = result.record["labels_per_class"]
    level = f"{100 * result.record['confidence']:g}%"
    table = Table(title=f"Layer chosen from {k} labelled examples per class (cross-validated, seed "
                  f"{result.record['resample_seed']}), scored on the test set (MTEB, x 100)", title_justify="left")
    for header in ("task", "labelled", "best CV layer (accuracy)", f"its CV gain vs last [{level}]", "chosen layer",
                   "test score", "best layer (score)", "last score", "regret", "vs last"):
        table.add_column(header, justify="left" if header == "task" else "right",
                         no_wrap=header.startswith("its CV gain"))
    for row in few.itertuples(index=False):
        gain = "" if row.cv_best_layer == result.last_layer else (
            f"{row.cv_gain:+.1f} {interval_text(row.cv_gain_low, row.cv_gain_high, signed=True)}")
        table.add_row(str(row.task), str(row.n_labelled), f"{_label(result, row.cv_best_layer)} ({row.cv_accuracy:.1f})",
                      gain, _label(result, row.chosen_layer), f"{row.score:.1f}",
                      f"{_label(result, row.best_layer)} ({row.best_score:.1f})",
                      f"{row.last_score:.1f}", f"{row.regret:.1f}", f"{row.vs_last:+.1f}")
    console.print(table)
    console.print("chosen = the best CV layer when its gain over the last layer on the held-out labelled examples is "
                  "beyond the noise (interval above 0), else the last layer; regret = best layer's test score - chosen "
                  "layer's; the 'average' row chooses one layer for every task", highlight=False)
    overruled = few[few["chosen_layer"] != few["cv_best_layer"]]
    if len(overruled):
        row = overruled.iloc[-1]
        console.print(f"({row.task}: the best CV {result.name(row.cv_best_layer)} would score {row.cv_best_score:.1f} on the "
                      f"test set, {row.cv_best_score - row.last_score:+.1f} vs last)", highlight=False)


def write_choice(result: Any, folder: Path, config: dict[str, Any]) -> None:
    """Everything of a ``select`` run under ``folder`` (:meth:`~layerscope.evaluate.LayerChoice.write`), said."""
    written = result.write(folder, config)
    console.print(f"results -> {folder} ({', '.join(written)})", highlight=False)
