"""Model loading, bundled offline models, the family table and per-architecture adapters.

The bundled models and the family table need no torch and are imported with the package; the
adapters and the loaders (torch, ~1 s) are imported on first use of one of their names, so that
``layerscope models`` and every ``--help`` start without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from layerscope.models.bundled import BUNDLED, DEFAULT_MODEL, BundledModel
from layerscope.models.families import FAMILIES, Family

if TYPE_CHECKING:
    from layerscope.models.adapters import ADAPTERS, HOOK_POINTS, Adapter, BlockPointCapture, adapter_for
    from layerscope.models.loading import LoadedModel, load_model, wrap_model

_ADAPTERS = ("ADAPTERS", "HOOK_POINTS", "Adapter", "BlockPointCapture", "adapter_for")
_LOADING = ("LoadedModel", "load_model", "wrap_model")

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


def __getattr__(name: str) -> Any:
    if name in _ADAPTERS:
        from layerscope.models import adapters

        return getattr(adapters, name)
    if name in _LOADING:
        from layerscope.models import loading

        return getattr(loading, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
