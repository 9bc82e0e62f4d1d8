"""What the selection rules share: the base class, the machinery of the metric rules, checks and names."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from layerscope.analysis.rules.model_data import _ALL_TEXTS_COLUMN, ModelData
from layerscope.analysis.selection import metric_directions
from layerscope.errors import LayerscopeError

__all__ = ["SelectionRule"]

_DIRECTIONS = ("min", "max")
_TEXTS = ("task", "all")
_FALLBACKS = ("last", "all")


@functools.cache
def _default_direction(metric: str) -> str:
    """``"max"`` or ``"min"`` from :func:`layerscope.analysis.selection.metric_directions`."""
    return "max" if metric_directions([metric])[metric] else "min"


def _percent(value: float) -> str:
    return f"{100 * value:g}%"


def _check_choice(name: str, value: object, allowed: Sequence[object]) -> None:
    if value not in allowed:
        raise LayerscopeError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise LayerscopeError(f"{name} must lie in [0, 1], got {value}")


def _best_rows(values: np.ndarray, direction: str) -> tuple[np.ndarray, np.ndarray]:
    """Per column of ``values`` (rows, columns): the row of the best finite value (first on ties)
    and whether the column had any finite value."""
    finite = np.isfinite(values)
    oriented = values if direction == "min" else -values
    filled = np.where(finite, oriented, np.inf)
    return np.argmin(filled, axis=0), finite.any(axis=0)


@dataclass(frozen=True)
class SelectionRule:
    """Base of the selection rules: a frozen, hashable set of parameters with a ``choose`` method.

    Subclasses define :attr:`family`, :attr:`name` and :meth:`_decide`.
    """

    family: ClassVar[str] = "rule"

    @property
    def name(self) -> str:
        """A readable, unique description of the rule and its parameters."""
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        """The rule's parameters (field -> value)."""
        return {item.name: getattr(self, item.name) for item in dataclasses.fields(self)}

    def params_json(self) -> str:
        """:meth:`params` as canonical JSON (tuples become lists)."""
        return json.dumps(self.params(), sort_keys=True, default=list)

    def metrics_used(self) -> tuple[str, ...]:
        """Metrics the rule reads (empty for depth rules)."""
        return ()

    def choose(self, model: ModelData) -> dict[str, int]:
        """The layer chosen for every task of ``model``'s score grid.

        Parameters
        ----------
        model : ModelData

        Returns
        -------
        dict of str to int
            Task -> layer (one of ``model.layers``).
        """
        return self.choose_with_fallbacks(model)[0]

    def choose_with_fallbacks(self, model: ModelData) -> tuple[dict[str, int], frozenset[str]]:
        """:meth:`choose`, plus the tasks for which the rule could not decide (they got the last layer)."""
        raise NotImplementedError

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class _MetricBased(SelectionRule):
    """Shared machinery of the metric rules: text sources, per-source decisions, fallbacks.

    Subclasses implement :meth:`_metric_keys` and :meth:`_decide`, which sees each metric as an
    array over the candidate layers (rows: ``model.layers``) and text sources (columns), and
    validate their own fields before calling this ``__post_init__``.
    """

    def __post_init__(self) -> None:
        _check_choice("texts", self._texts(), _TEXTS)
        _check_choice("fallback", self._fallback(), _FALLBACKS)

    def _metric_keys(self) -> list[tuple[str, str | None]]:
        raise NotImplementedError

    def _decide(self, model: ModelData, columns: Sequence[str], arrays: list[np.ndarray]) -> np.ndarray:
        """Per column: the chosen layer, or NaN when the rule cannot decide there."""
        raise NotImplementedError

    def _texts(self) -> str:
        return getattr(self, "texts", "all")

    def _fallback(self) -> str:
        return getattr(self, "fallback", "last")

    def _decide_all_texts(self, model: ModelData) -> float:
        arrays = [model.aligned_all_texts(metric, normalization) for metric, normalization in self._metric_keys()]
        if any(array is None for array in arrays):
            return math.nan
        return float(self._decide(model, (_ALL_TEXTS_COLUMN,), arrays)[0])  # type: ignore[arg-type]

    def choose_with_fallbacks(self, model: ModelData) -> tuple[dict[str, int], frozenset[str]]:
        last = model.last_scored_layer
        if self._texts() == "all":
            layer = self._decide_all_texts(model)
            if math.isnan(layer):
                return dict.fromkeys(model.tasks, last), frozenset(model.tasks)
            return dict.fromkeys(model.tasks, int(layer)), frozenset()

        aligned = [model.aligned_table(metric, normalization) for metric, normalization in self._metric_keys()]
        sources = {task: model.own_source(task) for task in model.tasks}
        shared = set.intersection(*(set(columns) for columns, _ in aligned))
        wanted = sorted(set(sources.values()) & shared)
        decided: dict[str, float] = {}
        if wanted:
            arrays = []
            for columns, values in aligned:
                position = {column: index for index, column in enumerate(columns)}
                arrays.append(values[:, [position[column] for column in wanted]])
            decided = dict(zip(wanted, self._decide(model, wanted, arrays).tolist(), strict=True))
        fallback_layer: float | None = None
        choices: dict[str, int] = {}
        fallbacks: set[str] = set()
        for task, source in sources.items():
            layer = decided.get(source, math.nan)
            if math.isnan(layer) and self._fallback() == "all":
                if fallback_layer is None:
                    fallback_layer = self._decide_all_texts(model)
                layer = fallback_layer
            if math.isnan(layer):
                choices[task] = last
                fallbacks.add(task)
            else:
                choices[task] = int(layer)
        return choices, frozenset(fallbacks)


