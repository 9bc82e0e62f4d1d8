"""One summary of a run: which layer, and why (what ``analyze`` prints and the report shows).

:func:`summarize` derives, from a run's long metric table and its task scores, the per-layer table,
the best layer with labels, the layer chosen without labels, the Table-2-style selection table and
the metric-score correlations. ``analyze`` and the report both call it, so they cannot disagree.

Scores whose rows carry bootstrap resamples (``analyze --bootstrap N``, ``select``) also give each
layer's task-averaged score an interval and say whether the best layer beats the last beyond the noise
(:mod:`layerscope.evaluate.uncertainty`).

Metrics computed on several text sets (``analyze``: each task's own texts, plus all texts together
under :data:`ALL_TEXTS`) are summarised per layer and used for the headline label-free choice on the
all-texts set; the selection table and the per-task correlations use each task's own set.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from layerscope.analysis.by_type import best_layers_by_type, type_columns
from layerscope.analysis.correlation import CORRELATION_METHODS, correlate
from layerscope.analysis.rules import MetricRule, SelectionRule
from layerscope.analysis.selection import selection_table
from layerscope.analysis.tables import infer_last_layer, metric_datasets, per_layer_table
from layerscope.errors import LayerscopeError
from layerscope.evaluate.intervals import BestVersusLast, best_versus_last, has_bootstrap, layer_intervals
from layerscope.metrics.registry import metric_label

__all__ = ["ALL_TEXTS", "Summary", "reference_metrics", "summarize"]

#: The ``dataset`` label of metrics computed on the union of a run's text sets.
ALL_TEXTS = "all"


@dataclass
class Summary:
    """Derived tables and choices of one run.

    Attributes
    ----------
    per_layer : pandas.DataFrame or None
        :func:`~layerscope.analysis.per_layer_table` of the reference metrics and the scores, with
        one ``score_<type>`` column per task type (:mod:`layerscope.analysis.by_type`).
    last_layer : int or None
        The model's last layer L.
    best_layer : int or None
        Layer with the best task-averaged score (labels).
    chosen_layer : int or None
        The label-free choice (a rule of :mod:`layerscope.analysis.choice` on the all-texts set).
    chosen : SelectionRule or None
        The rule that chose it; ``chosen_rule``, ``chosen_label``, ``chosen_metric``... describe it.
    selection : pandas.DataFrame or None
        :func:`~layerscope.analysis.selection_table` (needs scores).
    correlations : pandas.DataFrame or None
        :func:`~layerscope.analysis.correlate` (needs metrics and scores).
    intervals : pandas.DataFrame or None
        With bootstrapped scores: per layer the task-averaged score with its interval and its paired
        difference from the last layer (:func:`~layerscope.evaluate.uncertainty.layer_intervals`).
    verdict : BestVersusLast or None
        With bootstrapped scores: whether the best layer beats the last beyond the noise.
    recipes : pandas.DataFrame or None
        The run's task scores under recipe sets (``analyze --recipes``; one row per set and task, see
        :mod:`layerscope.analysis.recipe_runs`); their rows are in ``selection`` too (kind ``recipe``).
    recipe_types : pandas.DataFrame or None
        :func:`~layerscope.analysis.recipe_runs.recipe_type_table`: each set against the last layer per type.
    chosen_recipe : str or None
        The recipe set that is the answer without labels (the one ``--recipes auto`` stood for, with the
        default label-free layer rule); None: the answer is ``chosen_layer``.
    notes : list of str
        Things the reader should know (incomplete coverage, analyses that could not run).
    """

    per_layer: pd.DataFrame | None = None
    last_layer: int | None = None
    best_layer: int | None = None
    chosen_layer: int | None = None
    chosen: SelectionRule | None = None
    selection: pd.DataFrame | None = None
    correlations: pd.DataFrame | None = None
    intervals: pd.DataFrame | None = None
    verdict: BestVersusLast | None = None
    recipes: pd.DataFrame | None = None
    recipe_types: pd.DataFrame | None = None
    chosen_recipe: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def chosen_rule(self) -> str | None:
        """The rule as ``--select-by`` text (``dime``, ``depth:0.75``)."""
        from layerscope.analysis.choice import rule_spec

        return None if self.chosen is None else rule_spec(self.chosen)

    @property
    def chosen_metric(self) -> str | None:
        """The metric, when the rule is one metric's extreme."""
        return self.chosen.metric if isinstance(self.chosen, MetricRule) else None

    @property
    def chosen_higher_is_better(self) -> bool | None:
        """Its direction, when the rule is one metric's extreme."""
        return self.chosen.resolved_direction == "max" if isinstance(self.chosen, MetricRule) else None

    @property
    def chosen_uses_metrics(self) -> bool:
        """Whether the rule reads metrics (a fixed depth does not)."""
        return self.chosen is None or bool(self.chosen.metrics_used())

    @property
    def last_by_default(self) -> bool:
        """The choice is the last layer because the default found no label-free rule that held up (its record)."""
        from layerscope.analysis.choice import held_out_record

        return self.chosen_rule == "last" == (held_out_record() or {}).get("rule")

    @property
    def chosen_label(self) -> str | None:
        """E.g. ``"min DiME"``, ``"depth 75%"``."""
        if self.chosen is None:
            return None
        if self.chosen_metric is None:
            return self.chosen.name.removesuffix(" on all texts")
        return f"{'max' if self.chosen_higher_is_better else 'min'} {metric_label(self.chosen_metric)}"

    def label_free_loses(self) -> float | None:
        """Points by which the label-free layer trails the last layer on the task average (None: it does not)."""
        chosen, last = self.score_at(self.chosen_layer), self.score_at(self.last_layer)
        if chosen is None or last is None or chosen >= last:
            return None
        return last - chosen

    def recipe_score(self, recipe_set: str | None) -> tuple[float, float] | None:
        """A recipe set's task average (x 100) and its gain over the last layer, from Table 2 (None: not scored)."""
        if recipe_set is None or self.selection is None or self.recipes is None:
            return None
        sources = self.recipes.loc[self.recipes["recipe_set"] == recipe_set, "source"]
        if sources.empty:
            return None
        from layerscope.analysis.recipe_runs import recipe_rule

        hit = self.selection[self.selection["rule"] == recipe_rule(recipe_set, str(sources.iloc[0]))]
        return None if hit.empty else (float(hit["average"].iloc[0]), float(hit["gain_vs_last"].iloc[0]))

    def chosen_recipe_score(self) -> tuple[str, float, float] | None:
        """The run's answer without labels when it is a recipe set: the set, its task average (x 100) and
        its gain over the last layer (None: the answer is a layer)."""
        scored = self.recipe_score(self.chosen_recipe)
        return None if scored is None else (str(self.chosen_recipe), *scored)

    def score_at(self, layer: int | None) -> float | None:
        """Task-averaged score (x 100) at ``layer``, if known."""
        if layer is None or self.per_layer is None or "avg_score" not in self.per_layer.columns:
            return None
        hit = self.per_layer.loc[self.per_layer["layer"] == layer, "avg_score"]
        return float(hit.iloc[0]) if len(hit) and np.isfinite(hit.iloc[0]) else None

    @property
    def task_types(self) -> list[str]:
        """Task types of the run's scored tasks (MTEB's ``type``), in the per-layer table's order."""
        return [] if self.per_layer is None else list(type_columns(self.per_layer).values())

    @property
    def best_layer_by_type(self) -> dict[str, int]:
        """Each task type's best layer (its highest mean score x 100; ties: the shallower)."""
        return best_layers_by_type(self.per_layer)

    def depth_of(self, layer: int | None) -> float | None:
        """Depth % of ``layer``."""
        if layer is None or self.last_layer is None:
            return None
        return 100.0 * layer / self.last_layer if self.last_layer > 0 else 0.0


