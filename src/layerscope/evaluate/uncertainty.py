"""Intervals on per-layer task scores: a paired bootstrap over each task's evaluation examples.

Each task's evaluation data is resampled with replacement ``n_resamples`` times (seeded), and MTEB's
own evaluator scores every resampled copy at every layer, served by the cached embeddings (a
:class:`~layerscope.evaluate.encoder.LayerView`: a resample only repeats texts already encoded, so
no model runs). What is resampled follows the task type; everything else stays as it is:

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

For classification, MTEB's classifiers depend on the training pool and the task's seed only, and each
test example's prediction on that example only: one MTEB evaluation per layer records every
experiment's predictions, and MTEB's own scoring is applied to each resample of (labels, predictions),
the same numbers as ``mteb.evaluate`` on the resampled copy without training the same classifiers B
times (:func:`_classification_resamples`; both are tested equal to hand-made resamples).

**Paired.** Resample ``b`` of a task is the same at every layer, so a difference between two layers
is judged on the bootstrap distribution of that difference (the noise common to both layers, e.g.
easy or hard examples drawn, cancels). The average over tasks of resample ``b`` is resample ``b`` of
the task average (tasks are resampled independently of each other).

**Reproducible.** Resample ``b`` of the ``n`` units of one evaluation part (task ``T``, subset ``S``,
split ``P``, clustering set ``k``; ``k = 0`` for other types) is row ``b`` of::

    numpy.random.default_rng([resample_seed, zlib.crc32(f"{T}/{S}/{P}/{k}".encode())]).integers(0, n, size=(B, n))

and each evaluation is reseeded exactly as the point estimate's (:func:`~layerscope.evaluate.runner.run_task`).

**Stored with the scores.** Each (layer, task) row of the scores frame keeps its resampled main scores
in its ``scores`` JSON under the key ``"bootstrap"`` (next to MTEB's splits), so the results store,
:func:`layerscope.analysis.summarize` and the report read them back with no schema of their own.
:func:`layer_intervals` turns them into intervals of the task-averaged score per layer and of each
layer's paired difference from the last layer: percentile intervals of the resampled values re-centred
on the point estimate (resampling with replacement repeats examples, which shifts some scores by
itself, e.g. a clustering's V-measure; the spread is kept, the shift is not). "Beats the last layer
beyond the noise" means the interval of the difference lies above 0.
"""

from __future__ import annotations

import copy
import json
import logging
import time
import warnings
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from layerscope.errors import LayerscopeError
from layerscope.evaluate.sampling import subset_splits, task_subsets

if TYPE_CHECKING:
    from mteb.abstasks import AbsTask

    from layerscope.extract import Extraction

__all__ = [
    "BOOTSTRAP_KEY",
    "BestVersusLast",
    "BootstrapPlan",
    "attach_bootstrap",
    "best_versus_last",
    "bootstrap_draws",
    "bootstrap_layers",
    "bootstrap_plan",
    "check_bootstrap_tasks",
    "has_bootstrap",
    "interval_text",
    "layer_interval_texts",
    "layer_intervals",
    "resample_indices",
    "resampled_tasks",
    "resampling_unit",
    "scores_json",
    "task_intervals",
]

logger = logging.getLogger(__name__)

#: Key of the bootstrap record in a scores row's JSON.
BOOTSTRAP_KEY = "bootstrap"

# what is resampled, per kind of MTEB task
_UNITS = {"classification": "test examples", "clustering-sets": "texts", "clustering": "texts", "pairs": "pairs",
          "queries": "queries"}


# ------------------------------------------------------------------------------------------ tasks


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


# ------------------------------------------------------------------------------------------ evaluation

# What forked bootstrap workers inherit from the parent (set just before the pool starts).
_STATE: dict[str, Any] = {}


def _evaluate_unit(unit: tuple[int, int]) -> list[float]:
    """Every resample of one task at one layer (here, or in a forked worker holding ``_STATE``)."""
    from layerscope.evaluate.encoder import LayerView
    from layerscope.evaluate.runner import main_score, run_task

    position, task_index = unit
    extraction = _STATE["extraction"]
    if "view" not in _STATE:  # one view per process, pointed at each layer in turn
        _STATE["view"] = LayerView(extraction.texts, name=_STATE["name"], revision=_STATE["revision"])
    view = _STATE["view"]
    layer = extraction.layers[position]
    if view.layer != layer:
        view.set_layer(layer, extraction.pooled[position])
    plan, copies = _STATE["plans"][task_index], _STATE["copies"][task_index]
    if plan.kind == "classification":
        return _classification_resamples(view, plan.task, plan.draws, _STATE["seed"])
    return [main_score(run_task(view, resampled, _STATE["seed"])) for resampled in copies]


