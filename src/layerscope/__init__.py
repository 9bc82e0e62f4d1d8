"""layerscope: layer-by-layer analysis of the hidden representations of neural networks.

Implements and extends *Layer by Layer: Uncovering Hidden Representations in Language Models*
(Skean et al., ICML 2025). Heavy submodules are imported lazily so ``import layerscope`` is fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

from layerscope.errors import LayerscopeError

# public name -> "module:attribute" (imported on first use)
_LAZY = {
    "load_model": "layerscope.models:load_model",
    "LoadedModel": "layerscope.models:LoadedModel",
    "extract": "layerscope.extract:extract",
    "extract_images": "layerscope.extract:extract_images",
    "load_images": "layerscope.data.images:load_images",
    "run_sweep": "layerscope.sweep:run_sweep",
    "Extraction": "layerscope.extract:Extraction",
    "compute_metrics": "layerscope.metrics.compute:compute_metrics",
    "evaluate_layers": "layerscope.evaluate:evaluate_layers",
    "select_layer": "layerscope.analysis:select_layer",
    "load_texts": "layerscope.data:load_texts",
    "measure": "layerscope.metrics.compute:measure",
    "select_layer_with_labels": "layerscope.evaluate.select:select_layer_with_labels",
    "export_layer": "layerscope.export:export_layer",
    "choose_layer": "layerscope.analysis.choice:choose_layer",
    "parse_rule": "layerscope.analysis.choice:parse_rule",
    "config": "layerscope.config",
    "models": "layerscope.models",
    "data": "layerscope.data",
    "metrics": "layerscope.metrics",
    "augment": "layerscope.augment",
    "tasks": "layerscope.evaluate.tasks",
    "analysis": "layerscope.analysis",
    "store": "layerscope.store",
    "report": "layerscope.report",
    "experiments": "layerscope.experiments",
}

__all__ = ["LayerscopeError", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'layerscope' has no attribute '{name}'")
    module_name, _, attribute = target.partition(":")
    module = importlib.import_module(module_name)
    value = getattr(module, attribute) if attribute else module
    globals()[name] = value
    return value