def reference_metrics(metrics: pd.DataFrame, all_texts: str = ALL_TEXTS) -> tuple[pd.DataFrame, str | None]:
    """The metric rows a run is summarised by, and their text set.

    The all-texts set when the table has several sets including it; the only set when there is one;
    otherwise every row (per-layer values are then averaged over the sets, with a note).
    """
    datasets = metric_datasets(metrics)
    if len(datasets) > 1 and all_texts in datasets:
        return metrics[metrics["dataset"] == all_texts], all_texts
    if len(datasets) <= 1:
        return metrics, datasets[0] if datasets else None
    return metrics, None


def _default_select_by(present: Sequence[str]) -> str | None:
    from layerscope.analysis.choice import FALLBACK_SPEC
    from layerscope.metrics.registry import names

    ordered = [FALLBACK_SPEC, *names()]  # the paper's metric first ("auto" names a rule, never a metric)
    return next((name for name in ordered if name in present), None)


def summarize(
    metrics: pd.DataFrame | None,
    scores: pd.DataFrame | None,
    *,
    select_by: str | None = None,
    task_to_dataset: Mapping[str, str] | None = None,
    all_texts: str = ALL_TEXTS,
    correlation_methods: Sequence[str] = CORRELATION_METHODS,
    recipe_scores: pd.DataFrame | None = None,
) -> Summary:
    """Per-layer table, best and label-free layers, selection table and correlations of a run.

    Parameters
    ----------
    metrics : pandas.DataFrame or None
        Long per-layer metrics (with ``dataset`` when computed on several text sets).
    scores : pandas.DataFrame or None
        Per-layer task scores.
    select_by : str, optional
        The rule of the headline label-free choice (``--select-by`` text, see
        :mod:`layerscope.analysis.choice`; default ``auto``). When the run lacks its metrics, the
        first registered metric it has decides instead (with a note).
    task_to_dataset : mapping, optional
        Task -> the metric ``dataset`` computed on its texts (default: the task's name).
    all_texts : str
        Name of the all-texts set.
    correlation_methods : sequence of str
        Correlation methods (distance correlation is left out, with a note, if ``dcor`` is missing).
    recipe_scores : pandas.DataFrame, optional
        Task scores under recipe sets (:func:`~layerscope.analysis.recipe_runs.score_recipe_sets`): rows of
        Table 2, the per-type comparison with the last layer, and possibly the label-free answer.

    Returns
    -------
    Summary
        Analyses that cannot run (e.g. no scores) are left None with a note.
    """
    summary = Summary()
    metrics = metrics if metrics is not None and not metrics.empty else None
    scores = scores if scores is not None and not scores.empty else None
    if metrics is None and scores is None:
        summary.notes.append("This run stored no per-layer metrics and no task scores.")
        return summary
    reference, source = (None, None) if metrics is None else reference_metrics(metrics, all_texts)
    if metrics is not None and source is None:
        summary.notes.append("Per-layer metric values are averaged over the run's text sets.")
    summary.per_layer = per_layer_table(reference, scores)
    summary.last_layer = infer_last_layer(*(frame for frame in (metrics, scores) if frame is not None))
    summary.notes.extend(f"Task scores: {note}." for note in summary.per_layer.attrs.get("score_grid", {}).get("notes", []))
    table = summary.per_layer
    if scores is not None and "avg_score" in table.columns and table["avg_score"].notna().any():
        summary.best_layer = int(table.loc[table["avg_score"].idxmax(), "layer"])

    _choose(summary, reference, scores, select_by)

    if scores is not None and has_bootstrap(scores):
        try:
            summary.intervals = layer_intervals(scores)
            summary.verdict = best_versus_last(summary.intervals)
        except LayerscopeError as error:
            summary.notes.append(f"No score intervals: {error}")

    if scores is not None:
        mapping = dict(task_to_dataset) if isinstance(task_to_dataset, Mapping) else None
        try:
            summary.selection = selection_table(metrics, scores, task_to_dataset=mapping)
        except LayerscopeError as error:
            summary.notes.append(f"Selection table not available: {error}")
        if metrics is not None:
            summary.correlations = _correlations(metrics, scores, mapping, correlation_methods, summary.notes)
        if recipe_scores is not None and not recipe_scores.empty:
            _add_recipes(summary, scores, recipe_scores)
    return summary