def _best_in(
    model: ModelData, values: np.ndarray, direction: str, mask: np.ndarray | None = None
) -> np.ndarray:
    """Per column of ``values`` (rows: ``model.layers``): the best layer among the rows in ``mask``."""
    if mask is not None:
        values = np.where(mask[:, None], values, np.nan)
    rows, found = _best_rows(values, direction)
    return np.where(found, model.layers[rows], np.nan)


class _Windowed:
    """What the rules restricted to a depth window share: the window ``lo <= layer / L <= hi`` (fields
    ``lo`` and ``hi`` of each rule), its check, its words in the rule's name and its candidates."""

    if TYPE_CHECKING:
        lo: float
        hi: float

    def _check_window(self) -> None:
        if not (0.0 <= self.lo <= self.hi <= 1.0):
            raise LayerscopeError(f"depth window must satisfy 0 <= lo <= hi <= 1, got [{self.lo}, {self.hi}]")

    def _window_text(self) -> str:
        return f" in depth {100 * self.lo:g}-{_percent(self.hi)}"

    def _window_mask(self, model: ModelData, n_columns: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The candidate rows of ``model.layers`` (a mask) and, when the window holds no scored layer,
        the choice for every column instead: the scored layer nearest to the window's middle."""
        mask = model.window_mask(self.lo, self.hi)
        if mask.any():
            return mask, None
        middle = model.nearest_layer(0.5 * (self.lo + self.hi) * model.last_layer)
        return mask, np.full(n_columns, float(middle))


def _source_suffix(texts: str, fallback: str) -> str:
    suffix = " per task" if texts == "task" else " on all texts"
    if texts == "task" and fallback == "all":
        suffix += " (else all texts)"
    return suffix


def _normalization_suffix(normalization: str | None) -> str:
    return f" [{normalization}]" if normalization else ""


@dataclass(frozen=True)
class _OneMetric(_MetricBased):
    """The metric rules that read one metric, in one normalization."""

    if TYPE_CHECKING:  # fields of the subclasses (declared there: each keeps its own field order)
        metric: str
        normalization: str | None

    def metrics_used(self) -> tuple[str, ...]:
        return (self.metric,)

    def _metric_keys(self) -> list[tuple[str, str | None]]:
        return [(self.metric, self.normalization)]

    def _described(self, before: str, after: str = "") -> str:
        """A rule's name: ``before``, the metric with its normalization, ``after``, then the text source."""
        return (f"{before}{self.metric}{_normalization_suffix(self.normalization)}{after}"
                f"{_source_suffix(self._texts(), self._fallback())}")
