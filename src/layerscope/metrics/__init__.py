"""Representation-quality metrics (SPEC section 4).

- :mod:`layerscope.metrics.functional`: the math, as pure float64 tensor functions batched over layers.
- :func:`available`, :func:`get`, :func:`resolve`: the registry of metric specs (level, views needed,
  direction for label-free selection, defaults).
- :mod:`layerscope.metrics.accumulators`: streaming accumulators for token-level metrics, fed by the
  extraction engine's token hook.
"""

from __future__ import annotations

from layerscope.metrics import functional
from layerscope.metrics.accumulators import (
    CurvatureAccumulator,
    PrefixEntropyAccumulator,
    PrefixEntropyValues,
    PromptEntropyAccumulator,
    TokenMetrics,
    TokenMetricValues,
)
from layerscope.metrics.registry import MetricSpec, available, get, names, resolve

__all__ = [
    "CurvatureAccumulator",
    "MetricSpec",
    "PrefixEntropyAccumulator",
    "PrefixEntropyValues",
    "PromptEntropyAccumulator",
    "TokenMetricValues",
    "TokenMetrics",
    "available",
    "functional",
    "get",
    "names",
    "resolve",
]
