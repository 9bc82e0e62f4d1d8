"""Rank aggregation: the layer with the best average rank over several metrics."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from layerscope.analysis.rules.base import (
    _DIRECTIONS,
    _best_in,
    _check_choice,
    _default_direction,
    _MetricBased,
    _source_suffix,
    _Windowed,
)
from layerscope.analysis.rules.model_data import ModelData
from layerscope.errors import LayerscopeError

__all__ = ["RankAggregateRule"]


def _average_ranks(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Ranks along axis 1 (1 = lowest; ties share their average rank) among the ``valid`` rows.

    ``values`` has shape (metrics, layers, sources), ``valid`` (layers, sources); invalid cells get
    NaN. The rank of x is ``#{y < x} + (#{y == x} + 1) / 2`` over the valid y of its column.
    """
    pair_valid = valid[None, :, :] & valid[:, None, :]  # (layers, layers, sources)
    below = (values[:, None, :, :] < values[:, :, None, :]) & pair_valid
    equal = (values[:, None, :, :] == values[:, :, None, :]) & pair_valid
    ranks = below.sum(axis=2) + (equal.sum(axis=2) + 1) / 2.0
    return np.where(valid[None], ranks, np.nan)


@dataclass(frozen=True)
class RankAggregateRule(_MetricBased, _Windowed):
    """The layer with the best average rank over several metrics, optionally inside a depth window.

    Over the candidate layers (scored layers with ``lo <= layer / L <= hi`` where every metric has
    a value), each metric is ranked in its direction (rank 1 = its best layer; tied values share
    their average rank); the ranks are averaged over the metrics and the lowest average wins
    (ties: the shallower layer). An empty window behaves as in :class:`WindowMetricRule`.

    Parameters
    ----------
    metrics : tuple of str
        Two or more metric names.
    lo, hi : float
        Depth window (default: the whole depth).
    directions : tuple of {"min", "max"}, optional
        One per metric; default each metric's registered direction.
    texts : {"task", "all"}, default "all"
        As in :class:`MetricRule`; with ``"task"`` a task's own texts must have every metric.
    fallback : {"last", "all"}, default "last"
        As in :class:`MetricRule`.
    """

    metrics: tuple[str, ...] = ("dataset_entropy", "dime", "infonce")
    lo: float = 0.0
    hi: float = 1.0
    directions: tuple[str, ...] | None = None
    texts: str = "all"
    fallback: str = "last"
    family: ClassVar[str] = "rank_aggregate"

    def __post_init__(self) -> None:
        if isinstance(self.metrics, str) or len(self.metrics) < 1:
            raise LayerscopeError("rank aggregation needs a tuple of metric names")
        object.__setattr__(self, "metrics", tuple(self.metrics))
        if self.directions is not None:
            object.__setattr__(self, "directions", tuple(self.directions))
            if len(self.directions) != len(self.metrics):
                raise LayerscopeError("rank aggregation: give one direction per metric")
            for direction in self.directions:
                _check_choice("direction", direction, _DIRECTIONS)
        self._check_window()
        super().__post_init__()

    @property
    def resolved_directions(self) -> tuple[str, ...]:
        """``directions``, or each metric's registered one."""
        return self.directions or tuple(_default_direction(metric) for metric in self.metrics)

    @property
    def name(self) -> str:
        parts = ", ".join(
            f"{direction} {metric}" for metric, direction in zip(self.metrics, self.resolved_directions, strict=True)
        )
        window = "" if (self.lo, self.hi) == (0.0, 1.0) else self._window_text()
        return f"rank-average({parts}){window}{_source_suffix(self.texts, self.fallback)}"

    def metrics_used(self) -> tuple[str, ...]:
        return self.metrics

    def _metric_keys(self) -> list[tuple[str, str | None]]:
        return [(metric, None) for metric in self.metrics]

    def _decide(self, model: ModelData, columns: Sequence[str], arrays: list[np.ndarray]) -> np.ndarray:
        mask, empty = self._window_mask(model, len(columns))
        if empty is not None:
            return empty
        stack = np.stack(arrays)  # (metrics, layers, sources)
        valid = np.isfinite(stack).all(axis=0) & mask[:, None]
        signs = np.array([1.0 if direction == "min" else -1.0 for direction in self.resolved_directions])
        ranks = _average_ranks(stack * signs[:, None, None], valid)
        return _best_in(model, ranks.mean(axis=0), "min")
