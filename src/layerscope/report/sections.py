"""The sections of a run's report, each a function of the run and its summary.

Every section returns an :data:`~layerscope.report.elements.Section`; sections whose inputs are
missing (a run with metrics but no task scores, or the reverse) say what is missing and how to get
it. Numbers are read from the run (its stored rows), never from what its configuration asked for.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from layerscope.analysis.by_type import BEST_PER_TYPE_RULE, best_layers_text, type_columns, type_legend
from layerscope.analysis.selection import metric_directions
from layerscope.analysis.summary import ALL_TEXTS, Summary, reference_metrics
from layerscope.analysis.tables import default_normalization, score_grid
from layerscope.config import Config
from layerscope.errors import LayerscopeError
from layerscope.metrics.registry import metric_label, order_metrics
from layerscope.report import plots
from layerscope.report.elements import (
    Section,
    duration,
    escape,
    formatter,
    image,
    is_missing,
    key_value,
    note,
    number,
    plain,
    section,
    shade,
    shorten,
    signed,
    table,
    timestamp,
    two_lines,
)
from layerscope.report.recipe_sections import recipe_card, recipe_lead
from layerscope.store.runs import RunData

__all__ = [
    "config_section",
    "correlation_section",
    "examples_section",
    "experiments_section",
    "headline_label",
    "per_layer_section",
    "plots_section",
    "selection_section",
    "summary_section",
    "texts_used",
]

logger = logging.getLogger(__name__)

MAX_EXAMPLE_CHARS = 600
MAX_EXPERIMENT_IMAGES = 6
#: How the selection table shows a rule whose layer differs between tasks.
VARIES = "varies by task"

_RULE_GROUPS = {
    "labels": "With labels",
    "oracle": "With labels",
    "baseline": "Without labels: baselines",
    "depth": "Without labels: baselines",
    "headline": "Without labels: the summary's choice (one layer for every task)",
    "recipe": "Without labels: recipe sets (one recipe per task type, from the cached layers)",
    "metric": "Without labels: metric rules per task (each task's layer from the metric on that task's own texts)",
}


# ---------------------------------------------------------------------------------------- facts of the run


def _metric_texts(run: RunData) -> str:
    """Where the summary's metrics come from: all texts, or the mean over text sets without such a set."""
    _, source = reference_metrics(run.metrics) if not run.metrics.empty else (None, None)
    return "on all texts" if source is not None else "averaged over the text sets"


def headline_label(run: RunData, summary: Summary) -> str | None:
    """The label-free choice with the texts it was made on, e.g. ``"min DiME on all texts"``.

    Table 2's metric rules choose per task, so the headline says where its own metric came from.
    """
    if summary.chosen_label is None:
        return None
    return f"{summary.chosen_label} {_metric_texts(run)}" if summary.chosen_uses_metrics else summary.chosen_label


def texts_used(run: RunData) -> tuple[int | None, pd.DataFrame]:
    """Texts of the run (its all-texts set, from the metric rows) and the per-set counts behind it."""
    counts = run.text_counts()
    if counts.empty:
        return None, counts
    _, source = reference_metrics(run.metrics)
    if source is None:  # several sets, none of them all texts: sets may overlap, no total is known
        return None, counts
    reference = counts[counts["dataset"].isin([source, ""])]
    return (int(reference["n_texts"].max()) if not reference.empty else None), counts


def _set_name(dataset: str) -> str:
    return "all texts" if dataset in (ALL_TEXTS, "") else dataset


# ---------------------------------------------------------------------------------------- summary


def summary_section(run: RunData, summary: Summary) -> Section:
    """Which layer, and why: the cards (best, chosen, last, depth baseline) and the lead sentences."""
    cards: list[str] = []
    per_layer = summary.per_layer
    headline = headline_label(run, summary)

    def card(kind: str, key: str, layer: int | None, detail: str) -> None:
        depth = summary.depth_of(layer)
        value = "\u2013" if layer is None else f"layer {layer}"
        depth_text = "" if depth is None else f" ({depth:.0f}% depth)"
        cards.append(
            f'<div class="card {kind}"><div class="k">{escape(key)}</div><div class="v">{escape(value)}'
            f'<span class="muted">{escape(depth_text)}</span></div><div class="d">{detail}</div></div>'
        )

    last_score = summary.score_at(summary.last_layer) if summary.last_layer is not None else None
    if summary.best_layer is not None:
        best_score = summary.score_at(summary.best_layer)
        gain = None if best_score is None or last_score is None else best_score - last_score
        card("best", "Best layer with labels", summary.best_layer,
             f"average score {escape(number(best_score, 1))}; {signed(gain)} vs. last layer")
    recipe = recipe_card(summary)
    if recipe is not None:
        cards.append(recipe)
    elif summary.chosen_layer is not None:
        chosen_score = summary.score_at(summary.chosen_layer)
        if chosen_score is not None and last_score is not None:
            detail = (f"{escape(headline)}: average score {escape(number(chosen_score, 1))}; "
                      f"{signed(chosen_score - last_score)} vs. last layer")
        else:
            detail = f"{escape(headline)} (no task scores to check it against)"
        card("chosen", "Chosen without labels", summary.chosen_layer, detail)
    if summary.last_layer is not None:
        detail = (f"average score {escape(number(last_score, 1))}" if last_score is not None
                  else "the usual default")
        card("last", "Last layer", summary.last_layer, detail)
    if summary.selection is not None:
        depth_rows = summary.selection[summary.selection["kind"] == "depth"]
        if not depth_rows.empty:
            row = depth_rows.loc[depth_rows["average"].idxmax()]
            card("depth", f"Depth baseline ({row['rule'].split()[-1]})",
                 None if is_missing(row["layer"]) else int(row["layer"]),
                 f"average score {escape(number(row['average'], 1))}; {signed(float(row['gain_vs_last']))} vs. last layer")

    body = _lead(summary, _metric_texts(run)) + (f'<div class="cards">{"".join(cards)}</div>' if cards else "")
    body += _scale_caption(run, summary)
    body += _label_free_record(run, summary)
    body += _two_answers(run, summary)
    if per_layer is None:
        body += note("Nothing to summarise: the run has no metrics and no task scores.")
    elif run.scores.empty:
        body += note(
            "This run has no task scores, so the label-free choice cannot be checked against a best layer. "
            "Run `layerscope analyze` with tasks (the default offline suite) to add them."
        )
    elif run.metrics.empty:
        body += note("This run has task scores but no representation metrics: no label-free choice to show.")
    for text in summary.notes:
        body += note(text)
    return section("summary", "Which layer, and why", body)


