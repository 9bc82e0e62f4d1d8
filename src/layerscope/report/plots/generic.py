"""Reusable plots for the experiments: lines by condition (e.g. entropy per layer for each replacement
probability) and a labelled heat map (e.g. layer x checkpoint)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from layerscope.errors import LayerscopeError, check_keywords
from layerscope.report.plots.style import (
    OKABE_ITO,
    SEQUENTIAL_MAP,
    AxisTexts,
    auto_columns,
    categorical_colors,
    depth_axis,
    new_figure,
    panel_figure,
    plot_style,
    require,
    save_figure,
    sequential_colors,
    wrap_title,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from typing_extensions import Unpack

__all__ = ["heatmap_figure", "lines_by_condition_figure", "plot_heatmap", "plot_lines_by_condition"]


def ordered_values(values: pd.Series, order: Sequence[Any] | None) -> list[Any]:
    """The distinct values in ``order``, else in numeric order when all are numbers, else sorted as text."""
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
    hue_label: str | None = None,
    logx: bool = False,
    n_columns: int | None = None,
    **texts: Unpack[AxisTexts],
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
    hue_label : str, optional
        Title of the legend (default: ``hue``).
    logx : bool, default False
        Logarithmic x-axis (e.g. training steps).
    n_columns : int, optional
        Panels per row (default: 2 for 2 or 4 panels, else 3).
    **texts
        ``title``, ``xlabel`` and ``ylabel`` (:class:`~layerscope.report.plots.AxisTexts`); the labels
        default to the column names.

    Returns
    -------
    matplotlib.figure.Figure
        One axes per facet value; each holds one line per hue value present in it.
    """
    check_keywords("lines_by_condition_figure", texts, AxisTexts)
    title, xlabel, ylabel = texts.get("title"), texts.get("xlabel"), texts.get("ylabel")
    needed = [x, y, hue] + ([facet] if facet else [])
    require(frame, needed, "lines by condition")
    if spread not in (None, "std", "iqr"):
        raise LayerscopeError(f"spread must be None, 'std' or 'iqr', got '{spread}'")
    data = frame[np.isfinite(pd.to_numeric(frame[y], errors="coerce").to_numpy(dtype=float))]
    hues = ordered_values(data[hue], hue_order)
    if ordered is None:
        ordered = bool(pd.to_numeric(pd.Series(hues), errors="coerce").notna().all()) or len(hues) > len(OKABE_ITO)
    palette = (sequential_colors if ordered and len(hues) > 1 else categorical_colors)(len(hues))
    colors = dict(zip(hues, palette, strict=True))
    facets: list[Any] = ordered_values(data[facet], None) if facet else [None]
    with plot_style():
        figure, axes = panel_figure(len(facets), auto_columns(len(facets), n_columns), (4.4, 3.2))
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
                depth_axis(axis, label=False)
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
            figure.suptitle(wrap_title(title, figure.get_figwidth()))
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
    colorbar_label: str | None = None,
    cmap: str = SEQUENTIAL_MAP,
    center: float | None = None,
    annotate: bool | None = None,
    decimals: int = 2,
    **texts: Unpack[AxisTexts],
) -> Figure:
    """A labelled heat map, e.g. prompt entropy of layer x checkpoint.

    Parameters
    ----------
    matrix : numpy.ndarray or pandas.DataFrame, shape (rows, columns)
        Values; NaN cells are left blank. A DataFrame supplies default labels from its index and
        columns.
    row_labels, col_labels : sequence, optional
        Tick labels (rows top to bottom, columns left to right).
    colorbar_label : str, optional
        Label of the colour bar.
    cmap : str, default "cividis"
        Colour map; with ``center`` set, a diverging map (``"RdBu_r"``) is used unless one is given.
    center : float, optional
        Value at the middle of a symmetric colour range (e.g. 0 for differences).
    annotate : bool, optional
        Write each value in its cell (default: when the matrix has at most 20 x 20 cells).
    decimals : int, default 2
        Decimals of the annotations.
    **texts
        ``title``, ``xlabel`` and ``ylabel`` (:class:`~layerscope.report.plots.AxisTexts`); none by default.

    Returns
    -------
    matplotlib.figure.Figure
        One heat-map axes and a colour bar.
    """
    check_keywords("heatmap_figure", texts, AxisTexts)
    title, xlabel, ylabel = texts.get("title"), texts.get("xlabel"), texts.get("ylabel")
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
    with plot_style():
        figure = new_figure(min(14.0, 2.2 + 0.55 * n_cols), min(14.0, 1.6 + 0.32 * n_rows))
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
            axis.set_title(wrap_title(title, figure.get_figwidth()))
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
