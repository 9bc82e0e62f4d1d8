"""layerscope.report: plots (matplotlib, PNG) and the self-contained HTML report.

>>> from layerscope.report import build_report, compare_runs            # doctest: +SKIP
>>> build_report("runs/p410")                     # runs/p410/report.html (+ plots/*.png)
>>> compare_runs(["runs/p410", "runs/p160"], "runs/compare")          # runs/compare/compare.html

Importing this package does not import matplotlib; it is loaded when a figure is drawn.
"""

from __future__ import annotations

from layerscope.report.html import (
    COMPARE_FILENAME,
    EXAMPLES_FILENAME,
    PLOTS_DIRNAME,
    REPORT_FILENAME,
    RunData,
    RunSummary,
    build_report,
    compare_runs,
    load_run,
    summarize_run,
    write_examples,
    write_plots,
)
from layerscope.report.plots import (
    plot_correlations,
    plot_heatmap,
    plot_lines_by_condition,
    plot_metric_curves,
    plot_prompt_histogram,
    plot_run_overlay,
    plot_task_scores,
    save_figure,
)

__all__ = [
    "COMPARE_FILENAME",
    "EXAMPLES_FILENAME",
    "PLOTS_DIRNAME",
    "REPORT_FILENAME",
    "RunData",
    "RunSummary",
    "build_report",
    "compare_runs",
    "load_run",
    "plot_correlations",
    "plot_heatmap",
    "plot_lines_by_condition",
    "plot_metric_curves",
    "plot_prompt_histogram",
    "plot_run_overlay",
    "plot_task_scores",
    "save_figure",
    "summarize_run",
    "write_examples",
    "write_plots",
]
