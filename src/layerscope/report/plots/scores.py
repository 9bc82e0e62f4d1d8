"""Downstream task scores per layer: one panel per task type, every task named."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from layerscope.analysis.tables import infer_last_layer, score_grid
from layerscope.errors import check_keywords
from layerscope.report.plots.style import (
    LayerMarks,
    categorical_colors,
    depth_axis,
    finish,
    layer_markers,
    legend_beside,
    line_styles,
    panel_figure,
    plot_style,
    require,
    save_figure,
    with_depth,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from typing_extensions import Unpack

__all__ = ["plot_task_scores", "task_scores_figure"]


def task_scores_figure(
    scores: pd.DataFrame,
    *,
    title: str | None = None,
    n_columns: int | None = None,
    **marks: Unpack[LayerMarks],
) -> Figure:
    """Task scores per layer: one panel per task type, plus the average over all tasks.

    Parameters
    ----------
    scores : pandas.DataFrame
        Per-layer task scores of one run: ``layer, task, main_score`` (+ ``task_type,
        depth_pct``). Scores in 0..1 are drawn x 100.
    title : str, optional
        Figure title.
    n_columns : int, optional
        Panels per row (default 2: every panel has its legend beside it).
    **marks
        The layers marked on every panel (:class:`~layerscope.report.plots.LayerMarks`), as in
        :func:`~layerscope.report.plots.metric_curves_figure`.

    Returns
    -------
    matplotlib.figure.Figure
        One axes per task type with a line per task (its own colour and dash, named in the legend
        beside the panel) and, with two tasks or more, a thick black line for the type's mean;
        with several task types a last axes ("All tasks") with each type's mean (a dot on its best
        layer, named in the legend) and the overall average (the complete layer x task grid of
        :func:`layerscope.analysis.score_grid`).
    """
    check_keywords("task_scores_figure", marks, LayerMarks)
    require(scores, ("layer", "task", "main_score"), "task scores")
    last_layer = marks.get("last_layer")
    last = last_layer if last_layer is not None else infer_last_layer(scores)
    frame = with_depth(scores, last_layer)
    if "task_type" not in frame.columns:
        frame = frame.assign(task_type="tasks")
    frame = frame.assign(task_type=frame["task_type"].fillna("unknown").astype(str))
    types = sorted(frame["task_type"].unique())
    grid = score_grid(scores, last_layer=last)
    grid_depth = [100.0 * layer / last if last > 0 else 0.0 for layer in grid.layers]
    n_panels = len(types) + (1 if len(types) > 1 else 0)
    type_colors = dict(zip(types, categorical_colors(len(types)), strict=True))
    with plot_style():
        figure, axes = panel_figure(n_panels, n_columns or min(2, n_panels), (6.4, 3.0))
        for axis, task_type in zip(axes, types, strict=False):
            rows = frame[frame["task_type"] == task_type]
            tasks = sorted(rows["task"].astype(str).unique())
            for (color, dash), task in zip(line_styles(len(tasks)), tasks, strict=True):
                part = rows[rows["task"].astype(str) == task].sort_values("layer")
                axis.plot(part["depth_pct"], 100.0 * part["main_score"], color=color, linestyle=dash,
                          linewidth=1.3, label=task)
            type_tasks = [task for task in grid.tasks if grid.task_types.get(task) == task_type]
            if len(type_tasks) > 1:
                mean = 100.0 * grid.matrix[type_tasks].mean(axis=1)
                axis.plot(grid_depth, mean.to_numpy(), color="#000000", linewidth=2.6,
                          label=f"mean of {len(type_tasks)} tasks")
            axis.set_title(f"{task_type} ({len(tasks)} task{'s' if len(tasks) != 1 else ''})")
            axis.set_ylabel("Score (x100)")
            depth_axis(axis)
            legend_beside(axis, *axis.get_legend_handles_labels())
        if len(types) > 1:
            axis = axes[-1]
            for task_type in types:
                type_tasks = [task for task in grid.tasks if grid.task_types.get(task) == task_type]
                if type_tasks:  # a dot on each type's best layer: types often peak at different depths
                    mean = (100.0 * grid.matrix[type_tasks].mean(axis=1)).to_numpy()
                    best_at = int(np.argmax(mean))
                    axis.plot(grid_depth, mean, color=type_colors[task_type], linewidth=1.4, marker="o",
                              markersize=5, markevery=[best_at],
                              label=f"{task_type} (best: layer {grid.layers[best_at]})")
            axis.plot(grid_depth, (100.0 * grid.average).to_numpy(), color="#000000", linewidth=2.8,
                      label="average")
            axis.set_title(f"All tasks ({len(grid.tasks)})")
            axis.set_ylabel("Score (x100)")
            depth_axis(axis)
            legend_beside(axis, *axis.get_legend_handles_labels())
        finish(figure, title, *layer_markers(axes, last, marks))
    return figure


def plot_task_scores(scores: pd.DataFrame, out: str | os.PathLike[str], **options: Any) -> Path:
    """Write :func:`task_scores_figure` to ``out`` (PNG) and return the path."""
    return save_figure(task_scores_figure(scores, **options), out)
