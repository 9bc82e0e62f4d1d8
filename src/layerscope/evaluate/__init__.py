"""Downstream evaluation of every layer through MTEB's evaluators, from one encoding pass.

Needs the ``mteb`` extra (but for :mod:`~layerscope.evaluate.probe`, the linear probe of vision
models). Submodules, one job each:

- :mod:`~layerscope.evaluate.registry`: the task registry, where tasks register themselves;
- :mod:`~layerscope.evaluate.offline`: the offline suite, MTEB task classes over bundled corpora;
- :mod:`~layerscope.evaluate.offline_v2`: suite v2's tasks over data fetched from the package registries;
- :mod:`~layerscope.evaluate.hub_tasks`: the paper's 32 MTEB hub tasks;
- :mod:`~layerscope.evaluate.task_files`: a user's labelled files as MTEB tasks;
- :mod:`~layerscope.evaluate.catalog`: the built-in tasks and :func:`resolve` (what ``--tasks`` accepts);
- :mod:`~layerscope.evaluate.sampling`: seeded samples and dataset layouts shared by those;
- :mod:`~layerscope.evaluate.seeds`: the seeds of evaluations (a task reseeded as a fresh one);
- :mod:`~layerscope.evaluate.encoder`: MTEB encoders over cached embeddings;
- :mod:`~layerscope.evaluate.runner`: :func:`evaluate_layers`, :func:`run_mteb`;
- :mod:`~layerscope.evaluate.resampling`: what the bootstrap of a task resamples, and the draws;
- :mod:`~layerscope.evaluate.intervals`: the bootstrap record kept with the scores, and its intervals;
- :mod:`~layerscope.evaluate.uncertainty`: bootstrap intervals of per-layer scores (MTEB on resamples);
- :mod:`~layerscope.evaluate.few_labels`: a layer chosen by cross-validation on K labels per class;
- :mod:`~layerscope.evaluate.select`: :func:`select_layer_with_labels` (``layerscope select``).

(:mod:`~layerscope.evaluate.tasks` re-exports the former single module's names; deprecated.)
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
_OFFLINE = ("describe_offline", "offline_suite")
_HUB_TASKS = ("hub_task", "paper32")
_REGISTRY = ("register_task", "resolve")
_TASK_FILES = ("read_task_file", "task_file")
_PROBE = ("linear_probe",)
_SELECT = ("LayerChoice", "select_layer_with_labels")

__all__ = sorted(_RUNNER + _OFFLINE + _HUB_TASKS + _REGISTRY + _TASK_FILES + _PROBE + _SELECT)


def __getattr__(name: str) -> Any:
    """Import on first use: MTEB (runner, tasks) takes seconds to import and the probe needs none of it."""
    import importlib

    for module, names in (("runner", _RUNNER), ("catalog", _OFFLINE), ("hub_tasks", _HUB_TASKS), ("catalog", _REGISTRY),
                          ("task_files", _TASK_FILES), ("probe", _PROBE), ("select", _SELECT)):
        if name in names:
            return getattr(importlib.import_module(f"layerscope.evaluate.{module}"), name)
    raise AttributeError(f"module 'layerscope.evaluate' has no attribute '{name}'")