def _classification_resamples(view: Any, task: AbsTask, draws: dict[tuple[str, str], dict[str, np.ndarray]],
                              seed: int | None) -> list[float]:
    """MTEB's classification scores of every resample of the test examples, its classifiers trained once.

    MTEB's classifiers (``samples_per_label`` per class, ``n_experiments`` draws, all from the training
    pool and the task's seed) do not depend on the test examples, and each test example's prediction
    depends on that example only. So one MTEB evaluation records every experiment's predictions, and
    MTEB's own scoring (``_calculate_scores``, ``_calculate_avg_scores``, ``_add_main_score``) is applied
    to each resample of (labels, predictions): the same numbers as ``mteb.evaluate`` on a resampled
    copy (tested), without training the same classifiers B times.
    """
    from layerscope.evaluate.runner import main_score, run_task

    probe = copy.copy(task)
    predictions: dict[tuple[str, str], list[np.ndarray]] = {}
    current: list[np.ndarray] = []
    evaluate_subset, run_experiment = probe._evaluate_subset, probe._run_experiment

    def recording_subset(*args: Any, hf_split: str, hf_subset: str, **kwargs: Any) -> Any:
        nonlocal current
        current = predictions.setdefault((hf_split, hf_subset), [])
        return evaluate_subset(*args, hf_split=hf_split, hf_subset=hf_subset, **kwargs)

    def recording_experiment(*args: Any, **kwargs: Any) -> Any:
        result = run_experiment(*args, **kwargs)
        current.append(np.asarray(result[1]))
        return result

    probe._evaluate_subset = recording_subset  # type: ignore[method-assign]
    probe._run_experiment = recording_experiment  # type: ignore[method-assign]
    run_task(view, probe, seed)  # one evaluation, as the point estimate's
    labels = {(split, subset): np.asarray(list(subset_splits(task, subset)[split][task.label_column_name]))
              for subset, split in draws}
    n_resamples = next(iter(next(iter(draws.values())).values())).shape[0]
    values = []
    for b in range(n_resamples):
        resampled: dict[str, list[dict[str, Any]]] = {}
        for (subset, split), part in draws.items():
            rows = next(iter(part.values()))[b]
            scores = [probe._calculate_scores(labels[split, subset][rows], predicted[rows])
                      for predicted in predictions[split, subset]]
            average = probe._calculate_avg_scores(scores)
            probe._add_main_score(average)
            resampled.setdefault(split, []).append(average)
        values.append(main_score(resampled))
    return values


