"""layerscope.report: plots (matplotlib, PNG) and the self-contained HTML report.

>>> from layerscope.report import build_report, compare_runs            # doctest: +SKIP
>>> build_report("runs/p410")                     # runs/p410/report.html (+ plots/*.png)
>>> compare_runs(["runs/p410", "runs/p160"], "runs/compare")          # runs/compare/compare.html

Modules, one job each: :mod:`~layerscope.report.plots` (a package, one module per kind of plot),
:mod:`~layerscope.report.elements` (HTML primitives), :mod:`~layerscope.report.sections` (the
sections of a run report), :mod:`~layerscope.report.run_report` (one run's report and plots) and
:mod:`~layerscope.report.comparison` (several runs). Runs are read back by
:mod:`layerscope.store.runs` (``RunData`` and ``load_run`` are re-exported here), and the public
names of :mod:`~layerscope.report.plots` (its ``__all__``: the ``plot_*`` writers, the ``*_figure``
functions) are those of this package too.

Importing this package does not import matplotlib; it is loaded when a figure is drawn.
"""

from __future__ import annotations

from layerscope.report import plots
from layerscope.report.comparison import COMPARE_FILENAME, compare_runs

# every public name of the plots package, from the one list of it (plots.__all__)
from layerscope.report.plots import *  # noqa: F403
from layerscope.report.run_report import (
    EXAMPLES_FILENAME,
    PLOTS_DIRNAME,
    REPORT_FILENAME,
    RunSummary,
    build_report,
    summarize_run,
    write_examples,
    write_plots,
)
from layerscope.store.runs import RunData, load_run

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
    "plots",
    *plots.__all__,
    "summarize_run",
    "write_examples",
    "write_plots",
]