def _lead(summary: Summary, metric_texts: str) -> str:
    sentences: list[str] = []
    last_score = summary.score_at(summary.last_layer)
    if summary.best_layer is not None and summary.last_layer is not None:
        best_score = summary.score_at(summary.best_layer)
        if summary.best_layer == summary.last_layer:
            sentences.append("The last layer is the best layer on the task average for this run.")
        elif best_score is not None and last_score is not None:
            sentences.append(
                f"An intermediate layer ({summary.best_layer}, {summary.depth_of(summary.best_layer):.0f}% depth) "
                f"beats the last layer by {best_score - last_score:.1f} points on the task average."
            )
    if recipe_lead(summary) is not None:
        sentences.append(recipe_lead(summary))
    elif summary.chosen_layer is not None and summary.chosen_metric is not None:
        direction = "highest" if summary.chosen_higher_is_better else "lowest"
        sentences.append(f"Without labels, the layer where {metric_label(summary.chosen_metric)} "
                         f"{metric_texts} is {direction} is layer {summary.chosen_layer}.")
    elif summary.chosen_layer is not None and summary.last_by_default:
        sentences.append(f"Without labels, layerscope keeps the last layer ({summary.chosen_layer}): no label-free "
                         "rule beat it on models it was not chosen on (below).")
    elif summary.chosen_layer is not None:
        sentences.append(f"Without labels, the rule {summary.chosen_label} picks layer {summary.chosen_layer}.")
    loses = summary.label_free_loses()
    if loses is not None:
        sentences.append(f"On this model that label-free choice trails the last layer by {loses:.1f} points: "
                         "use a few labels instead (layerscope select --labels-per-class 8).")
    return f'<p class="lead">{escape(" ".join(sentences))}</p>' if sentences else ""


def _label_free_record(run: RunData, summary: Summary) -> str:
    """Where the default label-free rule comes from and how it did on models it was not chosen on."""
    from layerscope.analysis.choice import held_out_record

    record = held_out_record()
    if record is None or summary.chosen_rule != record.get("rule"):
        return ""
    trained = record.get("trained_on") or {}
    counts = (f"{trained['authors']} from the paper authors' stored results, {trained['runs']} layerscope runs"
              if trained.get("runs") else None)
    source = f"{trained['n_models']} models ({counts})" if counts else "the paper authors' stored results"
    if record.get("rule") == "last":
        where = f"{trained['n_models']} models: {counts}" if counts else "the paper authors' stored results"
        parts = [f"No label-free rule held up against the last layer on models it was not chosen on ({where}), so "
                 "layerscope's default is the last layer; --select-by applies another rule (e.g. dime, the "
                 "paper's, or depth:0.75), and layerscope select --labels-per-class chooses with a few labels"]
    else:
        parts = [f"The label-free rule ({record['name']}) is layerscope's default: the held-out protocol picked it "
                 f"on {source}"]
    model_held = record.get("held_out", {}).get("model")
    if model_held:
        last = record.get("last_layer_regret")
        parts.append(f"(leave-one-model-out, the procedure lost {model_held['mean_regret']:.1f} points to the best "
                     "layer on average" + (f", the last layer {last:.1f}," if last is not None else "")
                     + f" and beat the last layer on {model_held['wins']} of {model_held['n_models']} models)")
    unseen = record.get("unseen", {})
    if unseen.get("n_models"):
        parts.append(f"; on {unseen['n_models']} models it never saw it beat the last layer on {unseen['wins']} "
                     f"(mean regret {unseen['mean_regret']:.1f})")
    return f'<p class="caption">{escape(" ".join(parts))}. Numbers from: {escape(record["command"])}.</p>'


