"""Plots of per-layer results as PNG files, with depth % on the x-axis like the paper's figures.

Every ``plot_*`` function takes tables (pandas DataFrames in the long formats of
:mod:`layerscope.store`), writes one PNG atomically and returns its path. The matching
``*_figure`` function returns the :class:`matplotlib.figure.Figure` instead (for notebooks and
tests). Figures are built on :class:`~matplotlib.figure.Figure` objects, never through ``pyplot``,
and rendered with the Agg backend, so plotting works headless, keeps no global state and can run in
threads. matplotlib is imported only when a figure is drawn.

Colours follow the Okabe-Ito palette (distinguishable with the common colour-vision deficiencies);
ordered conditions (checkpoints, probabilities, sizes) and heat maps use the perceptually uniform
``cividis`` map.

Reusable helpers for the experiments: :func:`plot_lines_by_condition` (e.g. prompt entropy per
layer, one line per replacement probability) and :func:`plot_heatmap` (e.g. layer x checkpoint).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import textwrap
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from layerscope.analysis.selection import metric_directions
from layerscope.analysis.tables import default_normalization, infer_last_layer, score_grid
from layerscope.atomic import atomic_path
from layerscope.errors import LayerscopeError
from layerscope.metrics.registry import metric_label, order_metrics

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "DPI",
    "OKABE_ITO",
    "correlation_figure",
    "data_lines",
    "heatmap_figure",
    "lines_by_condition_figure",
    "metric_curves_figure",
    "metric_label",
    "order_metrics",
    "plot_correlations",
    "plot_heatmap",
    "plot_lines_by_condition",
    "plot_metric_curves",
    "plot_prompt_histogram",
    "plot_run_overlay",
    "plot_task_scores",
    "prompt_histogram_figure",
    "run_overlay_figure",
    "save_figure",
    "task_scores_figure",
]

logger = logging.getLogger(__name__)

DPI = 120

#: Okabe & Ito (2008) colour-blind-safe palette, yellow last (weak on white).
OKABE_ITO: tuple[str, ...] = (
    "#0072B2",  # blue
    "#E69F00",  # orange
    "#009E73",  # bluish green
    "#D55E00",  # vermillion
    "#CC79A7",  # reddish purple
    "#56B4E9",  # sky blue
    "#000000",  # black
    "#F0E442",  # yellow
)
SEQUENTIAL_MAP = "cividis"
BEST_COLOR = "#000000"
CHOSEN_COLOR = "#D55E00"
LAST_COLOR = "#7f7f7f"

def __getattr__(name: str) -> Any:
    if name == "METRIC_ORDER":  # deprecated: the registry knows the order
        import warnings

        warnings.warn("plots.METRIC_ORDER is deprecated; use layerscope.metrics.names()", DeprecationWarning,
                      stacklevel=2)
        from layerscope.metrics.registry import names

        return tuple(names())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_STYLE = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "figure.titlesize": 13,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "lines.linewidth": 1.8,
    "savefig.facecolor": "white",
    "figure.facecolor": "white",
    # names from the data (models, tasks, files) are shown as they are: "$" is no mathtext switch
    "text.parse_math": False,
}


# ---------------------------------------------------------------------------------------- helpers


def _figure(width: float, height: float) -> Figure:
    """A fresh figure, not registered with pyplot (no global state, nothing to close)."""
    try:
        from matplotlib.figure import Figure
    except ImportError as error:  # matplotlib is a core dependency; this guards broken installs
        raise LayerscopeError("plots need matplotlib: pip install matplotlib") from error
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


@contextlib.contextmanager
def _style() -> Iterator[None]:
    import matplotlib

    with matplotlib.rc_context(_STYLE):
        yield


def save_figure(figure: Figure, out: str | os.PathLike[str], *, dpi: int = DPI) -> Path:
    """Render ``figure`` to a PNG file atomically (Agg) and return the path.

    Parameters
    ----------
    figure : matplotlib.figure.Figure
        The figure to render.
    out : str or os.PathLike
        Target file; parent folders are created.
    dpi : int, default 120
        Resolution.

    Returns
    -------
    pathlib.Path
        ``out``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)  # attaches itself as the figure's canvas: rendering never needs a GUI
    with _style(), atomic_path(out) as temporary:
        figure.savefig(temporary, format="png", dpi=dpi)
    return Path(out)


def _suptitle(figure: Figure, title: str) -> None:
    """Figure title, wrapped to the figure's width so that long model or file names are not cut."""
    width = max(30, int(figure.get_figwidth() * 9.5))
    figure.suptitle("\n".join(textwrap.wrap(title, width)) or title)


def _auto_columns(n_panels: int, n_columns: int | None) -> int:
    """Panels per row: 2 for 2 or 4 panels (a square grid reads better), else 3."""
    if n_columns is not None:
        return n_columns
    return 2 if n_panels in (2, 4) else 3


def _categorical_colors(n: int) -> list[str | tuple[float, ...]]:
    """``n`` distinguishable colours: Okabe-Ito up to 8, then evenly spaced cividis."""
    if n <= len(OKABE_ITO):
        return list(OKABE_ITO[:n])
    return _sequential_colors(n)


def _sequential_colors(n: int) -> list[str | tuple[float, ...]]:
    """``n`` colours along cividis for ordered conditions (its pale end avoided)."""
    import matplotlib

    colormap = matplotlib.colormaps[SEQUENTIAL_MAP]
    return [tuple(colormap(value)) for value in np.linspace(0.0, 0.85, max(n, 1))][:n]


