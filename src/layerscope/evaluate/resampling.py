"""What the bootstrap of a task resamples, and the draws: one plan per task, the same at every layer.

Each task's evaluation data is resampled with replacement ``n_resamples`` times (seeded); what is
resampled follows the task type, everything else stays as it is:

=================================  =====================================  ==================================
MTEB task type                     resampled (the evaluation unit)        kept
=================================  =====================================  ==================================
Classification                     the test examples                      the training pool, hence the
                                                                          same 10 classifiers
STS, PairClassification            the pairs
Clustering                         the texts (within each clustering set)
Reranking, Retrieval               the queries (each with its candidates  the corpus
                                   and relevance judgements)
=================================  =====================================  ==================================

**Reproducible.** Resample ``b`` of the ``n`` units of one evaluation part (task ``T``, subset ``S``,
split ``P``, clustering set ``k``; ``k = 0`` for other types) is row ``b`` of::

    numpy.random.default_rng([resample_seed, zlib.crc32(f"{T}/{S}/{P}/{k}".encode())]).integers(0, n, size=(B, n))

:mod:`layerscope.evaluate.uncertainty` scores the resampled copies at every layer;
:mod:`layerscope.evaluate.intervals` turns the scores into intervals.
"""

from __future__ import annotations

import copy
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from layerscope.errors import LayerscopeError
from layerscope.evaluate.sampling import subset_splits, task_subsets

if TYPE_CHECKING:
    from mteb.abstasks import AbsTask

__all__ = [
    "BootstrapPlan",
    "bootstrap_draws",
    "bootstrap_plan",
    "check_bootstrap_tasks",
    "resample_indices",
    "resampled_tasks",
    "resampling_unit",
]

# what is resampled, per kind of MTEB task
_UNITS = {"classification": "test examples", "clustering-sets": "texts", "clustering": "texts", "pairs": "pairs",
          "queries": "queries"}


def _kind(task: AbsTask) -> str | None:
    """The resampling kind of an MTEB task (None: not supported)."""
    from mteb.abstasks.classification import AbsTaskClassification
    from mteb.abstasks.clustering import AbsTaskClustering
    from mteb.abstasks.clustering_legacy import AbsTaskClusteringLegacy
    from mteb.abstasks.multilabel_classification import AbsTaskMultilabelClassification
    from mteb.abstasks.pair_classification import AbsTaskPairClassification
    from mteb.abstasks.regression import AbsTaskRegression
    from mteb.abstasks.retrieval import AbsTaskRetrieval
    from mteb.abstasks.sts import AbsTaskSTS

    if isinstance(task, (AbsTaskMultilabelClassification, AbsTaskRegression)):  # subclasses of classification
        return None
    if isinstance(task, AbsTaskClassification):
        # cross-validated tasks evaluate on their training split: there is no held-out set to resample
        return None if task.is_cross_validation else "classification"
    for base, kind in ((AbsTaskClusteringLegacy, "clustering-sets"), (AbsTaskClustering, "clustering"),
                       (AbsTaskSTS, "pairs"), (AbsTaskPairClassification, "pairs"), (AbsTaskRetrieval, "queries")):
        if isinstance(task, base):
            return kind
    return None


def resampling_unit(task: AbsTask) -> str:
    """What the bootstrap of ``task`` resamples (e.g. ``"test examples"``); one-line error if unsupported."""
    kind = _kind(task)
    if kind is None:
        raise LayerscopeError(f"no bootstrap interval for task {task.metadata.name} (type {task.metadata.type}); "
                              "supported: classification, clustering, STS, pair classification, reranking and "
                              "retrieval: leave the task out or use --bootstrap 0")
    return _UNITS[kind]


def check_bootstrap_tasks(tasks: Sequence[AbsTask]) -> None:
    """Raise the one-line error of :func:`resampling_unit` for the first task that cannot be resampled."""
    for task in tasks:
        resampling_unit(task)


