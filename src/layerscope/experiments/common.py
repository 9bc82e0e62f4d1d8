"""Deprecated: the experiments' shared code now lives in :mod:`~layerscope.experiments.base` (the
skeleton: inputs, store runs, plots, results), :mod:`~layerscope.experiments.curves` (per-layer curve
analysis) and :mod:`~layerscope.experiments.hooks` (token hooks). The names below keep working.
"""

from __future__ import annotations

import warnings
from typing import Any

_MOVED = {
    **dict.fromkeys(("DEFAULT_DATASET", "DEFAULT_METRICS", "ExperimentResult", "ModelEntry", "experiment_rows", "float_list",
                     "int_list", "log2_ticks", "model_label", "progress_bar", "split_list", "texts_digest"),
                    "layerscope.experiments.base"),
    **dict.fromkeys(("SUMMARY_DEPTHS", "layer_frame", "main_rows", "prompt_frame", "spread_stats", "valley",
                     "values_at_depths"), "layerscope.experiments.curves"),
    **dict.fromkeys(("SkipFirstTokens", "token_hook"), "layerscope.experiments.hooks"),
    "step_of": "layerscope.experiments.checkpoints",
}


#: The plumbing the skeleton replaced: loading, texts, store rows and plots are steps of ``Setup``.
_REPLACED = ("as_model", "resolve_texts", "output_dir", "write_store", "plot_file", "safe_plot",
             "metrics_over_models", "main_normalization", "EXPERIMENT_COLUMNS")


def __getattr__(name: str) -> Any:
    module = _MOVED.get(name)
    if module is None:
        if name in _REPLACED:
            raise AttributeError(f"layerscope.experiments.common.{name} was replaced by the experiment skeleton: "
                                 "layerscope.experiments.base.Setup (load, load_texts, write, finish), "
                                 "measure_models, and curves.main_normalization")
        raise AttributeError(f"module 'layerscope.experiments.common' has no attribute '{name}'")
    import importlib

    warnings.warn(f"layerscope.experiments.common.{name} moved to {module}.{name}", DeprecationWarning, stacklevel=2)
    return getattr(importlib.import_module(module), name)
