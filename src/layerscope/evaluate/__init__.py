"""Downstream evaluation of every layer through MTEB's evaluators, from one encoding pass.

Needs the ``mteb`` extra (but for :mod:`~layerscope.evaluate.probe`, the linear probe of vision
models). Submodules: :mod:`~layerscope.evaluate.tasks` (offline suite, the paper's
32 hub tasks, name resolution), :mod:`~layerscope.evaluate.encoder` (MTEB encoders over cached
embeddings), :mod:`~layerscope.evaluate.runner` (:func:`evaluate_layers`, :func:`run_mteb`).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

if "MTEB_CACHE" not in os.environ:
    # mteb creates ~/.cache/mteb on import; layerscope never uses MTEB's results cache
    # (cache=None everywhere), so keep that folder out of the user's home.
    os.environ["MTEB_CACHE"] = str(Path(tempfile.gettempdir()) / "layerscope-mteb-cache")

_RUNNER = ("average_by_layer", "best_and_last", "collect_texts", "evaluate_layers", "layer_table", "paper32_average",
           "run_mteb")
_TASKS = ("describe_offline", "offline_suite", "paper32", "resolve")
_PROBE = ("linear_probe",)

__all__ = sorted(_RUNNER + _TASKS + _PROBE)


def __getattr__(name: str) -> Any:
    """Import on first use: MTEB (runner, tasks) takes seconds to import and the probe needs none of it."""
    import importlib

    for module, names in (("runner", _RUNNER), ("tasks", _TASKS), ("probe", _PROBE)):
        if name in names:
            return getattr(importlib.import_module(f"layerscope.evaluate.{module}"), name)
    raise AttributeError(f"module 'layerscope.evaluate' has no attribute '{name}'")