def _grid_axes(figure: Figure, n_panels: int, n_columns: int, *, sharex: bool = True) -> list[Axes]:
    """``n_panels`` axes laid out in rows of ``n_columns`` (no empty axes are created)."""
    n_columns = max(1, min(n_columns, n_panels))
    n_rows = math.ceil(n_panels / n_columns)
    spec = figure.add_gridspec(n_rows, n_columns)
    axes: list[Axes] = []
    for index in range(n_panels):
        share = axes[0] if (sharex and axes) else None
        axes.append(figure.add_subplot(spec[index // n_columns, index % n_columns], sharex=share))
    return axes


def _panel_figure(n_panels: int, n_columns: int, panel_size: tuple[float, float]) -> tuple[Figure, list[Axes]]:
    columns = max(1, min(n_columns, n_panels))
    rows = math.ceil(n_panels / columns)
    figure = _figure(panel_size[0] * columns, panel_size[1] * rows + 0.6)
    return figure, _grid_axes(figure, n_panels, columns)


def _depth_axis(axis: Axes, label: bool = True) -> None:
    axis.set_xlim(-2, 102)
    axis.set_xticks([0, 25, 50, 75, 100])
    if label:
        axis.set_xlabel("Depth (% of layers)")


def _with_depth(frame: pd.DataFrame, last_layer: int | None) -> pd.DataFrame:
    """``frame`` with a complete ``depth_pct`` column (100 * layer / L where missing)."""
    last = last_layer if last_layer is not None else infer_last_layer(frame)
    computed = 100.0 * frame["layer"].astype(float) / last if last > 0 else frame["layer"].astype(float) * 0.0
    if "depth_pct" in frame.columns and last_layer is None:
        depth = pd.to_numeric(frame["depth_pct"], errors="coerce").astype(float)
        depth = depth.where(depth.notna(), computed)
    else:
        depth = computed
    return frame.assign(depth_pct=depth.to_numpy(dtype=float))


def _layer_depth(layer: int | None, last_layer: int) -> float | None:
    if layer is None:
        return None
    return 100.0 * float(layer) / last_layer if last_layer > 0 else 0.0


def _layer_markers(
    axes: Sequence[Axes],
    last_layer: int,
    best_layer: int | None,
    chosen_layer: int | None,
    chosen_label: str | None,
) -> list[tuple[Any, str]]:
    """Vertical lines at the best layer (labels) and the label-free choice; returns legend entries."""
    entries: list[tuple[Any, str]] = []
    best_depth = _layer_depth(best_layer, last_layer)
    chosen_depth = _layer_depth(chosen_layer, last_layer)
    for index, axis in enumerate(axes):
        if best_depth is not None:
            line = axis.axvline(best_depth, color=BEST_COLOR, linestyle="--", linewidth=1.2, gid="marker")
            if index == 0:
                entries.append((line, f"best layer with labels ({best_layer})"))
        if chosen_depth is not None:
            line = axis.axvline(chosen_depth, color=CHOSEN_COLOR, linestyle=":", linewidth=1.8, gid="marker")
            if index == 0:
                label = chosen_label or "label-free choice"
                entries.append((line, f"{label} ({chosen_layer})"))
    return entries


def data_lines(axis: Axes) -> list[Any]:
    """Lines of ``axis`` that carry data (layer markers and reference lines excluded)."""
    return [line for line in axis.get_lines() if line.get_gid() not in ("marker", "reference")]


def _require(frame: pd.DataFrame | None, columns: Sequence[str], what: str) -> pd.DataFrame:
    if frame is None or not isinstance(frame, pd.DataFrame):
        raise LayerscopeError(f"{what}: expected a pandas DataFrame")
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise LayerscopeError(f"{what}: missing column(s) {', '.join(missing)}")
    if frame.empty:
        raise LayerscopeError(f"{what}: nothing to plot (the table is empty)")
    return frame


def _direction_note(metric: str) -> str:
    found = metric_directions([metric], strict=False)
    if metric not in found:
        return ""
    return "higher is better" if found[metric] else "lower is better"


# ---------------------------------------------------------------------------------------- metric curves


def metric_curves_figure(
    metrics: pd.DataFrame,
    *,
    metric_names: Sequence[str] | None = None,
    normalization: str | Mapping[str, str] | None = None,
    best_layer: int | None = None,
    chosen_layer: int | None = None,
    chosen_label: str | None = None,
    last_layer: int | None = None,
    title: str | None = None,
    n_columns: int | None = None,
) -> Figure:
    """Per-layer curves of every metric, one panel per metric.

    Parameters
    ----------
    metrics : pandas.DataFrame
        Long per-layer metrics of one run: ``layer, metric, value`` (+ ``depth_pct,
        normalization, dataset``).
    metric_names : sequence of str, optional
        Metrics to draw, in this order (default: all, sorted).
    normalization : str or Mapping, optional
        Normalization to draw (one for all, or per metric); default: each metric's default
        (``maxEntropy`` for entropies, else ``raw``).
    best_layer, chosen_layer : int, optional
        Layers marked with vertical lines: best with labels (dashed black) and the label-free
        choice (dotted vermillion).
    chosen_label : str, optional
        Legend text of the label-free choice, e.g. ``"min DiME"``.
    last_layer : int, optional
        The model's last layer L (default: inferred from ``depth_pct``).
    title : str, optional
        Figure title.
    n_columns : int, optional
        Panels per row (default: 2 for 2 or 4 panels, else 3).

    Returns
    -------
    matplotlib.figure.Figure
        One axes per metric. With several text sources (``dataset``) each panel has one thin line
        per source and a thick mean line; otherwise one line.
    """
    _require(metrics, ("layer", "metric", "value"), "metric curves")
    last = last_layer if last_layer is not None else infer_last_layer(metrics)
    frame = _with_depth(metrics, last_layer)
    present = order_metrics(frame["metric"].dropna().astype(str).unique())
    names = list(metric_names) if metric_names is not None else present
    names = [name for name in names if name in present]
    if not names:
        raise LayerscopeError("metric curves: none of the requested metrics is in the table")
    with _style():
        figure, axes = _panel_figure(len(names), _auto_columns(len(names), n_columns), (4.2, 3.0))
        for axis, name in zip(axes, names, strict=True):
            rows = frame[frame["metric"] == name]
            norm = normalization.get(name) if isinstance(normalization, Mapping) else normalization
            if norm is None:
                norm = default_normalization(frame, name)
            if norm is not None and "normalization" in rows.columns:
                rows = rows[rows["normalization"] == norm]
            rows = rows[np.isfinite(rows["value"].to_numpy(dtype=float))]
            datasets = (
                sorted(rows["dataset"].dropna().astype(str).unique()) if "dataset" in rows.columns else []
            )
            if len(datasets) > 1:
                colors = _categorical_colors(len(datasets))
                for color, dataset in zip(colors, datasets, strict=True):
                    part = rows[rows["dataset"] == dataset].sort_values("layer")
                    axis.plot(part["depth_pct"], part["value"], color=color, linewidth=0.9, alpha=0.55)
                mean = rows.groupby("layer").agg(depth_pct=("depth_pct", "mean"), value=("value", "mean"))
                axis.plot(mean["depth_pct"], mean["value"], color="#000000", linewidth=2.2, marker="o",
                          markersize=3, label="mean over text sources")
            else:
                ordered = rows.sort_values("layer")
                axis.plot(ordered["depth_pct"], ordered["value"], color=OKABE_ITO[0], marker="o", markersize=3)
            note = _direction_note(name)
            axis.set_title(metric_label(name, norm) + (f"\n{note}" if note else ""), fontsize=10.5)
            _depth_axis(axis)
        entries = _layer_markers(axes, last, best_layer, chosen_layer, chosen_label)
        if entries:
            figure.legend([line for line, _ in entries], [label for _, label in entries], loc="outside lower center",
                          ncols=len(entries), frameon=False)
        if title:
            _suptitle(figure, title)
    return figure


def plot_metric_curves(metrics: pd.DataFrame, out: str | os.PathLike[str], **options: Any) -> Path:
    """Write :func:`metric_curves_figure` to ``out`` (PNG) and return the path."""
    return save_figure(metric_curves_figure(metrics, **options), out)


# ---------------------------------------------------------------------------------------- task scores


def task_scores_figure(
    scores: pd.DataFrame,
    *,
    best_layer: int | None = None,
    chosen_layer: int | None = None,
    chosen_label: str | None = None,
    last_layer: int | None = None,
    title: str | None = None,
    n_columns: int | None = None,
) -> Figure:
    """Task scores per layer: one panel per task type, plus the average over all tasks.

    Parameters
    ----------
    scores : pandas.DataFrame
        Per-layer task scores of one run: ``layer, task, main_score`` (+ ``task_type,
        depth_pct``). Scores in 0..1 are drawn x 100.
    best_layer, chosen_layer, chosen_label, last_layer, title, n_columns
        As in :func:`metric_curves_figure`.

    Returns
    -------
    matplotlib.figure.Figure
        One axes per task type with a thin line per task and a thick line for the type's mean;
        with several task types a last axes ("All tasks") with each type's mean and the overall
        average (the complete layer x task grid of :func:`layerscope.analysis.score_grid`).
    """
    _require(scores, ("layer", "task", "main_score"), "task scores")
    last = last_layer if last_layer is not None else infer_last_layer(scores)
    frame = _with_depth(scores, last_layer)
    if "task_type" not in frame.columns:
        frame = frame.assign(task_type="tasks")
    frame = frame.assign(task_type=frame["task_type"].fillna("unknown").astype(str))
    types = sorted(frame["task_type"].unique())
    grid = score_grid(scores, last_layer=last)
    grid_depth = [100.0 * layer / last if last > 0 else 0.0 for layer in grid.layers]
    n_panels = len(types) + (1 if len(types) > 1 else 0)
    type_colors = dict(zip(types, _categorical_colors(len(types)), strict=True))
    with _style():
        figure, axes = _panel_figure(n_panels, _auto_columns(n_panels, n_columns), (4.2, 3.0))
        for axis, task_type in zip(axes, types, strict=False):
            rows = frame[frame["task_type"] == task_type]
            for _, part in rows.groupby("task", sort=True):
                part = part.sort_values("layer")
                axis.plot(part["depth_pct"], 100.0 * part["main_score"], color=type_colors[task_type],
                          linewidth=0.8, alpha=0.35)
            type_tasks = [task for task in grid.tasks if grid.task_types.get(task) == task_type]
            if type_tasks:
                mean = 100.0 * grid.matrix[type_tasks].mean(axis=1)
                axis.plot(grid_depth, mean.to_numpy(), color=type_colors[task_type], linewidth=2.4,
                          label="mean")
            n_tasks = rows["task"].nunique()
            axis.set_title(f"{task_type} ({n_tasks} task{'s' if n_tasks != 1 else ''})")
            axis.set_ylabel("Score (x100)")
            _depth_axis(axis)
        if len(types) > 1:
            axis = axes[-1]
            for task_type in types:
                type_tasks = [task for task in grid.tasks if grid.task_types.get(task) == task_type]
                if type_tasks:
                    mean = 100.0 * grid.matrix[type_tasks].mean(axis=1)
                    axis.plot(grid_depth, mean.to_numpy(), color=type_colors[task_type], linewidth=1.4,
                              label=task_type)
            axis.plot(grid_depth, (100.0 * grid.average).to_numpy(), color="#000000", linewidth=2.8,
                      label="average")
            axis.set_title(f"All tasks ({len(grid.tasks)})")
            axis.set_ylabel("Score (x100)")
            axis.legend(loc="best", frameon=False, fontsize=8)
            _depth_axis(axis)
        entries = _layer_markers(axes, last, best_layer, chosen_layer, chosen_label)
        if entries:
            figure.legend([line for line, _ in entries], [label for _, label in entries], loc="outside lower center",
                          ncols=len(entries), frameon=False)
        if title:
            _suptitle(figure, title)
    return figure


def plot_task_scores(scores: pd.DataFrame, out: str | os.PathLike[str], **options: Any) -> Path:
    """Write :func:`task_scores_figure` to ``out`` (PNG) and return the path."""
    return save_figure(task_scores_figure(scores, **options), out)


# ---------------------------------------------------------------------------------------- correlations

_SCOPE_TITLES = {
    "per_task": "Each task across layers",
    "average_curve": "Task-averaged score across layers",
}


def correlation_figure(correlations: pd.DataFrame, *, title: str | None = None) -> Figure:
    """Bars of each metric's correlation with task scores, grouped by method.

    Parameters
    ----------
    correlations : pandas.DataFrame
        Output of :func:`layerscope.analysis.correlate`: ``metric, normalization, method, scope,
        value`` (+ ``n_tasks``). Rows with ``scope="task"`` are ignored.
    title : str, optional
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
        One axes per scope (``per_task``, ``average_curve``) with one bar container per method.
        Spearman and Kendall are signed (a working lower-is-better metric is negative); distance
        correlation lies in [0, 1]. Undefined values are marked "n/a".
    """
    _require(correlations, ("metric", "method", "scope", "value"), "correlations")
    frame = correlations[correlations["scope"].isin(list(_SCOPE_TITLES))].copy()
    if frame.empty:
        raise LayerscopeError("correlations: no per_task or average_curve rows to plot")
    norms = frame["normalization"] if "normalization" in frame.columns else pd.Series([None] * len(frame))
    frame["label"] = [_wrapped_label(str(metric), None if pd.isna(norm) else str(norm))
                      for metric, norm in zip(frame["metric"], norms, strict=True)]
    rank = {name: index for index, name in enumerate(order_metrics(frame["metric"].astype(str)))}
    frame["_rank"] = frame["metric"].astype(str).map(rank)
    labels = list(dict.fromkeys(frame.sort_values(["_rank", "label"], kind="stable")["label"]))
    preferred = ["spearman", "kendall", "dcor"]
    methods = [m for m in preferred if m in set(frame["method"])] + sorted(set(frame["method"]) - set(preferred))
    scopes = [scope for scope in _SCOPE_TITLES if scope in set(frame["scope"])]
    method_names = {"spearman": "Spearman \u03c1", "kendall": "Kendall \u03c4", "dcor": "distance correlation"}
    colors = dict(zip(methods, _categorical_colors(len(methods)), strict=True))
    side_by_side = len(labels) <= 5 and len(scopes) > 1
    with _style():
        panel_width = max(4.2, 0.95 * len(labels) + 1.2)
        if side_by_side:
            figure = _figure(min(2 * panel_width, 14.0), 3.9)
            axes = _grid_axes(figure, len(scopes), len(scopes), sharex=False)
        else:
            figure = _figure(min(panel_width, 14.0), 3.4 * len(scopes) + 0.6)
            axes = _grid_axes(figure, len(scopes), 1, sharex=False)
        positions = np.arange(len(labels), dtype=float)
        bar_width = 0.8 / max(1, len(methods))
        for axis_index, (axis, scope) in enumerate(zip(axes, scopes, strict=True)):
            rows = frame[frame["scope"] == scope]
            for index, method in enumerate(methods):
                values = []
                for label in labels:
                    hit = rows[(rows["label"] == label) & (rows["method"] == method)]["value"]
                    values.append(float(hit.iloc[0]) if len(hit) else float("nan"))
                offsets = positions - 0.4 + bar_width * (index + 0.5)
                heights = np.nan_to_num(np.asarray(values), nan=0.0)
                axis.bar(offsets, heights, width=bar_width * 0.92, color=colors[method],
                         label=method_names.get(method, method))
                for offset, value in zip(offsets, values, strict=True):
                    if not np.isfinite(value):
                        axis.text(offset, 0.03, "n/a", ha="center", va="bottom", fontsize=7, rotation=90,
                                  color="#555555")
            axis.axhline(0.0, color="#333333", linewidth=0.8, gid="reference")
            axis.set_ylim(-1.05, 1.05)
            axis.set_xticks(positions)
            axis.set_xticklabels(labels, fontsize=8.5)
            if axis_index == 0 or not side_by_side:
                axis.set_ylabel("Correlation with task score")
            subtitle = _SCOPE_TITLES[scope]
            if scope == "per_task" and "n_tasks" in rows.columns and len(rows):
                subtitle += f"\n(mean over up to {int(rows['n_tasks'].max())} tasks)"
            elif scope == "average_curve":
                subtitle += "\n(one curve)"
            axis.set_title(subtitle, fontsize=10)
            axis.grid(axis="x", visible=False)
        handles, legend_labels = axes[0].get_legend_handles_labels()
        figure.legend(handles, legend_labels, loc="outside lower center", ncols=len(methods), frameon=False)
        if title:
            _suptitle(figure, title)
    return figure


def _wrapped_label(metric: str, normalization: str | None) -> str:
    """Metric name with its normalization on a second line (for crowded tick labels)."""
    import textwrap

    name = "\n".join(textwrap.wrap(metric_label(metric), 14))  # e.g. "Entropy rank / exp(S1)"
    if normalization and normalization not in ("raw", "none"):
        return f"{name}\n({normalization})"
    return name


def plot_correlations(correlations: pd.DataFrame, out: str | os.PathLike[str], **options: Any) -> Path:
    """Write :func:`correlation_figure` to ``out`` (PNG) and return the path."""
    return save_figure(correlation_figure(correlations, **options), out)


# ---------------------------------------------------------------------------------------- per-prompt histogram


def _histogram_layers(layers: Sequence[int], count: int) -> list[int]:
    """About ``count`` layers spread evenly over the depth (first and last included)."""
    layers = sorted(layers)
    if len(layers) <= count:
        return list(layers)
    picks = np.linspace(0, len(layers) - 1, count)
    return sorted({layers[int(round(position))] for position in picks})


def prompt_histogram_figure(
    prompt_values: pd.DataFrame,
    *,
    metric: str = "prompt_entropy",
    layers: Sequence[int] | None = None,
    n_small: int = 5,
    bins: int = 40,
    last_layer: int | None = None,
    title: str | None = None,
) -> Figure:
    """Distribution of a per-prompt metric at every layer (bimodality, SPEC section 7.7).

    Top: a heat map with depth % on the x-axis and the metric's value on the y-axis; each layer's
    column shows the share of prompts in each bin, with the mean over prompts drawn on top.
    Bottom: histograms of a few layers side by side (small multiples sharing the value axis).

    Parameters
    ----------
    prompt_values : pandas.DataFrame
        ``layer, prompt_index, metric, value`` (one run). Non-finite values (skipped prompts) are
        left out and counted in the title.
    metric : str, default "prompt_entropy"
        Metric to draw.
    layers : sequence of int, optional
        Layers of the small multiples (default: ``n_small`` spread evenly over depth).
    n_small : int, default 5
        Number of small multiples when ``layers`` is not given.
    bins : int, default 40
        Number of value bins.
    last_layer : int, optional
        The model's last layer L (default: the largest layer present).
    title : str, optional
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
        Axes: the heat map first, then one axes per small multiple (plus a colour bar axes).
    """
    _require(prompt_values, ("layer", "metric", "value"), "per-prompt values")
    rows = prompt_values[prompt_values["metric"] == metric]
    if rows.empty:
        present = sorted(prompt_values["metric"].astype(str).unique())
        raise LayerscopeError(f"per-prompt values: no '{metric}' rows (present: {', '.join(present)})")
    values = rows["value"].to_numpy(dtype=float)
    finite = np.isfinite(values)
    n_dropped = int((~finite).sum())
    rows = rows[finite]
    if rows.empty:
        raise LayerscopeError(f"per-prompt values: every '{metric}' value is NaN or infinite")
    all_layers = sorted(int(layer) for layer in rows["layer"].unique())
    last = last_layer if last_layer is not None else max(all_layers)
    depth = {layer: (100.0 * layer / last if last > 0 else 0.0) for layer in all_layers}
    low, high = float(rows["value"].min()), float(rows["value"].max())
    if high <= low:
        low, high = low - 0.5, high + 0.5
    edges = np.linspace(low, high, bins + 1)
    shares = np.zeros((bins, len(all_layers)))
    means = np.zeros(len(all_layers))
    grouped = {int(layer): group["value"].to_numpy(dtype=float) for layer, group in rows.groupby("layer")}
    for column, layer in enumerate(all_layers):
        counts, _ = np.histogram(grouped[layer], bins=edges)
        shares[:, column] = counts / max(1, counts.sum())
        means[column] = grouped[layer].mean()
    centers = np.array([depth[layer] for layer in all_layers])
    if len(centers) > 1:
        middle = (centers[1:] + centers[:-1]) / 2
        x_edges = np.concatenate([[centers[0] - (middle[0] - centers[0])], middle,
                                  [centers[-1] + (centers[-1] - middle[-1])]])
    else:
        x_edges = np.array([centers[0] - 2.0, centers[0] + 2.0])
    small = [layer for layer in (layers if layers is not None else _histogram_layers(all_layers, n_small))
             if layer in grouped]
    n_prompts = int(rows["prompt_index"].nunique()) if "prompt_index" in rows.columns else int(len(rows) / len(all_layers))
    with _style():
        figure = _figure(max(7.5, 2.3 * max(1, len(small))), 6.6)
        spec = figure.add_gridspec(2, max(1, len(small)), height_ratios=[1.35, 1.0])
        heat = figure.add_subplot(spec[0, :])
        # empty bins stay white so that the occupied ones stand out; more prompts = darker
        mesh = heat.pcolormesh(x_edges, edges, np.ma.masked_equal(shares, 0.0), cmap=f"{SEQUENTIAL_MAP}_r",
                               vmin=0.0, shading="flat")
        heat.plot(centers, means, color=CHOSEN_COLOR, linewidth=1.4, marker="o", markersize=2.5,
                  label="mean over prompts")
        heat.set_ylabel(metric_label(metric))
        heat.set_xlabel("Depth (% of layers)")
        heat.set_xticks([0, 25, 50, 75, 100])
        heat.set_xlim(x_edges[0], x_edges[-1])
        heat.grid(False)
        colorbar = figure.colorbar(mesh, ax=heat, pad=0.01)
        colorbar.set_label("share of prompts")
        heat.set_title(f"{metric_label(metric)} of each prompt, by layer ({n_prompts} prompts"
                       + (f", {n_dropped} skipped values" if n_dropped else "") + "); line: mean over prompts")
        first: Axes | None = None
        for column, layer in enumerate(small):
            axis = figure.add_subplot(spec[1, column], sharey=first)
            first = first or axis
            axis.hist(grouped[layer], bins=edges, color=OKABE_ITO[0], alpha=0.85)
            axis.set_title(f"layer {layer} ({depth[layer]:.0f}%)", fontsize=9.5)
            axis.set_xlabel(metric_label(metric), fontsize=8.5)
            if column == 0:
                axis.set_ylabel("prompts")
            else:
                axis.tick_params(labelleft=False)
        if title:
            _suptitle(figure, title)
    return figure


def plot_prompt_histogram(prompt_values: pd.DataFrame, out: str | os.PathLike[str], **options: Any) -> Path:
    """Write :func:`prompt_histogram_figure` to ``out`` (PNG) and return the path."""
    return save_figure(prompt_histogram_figure(prompt_values, **options), out)


# ---------------------------------------------------------------------------------------- overlay of runs


def run_overlay_figure(
    tables: Mapping[str, pd.DataFrame],
    *,
    columns: Sequence[str] | None = None,
    labels: Mapping[str, str] | None = None,
    title: str | None = None,
    n_columns: int | None = None,
) -> Figure:
    """Several runs side by side: one panel per metric, one line per run, depth % on the x-axis.

    Parameters
    ----------
    tables : Mapping of str to pandas.DataFrame
        Run label -> its per-layer table (:func:`layerscope.analysis.per_layer_table`: ``layer,
        depth_pct``, one column per metric, ``avg_score`` when it has scores), in legend order.
    columns : sequence of str, optional
        Columns to draw (default: every metric column of any run, then ``avg_score``).
    labels : Mapping of str to str, optional
        Panel title per column (default: :func:`metric_label`; ``avg_score``: "Average task score").
    title : str, optional
        Figure title.
    n_columns : int, optional
        Panels per row (default: 2 for 2 or 4 panels, else 3).

    Returns
    -------
    matplotlib.figure.Figure
        One axes per column; each holds one line per run that has that column.
    """
    if not tables:
        raise LayerscopeError("run overlay: no runs to compare")
    skip = {"layer", "depth_pct", "avg_score", "n_tasks"}
    if columns is None:
        found: list[str] = []
        for table in tables.values():
            found.extend(str(column) for column in table.columns if column not in skip and column not in found)
        columns = order_metrics(found) + (["avg_score"] if any("avg_score" in t.columns for t in tables.values()) else [])
    columns = list(columns)
    if not columns:
        raise LayerscopeError("run overlay: the runs have no metric or score columns")
    names = dict(labels or {})
    ordered = len(tables) > len(OKABE_ITO)
    colors = dict(zip(tables, (_sequential_colors if ordered else _categorical_colors)(len(tables)), strict=True))
    with _style():
        figure, axes = _panel_figure(len(columns), _auto_columns(len(columns), n_columns), (4.2, 3.0))
        for axis, column in zip(axes, columns, strict=True):
            for run, table in tables.items():
                if column not in table.columns:
                    continue
                part = table[["depth_pct", column]].dropna().sort_values("depth_pct")
                axis.plot(part["depth_pct"], part[column], color=colors[run], marker="o", markersize=2.5,
                          linewidth=1.6, label=run)
            if column == "avg_score":
                axis.set_title(names.get(column, "Average task score (x100)"))
            else:
                note = _direction_note(column)
                axis.set_title(names.get(column, metric_label(column)) + (f"\n{note}" if note else ""), fontsize=10.5)
            _depth_axis(axis)
        handles, legend_labels = [], []
        for axis in axes:
            for handle, label in zip(*axis.get_legend_handles_labels(), strict=True):
                if label not in legend_labels:
                    handles.append(handle)
                    legend_labels.append(label)
        figure.legend(handles, legend_labels, loc="outside lower center", ncols=min(4, len(legend_labels)),
                      frameon=False)
        if title:
            _suptitle(figure, title)
    return figure


def plot_run_overlay(tables: Mapping[str, pd.DataFrame], out: str | os.PathLike[str], **options: Any) -> Path:
    """Write :func:`run_overlay_figure` to ``out`` (PNG) and return the path."""
    return save_figure(run_overlay_figure(tables, **options), out)


# ---------------------------------------------------------------------------------------- generic helpers


def _ordered_values(values: pd.Series, order: Sequence[Any] | None) -> list[Any]:
    if order is not None:
        present = set(values.unique())
        return [value for value in order if value in present]
    unique = list(values.dropna().unique())
    numeric = pd.to_numeric(pd.Series(unique), errors="coerce")
    if numeric.notna().all():
        return [value for _, value in sorted(zip(numeric, unique, strict=True), key=lambda pair: pair[0])]
    return sorted(unique, key=str)


def lines_by_condition_figure(
    frame: pd.DataFrame,
    x: str,
    y: str,
    hue: str,
    *,
    facet: str | None = None,
    hue_order: Sequence[Any] | None = None,
    ordered: bool | None = None,
    spread: str | None = None,
    title: str | None = None,
    xlabel: str | None = None,
    ylabel: str | None = None,
    hue_label: str | None = None,
    logx: bool = False,
    n_columns: int | None = None,
) -> Figure:
    """Lines of ``y`` against ``x``, one per value of ``hue`` (optionally one panel per ``facet``).

    For the experiments of SPEC section 7: prompt entropy per layer for each replacement
    probability, per checkpoint, per model size, prefix entropy against token position...

    Parameters
    ----------
    frame : pandas.DataFrame
        Long table with columns ``x``, ``y``, ``hue`` (and ``facet``).
    x, y, hue : str
        Column names. With ``x="depth_pct"`` the axis gets the paper's 0-100% ticks.
    facet : str, optional
        Column splitting the data into panels.
    hue_order : sequence, optional
        Order of the lines (default: numeric order when every value is a number, else sorted).
    ordered : bool, optional
        Colour the lines along a sequential map (checkpoints, probabilities); default: when the
        hue values are numeric or more than 8.
    spread : {None, "std", "iqr"}, default None
        Several rows at the same (facet, hue, x) are averaged; ``"std"`` shades mean +/- one
        standard deviation, ``"iqr"`` the 25-75% range around the median.
    title, xlabel, ylabel, hue_label : str, optional
        Texts; labels default to the column names.
    logx : bool, default False
        Logarithmic x-axis (e.g. training steps).
    n_columns : int, optional
        Panels per row (default: 2 for 2 or 4 panels, else 3).

    Returns
    -------
    matplotlib.figure.Figure
        One axes per facet value; each holds one line per hue value present in it.
    """
    needed = [x, y, hue] + ([facet] if facet else [])
    _require(frame, needed, "lines by condition")
    if spread not in (None, "std", "iqr"):
        raise LayerscopeError(f"spread must be None, 'std' or 'iqr', got '{spread}'")
    data = frame[np.isfinite(pd.to_numeric(frame[y], errors="coerce").to_numpy(dtype=float))]
    hues = _ordered_values(data[hue], hue_order)
    if ordered is None:
        ordered = bool(pd.to_numeric(pd.Series(hues), errors="coerce").notna().all()) or len(hues) > len(OKABE_ITO)
    palette = (_sequential_colors if ordered and len(hues) > 1 else _categorical_colors)(len(hues))
    colors = dict(zip(hues, palette, strict=True))
    facets: list[Any] = _ordered_values(data[facet], None) if facet else [None]
    with _style():
        figure, axes = _panel_figure(len(facets), _auto_columns(len(facets), n_columns), (4.4, 3.2))
        for axis, facet_value in zip(axes, facets, strict=True):
            part = data if facet is None else data[data[facet] == facet_value]
            for hue_value in hues:
                lines = part[part[hue] == hue_value]
                if lines.empty:
                    continue
                grouped = lines.groupby(x)[y]
                if spread == "iqr":
                    center = grouped.median()
                    lower, upper = grouped.quantile(0.25), grouped.quantile(0.75)
                else:
                    center = grouped.mean()
                    deviation = grouped.std(ddof=0).fillna(0.0)
                    lower, upper = center - deviation, center + deviation
                axis.plot(center.index, center.to_numpy(), color=colors[hue_value], marker="o", markersize=2.5,
                          label=str(hue_value))
                if spread is not None:
                    axis.fill_between(center.index, lower.to_numpy(), upper.to_numpy(), color=colors[hue_value],
                                      alpha=0.18, linewidth=0)
            if x == "depth_pct":
                _depth_axis(axis, label=False)
            if logx:
                axis.set_xscale("log")
            axis.set_xlabel(xlabel or ("Depth (% of layers)" if x == "depth_pct" else x))
            axis.set_ylabel(ylabel or y)
            if facet is not None:
                axis.set_title(f"{facet} = {facet_value}")
        if len(hues) > 1 or hue_label:
            handles, labels = axes[0].get_legend_handles_labels()
            for axis in axes[1:]:
                for handle, label in zip(*axis.get_legend_handles_labels(), strict=True):
                    if label not in labels:
                        handles.append(handle)
                        labels.append(label)
            figure.legend(handles, labels, title=hue_label or hue, loc="outside right center", frameon=False)
        if title:
            _suptitle(figure, title)
    return figure


def plot_lines_by_condition(
    frame: pd.DataFrame, x: str, y: str, hue: str, out: str | os.PathLike[str], **options: Any
) -> Path:
    """Write :func:`lines_by_condition_figure` to ``out`` (PNG) and return the path."""
    return save_figure(lines_by_condition_figure(frame, x, y, hue, **options), out)


def heatmap_figure(
    matrix: np.ndarray | pd.DataFrame,
    row_labels: Sequence[Any] | None = None,
    col_labels: Sequence[Any] | None = None,
    *,
    title: str | None = None,
    xlabel: str | None = None,
    ylabel: str | None = None,
    colorbar_label: str | None = None,
    cmap: str = SEQUENTIAL_MAP,
    center: float | None = None,
    annotate: bool | None = None,
    decimals: int = 2,
) -> Figure:
    """A labelled heat map, e.g. prompt entropy of layer x checkpoint.

    Parameters
    ----------
    matrix : numpy.ndarray or pandas.DataFrame, shape (rows, columns)
        Values; NaN cells are left blank. A DataFrame supplies default labels from its index and
        columns.
    row_labels, col_labels : sequence, optional
        Tick labels (rows top to bottom, columns left to right).
    title, xlabel, ylabel, colorbar_label : str, optional
        Texts.
    cmap : str, default "cividis"
        Colour map; with ``center`` set, a diverging map (``"RdBu_r"``) is used unless one is given.
    center : float, optional
        Value at the middle of a symmetric colour range (e.g. 0 for differences).
    annotate : bool, optional
        Write each value in its cell (default: when the matrix has at most 20 x 20 cells).
    decimals : int, default 2
        Decimals of the annotations.

    Returns
    -------
    matplotlib.figure.Figure
        One heat-map axes and a colour bar.
    """
    if isinstance(matrix, pd.DataFrame):
        row_labels = list(matrix.index) if row_labels is None else row_labels
        col_labels = list(matrix.columns) if col_labels is None else col_labels
        values = matrix.to_numpy(dtype=float)
    else:
        values = np.asarray(matrix, dtype=float)
    if values.ndim != 2 or values.size == 0:
        raise LayerscopeError(f"heat map needs a non-empty 2-d matrix, got shape {values.shape}")
    n_rows, n_cols = values.shape
    row_labels = list(row_labels) if row_labels is not None else list(range(n_rows))
    col_labels = list(col_labels) if col_labels is not None else list(range(n_cols))
    if len(row_labels) != n_rows or len(col_labels) != n_cols:
        raise LayerscopeError(
            f"heat map labels do not match the matrix: {len(row_labels)} x {len(col_labels)} labels for "
            f"{n_rows} x {n_cols} values"
        )
    if annotate is None:
        annotate = n_rows <= 20 and n_cols <= 20
    finite = values[np.isfinite(values)]
    vmin = float(finite.min()) if finite.size else 0.0
    vmax = float(finite.max()) if finite.size else 1.0
    if center is not None:
        reach = max(abs(vmax - center), abs(vmin - center)) or 1.0
        vmin, vmax = center - reach, center + reach
        if cmap == SEQUENTIAL_MAP:
            cmap = "RdBu_r"
    with _style():
        figure = _figure(min(14.0, 2.2 + 0.55 * n_cols), min(14.0, 1.6 + 0.32 * n_rows))
        axis = figure.add_subplot()
        image = axis.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto",
                            interpolation="nearest")
        axis.grid(False)
        step_rows = max(1, math.ceil(n_rows / 30))
        step_cols = max(1, math.ceil(n_cols / 30))
        axis.set_yticks(range(0, n_rows, step_rows))
        axis.set_yticklabels([str(label) for label in row_labels[::step_rows]])
        axis.set_xticks(range(0, n_cols, step_cols))
        axis.set_xticklabels([str(label) for label in col_labels[::step_cols]],
                             rotation=45 if n_cols > 6 else 0, ha="right" if n_cols > 6 else "center")
        if annotate:
            import matplotlib

            colormap = matplotlib.colormaps[cmap]
            span = (vmax - vmin) or 1.0
            for row in range(n_rows):
                for col in range(n_cols):
                    value = values[row, col]
                    if not np.isfinite(value):
                        continue
                    red, green, blue, _ = colormap((value - vmin) / span)
                    light = 0.299 * red + 0.587 * green + 0.114 * blue > 0.55
                    axis.text(col, row, f"{value:.{decimals}f}", ha="center", va="center", fontsize=7.5,
                              color="#000000" if light else "#ffffff")
        colorbar = figure.colorbar(image, ax=axis)
        if colorbar_label:
            colorbar.set_label(colorbar_label)
        if xlabel:
            axis.set_xlabel(xlabel)
        if ylabel:
            axis.set_ylabel(ylabel)
        if title:
            axis.set_title("\n".join(textwrap.wrap(title, max(30, int(figure.get_figwidth() * 9.5)))) or title)
    return figure


def plot_heatmap(
    matrix: np.ndarray | pd.DataFrame,
    row_labels: Sequence[Any] | None,
    col_labels: Sequence[Any] | None,
    out: str | os.PathLike[str],
    **options: Any,
) -> Path:
    """Write :func:`heatmap_figure` to ``out`` (PNG) and return the path."""
    return save_figure(heatmap_figure(matrix, row_labels, col_labels, **options), out)