def _add_recipes(summary: Summary, scores: pd.DataFrame, recipe_scores: pd.DataFrame) -> None:
    """Recipe rows in Table 2, the per-type comparison, and the recipe set answering without labels."""
    from layerscope.analysis.recipe_runs import headline_recipe, recipe_type_table, with_recipe_rows

    summary.recipes = recipe_scores
    if summary.selection is None:
        summary.notes.append("Recipe scores are stored but not shown: Table 2 could not be built.")
        return
    summary.selection = with_recipe_rows(summary.selection, recipe_scores)
    summary.recipe_types = recipe_type_table(recipe_scores, scores, summary.selection)
    summary.chosen_recipe = headline_recipe(recipe_scores, summary.chosen_rule)


def _choose(summary: Summary, reference: pd.DataFrame | None, scores: pd.DataFrame | None,
            select_by: str | None) -> None:
    """The headline label-free choice: the ``select_by`` rule (default: ``auto``) on the all-texts metrics."""
    from layerscope.analysis.choice import AUTO, choose_layer, parse_rule

    try:
        rule = parse_rule(select_by or AUTO)
    except LayerscopeError as error:
        summary.notes.append(f"No label-free choice: {error}")
        return
    present = set() if reference is None else set(reference["metric"].dropna().astype(str))
    missing = [metric for metric in rule.metrics_used() if metric not in present]
    if missing and reference is not None:
        fallback = _default_select_by(sorted(present))
        summary.notes.append(f"The run did not compute {', '.join(missing)}: the headline label-free choice uses "
                             f"{fallback} instead of {rule.name}.")
        if fallback is None:
            return
        rule = parse_rule(fallback)
    frame = reference
    if frame is None or rule.metrics_used() == ():  # depth rules need only the layers (scores will do)
        frame = frame if frame is not None else scores.assign(metric="(layers)", value=0.0)
    summary.chosen_layer = choose_layer(frame, rule, last_layer=summary.last_layer)
    if summary.chosen_layer is None:
        summary.notes.append(f"No label-free choice: {rule.name} found no layer with its metrics.")
        return
    summary.chosen = rule


def _correlations(metrics: pd.DataFrame, scores: pd.DataFrame, mapping: dict[str, str] | None,
                  methods: Sequence[str], notes: list[str]) -> pd.DataFrame | None:
    try:
        return correlate(metrics, scores, list(methods), task_to_dataset=mapping)
    except LayerscopeError as error:
        if "dcor" not in str(error):
            notes.append(f"Correlations not available: {error}")
            return None
        notes.append(f"Distance correlation left out: {error}")
    try:
        return correlate(metrics, scores, [method for method in methods if method != "dcor"],
                         task_to_dataset=mapping)
    except LayerscopeError as error:
        notes.append(f"Correlations not available: {error}")
        return None