def bootstrap_layers(
    scores: pd.DataFrame,
    extraction: Extraction,
    tasks: Sequence[AbsTask],
    *,
    n_resamples: int = 100,
    confidence: float = 0.95,
    resample_seed: int = 0,
    seed: int | None = None,
    name: str = "layerscope",
    revision: str | None = None,
    progress: bool = True,
    eval_workers: int | str = "auto",
    plans: Sequence[BootstrapPlan] | None = None,
) -> pd.DataFrame:
    """Bootstrap every (layer, task) score of :func:`~layerscope.evaluate.evaluate_layers` with MTEB's evaluators.

    Parameters
    ----------
    scores : pandas.DataFrame
        ``evaluate_layers``'s frame for ``tasks`` (its ``main_score`` is the point estimate).
    extraction : Extraction
        The embeddings that frame was scored from (every text of the tasks, every layer of the frame).
    tasks : sequence of AbsTask
        The tasks, data loaded.
    n_resamples : int
        Resamples per task (B).
    confidence : float
        Confidence level recorded with the resamples (intervals are computed when read).
    resample_seed : int
        Seed of the resamples (see the module's docstring for the exact draws).
    seed : int, optional
        The evaluation seed, as given to ``evaluate_layers`` (None: each task's own).
    name, revision : str
        Model name and revision recorded in MTEB's results.
    progress : bool
        A progress bar counting resampled evaluations (layer x task x resample).
    eval_workers : int or "auto"
        Processes running the evaluations (see :func:`~layerscope.evaluate.runner.resolve_workers`).
    plans : sequence of BootstrapPlan, optional
        :func:`bootstrap_plan` of each task with these settings, when the caller has them already
        (built here otherwise).

    Returns
    -------
    pandas.DataFrame
        A copy of ``scores`` whose ``scores`` JSON gains ``"bootstrap"``: ``main_scores`` (B values, in
        [0, 1]), ``unit``, ``n_units``, ``n_resamples``, ``resample_seed``, ``confidence``. ``attrs``
        keeps ``scores``'s and adds ``attrs["bootstrap"]`` (settings, units, seconds); the draws
        themselves are :func:`bootstrap_draws` (or the plans' ``indices``).
    """
    from tqdm.auto import tqdm

    from layerscope.evaluate.runner import fork_map, own_seeds_kept, resolve_workers

    _check_settings(n_resamples, confidence)
    started = time.perf_counter()
    names = [task.metadata.name for task in tasks]
    missing = sorted(set(scores["task"]) - set(names))
    if missing:
        raise LayerscopeError(f"the scores hold tasks not given to the bootstrap: {', '.join(missing)}")
    layers = sorted(int(layer) for layer in scores["layer"].unique())
    absent = [layer for layer in layers if layer not in extraction.layers]
    if absent:
        raise LayerscopeError(f"the embeddings lack layer(s) {absent} of the scores")
    if plans is None:
        plans = [bootstrap_plan(task, n_resamples, resample_seed) for task in tasks]
    elif [plan.task for plan in plans] != list(tasks) or any(
            (plan.n_resamples, plan.resample_seed) != (n_resamples, resample_seed) for plan in plans):
        raise LayerscopeError("the bootstrap plans are not those of these tasks and resamples")
    # classification scores its resampled predictions (see _classification_resamples): no copies needed
    copies = [plan.copies() if plan.kind != "classification" else [] for plan in plans]
    units = {plan.task.metadata.name: _UNITS[plan.kind] for plan in plans}
    counts = {plan.task.metadata.name: plan.n_units for plan in plans}
    work = [(extraction.layers.index(layer), t) for layer in layers for t in range(len(tasks))]
    workers = resolve_workers(eval_workers, len(work))
    _STATE.clear()
    _STATE.update(extraction=extraction, plans=list(plans), copies=copies, seed=seed, name=name,
                  revision=revision)
    bar = tqdm(total=len(work) * n_resamples, desc=f"bootstrap: {n_resamples} resamples x {_count(len(tasks), 'task')} "
               f"x {_count(len(layers), 'layer')}", unit="eval", disable=not progress)
    try:
        with own_seeds_kept(tasks):
            results = fork_map(_evaluate_unit, work, workers, lambda: bar.update(n_resamples))
    finally:
        bar.close()
        _STATE.clear()
    resampled = {(extraction.layers[position], names[t]): values for (position, t), values in results.items()}
    out = attach_bootstrap(scores, resampled, units=units, n_units=counts, resample_seed=resample_seed,
                           confidence=confidence)
    out.attrs["bootstrap"] = {
        "n_resamples": n_resamples, "confidence": confidence, "resample_seed": resample_seed, "seed": seed,
        "units": units, "n_units": counts, "eval_workers": workers,
        "seconds": time.perf_counter() - started,
    }
    return out


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'s' if number != 1 else ''}"


def _check_settings(n_resamples: Any, confidence: Any) -> None:
    """The configurations' own checks (same one-line messages as ``--bootstrap`` and ``--confidence``)."""
    from layerscope.config import _confidence, _positive

    _positive(int(n_resamples) if isinstance(n_resamples, np.integer) else n_resamples, "bootstrap resamples",
              minimum=2)
    _confidence(confidence)


def attach_bootstrap(scores: pd.DataFrame, resampled: dict[tuple[int, str], Sequence[float]], *,
                     units: dict[str, str], n_units: dict[str, int], resample_seed: int,
                     confidence: float) -> pd.DataFrame:
    """A copy of ``scores`` with each row's resampled main scores in its ``scores`` JSON (``"bootstrap"``).

    ``resampled`` maps (layer, task) to the B main scores of that row.
    """
    def entry(row: pd.Series) -> str:
        values = [float(value) for value in resampled[int(row["layer"]), str(row["task"])]]
        data = json.loads(row["scores"]) if isinstance(row["scores"], str) else dict(row["scores"] or {})
        data[BOOTSTRAP_KEY] = {"main_scores": values, "n_resamples": len(values), "unit": units[str(row["task"])],
                               "n_units": n_units[str(row["task"])], "resample_seed": int(resample_seed),
                               "confidence": float(confidence)}
        return scores_json(data)

    out = scores.copy()
    out["scores"] = [entry(row) for _, row in scores.iterrows()]
    out.attrs.update(scores.attrs)
    return out