def _scale_caption(run: RunData, summary: Summary) -> str:
    """What the numbers rest on, read from the run: texts, tasks, layers."""
    facts: list[str] = []
    n_texts, counts = texts_used(run)
    if n_texts is not None:
        n_sets = counts["dataset"].nunique()
        facts.append(f"{n_texts:,} texts" + (f" ({n_sets - 1} text sets and all of them together)"
                                             if n_sets > 1 else ""))
    if not run.scores.empty:
        n_tasks = run.scores["task"].nunique()
        facts.append(f"{n_tasks} task{'s' if n_tasks != 1 else ''} scored")
    if summary.last_layer is not None:
        facts.append(f"layers 0\u2013{summary.last_layer}")
    return f'<p class="caption">Measured on {escape("; ".join(facts))}.</p>' if facts else ""


def _two_answers(run: RunData, summary: Summary) -> str:
    """Why the card's label-free answer and Table 2's rule of the same metric differ."""
    headline = headline_label(run, summary)
    if summary.selection is None or summary.chosen_metric is None or headline is None:
        return ""
    rule = f"{'max' if summary.chosen_higher_is_better else 'min'} {summary.chosen_metric}"
    hit = summary.selection[summary.selection["rule"] == rule]
    chosen_score = summary.score_at(summary.chosen_layer)
    if hit.empty or chosen_score is None:
        return ""
    row = hit.iloc[0]
    layer = VARIES if is_missing(row["layer"]) else f"layer {int(row['layer'])} for every task"
    return (f'<p class="caption">Two label-free answers, two questions: <b>{escape(headline)}</b> (this card) '
            f"takes one layer for every task, from {escape(metric_label(summary.chosen_metric))} {_metric_texts(run)} "
            f"(average {escape(number(chosen_score, 1))}); <b>{escape(summary.chosen_label)} per task</b> "
            f"(Table 2, rule \u201c{escape(rule)}\u201d) takes each task's layer from the metric on that task's "
            f"own texts ({escape(layer)}; average {escape(number(row['average'], 1))}).</p>")


# ---------------------------------------------------------------------------------------- per-layer table


def per_layer_section(run: RunData, summary: Summary) -> Section:
    """One row per layer: average score and every metric, shaded by goodness, the marked layers badged."""
    frame = summary.per_layer
    if frame is None:
        return section("layers", "Per-layer table", note("No per-layer values in this run."))
    types = type_columns(frame)  # score_<type> -> type: each type's mean score, beside the average
    metric_columns = order_metrics(
        column for column in frame.columns if column not in ("layer", "depth_pct", "avg_score", "n_tasks", *types)
    )
    directions = metric_directions(metric_columns, strict=False)
    headline = headline_label(run, summary)
    roles = {"best": summary.best_layer, "chosen": summary.chosen_layer, "last": summary.last_layer}
    badge_text = {"best": "best with labels", "chosen": headline, "last": "last"}
    frame = frame.assign(marks=[
        "".join(f'<span class="badge {role}">{escape(badge_text[role])}</span>'
                for role, layer in roles.items() if layer is not None and row["layer"] == layer)
        for _, row in frame.iterrows()
    ])
    columns: list[tuple[str, str, Callable[[Any], str]]] = [
        ("layer", "layer", formatter(0)),
        ("depth_pct", "depth %", formatter(0)),
    ]
    if "avg_score" in frame.columns:
        columns.append(("avg_score", "avg score\n(x100)", formatter(1)))
    intervals = summary.intervals
    if intervals is not None and "avg_score" in frame.columns:
        from layerscope.evaluate.intervals import layer_interval_texts

        frame = frame.assign(score_interval=layer_interval_texts(intervals, frame["layer"].tolist()))
        columns.append(("score_interval", f"{100 * intervals.attrs['confidence']:g}% interval\n(bootstrap)",
                        lambda value: "" if is_missing(value) else escape(value)))
    columns += [(column, f"{task_type}\n(x100)", formatter(1)) for column, task_type in types.items()]
    for metric in metric_columns:
        norm = default_normalization(run.metrics, metric)
        arrow = {True: " \u2191", False: " \u2193"}.get(directions.get(metric), "")
        sub = norm if norm and norm not in ("raw", "none") else ""
        columns.append((metric, metric_label(metric) + arrow + (f"\n{sub}" if sub else ""), formatter(3)))
    columns.append(("marks", "", str))  # badges are built from escaped parts above

    def row_class(row: pd.Series) -> str:
        return " ".join(role for role in ("best", "chosen") if roles[role] is not None and row["layer"] == roles[role])

    shades = {column: shade(frame[column], directions.get(column, True)) for column in metric_columns}
    shades.update({column: shade(frame[column], True) for column in types})
    if "avg_score" in frame.columns:
        shades["avg_score"] = shade(frame["avg_score"], True)

    def cell_style(column: str, value: Any) -> str:
        return shades[column](value) if column in shades else ""

    legend = '<p class="legend">Rows:'
    if summary.best_layer is not None:
        legend += '<span style="background:#e3f2ea"></span>best layer with labels'
    if summary.chosen_layer is not None:
        legend += f'<span style="background:#fcebdc"></span>label-free choice ({escape(headline)})'
    legend += (". Cells: darker blue = better within the column (\u2193 lower is better, \u2191 higher is better, "
               "the directions used for label-free selection).</p>")
    body = legend + table(frame, columns, row_class=row_class, cell_style=cell_style, text_columns=["marks"])
    grid = summary.per_layer.attrs.get("score_grid", {})
    captions = []
    if grid:
        captions.append(f"Average score over {grid.get('n_tasks')} tasks.")
    if types:
        legend = type_legend(types.values(), frame.attrs.get("task_type_counts"))
        best = best_layers_text(summary.best_layer_by_type, summary.last_layer, short=False)
        captions.append(f"Per task type: the mean score of that type's tasks ({legend}); best layer per type: {best}.")
    if intervals is not None and "avg_score" in frame.columns:
        captions.append(
            f"Intervals: {intervals.attrs['n_resamples']} bootstrap resamples of each task's evaluation examples "
            f"(seed {intervals.attrs['resample_seed']}), each scored by MTEB's evaluator at every layer; the same "
            "resamples at every layer (paired), percentile intervals re-centred on the score.")
    if summary.verdict is not None:
        verdict = summary.verdict.describe()
        captions.append(verdict[0].upper() + verdict[1:] + ".")
    if metric_columns:
        captions.append(f"Metrics in their default normalization (entropies: maxEntropy), {_metric_texts(run)}.")
    body += f'<p class="caption">{escape(" ".join(captions))}</p>'
    return section("layers", "Per-layer table", body)


