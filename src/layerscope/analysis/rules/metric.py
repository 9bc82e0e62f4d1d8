"""Rules that take the layer where one metric is best: over every layer, or inside a depth window."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from layerscope.analysis.rules.base import (
    _DIRECTIONS,
    _best_in,
    _check_choice,
    _default_direction,
    _OneMetric,
    _Windowed,
)
from layerscope.analysis.rules.model_data import ModelData

__all__ = ["MetricRule", "WindowMetricRule"]


@dataclass(frozen=True)
class _BestOfMetric(_OneMetric):
    """The rules that take the layer where one metric is best, in a direction."""

    if TYPE_CHECKING:
        direction: str | None

    def __post_init__(self) -> None:
        _check_choice("direction", self.direction, (*_DIRECTIONS, None))
        super().__post_init__()

    @property
    def resolved_direction(self) -> str:
        """``direction``, or the metric's registered one."""
        return self.direction or _default_direction(self.metric)


@dataclass(frozen=True)
class MetricRule(_BestOfMetric):
    """The layer where one metric is best: per task on its own texts, or once on all texts.

    Parameters
    ----------
    metric : str
        Metric name (``dime``, ``infonce``, ``dataset_entropy``...).
    direction : {"min", "max"} or None, default None
        Which extreme to take; ``None``: the metric's registered direction (lower is better ->
        ``min``, see :func:`layerscope.analysis.selection.metric_directions`).
    texts : {"task", "all"}, default "task"
        ``"task"``: each task's own texts (the paper's rule); ``"all"``: all texts, one layer for
        every task.
    normalization : str, optional
        Default: the metric's default normalization.
    fallback : {"last", "all"}, default "last"
        With ``texts="task"``, what a task without its own metric gets: the last layer (as
        :func:`layerscope.analysis.selection.select_layers`) or the all-texts choice.
    """

    metric: str = "dime"
    direction: str | None = None
    texts: str = "task"
    normalization: str | None = None
    fallback: str = "last"

    @property
    def family(self) -> str:  # type: ignore[override]
        return "metric_per_task" if self.texts == "task" else "metric_all_texts"

    @property
    def name(self) -> str:
        return self._described(f"{self.resolved_direction} ")

    def _decide(self, model: ModelData, columns: Sequence[str], arrays: list[np.ndarray]) -> np.ndarray:
        return _best_in(model, arrays[0], self.resolved_direction)


@dataclass(frozen=True)
class WindowMetricRule(_BestOfMetric, _Windowed):
    """The layer where one metric is best among the layers in a depth window.

    Candidates are the scored layers with ``lo <= layer / L <= hi``. If the window holds no scored
    layer, the scored layer nearest to the window's middle is chosen; if the metric has no value
    in the window, the rule falls back as the other metric rules do.

    Parameters
    ----------
    metric : str
        Metric name.
    lo, hi : float
        Depth window, fractions of L (default 0.5 to 1.0).
    direction : {"min", "max"} or None, default None
        As in :class:`MetricRule`.
    texts : {"task", "all"}, default "all"
        As in :class:`MetricRule`.
    normalization : str, optional
        Default: the metric's default normalization.
    fallback : {"last", "all"}, default "last"
        As in :class:`MetricRule`.
    """

    metric: str = "dime"
    lo: float = 0.5
    hi: float = 1.0
    direction: str | None = None
    texts: str = "all"
    normalization: str | None = None
    fallback: str = "last"
    family: ClassVar[str] = "window_metric"

    def __post_init__(self) -> None:
        self._check_window()
        super().__post_init__()

    @property
    def name(self) -> str:
        return self._described(f"{self.resolved_direction} ", self._window_text())

    def _decide(self, model: ModelData, columns: Sequence[str], arrays: list[np.ndarray]) -> np.ndarray:
        mask, empty = self._window_mask(model, len(columns))
        return empty if empty is not None else _best_in(model, arrays[0], self.resolved_direction, mask)
