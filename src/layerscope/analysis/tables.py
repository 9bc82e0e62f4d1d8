"""Shared table handling for the analysis: complete score grids, metric profiles, per-layer tables.

Input frames follow the data contracts of the other stages:

- per-layer metrics (long): ``layer, depth_pct, metric, normalization, value, n_used, n_skipped``
  and optionally ``dataset`` (the text source the metric was computed on);
- per-layer task scores: ``layer, depth_pct, task, task_type, main_score (0..1), scores``.

Only ``layer, metric, value`` and ``layer, task, main_score`` are required here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from layerscope.analysis.by_type import type_column
from layerscope.errors import LayerscopeError, unknown

__all__ = [
    "COVERAGE_POLICIES",
    "DEFAULT_NORMALIZATION_ORDER",
    "ScoreGrid",
    "default_normalization",
    "format_table",
    "infer_last_layer",
    "metric_profile",
    "per_layer_table",
    "score_grid",
]

logger = logging.getLogger(__name__)

#: Preferred normalization of a metric when none is asked for: the paper reports entropies with
#: ``maxEntropy``; metrics without normalizations (InfoNCE, curvature) use ``raw``.
DEFAULT_NORMALIZATION_ORDER: tuple[str, ...] = ("maxEntropy", "raw", "none")

#: ``"layers"``: keep every task, drop layers that lack any of them; ``"tasks"``: keep every
#: layer, drop tasks missing at any of them.
COVERAGE_POLICIES: tuple[str, ...] = ("layers", "tasks")


def require_columns(frame: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    """Raise a one-line error naming the columns ``frame`` lacks."""
    if not isinstance(frame, pd.DataFrame):
        raise LayerscopeError(f"{what} must be a pandas DataFrame, got {type(frame).__name__}")
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise LayerscopeError(
            f"{what} lacks column(s) {', '.join(missing)}; it has {', '.join(map(str, frame.columns))}"
        )


def infer_last_layer(*frames: pd.DataFrame | None) -> int:
    """The model's last layer index L (depth 100%).

    Read from ``depth_pct`` where a frame has it (L = layer * 100 / depth_pct on rows with
    depth_pct > 0), else the largest layer index seen in any frame.

    Parameters
    ----------
    *frames : pandas.DataFrame or None
        Frames with a ``layer`` column; ``None`` entries are ignored.

    Returns
    -------
    int
        The last layer index.
    """
    from_depth: list[int] = []
    largest: list[int] = []
    for frame in frames:
        if frame is None or frame.empty or "layer" not in frame.columns:
            continue
        largest.append(int(frame["layer"].max()))
        if "depth_pct" in frame.columns:
            rows = frame[pd.to_numeric(frame["depth_pct"], errors="coerce") > 0]
            if not rows.empty:
                estimates = (
                    rows["layer"].to_numpy(dtype=float) * 100.0 / rows["depth_pct"].to_numpy(dtype=float)
                )
                from_depth.append(int(np.rint(np.median(estimates))))
    if from_depth:
        return max(from_depth)
    if largest:
        return max(largest)
    raise LayerscopeError("cannot tell the model's last layer: no layer indices in the given tables")


def depth_percent(layer: int | float, last_layer: int) -> float:
    """Depth in percent of the model, 100 * layer / L (SPEC section 3)."""
    return 100.0 * float(layer) / last_layer if last_layer > 0 else 0.0


@dataclass(frozen=True)
class ScoreGrid:
    """A complete (layers x tasks) matrix of task scores: every cell present, no NaN.

    Attributes
    ----------
    matrix : pandas.DataFrame
        ``main_score`` values, index = layer (sorted), columns = task (sorted).
    task_types : dict of str to str
        Task -> task type (``"unknown"`` when the scores had no ``task_type``).
    last_layer : int
        The model's last layer L (depth 100%), which may lie beyond the grid's last layer.
    coverage : str
        Policy that made the grid complete (see :data:`COVERAGE_POLICIES`).
    dropped_layers, dropped_tasks : tuple
        Layers or tasks left out to make the grid complete.
    """

    matrix: pd.DataFrame
    task_types: dict[str, str]
    last_layer: int
    coverage: str
    dropped_layers: tuple[int, ...] = ()
    dropped_tasks: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())

    @property
    def layers(self) -> list[int]:
        """Layers of the grid, ascending."""
        return [int(layer) for layer in self.matrix.index]

    @property
    def tasks(self) -> list[str]:
        """Tasks of the grid, sorted."""
        return [str(task) for task in self.matrix.columns]

    @property
    def average(self) -> pd.Series:
        """Task-averaged score per layer (0..1)."""
        return self.matrix.mean(axis=1)

    def depth(self, layer: int | float) -> float:
        """Depth % of ``layer`` in the model."""
        return depth_percent(layer, self.last_layer)

    def describe(self) -> dict[str, object]:
        """Coverage facts, for logs, reports and ``DataFrame.attrs``."""
        return {
            "coverage": self.coverage,
            "layers": self.layers,
            "n_layers": len(self.layers),
            "n_tasks": len(self.tasks),
            "last_layer": self.last_layer,
            "dropped_layers": list(self.dropped_layers),
            "dropped_tasks": list(self.dropped_tasks),
            "notes": list(self.notes),
        }


def score_grid(
    scores_df: pd.DataFrame, *, coverage: str = "layers", last_layer: int | None = None
) -> ScoreGrid:
    """Build the complete layer x task score matrix that every average is taken over.

    Averages over tasks are only comparable between layers when every layer has the same tasks,
    so incomplete coverage is resolved first. With ``coverage="layers"`` (default) all tasks are
    kept and layers lacking any task are dropped; if no layer has every task, the ``"tasks"``
    policy is used instead (with a warning). With ``coverage="tasks"`` all layers are kept and only
    tasks present at every layer are averaged.

    Parameters
    ----------
    scores_df : pandas.DataFrame
        Columns ``layer, task, main_score`` (+ optional ``task_type``, ``depth_pct``); one model.
    coverage : {"layers", "tasks"}, default "layers"
        How to make the grid complete.
    last_layer : int, optional
        The model's last layer; inferred with :func:`infer_last_layer` when omitted.

    Returns
    -------
    ScoreGrid
    """
    require_columns(scores_df, ("layer", "task", "main_score"), "task scores")
    if coverage not in COVERAGE_POLICIES:
        raise unknown("coverage policy", coverage, COVERAGE_POLICIES)
    scores = scores_df[pd.notna(scores_df["main_score"])]
    if scores.empty:
        raise LayerscopeError("no task scores to analyse (the scores table is empty or all NaN)")
    duplicated = scores.duplicated(["layer", "task"])
    if duplicated.any():
        example = scores[duplicated].iloc[0]
        raise LayerscopeError(
            f"task scores hold several rows for layer {example['layer']}, task '{example['task']}': "
            "pass the scores of one model and run"
        )
    matrix = scores.pivot(index="layer", columns="task", values="main_score").astype(float).sort_index()
    matrix = matrix.reindex(sorted(matrix.columns), axis=1)
    matrix.index = matrix.index.astype(int)
    task_types = {str(task): "unknown" for task in matrix.columns}
    if "task_type" in scores.columns:
        task_types.update(
            {
                str(task): str(kind)
                for task, kind in scores.drop_duplicates("task")[["task", "task_type"]].itertuples(
                    index=False
                )
            }
        )
    last = infer_last_layer(scores_df) if last_layer is None else int(last_layer)

    notes: list[str] = []
    used = coverage
    complete = matrix.notna()
    if coverage == "layers":
        keep_layers = complete.all(axis=1)
        if not keep_layers.any():
            used = "tasks"
            notes.append("no layer has every task; averaging over the tasks present at every layer instead")
            logger.warning("task scores: %s", notes[-1])
    if used == "layers":
        grid = matrix[keep_layers]
        dropped_layers = tuple(int(layer) for layer in matrix.index[~keep_layers])
        dropped_tasks: tuple[str, ...] = ()
    else:
        keep_tasks = complete.all(axis=0)
        if not keep_tasks.any():
            raise LayerscopeError("task scores share no task across all layers: cannot average them")
        grid = matrix.loc[:, keep_tasks]
        dropped_layers = ()
        dropped_tasks = tuple(str(task) for task in matrix.columns[~keep_tasks])
    if dropped_layers:
        notes.append(f"layers without every task left out: {list(dropped_layers)}")
    if dropped_tasks:
        notes.append(f"tasks missing at some layer left out: {list(dropped_tasks)}")
    if dropped_layers or dropped_tasks:
        logger.warning("task scores are incomplete: %s", "; ".join(notes))
    if int(grid.index.max()) < last:
        notes.append(f"scores stop at layer {int(grid.index.max())} of {last}")
        logger.info("task scores: %s", notes[-1])
    return ScoreGrid(
        matrix=grid,
        task_types={task: task_types[task] for task in grid.columns},
        last_layer=last,
        coverage=used,
        dropped_layers=dropped_layers,
        dropped_tasks=dropped_tasks,
        notes=tuple(notes),
    )


def default_normalization(metrics_df: pd.DataFrame, metric: str) -> str | None:
    """The normalization a metric is reported with when none is asked for.

    The registry's main value of the metric when the table has it, else the first of
    :data:`DEFAULT_NORMALIZATION_ORDER` present for ``metric``, else the alphabetically first one;
    ``None`` when the table has no ``normalization`` column.
    """
    from layerscope.metrics.registry import find

    if "normalization" not in metrics_df.columns:
        return None
    present = set(metrics_df.loc[metrics_df["metric"] == metric, "normalization"].dropna().astype(str))
    spec = find(metric)
    if spec is not None and spec.main in present:
        return spec.main
    for candidate in DEFAULT_NORMALIZATION_ORDER:
        if candidate in present:
            return candidate
    return min(present) if present else None


def asked_normalization(
    metrics_df: pd.DataFrame, metric: str, normalization: str | Mapping[str, str] | None
) -> str | None:
    """The normalization asked for ``metric`` (one for all metrics, or metric -> normalization), else its
    :func:`default_normalization`."""
    asked = normalization.get(metric) if isinstance(normalization, Mapping) else normalization
    return asked if asked is not None else default_normalization(metrics_df, metric)


def metric_datasets(metrics_df: pd.DataFrame) -> list[str]:
    """Distinct text sources of a metric table (empty when it has no ``dataset`` column)."""
    if "dataset" not in metrics_df.columns:
        return []
    return sorted(metrics_df["dataset"].dropna().astype(str).unique())


def metric_profile(
    metrics_df: pd.DataFrame,
    metric: str,
    *,
    normalization: str | None = None,
    dataset: str | None = None,
) -> pd.Series:
    """One metric's values per layer (index = layer, ascending; NaN/inf rows dropped).

    Parameters
    ----------
    metrics_df : pandas.DataFrame
        Long per-layer metrics.
    metric : str
        Metric name.
    normalization : str, optional
        Defaults to :func:`default_normalization`.
    dataset : str, optional
        Text source; required when the table holds several.

    Returns
    -------
    pandas.Series
        Float values indexed by layer; empty when nothing matches.
    """
    rows = metrics_df[metrics_df["metric"] == metric]
    if normalization is None:
        normalization = default_normalization(metrics_df, metric)
    if normalization is not None and "normalization" in rows.columns:
        rows = rows[rows["normalization"] == normalization]
    if "dataset" in rows.columns:
        datasets = sorted(rows["dataset"].dropna().astype(str).unique())
        if dataset is not None:
            rows = rows[rows["dataset"] == dataset]
        elif len(datasets) > 1:
            raise LayerscopeError(
                f"metric '{metric}' was computed on several datasets ({', '.join(datasets)}): choose one with dataset="
            )
    elif dataset is not None:
        raise LayerscopeError(f"dataset='{dataset}' asked for, but the metric table has no 'dataset' column")
    return profile_from_rows(rows, metric)


def profile_from_rows(rows: pd.DataFrame, metric: str) -> pd.Series:
    """Per-layer series from rows already narrowed to one metric, normalization and dataset."""
    layers = rows["layer"].to_numpy(dtype=int)
    values = rows["value"].to_numpy(dtype=float)
    unique, counts = np.unique(layers, return_counts=True)
    if (counts > 1).any():
        raise LayerscopeError(
            f"metric '{metric}' has several values at layer {int(unique[counts > 1][0])}: pass one model and "
            "run, and one normalization and dataset"
        )
    order = np.argsort(layers, kind="stable")
    layers, values = layers[order], values[order]
    finite = np.isfinite(values)
    series = pd.Series(values[finite], index=pd.Index(layers[finite], name="layer"), name=metric)
    return series


def per_layer_table(
    metrics_df: pd.DataFrame | None,
    scores_df: pd.DataFrame | None = None,
    *,
    metrics: Iterable[str] | None = None,
    normalization: str | Mapping[str, str] | None = None,
    dataset: str | None = None,
    coverage: str = "layers",
    last_layer: int | None = None,
) -> pd.DataFrame:
    """A compact wide table for the terminal: one row per layer.

    Parameters
    ----------
    metrics_df : pandas.DataFrame or None
        Long per-layer metrics.
    scores_df : pandas.DataFrame, optional
        Per-layer task scores; adds ``avg_score`` (task average x 100 over the complete grid, see
        :func:`score_grid`), one ``score_<task type>`` column per task type when the scores have
        ``task_type`` (that type's tasks averaged the same way; see :mod:`layerscope.analysis.by_type`)
        and ``n_tasks``.
    metrics : iterable of str, optional
        Metric columns to show, in this order (default: all, sorted).
    normalization : str or Mapping, optional
        One normalization for all metrics, or metric -> normalization; by default each metric's
        :func:`default_normalization`.
    dataset : str, optional
        Text source of the metrics when the table holds several; by default the values are
        averaged over datasets (the table is a summary; use :func:`metric_profile` for one).
    coverage : {"layers", "tasks"}, default "layers"
        Coverage policy of the score average.
    last_layer : int, optional
        The model's last layer (depth 100%); inferred when omitted.

    Returns
    -------
    pandas.DataFrame
        Columns ``layer, depth_pct``, one column per metric, then ``avg_score``, the per-type
        ``score_<type>`` columns (in type order) and ``n_tasks`` when scores are given. Layers missing
        a value hold NaN. ``attrs["task_type_counts"]`` gives each type's number of tasks.
    """
    frames: list[pd.DataFrame] = []
    if metrics_df is not None:
        require_columns(metrics_df, ("layer", "metric", "value"), "metrics table")
        frames.append(metrics_df)
    if scores_df is not None:
        require_columns(scores_df, ("layer", "task", "main_score"), "task scores")
        frames.append(scores_df)
    if not frames:
        raise LayerscopeError("per_layer_table needs a metrics table, a scores table, or both")
    last = infer_last_layer(*frames) if last_layer is None else int(last_layer)
    layers = sorted({int(layer) for frame in frames for layer in frame["layer"].unique()})
    table = pd.DataFrame({"layer": layers})
    table["depth_pct"] = [depth_percent(layer, last) for layer in layers]

    if metrics_df is not None:
        present = sorted(metrics_df["metric"].dropna().astype(str).unique())
        chosen = present if metrics is None else list(metrics)
        for metric in chosen:
            if metric not in present:
                raise unknown("metric", metric, present)
            norm = asked_normalization(metrics_df, metric, normalization)
            rows = metrics_df[metrics_df["metric"] == metric]
            if norm is not None and "normalization" in rows.columns:
                rows = rows[rows["normalization"] == norm]
            if dataset is not None and "dataset" in rows.columns:
                rows = rows[rows["dataset"] == dataset]
            finite = rows[np.isfinite(rows["value"].to_numpy(dtype=float))]
            by_layer = finite.groupby("layer")["value"].mean()
            table[metric] = table["layer"].map(by_layer).astype(float)

    if scores_df is not None:
        grid = score_grid(scores_df, coverage=coverage, last_layer=last)
        table["avg_score"] = table["layer"].map(grid.average * 100.0).astype(float)
        if "task_type" in scores_df.columns:  # scores without types (hand-made tables) get the average only
            counts = _add_type_columns(table, grid)
            table.attrs["task_type_counts"] = counts
        table["n_tasks"] = table["layer"].map(
            lambda layer: len(grid.tasks) if layer in grid.matrix.index else 0
        )
        table.attrs["score_grid"] = grid.describe()
    return table


def _add_type_columns(table: pd.DataFrame, grid: ScoreGrid) -> dict[str, int]:
    """One ``score_<type>`` column per task type (the type's mean over the same grid as ``avg_score``, x 100).

    Returns each type's number of tasks.
    """
    counts: dict[str, int] = {}
    for task_type in sorted(set(grid.task_types.values())):
        tasks = [task for task in grid.tasks if grid.task_types[task] == task_type]
        table[type_column(task_type)] = table["layer"].map(grid.matrix[tasks].mean(axis=1) * 100.0).astype(float)
        counts[task_type] = len(tasks)
    return counts


def _is_missing(value: object) -> bool:
    """True for None, NaN and pandas.NA (scalars only)."""
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def format_table(
    frame: pd.DataFrame, *, decimals: int = 1, decimals_by_column: Mapping[str, int] | None = None
) -> str:
    """Render a table as aligned plain text (no index), floats rounded for reading.

    Parameters
    ----------
    frame : pandas.DataFrame
        Any table, e.g. from :func:`per_layer_table` or ``selection_table``.
    decimals : int, default 1
        Decimal places of float columns.
    decimals_by_column : Mapping, optional
        Per-column overrides.

    Returns
    -------
    str
        The table as text; NaN shown as ``-``.
    """
    overrides = dict(decimals_by_column or {})

    def render(column: object, value: object) -> str:
        if _is_missing(value):
            return "-"
        if pd.api.types.is_float_dtype(frame[column]):
            return f"{value:.{overrides.get(str(column), decimals)}f}"
        return str(value)

    # every cell is rendered here: pandas' formatters skip missing values (it prints <NA>)
    rendered = pd.DataFrame(
        {column: [render(column, value) for value in frame[column]] for column in frame.columns}, dtype=object
    )
    return rendered.to_string(index=False)