def scores_json(data: Mapping[str, Any]) -> str:
    """A row's ``scores`` JSON (MTEB's scores, the bootstrap record): keys sorted, numpy values as numbers
    and lists, anything else not JSON as its string."""
    return json.dumps(data, sort_keys=True, default=_plain)


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


# ------------------------------------------------------------------------------------------ intervals


def _bootstrap_entry(value: Any) -> dict[str, Any] | None:
    if isinstance(value, str):
        if BOOTSTRAP_KEY not in value:  # most rows of most runs: skip the parse
            return None
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None
    entry = value.get(BOOTSTRAP_KEY) if isinstance(value, dict) else None
    return entry if isinstance(entry, dict) and entry.get("main_scores") else None


def has_bootstrap(scores: pd.DataFrame | None) -> bool:
    """Whether every row of a scores frame carries bootstrap resamples."""
    if scores is None or scores.empty or "scores" not in scores.columns:
        return False
    return all(_bootstrap_entry(value) is not None for value in scores["scores"])


@dataclass
class _Resamples:
    """Point scores (layers, tasks) and resampled scores (layers, tasks, B), x 100."""

    layers: list[int]
    depth_pct: list[float]
    tasks: list[str]
    point: np.ndarray
    resampled: np.ndarray
    confidence: float
    resample_seed: int
    units: dict[str, str]


def _resamples(scores: pd.DataFrame) -> _Resamples:
    if not has_bootstrap(scores):
        raise LayerscopeError("these scores carry no bootstrap resamples: score with --bootstrap N (N >= 2)")
    entries = [_bootstrap_entry(value) for value in scores["scores"]]
    counts = {entry["n_resamples"] for entry in entries if entry}
    if len(counts) != 1:
        raise LayerscopeError(f"the scores' rows hold different numbers of resamples ({sorted(counts)}); rerun the bootstrap")
    frame = scores.assign(_entry=entries)
    layers = sorted(int(layer) for layer in frame["layer"].unique())
    tasks = sorted(str(task) for task in frame["task"].unique())
    if frame.duplicated(["layer", "task"]).any() or len(frame) != len(layers) * len(tasks):
        raise LayerscopeError("bootstrap intervals need one score per (layer, task), for every task at every layer")
    frame = frame.sort_values(["layer", "task"])
    n_resamples = counts.pop()
    point = frame["main_score"].to_numpy(dtype=float).reshape(len(layers), len(tasks)) * 100
    resampled = np.array([entry["main_scores"] for entry in frame["_entry"]], dtype=float)
    resampled = resampled.reshape(len(layers), len(tasks), n_resamples) * 100
    first = entries[0] or {}
    depth = (frame.groupby("layer")["depth_pct"].first().to_list() if "depth_pct" in frame.columns
             else [float("nan")] * len(layers))
    units = {str(task): str((entry or {}).get("unit", "")) for task, entry in zip(frame["task"], frame["_entry"], strict=True)}
    return _Resamples(layers, depth, tasks, point, resampled, float(first.get("confidence", 0.95)),
                      int(first.get("resample_seed", 0)), units)


def _defined(data: _Resamples) -> tuple[np.ndarray, list[str]]:
    """Resamples where every (layer, task) score is defined, and the tasks whose scores were not.

    A resample can leave a score undefined (NaN), e.g. an STS resample whose gold scores are all equal
    has no Spearman correlation. Averages and paired differences need every task at every layer on
    the same resample, so such resamples are left out of them, counted, and named.
    """
    finite = np.isfinite(data.resampled)  # (layers, tasks, B)
    keep = finite.all(axis=(0, 1))
    undefined = [task for task, ok in zip(data.tasks, finite.all(axis=(0, 2)), strict=True) if not ok]
    if keep.sum() < 2:
        raise LayerscopeError(f"fewer than 2 of {keep.size} bootstrap resamples give every task a defined score "
                              f"(undefined on {', '.join(undefined)}): use more evaluation examples or leave "
                              "the task out")
    return keep, undefined