# ---------------------------------------------------------------------------------------- plots


def plots_section(run: RunData, summary: Summary, images: Mapping[str, Path]) -> Section:
    """The run's PNG plots, each with a caption that says how to read it, and the per-task scores."""
    parts: list[str] = []
    markers = ("Triangles above each panel: best layer with labels (black, dashed line), label-free choice "
               "(vermillion, dotted line), last layer (grey); side by side where they share a layer.")
    if "metric_curves" in images:
        parts.append("<h3>Metrics per layer</h3>")
        sets = run.metrics["dataset"].nunique() if "dataset" in run.metrics.columns else 1
        lines = ("Thin lines: the metric on each text set (named below the panels); thick: on all texts. "
                 if sets > 1 else "")
        parts.append(image(images["metric_curves"], "metric curves per layer",
                           escape(f"Each metric in its default normalization against depth. {lines}{markers}")))
    elif run.metrics.empty:
        parts.append(note("No representation metrics in this run."))
    if "task_scores" in images:
        parts.append("<h3>Task scores per layer</h3>")
        parts.append(image(images["task_scores"], "task scores per layer", escape(
            "One line per task, named in the legend beside its panel; thick black: the mean of the task type; "
            f"last panel: each type's mean (a dot on its best layer) and the overall average. {markers}")))
        parts.append(_task_table(run, summary))
    elif run.scores.empty:
        parts.append(note("No task scores in this run: run `layerscope analyze` with tasks to see where the "
                          "representations are most useful."))
    for name, path in images.items():
        if name.startswith("histogram_"):
            metric = name.removeprefix("histogram_")
            parts.append(f"<h3>Per-prompt {escape(metric_label(metric).lower())}</h3>")
            parts.append(image(path, f"per-prompt {metric} by layer", escape(
                "Top: share of prompts per value bin at each layer, light = few, dark = many, blank = none (a split "
                "into two bands is the bimodality of section 7 of the paper). Bottom: a few layers in detail.")))
    return section("plots", "Plots", "".join(parts))


def _task_table(run: RunData, summary: Summary) -> str:
    """Every task's score at the marked layers and at its own best layer (the lines of the plot, named)."""
    grid = score_grid(run.scores, last_layer=summary.last_layer)
    matrix = 100.0 * grid.matrix
    rows = []
    for task in grid.tasks:
        column = matrix[task]
        own = int(column.idxmax()) if column.notna().any() else None
        rows.append({
            "task": task, "type": grid.task_types.get(task, ""), "own_layer": own,
            "own_score": None if own is None else column.loc[own],
            **{role: column.get(layer, np.nan) if layer is not None else np.nan
               for role, layer in (("best", summary.best_layer), ("chosen", summary.chosen_layer),
                                   ("last", summary.last_layer))},
        })
    frame = pd.DataFrame(rows).sort_values(["type", "task"], kind="stable")
    columns: list[tuple[str, str, Callable[[Any], str]]] = [
        ("task", "task", escape), ("type", "type", escape),
        ("own_layer", "its best\nlayer", formatter(0)), ("own_score", "its best\nscore", formatter(1)),
    ]
    if summary.best_layer is not None:
        columns.append(("best", f"at layer {summary.best_layer}\n(best with labels)", formatter(1)))
    if summary.chosen_layer is not None:
        columns.append(("chosen", f"at layer {summary.chosen_layer}\n({headline_label(run, summary)})",
                        formatter(1)))
    if summary.last_layer is not None:
        columns.append(("last", f"at layer {summary.last_layer}\n(last)", formatter(1)))
    return ('<p class="caption">Scores (x100) of every task at the layers marked in the plot, and at the task\'s '
            "own best layer.</p>" + table(frame, columns, text_columns=["task", "type"]))


