"""Model loading, bundled offline models and per-architecture adapters."""

from layerscope.models.adapters import ADAPTERS, Adapter, adapter_for
from layerscope.models.bundled import BUNDLED, DEFAULT_MODEL, BundledModel
from layerscope.models.loading import LoadedModel, load_model, wrap_model

__all__ = [
    "ADAPTERS",
    "BUNDLED",
    "DEFAULT_MODEL",
    "Adapter",
    "BundledModel",
    "LoadedModel",
    "adapter_for",
    "load_model",
    "wrap_model",
]
