"""Downstream evaluation of every layer through MTEB's evaluators, from one encoding pass.

Needs the ``mteb`` extra. Submodules: :mod:`~layerscope.evaluate.tasks` (offline suite, the paper's
32 hub tasks, name resolution), :mod:`~layerscope.evaluate.encoder` (MTEB encoders over cached
embeddings), :mod:`~layerscope.evaluate.runner` (:func:`evaluate_layers`, :func:`run_mteb`).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

if "MTEB_CACHE" not in os.environ:
    # mteb creates ~/.cache/mteb on import; layerscope never uses MTEB's results cache
    # (cache=None everywhere), so keep that folder out of the user's home.
    os.environ["MTEB_CACHE"] = str(Path(tempfile.gettempdir()) / "layerscope-mteb-cache")

from layerscope.evaluate.runner import (  # noqa: E402
    average_by_layer,
    best_and_last,
    collect_texts,
    evaluate_layers,
    layer_table,
    paper32_average,
    run_mteb,
)
from layerscope.evaluate.tasks import describe_offline, offline_suite, paper32, resolve  # noqa: E402

__all__ = [
    "average_by_layer",
    "best_and_last",
    "collect_texts",
    "describe_offline",
    "evaluate_layers",
    "layer_table",
    "offline_suite",
    "paper32",
    "paper32_average",
    "resolve",
    "run_mteb",
]