# ---------------------------------------------------------------------------------------- Table 2


def selection_section(run: RunData, summary: Summary) -> Section:
    """The paper's Table 2, with the summary's own label-free choice as a row of its own."""
    frame = summary.selection
    if frame is None:
        return section("selection", "Layer selection (Table 2)",
                       note("Needs task scores: this run has none, so no rule can be scored."))
    fixed = ["rule", "kind", "layer", "depth_pct", "average", "gain_vs_last", "n_tasks", "n_fallback"]
    type_columns = [column for column in frame.columns if column not in fixed]
    metric_rows = frame[frame["kind"] == "metric"]
    best_rule = str(metric_rows.loc[metric_rows["average"].idxmax(), "rule"]) if not metric_rows.empty else None
    frame = _with_headline(run, summary, frame, type_columns)
    per_type = "by type: " + best_layers_text(summary.best_layer_by_type, None)
    frame = frame.assign(layer_text=[
        per_type if rule == BEST_PER_TYPE_RULE else "by task type" if kind == "recipe" else VARIES
        if is_missing(layer) else str(int(layer)) for rule, kind, layer in zip(frame["rule"], frame["kind"],
                                                                             frame["layer"], strict=True)])
    columns: list[tuple[str, str, Callable[[Any], str]]] = [
        ("rule", "rule", escape),
        ("layer_text", "layer", escape),
        ("depth_pct", "depth %\n(mean)", formatter(0)),
        ("average", "average\n(x100)", formatter(1)),
        ("gain_vs_last", "vs. last\nlayer", lambda value: signed(None if is_missing(value) else float(value))),
    ]
    columns += [(column, str(column), formatter(1)) for column in type_columns]
    if frame["n_fallback"].fillna(0).gt(0).any():
        columns.append(("n_fallback", "tasks on\nfallback", formatter(0)))

    def row_class(row: pd.Series) -> str:
        if row["kind"] == "labels":
            return "best"
        if best_rule is not None and row["rule"] == best_rule:
            return "chosen"
        return ""

    body = (
        '<p class="caption">Average task score when each task uses the layer a rule picks (the paper\'s Table 2). '
        "Metric rules (\u201cmin dime\u201d = min DiME per task) pick, per task, the layer where the metric "
        "computed on that task's own texts is best, so their layer varies by task; the summary's choice takes one "
        "layer for every task from the metric on all texts. The depth rules need no metric; \u201cbest layer per "
        "task\u201d is an oracle; \u201cbest layer per type\u201d gives each task its type's best layer (with two "
        "task types or more). Highlighted: the best rule with labels and the best label-free metric rule (which "
        "rule is best is itself known only with labels).</p>"
    )
    body += table(frame, columns, row_class=row_class, text_columns=["rule"],
                  group=lambda row: _RULE_GROUPS.get(str(row["kind"]), str(row["kind"])))
    return section("selection", "Layer selection (Table 2)", body)


def _with_headline(run: RunData, summary: Summary, frame: pd.DataFrame, type_columns: list[str]) -> pd.DataFrame:
    """``frame`` with the summary's label-free choice as a row (one layer for every task), before the metric rules."""
    score = summary.score_at(summary.chosen_layer)
    if score is None or summary.chosen_layer is None or run.scores.empty:
        return frame
    grid = score_grid(run.scores, last_layer=summary.last_layer)
    at_layer = 100.0 * grid.matrix.loc[summary.chosen_layer] if summary.chosen_layer in grid.matrix.index else None
    last = frame.loc[frame["rule"] == "last layer", "average"]
    row: dict[str, Any] = {
        "rule": headline_label(run, summary), "kind": "headline", "layer": summary.chosen_layer,
        "depth_pct": summary.depth_of(summary.chosen_layer), "average": score,
        "gain_vs_last": score - float(last.iloc[0]) if len(last) else np.nan,
        "n_tasks": len(grid.tasks), "n_fallback": 0,
    }
    for task_type in type_columns:
        tasks = [task for task in grid.tasks if grid.task_types.get(task) == task_type]
        row[task_type] = float(at_layer[tasks].mean()) if at_layer is not None and tasks else np.nan
    frame = frame[frame["rule"] != row["rule"]]  # a depth headline is shown once, as the choice
    position = int((frame["kind"] != "metric").sum())  # the metric rules come last
    return pd.concat([frame.iloc[:position], pd.DataFrame([row]), frame.iloc[position:]], ignore_index=True)


# ---------------------------------------------------------------------------------------- correlations


_METHOD_NAMES = {"spearman": "Spearman \u03c1", "kendall": "Kendall \u03c4", "dcor": "dCor"}


