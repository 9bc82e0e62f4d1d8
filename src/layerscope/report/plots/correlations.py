"""How each metric's layer profile tracks task scores: bars per correlation method."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from layerscope.errors import LayerscopeError
from layerscope.metrics.registry import metric_label, order_metrics
from layerscope.report.plots.style import (
    categorical_colors,
    finish,
    grid_axes,
    new_figure,
    plot_style,
    require,
    save_figure,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["correlation_figure", "plot_correlations"]

SCOPE_TITLES = {
    "per_task": "Each task across layers",
    "average_curve": "Task-averaged score across layers",
}
METHOD_NAMES = {"spearman": "Spearman \u03c1", "kendall": "Kendall \u03c4", "dcor": "distance correlation"}


def correlation_figure(correlations: pd.DataFrame, *, title: str | None = None) -> Figure:
    """Bars of each metric's correlation with task scores, grouped by method.

    Parameters
    ----------
    correlations : pandas.DataFrame
        Output of :func:`layerscope.analysis.correlate`: ``metric, normalization, method, scope,
        value`` (+ ``n_tasks, n_layers``). Rows with ``scope="task"`` are ignored. With the
        ``ci_low, ci_high`` columns of :func:`layerscope.analysis.correlation_uncertainty`, the
        per-task bars get their interval over tasks as a whisker.
    title : str, optional
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
        One axes per scope (``per_task``, ``average_curve``) with one bar container per method;
        each subtitle states n (tasks, layers). Spearman and Kendall are signed (a working
        lower-is-better metric is negative); distance correlation lies in [0, 1]. Undefined values
        are marked "n/a".
    """
    require(correlations, ("metric", "method", "scope", "value"), "correlations")
    frame = correlations[correlations["scope"].isin(list(SCOPE_TITLES))].copy()
    if frame.empty:
        raise LayerscopeError("correlations: no per_task or average_curve rows to plot")
    norms = frame["normalization"] if "normalization" in frame.columns else pd.Series([None] * len(frame))
    frame["label"] = [wrapped_label(str(metric), None if pd.isna(norm) else str(norm))
                      for metric, norm in zip(frame["metric"], norms, strict=True)]
    rank = {name: index for index, name in enumerate(order_metrics(frame["metric"].astype(str)))}
    frame["_rank"] = frame["metric"].astype(str).map(rank)
    labels = list(dict.fromkeys(frame.sort_values(["_rank", "label"], kind="stable")["label"]))
    preferred = ["spearman", "kendall", "dcor"]
    methods = [m for m in preferred if m in set(frame["method"])] + sorted(set(frame["method"]) - set(preferred))
    scopes = [scope for scope in SCOPE_TITLES if scope in set(frame["scope"])]
    colors = dict(zip(methods, categorical_colors(len(methods)), strict=True))
    side_by_side = len(labels) <= 5 and len(scopes) > 1
    with plot_style():
        panel_width = max(4.2, 0.95 * len(labels) + 1.2)
        if side_by_side:
            figure = new_figure(min(2 * panel_width, 14.0), 3.9)
            axes = grid_axes(figure, len(scopes), len(scopes), sharex=False)
        else:
            figure = new_figure(min(panel_width, 14.0), 3.4 * len(scopes) + 0.6)
            axes = grid_axes(figure, len(scopes), 1, sharex=False)
        positions = np.arange(len(labels), dtype=float)
        bar_width = 0.8 / max(1, len(methods))
        for axis_index, (axis, scope) in enumerate(zip(axes, scopes, strict=True)):
            rows = frame[frame["scope"] == scope]
            for index, method in enumerate(methods):
                offsets = positions - 0.4 + bar_width * (index + 0.5)
                _bars(axis, rows[rows["method"] == method], labels, offsets, bar_width, colors[method],
                      METHOD_NAMES.get(method, method))
            axis.axhline(0.0, color="#333333", linewidth=0.8, gid="reference")
            axis.set_ylim(-1.05, 1.05)
            axis.set_xticks(positions)
            axis.set_xticklabels(labels, fontsize=8.5)
            if axis_index == 0 or not side_by_side:
                axis.set_ylabel("Correlation with task score")
            axis.set_title(SCOPE_TITLES[scope] + "\n" + _sample_sizes(rows, scope), fontsize=10)
            axis.grid(axis="x", visible=False)
        finish(figure, title, *axes[0].get_legend_handles_labels(), ncols=len(methods))
    return figure


def _bars(axis: Axes, rows: pd.DataFrame, labels: list[str], offsets: np.ndarray, width: float, color: Any,
          name: str) -> None:
    """One method's bars (NaN marked "n/a") and, where given, each bar's interval as a whisker."""
    by_label = rows.drop_duplicates("label").set_index("label")
    values = by_label["value"].reindex(labels).to_numpy(dtype=float)
    axis.bar(offsets, np.nan_to_num(values, nan=0.0), width=width * 0.92, color=color, label=name)
    for offset, value in zip(offsets, values, strict=True):
        if not np.isfinite(value):
            axis.text(offset, 0.03, "n/a", ha="center", va="bottom", fontsize=7, rotation=90, color="#555555")
    if {"ci_low", "ci_high"} <= set(by_label.columns):
        low = by_label["ci_low"].reindex(labels).to_numpy(dtype=float)
        high = by_label["ci_high"].reindex(labels).to_numpy(dtype=float)
        shown = np.isfinite(low) & np.isfinite(high)
        if shown.any():
            axis.vlines(offsets[shown], low[shown], high[shown], color="#333333", linewidth=1.0, gid="interval")


def _sample_sizes(rows: pd.DataFrame, scope: str) -> str:
    """What each bar rests on, e.g. ``"(mean over 11 tasks, 31 layers each; whiskers: CI over tasks)"``."""
    layers = int(rows["n_layers"].max()) if "n_layers" in rows.columns and len(rows) else None
    layer_text = f"{layers} layers" if layers else "layers"
    if scope == "average_curve":
        return f"(one curve, {layer_text})"
    tasks = int(rows["n_tasks"].max()) if "n_tasks" in rows.columns and len(rows) else None
    whiskers = "; whiskers: CI over tasks" if "ci_low" in rows.columns and rows["ci_low"].notna().any() else ""
    return f"(mean over up to {tasks} tasks, {layer_text} each{whiskers})" if tasks else f"({layer_text})"


def wrapped_label(metric: str, normalization: str | None) -> str:
    """Metric name with its normalization on a second line (for crowded tick labels)."""
    name = "\n".join(textwrap.wrap(metric_label(metric), 14))  # e.g. "Entropy rank / exp(S1)"
    if normalization and normalization not in ("raw", "none"):
        return f"{name}\n({normalization})"
    return name


def plot_correlations(correlations: pd.DataFrame, out: str | os.PathLike[str], **options: Any) -> Path:
    """Write :func:`correlation_figure` to ``out`` (PNG) and return the path."""
    return save_figure(correlation_figure(correlations, **options), out)
