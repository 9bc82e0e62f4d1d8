"""Choosing a layer, with and without labels (the paper's Table 2, SPEC section 6).

Rules compared, each applied per task and scored by the task's own ``main_score`` at the chosen
layer, then averaged over tasks (x 100):

``best layer (labels)``
    The single layer with the highest task-averaged score: the paper's "best" column.
``best layer per type (labels)``
    Each task type's own best layer (the highest mean over that type's tasks), for every task of
    the type: shows whether types prefer different layers. Only when the tasks are of two types
    or more.
``best layer per task (labels)``
    Each task's own best layer: an oracle upper bound.
``last layer``
    The usual default.
``depth 50%``, ``depth 70%``
    Label-free depth baselines: layer ``floor(p * L + 0.5)`` (round half up) of a model whose
    last layer is L; for L = 24 that is layers 12 and 17, for L = 30 layers 15 and 21. When that
    layer has no scores (partial coverage) the nearest scored layer is used (ties: the deeper).
``min <metric>`` / ``max <metric>``
    For each task, the layer where the metric computed on that task's own texts is lowest (or
    highest, per the metric's direction). Tasks whose texts have no metric use the last layer
    (the authors' rule for their pair-classification tasks) unless ``fallback_dataset`` names a
    text source to use instead; when the metric table has a single text source (or no
    ``dataset`` column), that profile serves every task.

Every rule chooses among the same layers: those of the complete score grid (see
:func:`layerscope.analysis.tables.score_grid`), so that scores exist for every choice.
Metric ties go to the shallower layer; NaN metric values are ignored.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from layerscope.analysis.by_type import BEST_PER_TYPE_RULE
from layerscope.analysis.tables import (
    ScoreGrid,
    asked_normalization,
    infer_last_layer,
    metric_datasets,
    metric_profile,
    profile_from_rows,
    require_columns,
    score_grid,
)
from layerscope.errors import LayerscopeError, unknown

__all__ = [
    "METRIC_ALIASES",
    "depth_layer",
    "metric_directions",
    "select_layer",
    "select_layers",
    "selection_table",
]

logger = logging.getLogger(__name__)

#: The authors' metric names -> layerscope's.
METRIC_ALIASES: dict[str, str] = {
    "entropy_sentence": "prompt_entropy",
    "entropy_dataset": "dataset_entropy",
}

DEPTH_BASELINES: tuple[float, ...] = (0.5, 0.7)

_RULE_ORDER = {"labels": 0, "oracle": 1, "baseline": 2, "depth": 3, "metric": 4}


def canonical_metric(name: str) -> str:
    """layerscope's name of a metric given under the authors' name (or unchanged)."""
    return METRIC_ALIASES.get(name, name)


def __getattr__(name: str) -> object:
    if name == "DEFAULT_HIGHER_IS_BETTER":  # deprecated: the metrics registry is the one source
        import warnings

        from layerscope.metrics.registry import available

        warnings.warn("DEFAULT_HIGHER_IS_BETTER is deprecated; use layerscope.metrics.get(name).higher_is_better",
                      DeprecationWarning, stacklevel=2)
        return {spec.name: spec.higher_is_better for spec in available()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def metric_directions(
    metrics: Iterable[str], directions: Mapping[str, bool] | None = None, *, strict: bool = True
) -> dict[str, bool]:
    """Whether higher is better, for each metric.

    Looked up in ``directions`` first, then in the metrics registry; the authors' names
    (``entropy_dataset``...) are understood.

    Parameters
    ----------
    metrics : iterable of str
        Metric names.
    directions : Mapping of str to bool, optional
        Explicit directions (metric -> higher is better).
    strict : bool, default True
        Raise for a metric with no known direction; otherwise leave it out.

    Returns
    -------
    dict of str to bool
    """
    from layerscope.metrics.registry import find

    explicit = dict(directions or {})
    found: dict[str, bool] = {}
    for metric in metrics:
        canonical = canonical_metric(metric)
        spec = find(canonical)
        if metric in explicit or canonical in explicit:
            found[metric] = bool(explicit.get(metric, explicit.get(canonical)))
        elif spec is not None:
            found[metric] = spec.higher_is_better
        elif strict:
            raise LayerscopeError(
                f"no known direction for metric '{metric}': pass directions={{'{metric}': True}} "
                "(higher is better) or False"
            )
        else:
            logger.warning("skipping metric '%s': no known direction (pass directions=)", metric)
    return found


def depth_layer(fraction: float, last_layer: int, candidates: Sequence[int] | None = None) -> int:
    """The layer at ``fraction`` of the depth: ``floor(fraction * L + 0.5)`` (round half up).

    Parameters
    ----------
    fraction : float
        Depth in [0, 1].
    last_layer : int
        L, the model's last layer.
    candidates : sequence of int, optional
        Allowed layers; the nearest to the target is returned (ties: the deeper one).

    Returns
    -------
    int
    """
    if not 0.0 <= fraction <= 1.0:
        raise LayerscopeError(f"depth fraction must lie in [0, 1], got {fraction}")
    # the small epsilon keeps e.g. 0.7 * 30 = 20.999999999999996 from rounding the wrong way
    target = int(math.floor(fraction * last_layer + 0.5 + 1e-9))
    if not candidates:
        return target
    return int(min(candidates, key=lambda layer: (abs(layer - target), -layer)))


def _select_from_profile(
    profile: pd.Series, higher_is_better: bool, candidates: Sequence[int] | None
) -> int | None:
    if candidates is not None:
        profile = profile[profile.index.isin(list(candidates))]
    if profile.empty:
        return None
    values = profile.to_numpy(dtype=float)
    position = int(np.argmax(values)) if higher_is_better else int(np.argmin(values))
    return int(profile.index[position])


def select_layer(
    metrics_df: pd.DataFrame,
    by: str = "dime",
    *,
    normalization: str | None = None,
    dataset: str | None = None,
    higher_is_better: bool | None = None,
    directions: Mapping[str, bool] | None = None,
    layers: Sequence[int] | None = None,
) -> int:
    """Choose a layer without labels: where metric ``by`` is best.

    Parameters
    ----------
    metrics_df : pandas.DataFrame
        Long per-layer metrics of one model (``layer, metric, value`` + ``normalization``,
        ``dataset``).
    by : str, default "dime"
        Metric to optimise.
    normalization : str, optional
        Defaults to the metric's default normalization (``maxEntropy``, else ``raw``).
    dataset : str, optional
        Text source, when the table holds several.
    higher_is_better : bool, optional
        Direction; by default from ``directions`` or the metrics registry (see :func:`metric_directions`).
    directions : Mapping of str to bool, optional
        Explicit directions by metric name.
    layers : sequence of int, optional
        Candidate layers (default: all with a finite value).

    Returns
    -------
    int
        The chosen layer (the shallowest one on ties).
    """
    require_columns(metrics_df, ("layer", "metric", "value"), "metrics table")
    present = sorted(metrics_df["metric"].dropna().astype(str).unique())
    name = by
    if name not in present:
        aliases = [
            alias for alias, canonical in METRIC_ALIASES.items() if canonical == by and alias in present
        ]
        if aliases:
            name = aliases[0]
        elif canonical_metric(by) in present:
            name = canonical_metric(by)
        else:
            raise unknown("metric", by, present)
    if higher_is_better is None:
        higher_is_better = metric_directions([name], directions)[name]
    profile = metric_profile(metrics_df, name, normalization=normalization, dataset=dataset)
    chosen = _select_from_profile(profile, higher_is_better, layers)
    if chosen is None:
        raise LayerscopeError(f"metric '{by}' has no finite value at the candidate layers")
    return chosen


def metric_profiles_for_tasks(
    metrics_df: pd.DataFrame,
    metric: str,
    normalization: str | None,
    tasks: Sequence[str],
    task_to_dataset: Mapping[str, str] | None,
    fallback_dataset: str | None,
) -> dict[str, tuple[pd.Series | None, str]]:
    """For each task: the metric profile on that task's texts (or the fallback) and its source.

    When the whole metric table has a single text source (or no ``dataset`` column), that
    profile serves every task. Otherwise a task uses the metric on its own dataset
    (``task_to_dataset``, default the task name), else on ``fallback_dataset``, else nothing
    (``(None, "")``).
    """
    rows = metrics_df[metrics_df["metric"] == metric]
    if normalization is not None and "normalization" in rows.columns:
        rows = rows[rows["normalization"] == normalization]
    profiles: dict[str, tuple[pd.Series | None, str]] = {}
    if len(metric_datasets(metrics_df)) <= 1:
        datasets = metric_datasets(rows)
        shared = metric_profile(rows, metric, normalization=normalization)
        source = datasets[0] if datasets else "shared"
        return {task: (shared, source) for task in tasks}
    cache = {
        str(dataset): profile_from_rows(group, metric)
        for dataset, group in rows.groupby("dataset", sort=True)
    }

    def profile_of(dataset: str) -> pd.Series:
        return cache[dataset]

    datasets = [dataset for dataset, profile in cache.items() if not profile.empty]
    mapping = dict(task_to_dataset or {})
    for task in tasks:
        own = mapping.get(task, task)
        if own in datasets:
            profiles[task] = (profile_of(own), own)
        elif fallback_dataset is not None and fallback_dataset in datasets:
            profiles[task] = (profile_of(fallback_dataset), fallback_dataset)
        else:
            profiles[task] = (None, "")
    return profiles


def select_layers(
    metrics_df: pd.DataFrame | None,
    scores_df: pd.DataFrame,
    *,
    metrics: Iterable[str] | None = None,
    normalization: str | Mapping[str, str] | None = None,
    directions: Mapping[str, bool] | None = None,
    both_directions: bool = False,
    task_to_dataset: Mapping[str, str] | None = None,
    fallback_dataset: str | None = None,
    depths: Sequence[float] = DEPTH_BASELINES,
    coverage: str = "layers",
    last_layer: int | None = None,
) -> pd.DataFrame:
    """The layer every selection rule chooses for every task, and the score it gets.

    Parameters
    ----------
    metrics_df : pandas.DataFrame or None
        Long per-layer metrics of one model; ``None`` for the label-using and depth rules only.
    scores_df : pandas.DataFrame
        Per-layer task scores of the same model (``layer, task, main_score``, + ``task_type``).
    metrics : iterable of str, optional
        Metrics to select by (default: every metric in ``metrics_df`` with a known direction).
    normalization : str or Mapping, optional
        Normalization per metric (default: each metric's default normalization).
    directions : Mapping of str to bool, optional
        Higher-is-better overrides (see :func:`metric_directions`).
    both_directions : bool, default False
        Also add the opposite rule (``max`` for a lower-is-better metric), to check a direction.
    task_to_dataset : Mapping of str to str, optional
        Task -> the metric ``dataset`` computed on its texts (default: the task name itself).
    fallback_dataset : str, optional
        Text source whose metric serves tasks without their own; by default they get the last layer.
    depths : sequence of float, default (0.5, 0.7)
        Depth baselines as fractions of the model's depth.
    coverage : {"layers", "tasks"}, default "layers"
        How incomplete scores are made complete (see ``score_grid``).
    last_layer : int, optional
        The model's last layer L (default: inferred from ``depth_pct`` or the largest layer).

    Returns
    -------
    pandas.DataFrame
        One row per (rule, task): ``rule, kind, metric, normalization, higher_is_better, task,
        task_type, layer, depth_pct, score, source, fallback``. ``score`` is ``main_score`` (0..1);
        ``source`` names the metric's text source; ``fallback`` marks tasks that had no metric.
        ``attrs["score_grid"]`` describes the coverage.
    """
    frames = [frame for frame in (scores_df, metrics_df) if frame is not None]
    if last_layer is None:
        last_layer = infer_last_layer(*frames)
    grid = score_grid(scores_df, coverage=coverage, last_layer=last_layer)
    if metrics_df is not None:
        require_columns(metrics_df, ("layer", "metric", "value"), "metrics table")
    records: list[dict[str, object]] = []

    def add_rule(
        rule: str,
        kind: str,
        choices: Mapping[str, int],
        *,
        metric: str | None = None,
        normalization: str | None = None,
        higher_is_better: bool | None = None,
        fallbacks: Mapping[str, bool] | None = None,
        sources: Mapping[str, str] | None = None,
    ) -> None:
        for task in grid.tasks:
            layer = choices[task]
            records.append(
                {
                    "rule": rule,
                    "kind": kind,
                    "metric": metric,
                    "normalization": normalization,
                    "higher_is_better": higher_is_better,
                    "task": task,
                    "task_type": grid.task_types[task],
                    "layer": int(layer),
                    "depth_pct": grid.depth(layer),
                    "score": float(grid.matrix.at[layer, task]),
                    "source": (sources or {}).get(task, ""),
                    "fallback": bool((fallbacks or {}).get(task, False)),
                }
            )

    average = grid.average
    best = int(average.index[int(np.argmax(average.to_numpy()))])
    add_rule("best layer (labels)", "labels", dict.fromkeys(grid.tasks, best))
    types = sorted(set(grid.task_types.values()))
    if len(types) > 1:  # with one type this is the best layer itself
        type_best = {task_type: int(grid.matrix[[task for task in grid.tasks if grid.task_types[task] == task_type]]
                                    .mean(axis=1).idxmax()) for task_type in types}
        add_rule(BEST_PER_TYPE_RULE, "oracle", {task: type_best[grid.task_types[task]] for task in grid.tasks})
    per_task_best = {task: int(grid.matrix[task].idxmax()) for task in grid.tasks}
    add_rule("best layer per task (labels)", "oracle", per_task_best)
    grid_last = grid.layers[-1]
    add_rule("last layer", "baseline", dict.fromkeys(grid.tasks, grid_last))
    for fraction in depths:
        layer = depth_layer(fraction, grid.last_layer, grid.layers)
        add_rule(f"depth {fraction * 100:g}%", "depth", dict.fromkeys(grid.tasks, layer))

    if metrics_df is not None and not metrics_df.empty:
        chosen_metrics = _chosen_metrics(metrics_df, metrics)
        found = metric_directions(chosen_metrics, directions, strict=metrics is not None)
        for metric in chosen_metrics:
            if metric not in found:
                continue
            norm = asked_normalization(metrics_df, metric, normalization)
            profiles = metric_profiles_for_tasks(
                metrics_df, metric, norm, grid.tasks, task_to_dataset, fallback_dataset
            )
            orientations = [found[metric], not found[metric]] if both_directions else [found[metric]]
            for higher in orientations:
                choices, fallbacks, sources = _metric_choices(profiles, higher, grid)
                add_rule(
                    f"{'max' if higher else 'min'} {canonical_metric(metric)}",
                    "metric",
                    choices,
                    metric=canonical_metric(metric),
                    normalization=norm,
                    higher_is_better=higher,
                    fallbacks=fallbacks,
                    sources=sources,
                )
    frame = pd.DataFrame.from_records(records)
    frame.attrs["score_grid"] = grid.describe()
    return frame


def _chosen_metrics(metrics_df: pd.DataFrame, metrics: Iterable[str] | None) -> list[str]:
    """The metrics to select by: those asked for (each must be in the table), else all present."""
    present = sorted(metrics_df["metric"].dropna().astype(str).unique())
    if metrics is None:
        return present
    chosen = list(metrics)
    for metric in chosen:
        if metric not in present:
            raise unknown("metric", metric, present)
    return chosen


def _metric_choices(
    profiles: Mapping[str, tuple[pd.Series | None, str]], higher: bool, grid: ScoreGrid
) -> tuple[dict[str, int], dict[str, bool], dict[str, str]]:
    """Per task: the layer where its metric profile is best (``higher``: the maximum), whether it fell
    back to the last scored layer (no profile), and the text source used."""
    choices: dict[str, int] = {}
    fallbacks: dict[str, bool] = {}
    sources: dict[str, str] = {}
    for task in grid.tasks:
        profile, source = profiles[task]
        layer = None if profile is None else _select_from_profile(profile, higher, grid.layers)
        if layer is None:
            layer, fallbacks[task], sources[task] = grid.layers[-1], True, "last layer (no metric)"
        else:
            sources[task] = source
        choices[task] = layer
    return choices, fallbacks, sources


def selection_table(
    metrics_df: pd.DataFrame | None,
    scores_df: pd.DataFrame,
    *,
    by_task_type: bool = True,
    **options: Any,
) -> pd.DataFrame:
    """Table 2 of the paper: average task score (x 100) of every layer-selection rule.

    Parameters
    ----------
    metrics_df : pandas.DataFrame or None
        Long per-layer metrics of one model.
    scores_df : pandas.DataFrame
        Per-layer task scores of the same model.
    by_task_type : bool, default True
        Add one column per task type (mean over that type's tasks, x 100).
    **options
        The options of :func:`select_layers`, which chooses the layers: ``metrics, normalization,
        directions, both_directions, task_to_dataset, fallback_dataset, depths, coverage, last_layer``.

    Returns
    -------
    pandas.DataFrame
        One row per rule: ``rule, kind, layer`` (nullable; set when every task uses the same
        layer), ``depth_pct`` (mean over tasks), ``average`` (x 100), ``gain_vs_last`` (points),
        ``n_tasks``, ``n_fallback`` and, with ``by_task_type``, one column per task type.
        Rows: labels, oracle, last layer, depth baselines, then metric rules by name.
        ``attrs["score_grid"]`` describes the coverage.

    Examples
    --------
    >>> table = selection_table(metrics, scores, task_to_dataset=mapping)    # doctest: +SKIP
    >>> print(format_table(table))                                           # doctest: +SKIP
    """
    chosen = select_layers(metrics_df, scores_df, **options)
    grid_facts = chosen.attrs.pop("score_grid", {})  # pandas deep-copies attrs into every group below
    rows: list[dict[str, object]] = []
    task_types = sorted(chosen["task_type"].unique()) if by_task_type else []
    for rule, group in chosen.groupby("rule", sort=False):
        layers = group["layer"].unique()
        row: dict[str, object] = {
            "rule": rule,
            "kind": group["kind"].iloc[0],
            "layer": int(layers[0]) if len(layers) == 1 else pd.NA,
            "depth_pct": float(group["depth_pct"].mean()),
            "average": 100.0 * float(group["score"].mean()),
            "n_tasks": len(group),
            "n_fallback": int(group["fallback"].sum()),
        }
        for task_type in task_types:
            row[task_type] = 100.0 * float(group.loc[group["task_type"] == task_type, "score"].mean())
        rows.append(row)
    table = pd.DataFrame.from_records(rows)
    last = table.loc[table["rule"] == "last layer", "average"].iloc[0]
    table.insert(table.columns.get_loc("average") + 1, "gain_vs_last", table["average"] - last)
    table["layer"] = table["layer"].astype("Int64")
    order = table["kind"].map(_RULE_ORDER)
    metric_rows = table["kind"] == "metric"
    table = (
        table.assign(_order=order, _name=table["rule"].where(metric_rows, ""))
        .sort_values(["_order", "_name"], kind="stable")
        .drop(columns=["_order", "_name"])
        .reset_index(drop=True)
    )
    table.attrs["score_grid"] = grid_facts
    return table