def _interval(values: np.ndarray, point: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over the last axis of ``values``, re-centred so the resamples' median is ``point``."""
    alpha = 1 - confidence
    centred = _centred(values, point)
    quantile = np.nanquantile if np.isnan(centred).any() else np.quantile  # undefined resamples left out
    low, high = quantile(centred, [alpha / 2, 1 - alpha / 2], axis=-1)
    return low, high


def _centred(values: np.ndarray, point: np.ndarray) -> np.ndarray:
    """The resampled values shifted so that their median is the point estimate.

    Drawing with replacement repeats examples, which moves some scores by itself: texts drawn twice
    always share a cluster, so a resampled clustering scores a higher V-measure than the data ever
    would. That shift is an artifact of the resampling, not noise of the estimate: the spread is kept,
    the location is the estimate's.
    """
    median = np.nanmedian if np.isnan(values).any() else np.median  # nan-aware only where needed (5x slower)
    return values - median(values, axis=-1, keepdims=True) + np.asarray(point)[..., None]


def layer_intervals(scores: pd.DataFrame, confidence: float | None = None) -> pd.DataFrame:
    """Per layer: the task-averaged score with its interval, and its paired difference from the last layer.

    Parameters
    ----------
    scores : pandas.DataFrame
        Scores whose rows carry bootstrap resamples (:func:`bootstrap_layers`), every task at every layer.
    confidence : float, optional
        Confidence level (default: the one recorded with the resamples).

    Returns
    -------
    pandas.DataFrame
        ``layer, depth_pct, score, low, high`` (task average x 100 and its interval), then ``vs_last,
        vs_last_low, vs_last_high`` (the layer minus the last layer, on the same resamples) and
        ``not_above_last`` (share of resamples where the layer does not beat the last). Intervals are
        percentile intervals of the resampled values re-centred on the point estimate (their median
        shifted onto it; see :func:`_centred`), and so is the share. ``attrs``:
        ``confidence``, ``n_resamples``, ``n_tasks``, ``resample_seed``, ``units`` (task -> what was resampled).
    """
    data = _resamples(scores)
    level = data.confidence if confidence is None else float(confidence)
    _check_settings(data.resampled.shape[-1], level)
    keep, undefined = _defined(data)
    average = data.resampled[..., keep].mean(axis=1)  # (layers, B'): resample b of the task average
    point = data.point.mean(axis=1)
    low, high = _interval(average, point, level)
    difference = average - average[-1]  # (layers, B), paired with the last layer
    point_difference = point - point[-1]
    difference_low, difference_high = _interval(difference, point_difference, level)
    frame = pd.DataFrame({
        "layer": data.layers, "depth_pct": data.depth_pct, "score": point, "low": low, "high": high,
        "vs_last": point_difference, "vs_last_low": difference_low, "vs_last_high": difference_high,
        "not_above_last": (_centred(difference, point_difference) <= 0).mean(axis=1),
    })
    frame.attrs.update(confidence=level, n_resamples=int(data.resampled.shape[-1]), n_tasks=len(data.tasks),
                       resample_seed=data.resample_seed, units=data.units, n_undefined=int((~keep).sum()),
                       undefined_tasks=undefined)
    return frame


def task_intervals(scores: pd.DataFrame, confidence: float | None = None) -> pd.DataFrame:
    """Per (layer, task): the score x 100 and its percentile interval (``layer, task, score, low, high``).

    ``n_undefined`` counts the resamples of that (layer, task) whose score is undefined (NaN); they are
    left out of its interval.
    """
    data = _resamples(scores)
    level = data.confidence if confidence is None else float(confidence)
    _check_settings(data.resampled.shape[-1], level)
    with warnings.catch_warnings():  # a (layer, task) with no defined resample gets NaN bounds, counted below
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = _interval(data.resampled, data.point, level)
    layer_grid, task_grid = np.meshgrid(data.layers, data.tasks, indexing="ij")
    frame = pd.DataFrame({"layer": layer_grid.ravel(), "task": task_grid.ravel(), "score": data.point.ravel(),
                          "low": low.ravel(), "high": high.ravel(),
                          "n_undefined": (~np.isfinite(data.resampled)).sum(axis=-1).ravel()})
    frame.attrs.update(confidence=level, n_resamples=int(data.resampled.shape[-1]))
    return frame


@dataclass(frozen=True)
class BestVersusLast:
    """Whether the best layer beats the last one beyond the noise (paired bootstrap).

    Attributes
    ----------
    best_layer, last_layer : int
        The layer with the best task-averaged score, and the model's last scored layer.
    best_score, best_low, best_high, last_score, last_low, last_high : float
        Their scores (x 100) and intervals.
    difference, low, high : float
        Best minus last and the percentile interval of that difference over the paired resamples.
    not_above : float
        Share of resamples where the best layer does not beat the last (best <= last).
    beyond_noise : bool
        The interval of the difference lies above 0 (the rule used; ``not_above`` is reported beside it).
    confidence : float
        Level of the intervals.
    n_resamples : int
        Resamples B.
    n_undefined : int
        Resamples left out because a task's score was undefined on them (see ``undefined_tasks``).
    undefined_tasks : tuple of str
        The tasks with an undefined score on some resample.
    """

    best_layer: int
    last_layer: int
    best_score: float
    best_low: float
    best_high: float
    last_score: float
    last_low: float
    last_high: float
    difference: float
    low: float
    high: float
    not_above: float
    beyond_noise: bool
    confidence: float
    n_resamples: int
    n_undefined: int = 0
    undefined_tasks: tuple[str, ...] = ()

    def describe(self) -> str:
        """One sentence: the verdict, the difference and its interval, and the share of resamples."""
        level = f"{100 * self.confidence:g}%"
        left_out = (f" ({self.n_undefined} of {self.n_resamples} resamples left out: a score of "
                    f"{', '.join(self.undefined_tasks)} is undefined on them)" if self.n_undefined else "")
        if self.best_layer == self.last_layer:
            return (f"the last layer {self.last_layer} is the best layer ({self.last_score:.1f}, {level} interval "
                    f"{interval_text(self.last_low, self.last_high)}){left_out}")
        verdict = "beats the last layer beyond the noise" if self.beyond_noise else "is within the noise of the last layer"
        rule = "excludes 0" if self.beyond_noise else "includes 0"
        return (f"best layer {self.best_layer} ({self.best_score:.1f}) {verdict} {self.last_layer} "
                f"({self.last_score:.1f}): {self.difference:+.1f} points, {level} interval of the paired difference "
                f"{interval_text(self.low, self.high, signed=True)} {rule}; best <= last in "
                f"{100 * self.not_above:.0f}% of {self.n_resamples - self.n_undefined} resamples{left_out}")

    def to_dict(self) -> dict[str, Any]:
        """Plain values, JSON-ready."""
        return {key: (value.item() if isinstance(value, np.generic) else value) for key, value in self.__dict__.items()}


def best_versus_last(intervals: pd.DataFrame) -> BestVersusLast:
    """The verdict on the best layer (first maximum of the point score) against the last, from :func:`layer_intervals`."""
    best = intervals.loc[intervals["score"].idxmax()]
    last = intervals.iloc[-1]
    return BestVersusLast(
        best_layer=int(best["layer"]), last_layer=int(last["layer"]),
        best_score=float(best["score"]), best_low=float(best["low"]), best_high=float(best["high"]),
        last_score=float(last["score"]), last_low=float(last["low"]), last_high=float(last["high"]),
        difference=float(best["vs_last"]), low=float(best["vs_last_low"]), high=float(best["vs_last_high"]),
        not_above=float(best["not_above_last"]), beyond_noise=bool(best["vs_last_low"] > 0),
        confidence=float(intervals.attrs.get("confidence", 0.95)),
        n_resamples=int(intervals.attrs.get("n_resamples", 0)),
        n_undefined=int(intervals.attrs.get("n_undefined", 0)),
        undefined_tasks=tuple(intervals.attrs.get("undefined_tasks", ())),
    )


def interval_text(low: float, high: float, *, signed: bool = False, digits: int = 1) -> str:
    """``[50.2, 54.1]`` (``signed``: ``[-0.4, +2.1]``)."""
    sign = "+" if signed else ""
    return f"[{low:{sign}.{digits}f}, {high:{sign}.{digits}f}]"


def layer_interval_texts(intervals: pd.DataFrame, layers: Sequence[int]) -> list[str | None]:
    """Each layer's interval from :func:`layer_intervals` as text, None for a layer it does not hold."""
    bounds = intervals.set_index("layer")
    return [interval_text(bounds.loc[layer, "low"], bounds.loc[layer, "high"]) if layer in bounds.index else None
            for layer in layers]
