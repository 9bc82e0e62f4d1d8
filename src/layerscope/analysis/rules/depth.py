"""Rules that ignore the metrics: the last layer, and a fixed fraction of the depth."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from layerscope.analysis.rules.base import SelectionRule, _check_fraction, _percent
from layerscope.analysis.rules.model_data import ModelData
from layerscope.analysis.selection import depth_layer

__all__ = ["FixedDepth", "LastLayer"]


@dataclass(frozen=True)
class LastLayer(SelectionRule):
    """The deepest layer of the score grid, for every task."""

    family: ClassVar[str] = "last_layer"

    @property
    def name(self) -> str:
        return "last layer"

    def choose_with_fallbacks(self, model: ModelData) -> tuple[dict[str, int], frozenset[str]]:
        return dict.fromkeys(model.tasks, model.last_scored_layer), frozenset()


@dataclass(frozen=True)
class FixedDepth(SelectionRule):
    """The layer at a fixed fraction of the depth, for every task.

    Layer ``floor(fraction * L + 0.5)`` of a model whose last layer is L; when that layer has no
    scores, the nearest scored layer (ties: the deeper), as
    :func:`layerscope.analysis.selection.depth_layer` computes it.

    Parameters
    ----------
    fraction : float
        Depth in [0, 1].
    """

    fraction: float = 0.7
    family: ClassVar[str] = "fixed_depth"

    def __post_init__(self) -> None:
        _check_fraction("fraction", self.fraction)

    @property
    def name(self) -> str:
        return f"depth {_percent(self.fraction)}"

    def choose_with_fallbacks(self, model: ModelData) -> tuple[dict[str, int], frozenset[str]]:
        layer = depth_layer(self.fraction, model.last_layer, model.grid.layers)
        return dict.fromkeys(model.tasks, layer), frozenset()
