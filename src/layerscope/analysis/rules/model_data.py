"""One model's per-layer results as the selection rules read them (:class:`ModelData`), and its family."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from layerscope.analysis.selection import METRIC_ALIASES, depth_layer
from layerscope.analysis.tables import ScoreGrid, default_normalization, infer_last_layer, score_grid
from layerscope.errors import LayerscopeError

__all__ = ["ALL_TEXTS_DATASETS", "FAMILY_PATTERNS", "ModelData", "model_family"]

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

#: Depths and scores closer than this are equal.
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