def correlation_section(run: RunData, summary: Summary, images: Mapping[str, Path]) -> Section:
    """Correlations of each metric with the scores, with n, intervals over tasks and permutation p-values."""
    frame = summary.correlations
    if frame is None or frame.empty:
        reason = ("needs both metrics and task scores" if run.metrics.empty or run.scores.empty
                  else "could not be computed (see the notes in the summary)")
        return section("correlations", "Metrics vs. task scores", note(f"Correlations {reason}."))
    frame = frame[frame["scope"].isin(["per_task", "average_curve"])]
    body = ('<p class="caption">How each metric\'s layer profile tracks task scores. Spearman and Kendall are '
            "signed (a useful lower-is-better metric is negative); distance correlation lies in [0, 1]. "
            "<b>Each task</b>: the correlation across layers on each task, averaged over the tasks; below each "
            "value its 95% interval over the tasks (t-interval). <b>Task-averaged curve</b>: one correlation "
            "across layers; below it the permutation p-value (layers shuffled; exact when the layers are few). "
            "n: tasks with a defined value and layers per correlation. Neighbouring layers are alike, so "
            "shuffled layers are an optimistic null: read small p-values with care, and large ones as no "
            "evidence at all.</p>")
    if "correlations" in images:
        body += image(images["correlations"], "correlation of metrics with task scores")
    body += table(*_correlation_rows(frame), text_columns=["metric", "normalization"],
                  header_groups=_correlation_groups(frame))
    return section("correlations", "Metrics vs. task scores", body)


def _present_methods(frame: pd.DataFrame, scope: str) -> list[str]:
    return [method for method in _METHOD_NAMES if ((frame["scope"] == scope) & (frame["method"] == method)).any()]


def _correlation_cell(row: pd.Series) -> str:
    """A correlation with what it rests on below it: its interval (each task) or p-value (the curve)."""
    value = row["value"]
    if is_missing(value):
        reason = row.get("reason")
        return two_lines("\u2013", reason if isinstance(reason, str) and reason else None)
    if row["scope"] == "per_task":
        low, high = row.get("ci_low"), row.get("ci_high")
        detail = None if is_missing(low) or is_missing(high) else f"[{low:.2f}, {high:.2f}]"
    else:
        p_value = row.get("p_value")
        detail = None if is_missing(p_value) else ("p < 0.001" if p_value < 0.001 else f"p = {p_value:.3f}")
    return two_lines(number(value, 2), detail)


def _correlation_rows(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[tuple[str, str, Callable[[Any], str]]]]:
    """One row per metric (and normalization): cells already HTML, and the table's columns."""
    frame = frame.assign(normalization=frame["normalization"].fillna("").astype(str))
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for _, row in frame.iterrows():
        entry = rows.setdefault((str(row["metric"]), row["normalization"]),
                                {"metric": str(row["metric"]), "normalization": row["normalization"]})
        entry[f"{row['scope']}_{row['method']}"] = _correlation_cell(row)
        if row["scope"] == "per_task" and np.isfinite(row["n_tasks"]):
            entry["tasks"] = max(int(row["n_tasks"]), entry.get("tasks", 0))
        if "n_layers" in row.index and not is_missing(row["n_layers"]):
            entry[f"{row['scope']}_layers"] = max(int(row["n_layers"]), entry.get(f"{row['scope']}_layers", 0))
    order = {name: index for index, name in enumerate(order_metrics(key[0] for key in rows))}
    table_rows = pd.DataFrame(sorted(rows.values(), key=lambda entry: order[entry["metric"]]))
    columns: list[tuple[str, str, Callable[[Any], str]]] = [
        ("metric", "metric", lambda value: escape(metric_label(str(value)))),
        ("normalization", "normalization", escape),
    ]
    for scope in ("per_task", "average_curve"):
        methods = _present_methods(frame, scope)
        columns += [(f"{scope}_{method}", _METHOD_NAMES[method], lambda value: value if isinstance(value, str) else "")
                    for method in methods]
        if methods and scope == "per_task":
            columns.append(("tasks", "n\ntasks", formatter(0)))
        if methods:
            columns.append((f"{scope}_layers", "n\nlayers", formatter(0)))
    return table_rows, columns


def _correlation_groups(frame: pd.DataFrame) -> list[tuple[str, int]]:
    groups: list[tuple[str, int]] = [("", 2)]
    for scope, label, extra in (("per_task", "each task, mean over tasks [95% interval]", 2),
                                ("average_curve", "task-averaged curve (permutation p)", 1)):
        methods = _present_methods(frame, scope)
        if methods:
            groups.append((label, len(methods) + extra))
    return groups


# ---------------------------------------------------------------------------------------- examples