def _parts(task: AbsTask) -> list[tuple[str, str]]:
    """(subset, split) of every part MTEB evaluates, in order."""
    return [(subset, split) for split in task.metadata.eval_splits for subset in task_subsets(task)]


def _prepared(task: AbsTask, kind: str, data: Any) -> Any:
    """The evaluation data of one part as it will be resampled (MTEB's own preparation applied first)."""
    from datasets import Dataset
    from mteb.abstasks.pair_classification import AbsTaskPairClassification

    if isinstance(task, AbsTaskPairClassification) and task.metadata.modalities == ["text"] and len(data) == 1:
        first = data[0]
        if isinstance(first.get(task.input1_column_name), list):  # MTEB v1 layout: one row of lists
            return Dataset.from_dict(first)  # as MTEB's evaluation unpacks it
    if kind == "clustering-sets":  # each set's texts and labels as lists, read once for every resample
        columns = (task.input_column_name, task.label_column_name)
        return [{column: list(row[column]) for column in columns} for row in data.select_columns(list(columns))]
    if kind == "queries":
        from mteb.abstasks.retrieval import _filter_queries_without_positives

        relevant, queries = _filter_queries_without_positives(data["relevant_docs"], data["queries"])
        return {**data, "relevant_docs": relevant, "queries": queries}
    return data


def _unit_counts(task: AbsTask, kind: str, data: Any) -> list[int]:
    """How many units each resampled set of a part holds (several only for legacy clustering)."""
    if kind == "clustering-sets":
        return [len(row[task.input_column_name]) for row in data]
    if kind == "queries":
        return [len(data["queries"])]
    return [len(data)]


def resample_indices(key: str, n_units: int, n_resamples: int, resample_seed: int) -> np.ndarray:
    """The bootstrap draws of one evaluation part: ``(n_resamples, n_units)`` row indices.

    Parameters
    ----------
    key : str
        ``"task/subset/split/set"`` (see the module's docstring).
    n_units : int
        Units of the part.
    n_resamples : int
        Resamples B.
    resample_seed : int
        The bootstrap's seed.
    """
    rng = np.random.default_rng([int(resample_seed), zlib.crc32(key.encode())])
    return rng.integers(0, n_units, size=(n_resamples, n_units))


def _resampled_part(task: AbsTask, kind: str, data: Any, rows: list[np.ndarray]) -> Any:
    """One resampled copy of a part's evaluation data (``rows``: indices of each set)."""
    from datasets import Dataset

    if kind == "clustering-sets":
        return Dataset.from_dict({column: [[entry[column][i] for i in index] for entry, index in zip(data, rows, strict=True)]
                                  for column in (task.input_column_name, task.label_column_name)})
    if kind == "queries":
        index = rows[0]
        queries = data["queries"].select(index).to_dict()
        original = queries["id"]
        # a query drawn twice must count twice: each draw gets its own id
        queries["id"] = [f"{query_id}@{position}" for position, query_id in enumerate(original)]
        top_ranked = data.get("top_ranked")
        return {
            **data,
            "queries": Dataset.from_dict(queries),
            "relevant_docs": {new: data["relevant_docs"][old] for new, old in zip(queries["id"], original, strict=True)},
            "top_ranked": None if top_ranked is None else {new: list(top_ranked[old])
                                                           for new, old in zip(queries["id"], original, strict=True)},
        }
    return data.select(rows[0])


def _replace(container: Any, key: str, value: Any) -> Any:
    """A copy of a mapping (DatasetDict or dict) with one entry replaced, of the same type."""
    from datasets import DatasetDict

    entries = {**container, key: value}
    return DatasetDict(entries) if isinstance(container, DatasetDict) else entries


