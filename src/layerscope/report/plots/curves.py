"""Per-layer metric curves of one run, and several runs overlaid by depth."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from layerscope.analysis.by_type import type_columns
from layerscope.analysis.summary import ALL_TEXTS
from layerscope.analysis.tables import asked_normalization, infer_last_layer
from layerscope.errors import LayerscopeError, check_keywords
from layerscope.metrics.registry import metric_label, order_metrics
from layerscope.report.plots.style import (
    OKABE_ITO,
    LayerMarks,
    auto_columns,
    categorical_colors,
    depth_axis,
    direction_note,
    finish,
    layer_markers,
    line_styles,
    panel_figure,
    plot_style,
    require,
    save_figure,
    sequential_colors,
    with_depth,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from typing_extensions import Unpack

__all__ = ["metric_curves_figure", "plot_metric_curves", "plot_run_overlay", "run_overlay_figure"]


def metric_curves_figure(
    metrics: pd.DataFrame,
    *,
    metric_names: Sequence[str] | None = None,
    normalization: str | Mapping[str, str] | None = None,
    title: str | None = None,
    n_columns: int | None = None,
    **marks: Unpack[LayerMarks],
) -> Figure:
    """Per-layer curves of every metric, one panel per metric.

    Parameters
    ----------
    metrics : pandas.DataFrame
        Long per-layer metrics of one run: ``layer, metric, value`` (+ ``depth_pct,
        normalization, dataset``).
    metric_names : sequence of str, optional
        Metrics to draw, in this order (default: all, in registry order).
    normalization : str or Mapping, optional
        Normalization to draw (one for all, or per metric); default: each metric's default
        (``maxEntropy`` for entropies, else ``raw``).
    title : str, optional
        Figure title.
    n_columns : int, optional
        Panels per row (default: 2 for 2 or 4 panels, else 3).
    **marks
        The layers marked on every panel (:class:`~layerscope.report.plots.LayerMarks`):
        ``best_layer``, ``chosen_layer``, ``chosen_label`` and ``last_layer``.

    Returns
    -------
    matplotlib.figure.Figure
        One axes per metric. With several text sources (``dataset``) each panel has one thin line
        per source, named in the legend below the panels, and a thick line: the all-texts set
        (``"all"``) when there is one, else the mean over the sources. Otherwise one line.
    """
    check_keywords("metric_curves_figure", marks, LayerMarks)
    require(metrics, ("layer", "metric", "value"), "metric curves")
    last_layer = marks.get("last_layer")
    last = last_layer if last_layer is not None else infer_last_layer(metrics)
    frame = with_depth(metrics, last_layer)
    present = order_metrics(frame["metric"].dropna().astype(str).unique())
    names = list(metric_names) if metric_names is not None else present
    names = [name for name in names if name in present]
    if not names:
        raise LayerscopeError("metric curves: none of the requested metrics is in the table")
    sources = sorted(frame["dataset"].dropna().astype(str).unique()) if "dataset" in frame.columns else []
    thin = [source for source in sources if source != ALL_TEXTS or len(sources) == 1]
    styles = dict(zip(thin, line_styles(len(thin)), strict=True))  # one look per source on every panel
    legend: dict[str, Any] = {}
    with plot_style():
        figure, axes = panel_figure(len(names), auto_columns(len(names), n_columns), (4.2, 3.0))
        for axis, name in zip(axes, names, strict=True):
            rows = frame[frame["metric"] == name]
            norm = asked_normalization(frame, name, normalization)
            if norm is not None and "normalization" in rows.columns:
                rows = rows[rows["normalization"] == norm]
            rows = rows[np.isfinite(rows["value"].to_numpy(dtype=float))]
            datasets = sorted(rows["dataset"].dropna().astype(str).unique()) if "dataset" in rows.columns else []
            if len(datasets) > 1:
                for dataset in (dataset for dataset in datasets if dataset in styles):
                    part = rows[rows["dataset"] == dataset].sort_values("layer")
                    color, dash = styles[dataset]
                    legend.setdefault(dataset, axis.plot(part["depth_pct"], part["value"], color=color,
                                                         linestyle=dash, linewidth=1.0, alpha=0.75,
                                                         label=dataset)[0])
                if ALL_TEXTS in datasets:
                    thick, label = rows[rows["dataset"] == ALL_TEXTS], "all texts"
                else:
                    thick, label = rows, "mean over text sources"
                mean = thick.groupby("layer").agg(depth_pct=("depth_pct", "mean"), value=("value", "mean"))
                legend.setdefault(label, axis.plot(mean["depth_pct"], mean["value"], color="#000000", linewidth=2.2,
                                                   marker="o", markersize=3, label=label)[0])
            else:
                ordered = rows.sort_values("layer")
                axis.plot(ordered["depth_pct"], ordered["value"], color=OKABE_ITO[0], marker="o", markersize=3)
            note = direction_note(name)
            axis.set_title(metric_label(name, norm) + (f"\n{note}" if note else ""), fontsize=10.5)
            depth_axis(axis)
        handles, labels = layer_markers(axes, last, marks)
        finish(figure, title, [*legend.values(), *handles], [*legend, *labels])
    return figure


def plot_metric_curves(metrics: pd.DataFrame, out: str | os.PathLike[str], **options: Any) -> Path:
    """Write :func:`metric_curves_figure` to ``out`` (PNG) and return the path."""
    return save_figure(metric_curves_figure(metrics, **options), out)


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
    title, n_columns
        As in :func:`metric_curves_figure`.

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
        for table in tables.values():  # the per-type scores stay in the tables: one panel each would crowd it
            found.extend(str(column) for column in table.columns if column not in skip and column not in found
                         and column not in type_columns(table))
        columns = order_metrics(found) + (["avg_score"] if any("avg_score" in t.columns for t in tables.values()) else [])
    columns = list(columns)
    if not columns:
        raise LayerscopeError("run overlay: the runs have no metric or score columns")
    names = dict(labels or {})
    ordered = len(tables) > len(OKABE_ITO)
    colors = dict(zip(tables, (sequential_colors if ordered else categorical_colors)(len(tables)), strict=True))
    legend: dict[str, Any] = {}
    with plot_style():
        figure, axes = panel_figure(len(columns), auto_columns(len(columns), n_columns), (4.2, 3.0))
        for axis, column in zip(axes, columns, strict=True):
            for run, table in tables.items():
                if column not in table.columns:
                    continue
                part = table[["depth_pct", column]].dropna().sort_values("depth_pct")
                legend.setdefault(run, axis.plot(part["depth_pct"], part[column], color=colors[run], marker="o",
                                                 markersize=2.5, linewidth=1.6, label=run)[0])
            if column == "avg_score":
                axis.set_title(names.get(column, "Average task score (x100)"))
            else:
                note = direction_note(column)
                axis.set_title(names.get(column, metric_label(column)) + (f"\n{note}" if note else ""), fontsize=10.5)
            depth_axis(axis)
        finish(figure, title, list(legend.values()), list(legend))
    return figure


def plot_run_overlay(tables: Mapping[str, pd.DataFrame], out: str | os.PathLike[str], **options: Any) -> Path:
    """Write :func:`run_overlay_figure` to ``out`` (PNG) and return the path."""
    return save_figure(run_overlay_figure(tables, **options), out)
