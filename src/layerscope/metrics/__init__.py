"""Representation-quality metrics (SPEC section 4).

- :mod:`layerscope.metrics.functional`: the math, as pure float64 tensor functions batched over layers.
- :mod:`layerscope.metrics.registry`: the one place that knows a metric (:func:`get`, :func:`available`,
  :func:`register`): its function, inputs, outputs, names, direction for label-free selection, defaults.
- :mod:`layerscope.metrics.accumulators`: streaming accumulators for token-level metrics, fed by the
  extraction engine's token hook.
- :mod:`layerscope.metrics.compute`: :func:`measure`, the one measurement path (one pass + views),
  and :func:`compute_metrics` on top of it.
"""

from __future__ import annotations

from typing import Any

from layerscope.metrics import functional
from layerscope.metrics.accumulators import (
    CurvatureAccumulator,
    PerPromptAccumulator,
    PrefixEntropyAccumulator,
    PrefixEntropyValues,
    PromptEntropyAccumulator,
    TokenMetrics,
    TokenMetricValues,
)
from layerscope.metrics.registry import (
    MetricSpec,
    available,
    find,
    get,
    metric_label,
    names,
    order_metrics,
    register,
    resolve,
    unregister,
)

__all__ = [
    "CurvatureAccumulator",
    "MetricSpec",
    "PerPromptAccumulator",
    "PrefixEntropyAccumulator",
    "PrefixEntropyValues",
    "PromptEntropyAccumulator",
    "TokenMetricValues",
    "TokenMetrics",
    "available",
    "compute_metrics",
    "find",
    "functional",
    "get",
    "measure",
    "metric_label",
    "names",
    "order_metrics",
    "register",
    "resolve",
    "unregister",
]


def __getattr__(name: str) -> Any:
    if name in ("measure", "compute_metrics", "Measurement"):  # imports the extraction engine: on first use
        from layerscope.metrics import compute

        return getattr(compute, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