@dataclass(frozen=True)
class BootstrapPlan:
    """The bootstrap of one loaded task, built once: what is resampled and every draw.

    Attributes
    ----------
    task : AbsTask
        The task (its data loaded).
    kind : str
        What is resampled (``classification``, ``pairs``, ``queries``...; see ``resampling_unit``).
    prepared : dict
        (subset, split) -> that part's evaluation data as resampled (MTEB's own preparation applied).
    draws : dict
        (subset, split) -> ``{"task/subset/split/set": (n_resamples, n_units) indices}``.
    n_resamples, resample_seed : int
        The bootstrap's settings.
    """

    task: AbsTask
    kind: str
    prepared: dict[tuple[str, str], Any]
    draws: dict[tuple[str, str], dict[str, np.ndarray]]
    n_resamples: int
    resample_seed: int

    @property
    def indices(self) -> dict[str, np.ndarray]:
        """Every part's draws by key (what :func:`bootstrap_draws` returns)."""
        return {key: index for part in self.draws.values() for key, index in part.items()}

    @property
    def unit(self) -> str:
        """What is resampled, in words (``"test examples"``, ``"pairs"``...; see :func:`resampling_unit`)."""
        return _UNITS[self.kind]

    @property
    def n_units(self) -> int:
        """Units resampled over all parts."""
        return int(sum(index.shape[1] for index in self.indices.values()))

    def copies(self) -> list[AbsTask]:
        """``n_resamples`` shallow copies of the task, each with its evaluation data resampled."""
        copies = []
        for b in range(self.n_resamples):
            dataset = self.task.dataset
            for (subset, split), data in self.prepared.items():
                rows = [index[b] for index in self.draws[subset, split].values()]
                part = _resampled_part(self.task, self.kind, data, rows)
                flat = subset not in dataset and subset == "default"
                dataset = _replace(dataset, split, part) if flat else _replace(dataset, subset,
                                                                               _replace(dataset[subset], split, part))
            resampled = copy.copy(self.task)
            resampled.dataset = dataset
            copies.append(resampled)
        return copies


def bootstrap_plan(task: AbsTask, n_resamples: int, resample_seed: int) -> BootstrapPlan:
    """Prepare the bootstrap of a loaded task: its kind, each part's data as resampled, every draw.

    Raises the one-line error of :func:`resampling_unit` for a task that cannot be resampled.
    """
    kind = _kind(task)
    if kind is None:
        resampling_unit(task)  # raises its one-line error
    if kind == "queries":
        task.convert_v1_dataset_format_to_v2(num_proc=None)  # what MTEB's evaluate does first, once
    name = task.metadata.name
    prepared: dict[tuple[str, str], Any] = {}
    draws: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    for subset, split in _parts(task):
        data = _prepared(task, str(kind), subset_splits(task, subset)[split])
        prepared[subset, split] = data
        draws[subset, split] = {
            f"{name}/{subset}/{split}/{k}": resample_indices(f"{name}/{subset}/{split}/{k}", n_units, n_resamples,
                                                             resample_seed)
            for k, n_units in enumerate(_unit_counts(task, str(kind), data))}
    return BootstrapPlan(task, str(kind), prepared, draws, int(n_resamples), int(resample_seed))


def bootstrap_draws(task: AbsTask, n_resamples: int, resample_seed: int) -> dict[str, np.ndarray]:
    """The draws of every evaluation part of a loaded task: ``(n_resamples, n_units)`` indices by key.

    Keys are ``"task/subset/split/set"`` (see :func:`resample_indices`); what the indices point to is
    the part's evaluation units in MTEB's order (test rows, pairs, texts of a clustering set, queries
    with a relevant document).
    """
    return bootstrap_plan(task, n_resamples, resample_seed).indices


def resampled_tasks(task: AbsTask, n_resamples: int, resample_seed: int) -> list[AbsTask]:
    """``n_resamples`` copies of a loaded task, each with its evaluation data resampled.

    Parameters
    ----------
    task : AbsTask
        A task whose data is loaded.
    n_resamples : int
        Copies to make.
    resample_seed : int
        Seed of the draws (see :func:`resample_indices` and :func:`bootstrap_draws`).

    Returns
    -------
    list of AbsTask
        Shallow copies of ``task`` sharing everything but the resampled evaluation splits.
    """
    return bootstrap_plan(task, n_resamples, resample_seed).copies()