def examples_section(run: RunData, summary: Summary, found: Sequence[tuple[int | None, str]],
                     missing_hint: str) -> Section:
    """A few of the run's texts, each with its prompt entropy at the marked layers.

    ``found``: (prompt index or None, text); ``missing_hint`` says how examples get stored.
    """
    if not found:
        return section("examples", "Example texts", note(f"No example texts stored with this run ({missing_hint})."))
    values = run.prompt_values
    layers: dict[int, str] = {}
    for layer, role in ((summary.chosen_layer, headline_label(run, summary) or "label-free"),
                        (summary.best_layer, "best with labels"), (summary.last_layer, "last")):
        if layer is not None:
            layers[layer] = f"{layers[layer]}, {role}" if layer in layers else str(role)
    items: list[str] = []
    for index, text in found:
        shown = text if len(text) <= MAX_EXAMPLE_CHARS else text[:MAX_EXAMPLE_CHARS] + "\u2026"
        meta: list[str] = []
        if index is not None:
            meta.append(f"text #{index}")
            if not values.empty and "prompt_index" in values.columns:
                mine = values[(values["prompt_index"] == index) & (values["metric"] == "prompt_entropy")]
                shown_values = []
                for layer, role in layers.items():
                    hit = mine.loc[mine["layer"] == layer, "value"]
                    if len(hit):
                        shown_values.append(f"{number(hit.iloc[0], 3)} at layer {layer} ({role})")
                if shown_values:
                    meta.append("prompt entropy " + ", ".join(shown_values))
        meta.append(f"{len(text)} characters")
        separator = " \u00b7 "
        items.append(f'<li><div class="text">{escape(shown)}</div><div class="meta">{escape(separator.join(meta))}</div></li>')
    return section("examples", "Example texts", f'<ul class="examples">{"".join(items)}</ul>')


# ---------------------------------------------------------------------------------------- experiments


def _normalized_name(name: str) -> str:
    return "".join(character for character in name.lower() if character.isalnum())


def _experiment_images(directory: Path, experiment: str, plots_dir: Path) -> list[Path]:
    """PNG files in ``directory`` (two levels deep) whose name or folder names the experiment.

    The report's own generic experiment plots (``<plots_dir>/experiment_*.png``) are not counted:
    they are redrawn when an experiment has no plot of its own.
    """
    key = _normalized_name(experiment)
    if not key:
        return []
    found: list[Path] = []
    for pattern in ("*.png", "*/*.png", "*/*/*.png"):
        for path in sorted(directory.glob(pattern)):
            if path.parent == plots_dir and path.name.startswith("experiment_"):
                continue
            names = [path.stem, *(parent.name for parent in path.relative_to(directory).parents if parent.name)]
            if any(key in _normalized_name(name) for name in names):
                found.append(path)
    return found[:MAX_EXPERIMENT_IMAGES]


def experiments_section(run: RunData, plots_dir: Path) -> Section | None:
    """The further experiments stored in the run's directory, with their plots (None when there are none)."""
    frame = run.experiments
    if frame is None or frame.empty:
        return None
    runs = run.runs.set_index("run_id") if not run.runs.empty else pd.DataFrame()
    parts: list[str] = ['<p class="caption">Further experiments (paper section 7) stored in this directory.</p>']
    for experiment, rows in frame.groupby("experiment", sort=True):
        models = []
        for run_id in rows["run_id"].unique():
            model = runs.loc[run_id, "model_id"] if run_id in runs.index else None
            models.append(str(model) if model else str(run_id))
        conditions = rows["condition"].dropna().astype(str).unique() if "condition" in rows.columns else []
        keys = rows["key"].dropna().astype(str).unique()
        layers = rows["layer"].dropna().unique() if "layer" in rows.columns else []
        facts = [
            ("Runs", escape(", ".join(dict.fromkeys(models)))),
            ("Conditions", escape(shorten(conditions))),
            ("Values", escape(shorten(keys))),
            ("Layers", escape(len(layers))),
            ("Rows", escape(len(rows))),
        ]
        parts.append(f"<h3>{escape(experiment)}</h3>{key_value(facts)}")
        images = _experiment_images(run.directory, str(experiment), plots_dir)
        if not images:
            generated = _experiment_plot(rows, str(experiment), plots_dir)
            images = [generated] if generated is not None else []
        for path in images:
            parts.append(image(path, f"{experiment}: {path.name}", escape(path.name)))
        if not images:
            parts.append(note("No plot for this experiment (no per-layer values and no PNG file in the directory)."))
    return section("experiments", "Experiments", "".join(parts))


def _experiment_plot(rows: pd.DataFrame, experiment: str, plots_dir: Path) -> Path | None:
    """A generic plot of an experiment's per-layer values: value per layer, one line per condition."""
    data = rows.dropna(subset=["layer"]) if "layer" in rows.columns else rows.iloc[0:0]
    if data.empty:
        return None
    keys = list(dict.fromkeys(data["key"].astype(str)))[:6]
    data = data[data["key"].astype(str).isin(keys)].copy()
    data["condition"] = data["condition"].fillna("all") if "condition" in data.columns else "all"
    if data["run_id"].nunique() > 1:
        data["condition"] = data["run_id"].str[:8] + " " + data["condition"].astype(str)
    try:
        return plots.plot_lines_by_condition(
            data, "layer", "value", "condition", plots_dir / f"experiment_{_normalized_name(experiment)}.png",
            facet="key" if len(keys) > 1 else None, title=experiment, xlabel="layer",
            ylabel=keys[0] if len(keys) == 1 else "value", hue_label="condition",
        )
    except LayerscopeError as error:
        logger.warning("experiment %s: no plot: %s", experiment, error)
        return None


