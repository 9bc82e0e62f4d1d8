"""Intervals on per-layer task scores: a paired bootstrap over each task's evaluation examples.

Each task's evaluation data is resampled with replacement ``n_resamples`` times (seeded), and MTEB's
own evaluator scores every resampled copy at every layer, served by the cached embeddings (a
:class:`~layerscope.evaluate.encoder.LayerView`: a resample only repeats texts already encoded, so
no model runs). What is resampled follows the task type (the test examples of a classification, the
pairs of STS and pair classification, the texts of a clustering, the queries of reranking and
retrieval; everything else stays as it is): each task's plan and draws are
:mod:`layerscope.evaluate.resampling`'s, the same at every layer.

For classification, MTEB's classifiers depend on the training pool and the task's seed only, and each
test example's prediction on that example only: one MTEB evaluation per layer records every
experiment's predictions, and MTEB's own scoring is applied to each resample of (labels, predictions),
the same numbers as ``mteb.evaluate`` on the resampled copy without training the same classifiers B
times (:func:`_rescored_resamples`; both are tested equal to hand-made resamples). STS and pair
classification are rescored the same way from each pair's recorded similarities.

**Paired.** Resample ``b`` of a task is the same at every layer, so a difference between two layers
is judged on the bootstrap distribution of that difference (the noise common to both layers, e.g.
easy or hard examples drawn, cancels). The average over tasks of resample ``b`` is resample ``b`` of
the task average (tasks are resampled independently of each other).

**Reproducible.** The draws are seeded per evaluation part (see :mod:`~layerscope.evaluate.resampling`),
and each evaluation is reseeded exactly as the point estimate's (:func:`~layerscope.evaluate.runner.run_task`).

**Stored with the scores** under the key ``"bootstrap"`` of each row's ``scores`` JSON, and read
back as intervals: :mod:`layerscope.evaluate.intervals`.

This module runs the evaluations (:func:`bootstrap_layers`, above the runner); every name of the
bootstrap is importable from it.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from layerscope.errors import LayerscopeError
from layerscope.evaluate.checkpoint import UnitCheckpoints, checkpoint_folder, unit_digests
from layerscope.evaluate.intervals import (
    BOOTSTRAP_KEY,
    BestVersusLast,
    _check_settings,
    attach_bootstrap,
    best_versus_last,
    has_bootstrap,
    interval_text,
    layer_interval_texts,
    layer_intervals,
    scores_json,
    task_intervals,
)
from layerscope.evaluate.resampling import (
    BootstrapPlan,
    bootstrap_draws,
    bootstrap_plan,
    check_bootstrap_tasks,
    resample_indices,
    resampled_tasks,
    resampling_unit,
)
from layerscope.evaluate.sampling import subset_splits

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
    if plan.kind in _RESCORED:
        return _rescored_resamples(view, plan, _STATE["seed"])
    return [main_score(run_task(view, resampled, _STATE["seed"])) for resampled in copies]


#: Kinds whose resamples are rescored from one evaluation, with the MTEB method whose calls are
#: recorded: classification records each experiment's predictions (``_run_experiment``), STS and pair
#: classification the per-pair similarities they score (``_calculate_scores``, ``_compute_metrics``).
_RESCORED = ("classification", "pairs")


def _recorded_calls(view: Any, task: AbsTask, method: str, seed: int | None) -> tuple[Any, dict[tuple[str, str], list]]:
    """One MTEB evaluation of ``task`` (as the point estimate's), recording each call of ``method`` per part.

    Returns a copy of the task (its methods its class's again) and ``(split, subset) -> [(args, result)]``.
    """
    from layerscope.evaluate.runner import run_task

    probe = copy.copy(task)
    calls: dict[tuple[str, str], list[tuple[tuple[Any, ...], Any]]] = {}
    current: list[tuple[tuple[Any, ...], Any]] = []
    evaluate_subset, recorded = probe._evaluate_subset, getattr(probe, method)

    def recording_subset(*args: Any, hf_split: str, hf_subset: str, **kwargs: Any) -> Any:
        nonlocal current
        current = calls.setdefault((hf_split, hf_subset), [])
        return evaluate_subset(*args, hf_split=hf_split, hf_subset=hf_subset, **kwargs)

    def recording(*args: Any, **kwargs: Any) -> Any:
        result = recorded(*args, **kwargs)
        current.append((args, result))
        return result

    probe._evaluate_subset = recording_subset  # type: ignore[method-assign]
    setattr(probe, method, recording)
    try:
        run_task(view, probe, seed)
    finally:
        del probe._evaluate_subset
        delattr(probe, method)
    return probe, calls


def _rescored_resamples(view: Any, plan: BootstrapPlan, seed: int | None) -> list[float]:
    """MTEB's scores of every resample of a task, from one evaluation of the whole task.

    Classification: MTEB's classifiers (``samples_per_label`` per class, ``n_experiments`` draws, all
    from the training pool and the task's seed) do not depend on the test examples, and each test
    example's prediction depends on that example only; so one evaluation records every experiment's
    predictions and each resample of (labels, predictions) is scored, without training the same
    classifiers B times. The main scores MTEB takes from scikit-learn's accuracy, F1, precision and
    recall are counted for all resamples at once (:func:`counted_scores`); another (average precision)
    goes through MTEB's own ``_calculate_scores``, resample by resample.

    STS and pair classification: each pair's similarities (cosine, Manhattan, Euclidean, the model's)
    depend on that pair only; one evaluation records them with the gold scores or labels, and MTEB's
    own ``_calculate_scores`` / ``_compute_metrics`` scores each resample of them.

    Either way the numbers are ``mteb.evaluate``'s on a resampled copy (tested to 1e-12).
    """
    from mteb.abstasks.pair_classification import AbsTaskPairClassification

    from layerscope.evaluate.runner import main_score

    task = plan.task
    pairs = plan.kind == "pairs"
    if pairs:
        method = "_compute_metrics" if isinstance(task, AbsTaskPairClassification) else "_calculate_scores"
    else:
        method = "_run_experiment"
    probe, calls = _recorded_calls(view, task, method, seed)
    parts = {}
    for (subset, split), part in plan.draws.items():
        rows = next(iter(part.values()))
        if pairs:
            ((similarities, gold), _), = calls[split, subset]
            parts[subset, split] = _pair_scores(getattr(probe, method), task.metadata.main_score, similarities, gold,
                                                rows)
        else:
            labels = np.asarray(list(subset_splits(task, subset)[split][task.label_column_name]))
            parts[subset, split] = _classification_scores(probe, labels, [np.asarray(result[1]) for _, result in calls[split, subset]],
                                                rows)
    values = []
    for b in range(plan.n_resamples):  # MTEB's aggregation over subsets, as for the point estimate
        resampled: dict[str, list[dict[str, Any]]] = {}
        for (_, split), scores in parts.items():
            resampled.setdefault(split, []).append({"main_score": scores[b]})
        values.append(main_score(resampled))
    return values


def _pair_scores(score: Any, main: str, similarities: dict[str, Any], gold: Any, rows: np.ndarray) -> np.ndarray:
    """MTEB's main score ``main`` of each resample ``rows[b]`` of the pairs, scored by ``score`` (MTEB's
    ``_calculate_scores`` or ``_compute_metrics``) from their recorded similarities and gold values."""
    n = len(gold)
    gold = np.asarray(gold)
    per_pair = {key: np.asarray(value) for key, value in similarities.items() if value is not None and len(value) == n}
    out = []
    for drawn in rows:
        picked = {**similarities, **{key: value[drawn] for key, value in per_pair.items()}}
        out.append(float(score(picked, gold[drawn])[main]))
    return np.asarray(out)


#: MTEB's classification metrics computed here from per-class counts, every resample at once;
#: another main score (average precision) is scored by MTEB's own code, resample by resample.
COUNTED_METRICS = ("accuracy", "f1", "f1_weighted", "precision", "precision_weighted", "recall", "recall_weighted")
#: Predictions (experiments x resamples x examples) counted in one go; more are counted in chunks.
_COUNT_CHUNK = 1 << 22


def _classification_scores(probe: Any, labels: np.ndarray, predictions: list[np.ndarray], rows: np.ndarray) -> np.ndarray:
    """The main score of every resample ``rows[b]`` of one evaluation part, averaged over the experiments."""
    metric = probe.metadata.main_score
    if metric in COUNTED_METRICS and all(labels.dtype.kind == p.dtype.kind for p in predictions):
        step = max(1, _COUNT_CHUNK // (len(predictions) * rows.shape[1]))
        return np.concatenate([counted_scores(labels, predictions, rows[start:start + step], metric)
                               for start in range(0, len(rows), step)])
    out = []
    for drawn in rows:
        average = probe._calculate_avg_scores([probe._calculate_scores(labels[drawn], predicted[drawn])
                                               for predicted in predictions])
        probe._add_main_score(average)
        out.append(float(average["main_score"]))
    return np.asarray(out)


def counted_scores(labels: np.ndarray, predictions: Sequence[np.ndarray], rows: np.ndarray, metric: str) -> np.ndarray:
    """An MTEB classification metric of every resample, from per-class counts, averaged over the experiments.

    scikit-learn's definitions, as MTEB calls them (``average="macro"``, or ``"weighted"`` for the
    ``_weighted`` metrics): a resample's classes are those in its labels or its predictions; a class
    never predicted has precision 0 and one never true recall 0 (``zero_division="warn"``); F1 is
    ``2 tp / (true + predicted)``; macro averages the classes, weighted weights them by their support.

    Parameters
    ----------
    labels : numpy.ndarray, shape (n,)
        The test labels.
    predictions : sequence of numpy.ndarray, shape (n,) each
        One experiment's predictions each (same kind of values as the labels).
    rows : numpy.ndarray of int, shape (B, m)
        The resamples: indices into the test examples.
    metric : str
        One of :data:`COUNTED_METRICS`.

    Returns
    -------
    numpy.ndarray, shape (B,)
        The metric of each resample, averaged over the experiments (MTEB's score of the resampled copy).
    """
    if metric not in COUNTED_METRICS:
        raise LayerscopeError(f"cannot count '{metric}': one of {', '.join(COUNTED_METRICS)}")
    n_experiments, (n_resamples, m) = len(predictions), rows.shape
    _, codes = np.unique(np.concatenate([labels, *predictions]), return_inverse=True)
    k = int(codes.max()) + 1
    true_codes = codes[: len(labels)][rows]  # (B, m)
    predicted = codes[len(labels):].reshape(n_experiments, len(labels))[:, rows]  # (E, B, m)
    slots = np.arange(n_experiments * n_resamples).reshape(n_experiments, n_resamples, 1) * k + predicted
    shape = (n_experiments, n_resamples, k)
    tp = np.bincount(slots[predicted == true_codes], minlength=n_experiments * n_resamples * k)
    tp = tp.reshape(shape).astype(np.float64)
    if metric == "accuracy":  # sklearn's correct/m per experiment (exact), then MTEB's np.mean over experiments
        return _experiment_mean(tp.sum(-1) / m)
    true = np.bincount((np.arange(n_resamples)[:, None] * k + true_codes).ravel(), minlength=n_resamples * k)
    true = np.broadcast_to(true.reshape(1, n_resamples, k).astype(np.float64), shape)
    pred = np.bincount(slots.ravel(), minlength=n_experiments * n_resamples * k).reshape(shape).astype(np.float64)
    kind, _, weighting = metric.partition("_")
    numerator, denominator = {"precision": (tp, pred), "recall": (tp, true), "f1": (2.0 * tp, true + pred)}[kind]
    value = np.divide(numerator, denominator, out=np.zeros(shape), where=denominator > 0)
    weights = np.where(true + pred > 0, true if weighting else 1.0, 0.0)
    return _experiment_mean((value * weights).sum(-1) / weights.sum(-1))


def _experiment_mean(values: np.ndarray) -> np.ndarray:
    """(E, B) -> (B,): each resample's mean over the experiments as MTEB takes it (``np.mean`` of a list of E
    floats), summed along a contiguous axis so that numpy adds them in the same (pairwise) order."""
    return np.ascontiguousarray(values.T).mean(-1)


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
    cache_dir: str | os.PathLike[str] | None = None,
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
    cache_dir : str or Path, optional
        The embedding cache folder: each finished (layer, task) unit is kept beside it
        (``<cache_dir>/bootstrap``, :mod:`~layerscope.evaluate.checkpoint`), so a rerun after an
        interruption evaluates only the units it had not finished. None keeps nothing.

    Returns
    -------
    pandas.DataFrame
        A copy of ``scores`` whose ``scores`` JSON gains ``"bootstrap"``: ``main_scores`` (B values, in
        [0, 1]), ``unit``, ``n_units``, ``n_resamples``, ``resample_seed``, ``confidence``. ``attrs``
        keeps ``scores``'s and adds ``attrs["bootstrap"]`` (settings, units, seconds, ``units_kept``: the
        (layer, task) units read back from ``cache_dir``); the draws
        themselves are :func:`bootstrap_draws` (or the plans' ``indices``).
    """
    from tqdm.auto import tqdm

    from layerscope.evaluate.runner import fork_map, resolve_workers
    from layerscope.evaluate.seeds import own_seeds_kept

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
    # classification and pairs rescore what one evaluation recorded (see _rescored_resamples): no copies
    copies = [plan.copies() if plan.kind not in _RESCORED else [] for plan in plans]
    units = {plan.task.metadata.name: plan.unit for plan in plans}
    counts = {plan.task.metadata.name: plan.n_units for plan in plans}
    work = [(extraction.layers.index(layer), t) for layer in layers for t in range(len(tasks))]
    checkpoints, keys = _unit_keys(checkpoint_folder(cache_dir, "bootstrap"), extraction, plans, work, n_resamples=n_resamples,
                                   resample_seed=resample_seed, seed=seed, name=name, revision=revision)
    kept = {unit: values for unit, key in keys.items() if (values := checkpoints.load(key)) is not None}
    work = [unit for unit in work if unit not in kept]
    workers = resolve_workers(eval_workers, len(work))
    _STATE.clear()
    _STATE.update(extraction=extraction, plans=list(plans), copies=copies, seed=seed, name=name,
                  revision=revision)
    bar = tqdm(total=(len(work) + len(kept)) * n_resamples, initial=len(kept) * n_resamples,
               desc=f"bootstrap: {n_resamples} resamples x {_count(len(tasks), 'task')} x {_count(len(layers), 'layer')}",
               unit="eval", disable=not progress)

    def done(unit: tuple[int, int], values: list[float]) -> None:
        if unit in keys:
            checkpoints.save(keys[unit], np.asarray(values, dtype=np.float64))
        bar.update(n_resamples)

    try:
        with own_seeds_kept(tasks):
            results = fork_map(_evaluate_unit, work, workers, done)
    finally:
        bar.close()
        _STATE.clear()
    results.update({unit: [float(value) for value in values] for unit, values in kept.items()})
    resampled = {(extraction.layers[position], names[t]): values for (position, t), values in results.items()}
    out = attach_bootstrap(scores, resampled, units=units, n_units=counts, resample_seed=resample_seed,
                           confidence=confidence)
    out.attrs["bootstrap"] = {
        "n_resamples": n_resamples, "confidence": confidence, "resample_seed": resample_seed, "seed": seed,
        "units": units, "n_units": counts, "eval_workers": workers, "units_kept": len(kept),
        "seconds": time.perf_counter() - started,
    }
    return out


def _unit_keys(
    folder: str | os.PathLike[str] | None, extraction: Extraction, plans: Sequence[BootstrapPlan],
    work: Sequence[tuple[int, int]], **settings: Any,
) -> tuple[UnitCheckpoints, dict[tuple[int, int], str]]:
    """The run's checkpoints and the key of each unit that can have one (its task's data digested)."""
    checkpoints = UnitCheckpoints(folder, "bootstrap", settings)
    positions = sorted({position for position, _ in work})
    layer_keys, task_keys = unit_digests(checkpoints, extraction, positions, [plan.task for plan in plans])
    return checkpoints, {
        (position, t): checkpoints.key(layer_keys[position], task_keys[t], plans[t].kind, plans[t].indices)
        for position, t in work if task_keys[t] is not None and position in layer_keys
    }


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'s' if number != 1 else ''}"
