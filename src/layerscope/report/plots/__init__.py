"""Plots of per-layer results as PNG files, with depth % on the x-axis like the paper's figures.

Every ``plot_*`` function takes tables (pandas DataFrames in the long formats of
:mod:`layerscope.store`), writes one PNG atomically and returns its path. The matching
``*_figure`` function returns the :class:`matplotlib.figure.Figure` instead (for notebooks and
tests). matplotlib is imported only when a figure is drawn.

One module per kind of plot:

- :mod:`~layerscope.report.plots.style`: palette, rc style, saving, the depth axis, layer markers
  (:class:`LayerMarks`: the layers a per-layer figure marks; :class:`AxisTexts`: title and axis labels);
- :mod:`~layerscope.report.plots.curves`: metric curves of a run, several runs overlaid;
- :mod:`~layerscope.report.plots.scores`: task scores per layer;
- :mod:`~layerscope.report.plots.correlations`: metric-score correlations;
- :mod:`~layerscope.report.plots.prompts`: per-prompt distributions (histograms by layer);
- :mod:`~layerscope.report.plots.generic`: lines by condition and heat maps, for the experiments.

Colours follow the Okabe-Ito palette (distinguishable with the common colour-vision deficiencies);
ordered conditions (checkpoints, probabilities, sizes) and heat maps use the perceptually uniform
``cividis`` map.
"""

from __future__ import annotations

from typing import Any

from layerscope.metrics.registry import metric_label, order_metrics
from layerscope.report.plots.correlations import correlation_figure, plot_correlations
from layerscope.report.plots.curves import (
    metric_curves_figure,
    plot_metric_curves,
    plot_run_overlay,
    run_overlay_figure,
)
from layerscope.report.plots.generic import (
    heatmap_figure,
    lines_by_condition_figure,
    plot_heatmap,
    plot_lines_by_condition,
)
from layerscope.report.plots.prompts import plot_prompt_histogram, prompt_histogram_figure
from layerscope.report.plots.scores import plot_task_scores, task_scores_figure
from layerscope.report.plots.style import DPI, OKABE_ITO, AxisTexts, LayerMarks, data_lines, save_figure

__all__ = [
    "DPI",
    "OKABE_ITO",
    "AxisTexts",
    "LayerMarks",
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


def __getattr__(name: str) -> Any:
    if name == "METRIC_ORDER":  # deprecated: the registry knows the order
        import warnings

        warnings.warn("plots.METRIC_ORDER is deprecated; use layerscope.metrics.names()", DeprecationWarning,
                      stacklevel=2)
        from layerscope.metrics.registry import names

        return tuple(names())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
