"""Model loading, bundled offline models, the family table and per-architecture adapters."""

from layerscope.models.adapters import ADAPTERS, HOOK_POINTS, Adapter, BlockPointCapture, adapter_for
from layerscope.models.bundled import BUNDLED, DEFAULT_MODEL, BundledModel
from layerscope.models.families import FAMILIES, Family
from layerscope.models.loading import LoadedModel, load_model, wrap_model

__all__ = [
    "ADAPTERS",
    "BUNDLED",
    "DEFAULT_MODEL",
    "FAMILIES",
    "HOOK_POINTS",
    "Adapter",
    "BlockPointCapture",
    "BundledModel",
    "Family",
    "LoadedModel",
    "adapter_for",
    "load_model",
    "wrap_model",
]
