"""Label-free layer-selection rules as data (SPEC sections 6 and 10, issue 13).

A rule is a small frozen object: a name, its parameters, and ``choose(model) -> {task: layer}``.
Rules only read a model's metrics and its layer and task lists; scores are read afterwards, by
:func:`score_rule`, to judge them (regret against the best single layer chosen with labels).

Families
--------
``last layer`` (:class:`LastLayer`)
    The usual default: the deepest layer of the score grid.
``fixed depth`` (:class:`FixedDepth`)
    Layer ``floor(fraction * L + 0.5)`` of a model whose last layer is L, or the nearest scored
    layer (ties: the deeper), as :func:`layerscope.analysis.selection.depth_layer` computes it.
``single metric`` (:class:`MetricRule`)
    The layer where one metric is lowest (``direction="min"``) or highest, either per task on the
    task's own texts (``texts="task"``: the paper's rule) or once on all texts (``texts="all"``:
    one layer for every task).
``depth window + metric`` (:class:`WindowMetricRule`)
    The same, restricted to the scored layers whose depth ``layer / L`` lies in ``[lo, hi]``.
``rank aggregation`` (:class:`RankAggregateRule`)
    Each metric is ranked over the candidate layers in its direction (rank 1 = best, ties share
    their average rank), the ranks are averaged over the metrics, and the layer with the lowest
    average rank wins; optionally inside a depth window.
``valley-relative`` (:class:`ValleyFractionRule`, :class:`ValleyRecoveryRule`)
    Rules anchored at the minimum of a metric's depth profile (the prompt-entropy valley): a fixed
    fraction of the way from the valley to the last layer, or the first layer after the valley
    where the metric has recovered a fraction of its rise to the last layer's value.

Conventions shared by every rule
--------------------------------
- Candidate layers are those of the model's complete score grid
  (:func:`layerscope.analysis.tables.score_grid`), so that every choice has a score.
- Metric ties go to the shallower layer (as in :mod:`layerscope.analysis.selection`); NaN metric
  values are ignored; each metric uses its default normalization unless a rule names one.
- Text sources, as in :func:`layerscope.analysis.selection.select_layers`: with ``texts="task"``
  a task uses the metric computed on its own texts (``task_to_dataset``, default the task name);
  when the model's metric table has a single text source, that source serves every task. A task
  whose texts have no metric falls back to the last layer (``fallback="last"``, the authors' rule
  for their pair-classification tasks) or to the same rule on all texts (``fallback="all"``).
  With ``texts="all"`` the rule reads the model's all-texts profile (:meth:`ModelData.all_texts_profile`).
- A rule that cannot decide (its metric is missing) chooses the last layer; :func:`score_rule`
  counts such tasks in ``n_fallback``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd

from layerscope.analysis.selection import METRIC_ALIASES, depth_layer, metric_directions
from layerscope.analysis.tables import ScoreGrid, default_normalization, infer_last_layer, score_grid
from layerscope.errors import LayerscopeError, unknown

__all__ = [
    "ALL_TEXTS_DATASETS",
    "FixedDepth",
    "LastLayer",
    "MetricRule",
    "ModelData",
    "RankAggregateRule",
    "RuleScore",
    "SelectionRule",
    "ValleyFractionRule",
    "ValleyRecoveryRule",
    "WindowMetricRule",
    "authors_coverage",
    "authors_models",
    "model_family",
    "run_models",
    "score_rule",
]

logger = logging.getLogger(__name__)

#: Column label of the all-texts profile inside rule computations.
_ALL_TEXTS_COLUMN = "<all texts>"

#: ``dataset`` labels that hold metrics computed on all of a model's texts, in order of preference:
#: layerscope's runs write ``all`` (the union of every task's texts); the authors' results have
#: ``wikitext``, their task-independent text source.
ALL_TEXTS_DATASETS: tuple[str, ...] = ("all", "wikitext")

#: (pattern on the lower-cased model name, family); the first match wins.
FAMILY_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"llm2vec", "llm2vec"),
    (r"smollm", "smollm2"),
    (r"minilm", "minilm"),
    (r"pythia", "pythia"),
    (r"mamba", "mamba"),
    (r"bert", "bert"),
    (r"train[_-]tiny|tiny[_-]neox|checkpoints/step\d+", "tiny-neox"),
)

_DIRECTIONS = ("min", "max")
_TEXTS = ("task", "all")
_FALLBACKS = ("last", "all")
_EPSILON = 1e-9


def model_family(name: str) -> str:
    """The model family a name belongs to, for leave-one-family-out.

    The first of :data:`FAMILY_PATTERNS` found in the lower-cased name (``pythia``, ``mamba``,
    ``llm2vec``, ``bert``, ``smollm2``, ``minilm``, ``tiny-neox``); otherwise the name's last path
    component up to its first ``-`` or ``_``.

    Parameters
    ----------
    name : str
        Model name or Hugging Face id (``EleutherAI/pythia-410m``, ``pythia-410m``...).

    Returns
    -------
    str
    """
    lowered = name.lower()
    for pattern, family in FAMILY_PATTERNS:
        if re.search(pattern, lowered):
            return family
    base = lowered.rstrip("/").rsplit("/", 1)[-1]
    return re.split(r"[-_]", base, maxsplit=1)[0] or base


# ------------------------------------------------------------------------------------------ model data


@dataclass(frozen=True, eq=False)
class ModelData:
    """One model's per-layer results, as the selection rules and the protocol read them.

    Build it with :meth:`from_frames` (or the loaders :func:`authors_models` and :func:`run_models`).

    Attributes
    ----------
    name : str
        Model name (unique within a protocol run).
    family : str
        Family for leave-one-family-out (see :func:`model_family`).
    grid : ScoreGrid
        The complete layer x task score matrix (``main_score`` in [0, 1]).
    metrics : pandas.DataFrame
        Long per-layer metrics (``layer, metric, value`` + ``normalization``, ``dataset``).
    task_to_dataset : dict of str to str
        Task -> the metric ``dataset`` computed on its texts (missing tasks: the task name).
    last_layer : int
        The model's last layer L (depth 100%), which may lie beyond the grid's deepest layer.
    all_texts_dataset : str or None
        The ``dataset`` holding metrics on all texts (``all`` in runs, ``wikitext`` in the authors'
        results); ``None``: the mean over the text sources is used (see :meth:`all_texts_profile`).
    source : str
        Where the data came from (for reports).
    """

    name: str
    family: str
    grid: ScoreGrid
    metrics: pd.DataFrame
    task_to_dataset: dict[str, str]
    last_layer: int
    all_texts_dataset: str | None = None
    source: str = ""
    _cache: dict[Any, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    @classmethod
    def from_frames(
        cls,
        name: str,
        metrics: pd.DataFrame | None,
        scores: pd.DataFrame,
        *,
        task_to_dataset: Mapping[str, str] | None = None,
        family: str | None = None,
        last_layer: int | None = None,
        all_texts_dataset: str | None = None,
        coverage: str = "layers",
        source: str = "",
    ) -> ModelData:
        """Build a model's data from its long metric and score tables.

        Parameters
        ----------
        name : str
            Model name.
        metrics : pandas.DataFrame or None
            Long per-layer metrics of this model only (``None``: rules that need metrics fall back).
        scores : pandas.DataFrame
            Per-layer task scores (``layer, task, main_score`` + ``task_type``, ``depth_pct``).
        task_to_dataset : Mapping of str to str, optional
            Task -> metric ``dataset`` of its texts (default: the task name).
        family : str, optional
            Default :func:`model_family` of ``name``.
        last_layer : int, optional
            Default :func:`layerscope.analysis.tables.infer_last_layer` of both tables.
        all_texts_dataset : str, optional
            Default: the first of :data:`ALL_TEXTS_DATASETS` present in ``metrics``.
        coverage : {"layers", "tasks"}, default "layers"
            Passed to :func:`layerscope.analysis.tables.score_grid`.
        source : str, default ""
            Provenance note.

        Returns
        -------
        ModelData
        """
        metrics = (
            pd.DataFrame(columns=["layer", "metric", "value"]) if metrics is None else metrics.reset_index(drop=True)
        )
        for column in ("layer", "metric", "value"):
            if column not in metrics.columns:
                raise LayerscopeError(f"metrics of {name} lack column '{column}'")
        if last_layer is None:
            last_layer = infer_last_layer(scores, metrics if not metrics.empty else None)
        grid = score_grid(scores, coverage=coverage, last_layer=last_layer)
        if all_texts_dataset is None and "dataset" in metrics.columns:
            present = set(metrics["dataset"].dropna().astype(str))
            all_texts_dataset = next((label for label in ALL_TEXTS_DATASETS if label in present), None)
        return cls(
            name=name,
            family=family or model_family(name),
            grid=grid,
            metrics=metrics,
            task_to_dataset={str(key): str(value) for key, value in (task_to_dataset or {}).items()},
            last_layer=int(last_layer),
            all_texts_dataset=all_texts_dataset,
            source=source,
        )

    # ---- scores

    @property
    def tasks(self) -> list[str]:
        """Tasks of the score grid, sorted."""
        return self.grid.tasks

    @property
    def layers(self) -> np.ndarray:
        """Candidate layers (those of the score grid), ascending, as an int array."""
        return self._cached("layers", lambda: np.asarray(self.grid.layers, dtype=np.int64))

    @property
    def score_matrix(self) -> np.ndarray:
        """``main_score`` as a float array of shape (n_layers, n_tasks), rows = :attr:`layers`."""
        return self._cached("score_matrix", lambda: self.grid.matrix.to_numpy(dtype=float))

    @property
    def last_scored_layer(self) -> int:
        """The deepest layer of the score grid: the ``last layer`` baseline."""
        return int(self.layers[-1])

    @property
    def oracle_layer(self) -> int:
        """The best single layer chosen with labels (highest task-averaged score; ties: shallower)."""
        return int(self.layers[int(np.argmax(self.score_matrix.mean(axis=1)))])

    def layers_in_window(self, lo: float, hi: float) -> np.ndarray:
        """Candidate layers whose depth ``layer / L`` lies in ``[lo, hi]``."""
        return self.layers[self.window_mask(lo, hi)]

    def nearest_layer(self, layer: float) -> int:
        """The candidate layer nearest to ``round(layer)`` (half up; ties between candidates: the deeper)."""
        if self.last_layer <= 0:
            return self.last_scored_layer
        fraction = min(max(float(layer) / self.last_layer, 0.0), 1.0)
        return depth_layer(fraction, self.last_layer, self.grid.layers)

    # ---- metrics

    def _cached(self, key: Any, build: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    @property
    def metric_names(self) -> list[str]:
        """Metrics present, sorted."""
        return sorted(self._metric_groups())

    @property
    def datasets(self) -> list[str]:
        """Distinct metric text sources (``["shared"]`` when the table has no ``dataset`` column)."""

        def build() -> list[str]:
            if self.metrics.empty:
                return []
            if "dataset" not in self.metrics.columns:
                return ["shared"]
            return sorted(self.metrics["dataset"].dropna().astype(str).unique())

        return self._cached("datasets", build)

    def _metric_groups(self) -> dict[str, pd.DataFrame]:
        def build() -> dict[str, pd.DataFrame]:
            return {str(name): group for name, group in self.metrics.groupby("metric", sort=True)}

        return self._cached("metric_groups", build)

    def resolve_metric(self, metric: str) -> str | None:
        """The name under which ``metric`` is stored here (the authors' aliases understood), or None."""
        groups = self._metric_groups()
        if metric in groups:
            return metric
        for alias, canonical in METRIC_ALIASES.items():
            if canonical == metric and alias in groups:
                return alias
            if alias == metric and canonical in groups:
                return canonical
        return None

    def metric_table(self, metric: str, normalization: str | None = None) -> pd.DataFrame:
        """One metric's values as a (layers x text sources) table; empty when the model lacks it.

        Parameters
        ----------
        metric : str
            Metric name (layerscope's or the authors').
        normalization : str, optional
            Default :func:`layerscope.analysis.tables.default_normalization`.

        Returns
        -------
        pandas.DataFrame
            Index = layer (ascending, every layer with a value), columns = ``dataset`` (sorted);
            non-finite values are NaN; sources without any value are left out.
        """
        return self._cached(("table", metric, normalization), lambda: self._build_table(metric, normalization))

    def _build_table(self, metric: str, normalization: str | None) -> pd.DataFrame:
        stored = self.resolve_metric(metric)
        if stored is None:
            return pd.DataFrame(index=pd.Index([], dtype=np.int64, name="layer"))
        rows = self._metric_groups()[stored]
        if normalization is None:
            normalization = default_normalization(rows, stored)
        if normalization is not None and "normalization" in rows.columns:
            rows = rows[rows["normalization"] == normalization]
        sources = rows["dataset"].astype(str) if "dataset" in rows.columns else pd.Series("shared", index=rows.index)
        values = pd.to_numeric(rows["value"], errors="coerce").to_numpy(dtype=float)
        frame = pd.DataFrame(
            {"layer": rows["layer"].to_numpy(dtype=np.int64), "dataset": sources.to_numpy(), "value": values}
        )
        frame.loc[~np.isfinite(frame["value"].to_numpy()), "value"] = np.nan
        duplicated = frame.duplicated(["layer", "dataset"])
        if duplicated.any():
            example = frame[duplicated].iloc[0]
            raise LayerscopeError(
                f"{self.name}: metric '{metric}' has several values at layer {example['layer']} on "
                f"'{example['dataset']}': pass one run per model and one normalization"
            )
        table = frame.pivot(index="layer", columns="dataset", values="value").sort_index()
        table = table.reindex(sorted(table.columns), axis=1).dropna(axis=1, how="all")
        table.columns.name = None
        return table

    @property
    def single_source(self) -> bool:
        """True when the whole metric table has one text source: it then serves every task."""
        return len(self.datasets) <= 1

    def own_source(self, task: str) -> str:
        """The metric ``dataset`` of ``task``'s texts (the only source when there is one)."""
        if self.single_source and self.datasets:
            return self.datasets[0]
        return self.task_to_dataset.get(task, task)

    def aligned_table(self, metric: str, normalization: str | None = None) -> tuple[tuple[str, ...], np.ndarray]:
        """:meth:`metric_table` on the candidate layers: (source labels, values of shape (n_layers, n_sources)).

        Rows follow :attr:`layers`; NaN where a layer has no value.
        """

        def build() -> tuple[tuple[str, ...], np.ndarray]:
            table = self.metric_table(metric, normalization)
            values = table.reindex(self.layers).to_numpy(dtype=float)
            return tuple(str(column) for column in table.columns), values.reshape(len(self.layers), -1)

        return self._cached(("aligned", metric, normalization), build)

    def aligned_all_texts(self, metric: str, normalization: str | None = None) -> np.ndarray | None:
        """:meth:`all_texts_profile` on the candidate layers, shape (n_layers, 1); None when absent."""

        def build() -> np.ndarray | None:
            profile = self.all_texts_profile(metric, normalization)
            if profile.empty:
                return None
            return profile.reindex(self.layers).to_numpy(dtype=float).reshape(-1, 1)

        return self._cached(("aligned_all", metric, normalization), build)

    def window_mask(self, lo: float, hi: float) -> np.ndarray:
        """Boolean mask over :attr:`layers`: depth ``layer / L`` in ``[lo, hi]``."""

        def build() -> np.ndarray:
            fraction = self.layers / self.last_layer if self.last_layer > 0 else np.zeros(len(self.layers))
            return (fraction >= lo - _EPSILON) & (fraction <= hi + _EPSILON)

        return self._cached(("window", lo, hi), build)

    def all_texts_profile(self, metric: str, normalization: str | None = None) -> pd.Series:
        """A metric's profile on all texts (index = layer; empty when the model lacks the metric).

        The ``all_texts_dataset`` source when it holds the metric; else the only source when
        there is one; else, per layer, the mean over the text sources that have a value there
        (the authors' LLM2Vec results have per-task sources only).
        """

        def build() -> pd.Series:
            table = self.metric_table(metric, normalization)
            if table.empty or table.shape[1] == 0:
                return pd.Series(dtype=float, name=metric)
            if self.all_texts_dataset is not None and self.all_texts_dataset in table.columns:
                profile = table[self.all_texts_dataset]
            elif table.shape[1] == 1:
                profile = table.iloc[:, 0]
            else:
                profile = table.mean(axis=1, skipna=True)
            return profile.dropna().rename(metric)

        return self._cached(("all", metric, normalization), build)

    def describe(self) -> dict[str, object]:
        """Facts for reports: name, family, layers and tasks of the grid, metrics, sources."""
        return {
            "model": self.name,
            "family": self.family,
            "last_layer": self.last_layer,
            "n_layers": len(self.layers),
            "n_tasks": len(self.tasks),
            "oracle_layer": self.oracle_layer,
            "last_scored_layer": self.last_scored_layer,
            "metrics": ", ".join(self.metric_names),
            "n_sources": len(self.datasets),
            "all_texts": self.all_texts_dataset or ("mean of sources" if len(self.datasets) > 1 else "-"),
            "source": self.source,
        }


# ------------------------------------------------------------------------------------------ rules


@functools.cache
def _default_direction(metric: str) -> str:
    """``"max"`` or ``"min"`` from :func:`layerscope.analysis.selection.metric_directions`."""
    return "max" if metric_directions([metric])[metric] else "min"


def _percent(value: float) -> str:
    return f"{100 * value:g}%"


def _check_choice(name: str, value: object, allowed: Sequence[object]) -> None:
    if value not in allowed:
        raise LayerscopeError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")


def _check_window(lo: float, hi: float) -> None:
    if not (0.0 <= lo <= hi <= 1.0):
        raise LayerscopeError(f"depth window must satisfy 0 <= lo <= hi <= 1, got [{lo}, {hi}]")


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


def _empty_window(model: ModelData, lo: float, hi: float, n_columns: int) -> np.ndarray:
    """The scored layer nearest to the middle of a window that holds none, for every column."""
    middle = model.nearest_layer(0.5 * (lo + hi) * model.last_layer)
    return np.full(n_columns, float(middle))


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
class WindowMetricRule(_BestOfMetric):
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
        _check_window(self.lo, self.hi)
        super().__post_init__()

    @property
    def name(self) -> str:
        return self._described(f"{self.resolved_direction} ", f" in depth {100 * self.lo:g}-{_percent(self.hi)}")

    def _decide(self, model: ModelData, columns: Sequence[str], arrays: list[np.ndarray]) -> np.ndarray:
        mask = model.window_mask(self.lo, self.hi)
        if not mask.any():
            return _empty_window(model, self.lo, self.hi, len(columns))
        return _best_in(model, arrays[0], self.resolved_direction, mask)


@dataclass(frozen=True)
class RankAggregateRule(_MetricBased):
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
        _check_window(self.lo, self.hi)
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
        window = "" if (self.lo, self.hi) == (0.0, 1.0) else f" in depth {100 * self.lo:g}-{_percent(self.hi)}"
        return f"rank-average({parts}){window}{_source_suffix(self.texts, self.fallback)}"

    def metrics_used(self) -> tuple[str, ...]:
        return self.metrics

    def _metric_keys(self) -> list[tuple[str, str | None]]:
        return [(metric, None) for metric in self.metrics]

    def _decide(self, model: ModelData, columns: Sequence[str], arrays: list[np.ndarray]) -> np.ndarray:
        mask = model.window_mask(self.lo, self.hi)
        if not mask.any():
            return _empty_window(model, self.lo, self.hi, len(columns))
        stack = np.stack(arrays)  # (metrics, layers, sources)
        valid = np.isfinite(stack).all(axis=0) & mask[:, None]
        signs = np.array([1.0 if direction == "min" else -1.0 for direction in self.resolved_directions])
        ranks = _average_ranks(stack * signs[:, None, None], valid)
        return _best_in(model, ranks.mean(axis=0), "min")


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


# ------------------------------------------------------------------------------------------ scoring


@dataclass(frozen=True, eq=False)
class RuleScore:
    """How one rule does on one model (scores x 100, averaged over the grid's tasks).

    Attributes
    ----------
    rule, family, model : str
        Rule name, rule family, model name.
    average : float
        Mean over tasks of the score at each task's chosen layer.
    oracle : float
        Average of the best single layer chosen with labels (``oracle_layer``).
    last : float
        Average of the last layer.
    regret : float
        ``oracle - average`` (>= 0).
    gain_vs_last : float
        ``average - last``.
    n_tasks, n_fallback : int
        Tasks averaged; tasks for which the rule could not decide (they got the last layer).
    depth_pct : float
        Mean depth of the chosen layers, in percent of L.
    layers : dict of str to int
        The choice.
    per_task : numpy.ndarray
        Score (0..1) at the chosen layer, per task in ``model.tasks`` order.
    """

    rule: str
    family: str
    model: str
    average: float
    oracle: float
    oracle_layer: int
    last: float
    regret: float
    gain_vs_last: float
    n_tasks: int
    n_fallback: int
    depth_pct: float
    layers: dict[str, int] = field(repr=False)
    per_task: np.ndarray = field(repr=False)

    @property
    def win(self) -> bool:
        """Whether the rule beats the last layer (by more than rounding)."""
        return self.gain_vs_last > _EPSILON

    def as_record(self) -> dict[str, object]:
        """The scalar fields, plus ``win`` and the chosen layer when it is one for every task."""
        distinct = set(self.layers.values())
        return {
            "rule": self.rule,
            "family": self.family,
            "model": self.model,
            "average": self.average,
            "oracle": self.oracle,
            "oracle_layer": self.oracle_layer,
            "last": self.last,
            "regret": self.regret,
            "gain_vs_last": self.gain_vs_last,
            "win": self.win,
            "layer": distinct.pop() if len(distinct) == 1 else pd.NA,
            "depth_pct": self.depth_pct,
            "n_tasks": self.n_tasks,
            "n_fallback": self.n_fallback,
        }


def score_rule(rule: SelectionRule, model: ModelData) -> RuleScore:
    """Score a rule on one model against the best single layer chosen with labels.

    Parameters
    ----------
    rule : SelectionRule
    model : ModelData

    Returns
    -------
    RuleScore
        Averages x 100 over the model's grid tasks; ``regret = oracle - average``.
    """
    choice, fallbacks = rule.choose_with_fallbacks(model)
    tasks = model.tasks
    chosen = np.array([choice[task] for task in tasks], dtype=np.int64)
    rows = model.grid.matrix.index.get_indexer(chosen)
    if (rows < 0).any():
        raise LayerscopeError(f"rule '{rule.name}' chose a layer outside the score grid of {model.name}")
    matrix = model.score_matrix
    per_task = matrix[rows, np.arange(len(tasks))]
    layer_means = matrix.mean(axis=1)
    oracle_row = int(np.argmax(layer_means))
    average = 100.0 * float(per_task.mean())
    oracle = 100.0 * float(layer_means[oracle_row])
    last = 100.0 * float(layer_means[-1])
    return RuleScore(
        rule=rule.name,
        family=rule.family,
        model=model.name,
        average=average,
        oracle=oracle,
        oracle_layer=int(model.layers[oracle_row]),
        last=last,
        regret=oracle - average,
        gain_vs_last=average - last,
        n_tasks=len(tasks),
        n_fallback=len(fallbacks),
        depth_pct=float(np.mean(chosen) * 100.0 / model.last_layer) if model.last_layer > 0 else 0.0,
        layers=choice,
        per_task=per_task,
    )


# ------------------------------------------------------------------------------------------ loaders


def authors_coverage(authors: Any | None = None, *, revision: str = "main", min_layer_fraction: float = 0.5) -> pd.DataFrame:
    """Which models of the authors' results have a score grid the selection protocol can use.

    A model qualifies when its complete score grid (:func:`layerscope.analysis.tables.score_grid`,
    coverage ``"layers"``: layers lacking a task are left out) holds every task of the fixture,
    includes the model's last layer L, and keeps at least ``min_layer_fraction`` of layers 0..L.

    Parameters
    ----------
    authors : AuthorsResults or path, optional
        Loaded results, or a directory for :func:`layerscope.analysis.load_authors_results`
        (default ``$LAYERSCOPE_AUTHORS_RESULTS``).
    revision : str, default "main"
        Checkpoint revision.
    min_layer_fraction : float, default 0.5
        Least share of layers 0..L with every task.

    Returns
    -------
    pandas.DataFrame
        One row per model with scores at ``revision``: ``model, last_layer, n_layers_scored,
        n_layers_complete, n_tasks, fully_complete`` (every layer 0..L has every task), ``usable,
        reason``.
    """
    from layerscope.analysis.authors import AuthorsResults, load_authors_results

    if not isinstance(authors, AuthorsResults):
        authors = load_authors_results(authors)
    all_tasks = set(authors.task_to_dataset) | set(authors.scores["task"].astype(str))
    rows: list[dict[str, object]] = []
    for name, rev in authors.models():
        if rev != revision:
            continue
        _, scores = authors.model(name, revision)
        last = int(authors.last_layers.get(name, scores["layer"].max()))
        complete = scores.groupby("layer")["task"].nunique()
        complete_layers = complete[complete == len(all_tasks)].index
        row: dict[str, object] = {
            "model": name,
            "last_layer": last,
            "n_layers_scored": int(scores["layer"].nunique()),
            "n_layers_complete": len(complete_layers),
            "n_tasks": int(scores["task"].nunique()),
            "fully_complete": len(complete_layers) == last + 1 and len(scores) == (last + 1) * len(all_tasks),
        }
        if len(complete_layers) == 0:
            row["usable"], row["reason"] = False, f"no layer has all {len(all_tasks)} tasks"
        elif int(complete_layers.max()) != last:
            row["usable"] = False
            row["reason"] = f"complete layers stop at {int(complete_layers.max())} of {last}"
        elif len(complete_layers) / (last + 1) < min_layer_fraction:
            row["usable"], row["reason"] = False, f"{len(complete_layers)} of {last + 1} layers complete"
        else:
            row["usable"], row["reason"] = True, f"{len(complete_layers)} of {last + 1} layers complete"
        rows.append(row)
    return pd.DataFrame.from_records(rows)


def authors_models(
    authors: Any | None = None,
    *,
    revision: str = "main",
    models: Iterable[str] | None = None,
    min_layer_fraction: float = 0.5,
    families: Mapping[str, str] | None = None,
) -> list[ModelData]:
    """The models of the authors' results that the selection protocol can use.

    See :func:`authors_coverage` for the rule. At revision ``main`` these are pythia-14m, -70m,
    -160m and -410m (every layer complete), mamba-370m (27 of 49 layers complete) and
    llm2vec-mntp-unsup-simcse-8b (28 of 33); the others stop short of the last layer or hold a
    few tasks only. Which models were left out, and why, is logged at INFO level.

    Parameters
    ----------
    authors, revision, min_layer_fraction
        As in :func:`authors_coverage`.
    models : iterable of str, optional
        Only these models (each must qualify).
    families : Mapping of str to str, optional
        Model -> family overrides.

    Returns
    -------
    list of ModelData
        In the fixture's model order (sorted names).
    """
    from layerscope.analysis.authors import AuthorsResults, load_authors_results

    if not isinstance(authors, AuthorsResults):
        authors = load_authors_results(authors)
    coverage = authors_coverage(authors, revision=revision, min_layer_fraction=min_layer_fraction)
    if coverage.empty:
        raise LayerscopeError(f"the authors' results hold no task scores at revision {revision}")
    reasons = dict(zip(coverage["model"], coverage["reason"], strict=True))
    usable = coverage.loc[coverage["usable"], "model"].tolist()
    names = usable
    if models is not None:
        names = list(models)
        for name in names:
            if name not in reasons:
                raise unknown(f"model at revision {revision}", name, reasons)
            if name not in usable:
                raise LayerscopeError(f"authors' results for {name}: incomplete score grid ({reasons[name]})")
    for name, reason in reasons.items():
        logger.info("authors' results: %s %s (%s)", name, "used" if name in usable else "left out", reason)
    found: list[ModelData] = []
    for name in names:
        metrics, scores = authors.model(name, revision)
        found.append(
            ModelData.from_frames(
                name,
                metrics,
                scores,
                task_to_dataset=authors.task_to_dataset,
                family=(families or {}).get(name),
                last_layer=authors.last_layers.get(name),
                source=f"authors' results ({revision})",
            )
        )
    return found


def _run_model_name(model_id: str, revision: str | None) -> str:
    parts = [part for part in re.split(r"[/\\]", model_id.rstrip("/\\")) if part]
    base = parts[-1] if parts else model_id
    if re.fullmatch(r"step\d+", base) and len(parts) >= 3 and parts[-2] == "checkpoints":
        base = f"{parts[-3]}-{base}"
    elif revision and revision not in ("main", "None"):
        base = f"{base}@{revision}"
    return base


def run_models(
    path: str | os.PathLike[str],
    *,
    run_ids: Iterable[str] | None = None,
    names: Mapping[str, str] | None = None,
    families: Mapping[str, str] | None = None,
    coverage: str = "layers",
) -> list[ModelData]:
    """Models from a layerscope run folder (``results.duckdb``): one per finished run with scores.

    Parameters
    ----------
    path : str or os.PathLike
        A run folder or the database file itself.
    run_ids : iterable of str, optional
        Only these runs (default: every finished run that has task scores).
    names : Mapping of str to str, optional
        Run id -> model name (default: the model id's last component, ``<folder>-step<N>`` for a
        ``train-tiny`` checkpoint, ``@<revision>`` for other revisions than main; repeated names
        get the run id appended).
    families : Mapping of str to str, optional
        Model name -> family overrides (default :func:`model_family` of the model id).
    coverage : {"layers", "tasks"}, default "layers"
        Passed to :func:`layerscope.analysis.tables.score_grid`.

    Returns
    -------
    list of ModelData
        In the store's run order.
    """
    from layerscope.store import ResultsStore

    location = Path(path)
    if not location.exists():
        raise LayerscopeError(f"no run folder or results database at {location}")
    found: list[ModelData] = []
    seen: set[str] = set()
    with ResultsStore(location, read_only=True) as store:
        runs = store.runs(status="finished")
        wanted = None if run_ids is None else [str(run_id) for run_id in run_ids]
        if wanted is not None:
            for run_id in wanted:
                if run_id not in set(runs["run_id"]):
                    raise unknown("finished run", run_id, runs["run_id"].tolist())
            runs = runs[runs["run_id"].isin(wanted)]
        for row in runs.itertuples(index=False):
            scores = store.scores(row.run_id)
            if scores.empty:
                logger.info("run %s in %s has no task scores: left out", row.run_id, location)
                continue
            metrics = store.metrics(row.run_id)
            config = store.run_config(row.run_id)
            model_id = str(row.model_id or config.get("model") or row.run_id)
            name = (names or {}).get(row.run_id) or _run_model_name(model_id, row.revision)
            if name in seen:
                name = f"{name}#{row.run_id[:8]}"
            seen.add(name)
            mapping = config.get("task_to_dataset")
            family = (families or {}).get(name) or model_family(model_id)
            found.append(
                ModelData.from_frames(
                    name,
                    metrics.drop(columns="run_id") if not metrics.empty else None,
                    scores.drop(columns="run_id"),
                    task_to_dataset=mapping if isinstance(mapping, Mapping) else None,
                    family=family,
                    coverage=coverage,
                    source=f"{location} run {row.run_id}",
                )
            )
    return found
