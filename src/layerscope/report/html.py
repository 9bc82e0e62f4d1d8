"""Deprecated: the names of the former ``layerscope.report.html`` module, served from where they live now.

The module did several jobs; each now has its own module:

- :mod:`layerscope.store.runs`: reading runs back (``RunData``, ``load_run``);
- :mod:`layerscope.report.elements`: HTML primitives;
- :mod:`layerscope.report.sections`: the sections of a run report;
- :mod:`layerscope.report.run_report`: ``build_report``, ``write_plots``, ``write_examples``, ``summarize_run``;
- :mod:`layerscope.report.comparison`: ``compare_runs``.

Import from :mod:`layerscope.report` (or those modules) instead; reading a name here warns
with a :class:`DeprecationWarning` naming its new home.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

#: Former public name -> the module that holds it now.
_MOVED = {
    "COMPARE_FILENAME": "layerscope.report.comparison",
    "compare_runs": "layerscope.report.comparison",
    "RunData": "layerscope.store.runs",
    "load_run": "layerscope.store.runs",
    **dict.fromkeys(("EXAMPLES_FILENAME", "PLOTS_DIRNAME", "REPORT_FILENAME", "RunSummary", "build_report",
                     "summarize_run", "write_examples", "write_plots"), "layerscope.report.run_report"),
}

__all__ = sorted(_MOVED)  # served by __getattr__ below


def __getattr__(name: str) -> Any:
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(f"layerscope.report.html is deprecated: import {name} from {_MOVED[name]} "
                  "(or layerscope.report)", DeprecationWarning, stacklevel=2)
    return getattr(importlib.import_module(_MOVED[name]), name)


def __dir__() -> list[str]:
    return __all__