# ---------------------------------------------------------------------------------------- the run itself


def config_section(run: RunData) -> Section:
    """What the run did (read from the run) and what it was asked to do (its configuration)."""
    rows: list[tuple[str, str]] = [("Run id", escape(run.run_id)), ("Status", escape(run.info.get("status"))),
                                   ("Model", escape(run.model))]
    if run.revision:
        rows.append(("Revision", escape(run.revision)))
    if run.dataset:
        rows.append(("Text source", escape(run.dataset)))
    n_texts, counts = texts_used(run)
    skipped = run.skipped
    empty = skipped.get("empty_texts") if isinstance(skipped.get("empty_texts"), (int, float)) else None
    if n_texts is not None:
        rows.append(("Texts used", escape(f"{n_texts:,}" + (f" (+ {int(empty):,} empty, skipped)" if empty else ""))))
    if run.info.get("data_hash"):
        rows.append(("Text content hash", escape(run.info.get("data_hash"))))
    rows.append(("Skipped", escape(_skipped_text(skipped))))
    rows.append(("layerscope version", escape(run.info.get("layerscope_version"))))
    started, finished = timestamp(run.info.get("created_at")), timestamp(run.info.get("finished_at"))
    if started:
        rows.append(("Started (UTC)", escape(started.strftime("%Y-%m-%d %H:%M:%S"))))
    if finished:
        rows.append(("Finished (UTC)", escape(finished.strftime("%Y-%m-%d %H:%M:%S"))))
    if started and finished:
        rows.append(("Wall time", escape(duration((finished - started).total_seconds()))))
    timings = run.config.get("timings")
    if isinstance(timings, Mapping) and timings:
        rows.append(("Timings", escape(", ".join(
            f"{key}: {duration(float(value)) if isinstance(value, (int, float)) else value}"
            for key, value in timings.items()))))
    if run.info.get("error"):
        rows.append(("Error", escape(run.info.get("error"))))
    body = "<h3>What the run did</h3>" + key_value(rows) + _texts_table(counts)
    typed = run.typed_config
    if typed is not None:
        requested = [(label, escape(value)) for label, value in _requested(typed) if label not in ("Model", "Revision")]
        body += ('<h3>Configuration (as requested)</h3><p class="caption">What the run was asked to do; the counts '
                 "above are what it did.</p>" + key_value(requested))
    full = json.dumps(run.config, indent=2, sort_keys=True, default=str, ensure_ascii=False)
    body += f"<details><summary>Full configuration (JSON)</summary><pre>{escape(full)}</pre></details>"
    return section("configuration", "Run configuration", body)


def _requested(typed: Config) -> list[tuple[str, str]]:
    """The configuration's report rows; an analysis' extra text source says that it is one.

    ``analyze`` takes its texts from the tasks; its ``dataset`` (with its limit) only adds a source, so
    a limit there must not read as the number of texts of the run.
    """
    rows = typed.describe()
    extra = getattr(typed, "dataset", None)
    if typed.kind == "analysis" and isinstance(extra, Config):
        block = extra.describe()
        for start in range(len(rows) - len(block) + 1):
            if rows[start:start + len(block)] == block:
                rows[start:start + len(block)] = [(f"{label} (extra text source)", value) for label, value in block]
                break
    return list(dict.fromkeys(rows))  # nested configurations repeat some rows (the seed)


def _skipped_text(skipped: Mapping[str, Any]) -> str:
    """``"2 (empty_texts: 2)"``, or ``"none"`` when every count is zero or empty."""
    shown = {key: value for key, value in skipped.items() if value not in (0, None, "", {}, [])}
    if not shown:
        return "none"
    total = sum(int(value) for value in shown.values() if isinstance(value, (int, float)))
    return f"{total} ({plain(shown)})"


def _texts_table(counts: pd.DataFrame) -> str:
    """Texts each metric was computed on, per text set (the run's metric rows)."""
    if counts.empty:
        return ""
    metrics = order_metrics(counts["metric"].astype(str).unique())
    wide = counts.pivot_table(index="dataset", columns="metric", values="n_used", aggfunc="max", sort=False)
    wide["texts"] = counts.groupby("dataset", sort=False)["n_texts"].max()
    wide = wide.reset_index()
    wide = wide.assign(_first=~wide["dataset"].isin([ALL_TEXTS, ""])).sort_values(["_first", "dataset"], kind="stable")
    columns: list[tuple[str, str, Callable[[Any], str]]] = [
        ("dataset", "text set", lambda value: escape(_set_name(str(value)))),
        ("texts", "texts", formatter(0)),
    ]
    columns += [(metric, metric_label(metric), formatter(0)) for metric in metrics]
    return ("<h3>Texts per metric and text set</h3>"
            '<p class="caption">As the run recorded them (largest count over layers). Invariance metrics '
            "(InfoNCE, DiME, LiDAR) see a seeded subset of each set given augmented views; token metrics skip texts "
            "where they are undefined (curvature needs 3 tokens).</p>"
            + table(wide, columns, text_columns=["dataset"]))
