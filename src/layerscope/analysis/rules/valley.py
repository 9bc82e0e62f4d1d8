"""Valley-relative rules, anchored at the minimum of a metric's depth profile (the prompt-entropy valley)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd

from layerscope.analysis.rules.base import _check_fraction, _OneMetric, _percent
from layerscope.analysis.rules.model_data import _ALL_TEXTS_COLUMN, _EPSILON, ModelData

__all__ = ["ValleyFractionRule", "ValleyRecoveryRule"]


def _valley(profile: pd.Series) -> tuple[int, float, int, float]:
    """(valley layer, valley value, deepest layer, its value) of a profile with finite values."""
    values = profile.to_numpy(dtype=float)
    layers = profile.index.to_numpy(dtype=np.int64)
    position = int(np.argmin(values))
    return int(layers[position]), float(values[position]), int(layers[-1]), float(values[-1])


@dataclass(frozen=True)
class _ValleyBased(_OneMetric):
    metric: str = "prompt_entropy"
    fraction: float = 0.5
    texts: str = "all"
    normalization: str | None = None
    fallback: str = "last"

    def __post_init__(self) -> None:
        _check_fraction("fraction", self.fraction)
        super().__post_init__()

    def _target(self, profile: pd.Series, model: ModelData) -> float:
        raise NotImplementedError

    def _decide(self, model: ModelData, columns: Sequence[str], arrays: list[np.ndarray]) -> np.ndarray:
        # the valley is a property of the whole profile, not only of the scored layers
        decided = np.full(len(columns), np.nan)
        table = model.metric_table(self.metric, self.normalization)
        for position, column in enumerate(columns):
            if column == _ALL_TEXTS_COLUMN:
                profile = model.all_texts_profile(self.metric, self.normalization)
            else:
                profile = table[column].dropna()
            if not profile.empty:
                decided[position] = model.nearest_layer(self._target(profile, model))
        return decided


@dataclass(frozen=True)
class ValleyFractionRule(_ValleyBased):
    """A fixed fraction of the way from a metric's valley to the last layer.

    The valley v is the layer where the metric is lowest over all layers that have a value (not
    only the scored ones; ties: the shallower). The target is ``v + fraction * (L - v)``, rounded
    half up, then the nearest scored layer (ties: the deeper). ``fraction=0`` is the valley itself,
    ``fraction=1`` the last layer.

    Parameters
    ----------
    metric : str, default "prompt_entropy"
        The metric whose valley anchors the rule.
    fraction : float, default 0.5
        In [0, 1].
    texts, normalization, fallback
        As in :class:`MetricRule` (default ``texts="all"``).
    """

    family: ClassVar[str] = "valley_fraction"

    @property
    def name(self) -> str:
        return self._described(f"{_percent(self.fraction)} from the ", " valley to the last layer")

    def _target(self, profile: pd.Series, model: ModelData) -> float:
        valley, _, _, _ = _valley(profile)
        return valley + self.fraction * (model.last_layer - valley)


@dataclass(frozen=True)
class ValleyRecoveryRule(_ValleyBased):
    """The first layer after a metric's valley where it has recovered a fraction of its rise.

    With valley v (value m, as in :class:`ValleyFractionRule`) and the deepest layer with a value
    e (value M): the first layer l > v with ``value(l) - m >= fraction * (M - m)``, then the
    nearest scored layer (ties: the deeper). When there is no rise (``M <= m``: the valley is the
    deepest layer), the rule chooses e.

    Parameters
    ----------
    fraction : float, default 0.5
        Share of the rise from the valley to the last layer's value, in [0, 1].
    metric, texts, normalization, fallback
        As in :class:`ValleyFractionRule`.
    """

    family: ClassVar[str] = "valley_recovery"

    @property
    def name(self) -> str:
        return self._described("first layer after the ", f" valley recovering {_percent(self.fraction)}")

    def _target(self, profile: pd.Series, model: ModelData) -> float:
        valley, low, deepest, high = _valley(profile)
        if high <= low:
            return float(deepest)
        after = profile[profile.index > valley]
        threshold = low + self.fraction * (high - low)
        reached = after[after.to_numpy(dtype=float) >= threshold - _EPSILON]
        return float(reached.index[0]) if len(reached) else float(deepest)
