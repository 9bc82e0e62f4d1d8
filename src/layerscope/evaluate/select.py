"""Choose a layer with labels, and say how sure the choice is (``layerscope select``).

:func:`select_layer_with_labels` scores every layer on the user's tasks (task files or built-in
tasks) with MTEB's evaluators from one encoding pass, then:

- **intervals** (``bootstrap`` resamples, :mod:`~layerscope.evaluate.uncertainty`): per layer the
  task-averaged score with its interval over the evaluation examples, the best layer, the last layer,
  and whether the best beats the last beyond the noise (the interval of their paired difference lies
  above 0);
- **a few-label choice** (``labels_per_class`` K, :mod:`~layerscope.evaluate.few_labels`): per
  classification task the layer with the best cross-validated accuracy on K labelled training examples
  per class, taken only when its gain over the last layer on those examples is beyond the noise (else
  the last layer), and how both score on the test set against the best and the last layer (regret);
  the K examples are encoded in the same pass;
- **candidates beside the layers** (:class:`Candidates`, e.g. the recipes of
  :func:`layerscope.analysis.recipe_runs.recipe_candidates`): embeddings computed from the layers of
  the same pass, scored, bootstrapped (paired with the last layer) and offered to the few-label choice
  exactly as a layer is. They take negative ids in the frames (``candidate`` names them), so the
  last layer stays the last row.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from layerscope.config import ExtractConfig
from layerscope.errors import LayerscopeError
from layerscope.evaluate.runner import task_seed
from layerscope.evaluate.uncertainty import BestVersusLast
from layerscope.extract.conditioning import normalize_record

if TYPE_CHECKING:
    from mteb.abstasks import AbsTask

    from layerscope.config import TaskFileConfig
    from layerscope.evaluate.few_labels import LabelDraw
    from layerscope.extract import Extraction
    from layerscope.models import LoadedModel

__all__ = ["AVERAGE", "Candidates", "LayerChoice", "check_choice", "few_label_choice", "select_layer_with_labels"]

#: The ``task`` of rows that average over the tasks.
AVERAGE = "average"


@dataclass(frozen=True)
class Candidates:
    """Embeddings scored beside the layers, computed from the layers of the same pass (e.g. recipes).

    Attributes
    ----------
    names : tuple of str
        The candidates computed by ``compute``, one name each (shown where a layer number would be).
    reads : tuple of int
        Canonical layers they are computed from: extracted whatever ``layers`` asks.
    compute : callable
        ``compute(extraction) -> sequence of (n_texts, k) arrays``, one per name, rows in the
        extraction's text order, ``k`` at most the extraction's dimension (narrower ones are padded
        with zero columns, which changes no evaluator's score).
    by_type : mapping of str to mapping of str to str
        Candidates made of others by task type: name -> {MTEB task type -> name in ``names``} (a recipe
        set with one recipe per type). Each task takes the scores (and resamples) of its type's entry;
        the few-label choice, on classification tasks only, reads the ``Classification`` entry.
    """

    names: tuple[str, ...]
    reads: tuple[int, ...]
    compute: Callable[[Extraction], Sequence[np.ndarray]]
    by_type: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def ids(self) -> dict[int, str]:
        """Negative id -> name, in listing order (computed first, then the by-type ones; ascending ids)."""
        names = [*self.names, *self.by_type]
        return {position - len(names): name for position, name in enumerate(names)}


@dataclass
class LayerChoice:
    """What :func:`select_layer_with_labels` found.

    Attributes
    ----------
    scores : pandas.DataFrame
        :func:`~layerscope.evaluate.evaluate_layers`'s frame; with a bootstrap, each row's ``scores`` JSON
        also holds its resampled main scores (``"bootstrap"``).
    layers : pandas.DataFrame
        One row per layer: ``layer, depth_pct, score`` (task average x 100) and, with a bootstrap,
        ``low, high, vs_last, vs_last_low, vs_last_high, not_above_last``
        (:func:`~layerscope.evaluate.uncertainty.layer_intervals`).
    task_scores : pandas.DataFrame
        One row per (layer, task): ``score`` x 100 and, with a bootstrap, ``low, high``.
    best_layer, last_layer : int
        The layer with the best task-averaged score (the first, if tied) and the last layer scored.
    verdict : BestVersusLast or None
        Best against last on the paired resamples (None without a bootstrap).
    few_labels : pandas.DataFrame or None
        With ``labels_per_class``: one row per classification task, then one ``average`` row over them
        (:func:`few_label_choice`): the layer with the best cross-validated accuracy, its gain over the
        last layer on the held-out labelled examples with its interval, the chosen layer (that layer
        when the gain is beyond the noise, else the last layer) and how both score on the test set
        (x 100; ``regret`` = best - chosen, ``vs_last`` = chosen - last).
    cv_scores : pandas.DataFrame or None
        Cross-validated accuracy (x 100) of every layer: ``task, layer, cv_accuracy``.
    notes : list of str
        What the reader should know (e.g. classes with fewer than K training examples).
    record : dict
        Settings, seeds, counts and timings: everything needed to rerun it.
    resamples : dict of str to numpy.ndarray
        The bootstrap draws, ``(B, n_units)`` indices per evaluation part
        (:func:`~layerscope.evaluate.uncertainty.bootstrap_draws`); empty without a bootstrap.
    candidates : dict of int to str
        The candidates beside the layers (:class:`Candidates`): their negative id in every frame's
        ``layer`` column (and in ``best_layer``, ``chosen_layer``...) -> name; empty without any.
    """

    scores: pd.DataFrame
    layers: pd.DataFrame
    task_scores: pd.DataFrame
    best_layer: int
    last_layer: int
    verdict: BestVersusLast | None = None
    few_labels: pd.DataFrame | None = None
    cv_scores: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)
    record: dict[str, Any] = field(default_factory=dict)
    resamples: dict[str, np.ndarray] = field(default_factory=dict)
    candidates: dict[int, str] = field(default_factory=dict)

    def name(self, layer: int) -> str:
        """``layer 12``, or a candidate's name."""
        return self.candidates.get(int(layer), f"layer {int(layer)}")

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-ready values of everything but the raw scores frame."""
        def rows(frame: pd.DataFrame | None) -> list[dict[str, Any]] | None:
            return None if frame is None else frame.astype(object).where(frame.notna(), None).to_dict("records")

        return {
            "best_layer": self.best_layer, "last_layer": self.last_layer,
            "verdict": None if self.verdict is None else self.verdict.to_dict(),
            "layers": rows(self.layers), "task_scores": rows(self.task_scores),
            "few_labels": rows(self.few_labels), "cv_scores": rows(self.cv_scores),
            "notes": list(self.notes), "record": self.record,
            "candidates": {str(key): value for key, value in self.candidates.items()},
        }

    def write(self, folder: Path, config: Mapping[str, Any]) -> list[str]:
        """Write everything of the choice under ``folder``, enough to rerun and check it.

        ``select.json`` (:meth:`to_dict` and ``config``, the settings that made it), the tables as CSV
        (``layers``, ``task_scores``, ``scores``, and ``few_labels``, ``cv_scores`` where present) and
        the bootstrap draws (``resamples.npz``, where there are any), each file written atomically.

        Returns
        -------
        list of str
            The names of the files written, in that order.
        """
        import io

        from layerscope.atomic import atomic_write_bytes, atomic_write_json

        atomic_write_json(folder / "select.json", {**self.to_dict(), "config": dict(config)})
        written = ["select.json"]
        tables = {"layers.csv": self.layers, "task_scores.csv": self.task_scores, "scores.csv": self.scores,
                  "few_labels.csv": self.few_labels, "cv_scores.csv": self.cv_scores}
        for name, frame in tables.items():
            if frame is not None:
                atomic_write_bytes(folder / name, frame.to_csv(index=False).encode())
                written.append(name)
        if self.resamples:
            buffer = io.BytesIO()
            np.savez_compressed(buffer, **self.resamples)
            atomic_write_bytes(folder / "resamples.npz", buffer.getvalue())
            written.append("resamples.npz")
        return written


def check_choice(tasks: Sequence[AbsTask], *, bootstrap: int = 100, labels_per_class: int | None = None,
                 confidence: float = 0.95, resample_seed: int = 0) -> None:
    """The one-line errors of a layer choice, before any model is loaded.

    Bad option values, a task the bootstrap cannot resample, and ``labels_per_class`` without any
    classification task among ``tasks``.
    """
    from layerscope.config import SelectConfig
    from layerscope.evaluate.few_labels import is_classification
    from layerscope.evaluate.uncertainty import check_bootstrap_tasks

    SelectConfig(bootstrap=bootstrap, confidence=confidence, resample_seed=resample_seed,
                 labels_per_class=labels_per_class)
    if bootstrap:
        check_bootstrap_tasks(tasks)
    if labels_per_class is not None and not any(is_classification(task) for task in tasks):
        kinds = ", ".join(f"{task.metadata.name} ({task.metadata.type})" for task in tasks[:3])
        raise LayerscopeError(f"--labels-per-class needs a classification task (a text + label file or a built-in "
                              f"classification task); the tasks are {kinds}{' ...' if len(tasks) > 3 else ''}")


def select_layer_with_labels(
    model: LoadedModel | str,
    tasks: str | AbsTask | Iterable[str | AbsTask],
    *,
    bootstrap: int = 100,
    confidence: float = 0.95,
    labels_per_class: int | None = None,
    resample_seed: int = 0,
    seed: int | None = None,
    layers: str | int | Sequence[int] = "all",
    task_files: TaskFileConfig | Mapping[str, Any] | None = None,
    pooling: str = "mean",
    max_length: int | None = None,
    batch_size: int | str = "auto",
    cache_dir: str | None = None,
    progress: bool = True,
    eval_workers: int | str = "auto",
    candidates: Candidates | None = None,
    condition: str = "none",
    normalize: bool | None = None,
    **extract_options: Any,
) -> LayerChoice:
    """Score every layer on labelled tasks, with intervals, and optionally choose it from K labels per class.

    Parameters
    ----------
    model : LoadedModel or str
        A loaded model, or a name for :func:`layerscope.load_model`.
    tasks : str, AbsTask or iterable
        Task files (``.csv``, ``.tsv``, ``.jsonl``, ``.parquet``), task names or MTEB task instances, in
        any mix (:func:`~layerscope.evaluate.catalog.resolve`).
    bootstrap : int
        Resamples of each task's evaluation examples (0: no intervals). Each costs one MTEB evaluation
        per layer and task (no forward pass).
    confidence : float
        Level of the intervals (the few-label gain's too).
    labels_per_class : int, optional
        K: choose the layer by cross-validation on K labelled training examples per class of each
        classification task, keeping the last layer unless the best one beats it beyond the noise.
        Tasks of other types are scored and bootstrapped but take no part in the few-label choice;
        with no classification task at all it is an error.
    resample_seed : int
        Seed of the bootstrap resamples and of the K-per-class draws and folds.
    seed : int, optional
        Seed of MTEB's evaluations (default: each task's own, MTEB's 42).
    layers : "all", int or list of int
        Layers to score; the last layer is always added (it is the baseline).
    task_files : TaskFileConfig or mapping, optional
        How task files are read (columns, split, clustering).
    pooling, max_length, batch_size, cache_dir, progress, **extract_options
        As for :func:`layerscope.extract`; ``cache_dir`` also keeps the finished layers' scores and
        bootstrap units (``<cache_dir>/scores``, ``<cache_dir>/bootstrap``,
        :mod:`~layerscope.evaluate.checkpoint`), so that a rerun after an interruption resumes.
    eval_workers : int or "auto"
        Processes running the evaluators (see :func:`~layerscope.evaluate.evaluate_layers`).
    candidates : Candidates, optional
        Embeddings scored beside the layers (recipes): computed from the same pass, with the same
        intervals paired with the last layer, and offered to the few-label choice.
    condition, normalize
        As ``analyze`` conditions the layers (``ExtractConfig``): a conditioning fitted on the tasks'
        texts without their labels, and the last layer L2-normalized where the model ships normalized
        (``normalize`` None, the default; False: raw layers; True: every layer after the conditioning).
        Candidates start from the raw layers (a recipe states its own conditioning).

    Returns
    -------
    LayerChoice
    """
    from layerscope.evaluate.catalog import resolve
    from layerscope.evaluate.checkpoint import kept_counts
    from layerscope.evaluate.few_labels import draw_labels, is_classification
    from layerscope.evaluate.runner import _load, evaluate_layers
    from layerscope.evaluate.uncertainty import (
        best_versus_last,
        bootstrap_layers,
        bootstrap_plan,
        layer_intervals,
        task_intervals,
    )
    from layerscope.extract import resolve_layers

    started = time.perf_counter()
    task_list = resolve(tasks, seed=seed, files=task_files)  # bad names and files fail before the model loads
    check_choice(task_list, bootstrap=bootstrap, labels_per_class=labels_per_class, confidence=confidence,
                 resample_seed=resample_seed)
    classification = [task for task in task_list if is_classification(task)]
    _load(task_list)
    draws: list[LabelDraw] = []
    if labels_per_class is not None:
        draws = [draw for task in classification for draw in draw_labels(task, labels_per_class, resample_seed)]
    if isinstance(model, str):
        from layerscope.models import load_model

        model = load_model(model)
    wanted = sorted(set(resolve_layers(layers, model.num_layers)) | {model.num_layers})
    extraction, ids = _encoded(model, task_list, draws, wanted, seed, candidates, condition, normalize,
                               pooling=pooling, batch_size=batch_size, max_length=max_length, cache_dir=cache_dir,
                               progress=progress, **extract_options)
    encoded = time.perf_counter()
    scores = evaluate_layers(model, task_list, layers="all", seed=seed, extraction=extraction, progress=progress,
                             eval_workers=eval_workers, cache_dir=cache_dir)
    evaluated = time.perf_counter()
    notes: list[str] = []
    verdict = None
    plans = [bootstrap_plan(task, bootstrap, resample_seed) for task in task_list] if bootstrap else []
    if bootstrap:
        name = f"layerscope/{model.model_id}"
        scores = bootstrap_layers(scores, extraction, task_list, n_resamples=bootstrap, confidence=confidence,
                                  resample_seed=resample_seed, seed=seed, name=name, revision=model.revision,
                                  progress=progress, eval_workers=eval_workers, plans=plans,
                                  cache_dir=cache_dir)
        scores = _by_type_rows(scores, candidates, ids)
        per_layer = layer_intervals(scores)
        per_task = task_intervals(scores)
        verdict = best_versus_last(per_layer)
    else:
        scores = _by_type_rows(scores, candidates, ids)
        per_task = scores[["layer", "task"]].assign(score=scores["main_score"] * 100)
        per_layer = (scores.groupby(["layer", "depth_pct"], as_index=False)["main_score"].mean()
                     .rename(columns={"main_score": "score"}).assign(score=lambda f: f["score"] * 100))
    bootstrapped = time.perf_counter()
    few, cv = None, None
    if draws:
        estimators = {task.metadata.name: task.evaluator_model for task in classification}  # MTEB's classifier
        few, cv, few_notes = few_label_choice(extraction, draws, scores, seed=resample_seed, estimators=estimators,
                                              confidence=confidence)
        notes += few_notes
        other = [task.metadata.name for task in task_list if not is_classification(task)]
        if other:
            notes.append(f"the few-label choice covers the classification tasks only (not {', '.join(other)})")
    best = int(per_layer.loc[per_layer["score"].idxmax(), "layer"])
    if ids:
        per_layer, per_task = _named(per_layer, ids), _named(per_task, ids)
        if verdict is not None:
            verdict = dataclasses.replace(verdict, best_name=ids.get(verdict.best_layer))
    record = {
        "model": model.describe() if hasattr(model, "describe") else {"model_id": model.model_id},
        "tasks": {task.metadata.name: {"type": task.metadata.type, "seed": task_seed(task, seed)}
                  for task in task_list},
        "layers": wanted, "candidates": {str(key): value for key, value in ids.items()},
        "normalize": normalize_record(ExtractConfig(condition=condition, normalize=normalize), model),
        "condition": condition,
        "seed": seed, "bootstrap": bootstrap, "confidence": confidence,
        "resample_seed": resample_seed, "labels_per_class": labels_per_class,
        "extraction": {key: value for key, value in extraction.record.items()
                       if isinstance(value, (int, float, str, bool, type(None)))},
        "evaluation": scores.attrs.get("record", {}).get("task_seeds"),
        "bootstrap_record": {key: value for key, value in scores.attrs.get("bootstrap", {}).items()},
        "draws": [{"task": draw.task, "subset": draw.subset, "rows": draw.rows.tolist(), "per_class": draw.per_class,
                   "pool_size": draw.pool_size} for draw in draws],
        "kept": kept_counts(scores),  # read back from cache_dir (an interrupted run resumed), not evaluated
        "seconds": {"encode": encoded - started, "evaluate": evaluated - encoded,
                    "bootstrap": bootstrapped - evaluated, "total": time.perf_counter() - started},
    }
    resamples = {key: index for plan in plans for key, index in plan.indices.items()}
    return LayerChoice(scores, per_layer.reset_index(drop=True), per_task.reset_index(drop=True), best,
                       int(per_layer["layer"].iloc[-1]), verdict, few, cv, notes, record, resamples, ids)


def _encoded(model: Any, tasks: Sequence[AbsTask], draws: Sequence[LabelDraw], wanted: Sequence[int], seed: int | None,
             candidates: Candidates | None, condition: str, normalize: bool | None,
             **extract_options: Any) -> tuple[Extraction, dict[int, str]]:
    """One pass over the tasks' texts and the drawn examples; the layers conditioned, the candidates beside."""
    from layerscope.evaluate.runner import collect_texts
    from layerscope.extract import extract

    texts = collect_texts(tasks, seed)
    known = set(texts)  # the drawn examples MTEB's own draws did not ask for are encoded in the same pass
    texts += [text for text in dict.fromkeys(t for draw in draws for t in draw.texts) if text not in known]
    read = sorted(set(wanted) | set(candidates.reads if candidates is not None else ()))
    extraction = extract(model, texts, layers=read, **extract_options)
    conditioned = _conditioned(extraction, model, ExtractConfig(condition=condition, normalize=normalize))
    if candidates is None:  # read == wanted: the extraction's own layers (a memory map stays one)
        return (extraction if conditioned is extraction.pooled else
                dataclasses.replace(extraction, pooled=conditioned)), {}
    return _with_candidates(extraction, candidates, wanted, conditioned)


def _conditioned(extraction: Extraction, model: Any, config: ExtractConfig) -> np.ndarray:
    """The extraction's layers as ``analyze`` scores them: the last layer as the model ships it, conditioned."""
    from layerscope.extract.conditioning import fit_configured

    conditioner = fit_configured(extraction.pooled, extraction.layers, config, model)
    if conditioner is None:
        return extraction.pooled
    return conditioner.apply(extraction.pooled).to(dtype=torch.float32).numpy()


def _with_candidates(extraction: Extraction, candidates: Candidates, wanted: Sequence[int],
                     layers: np.ndarray | None = None) -> tuple[Extraction, dict[int, str]]:
    """The ``wanted`` slices of ``layers`` (default: the extraction's own) after the candidates' embeddings
    (negative ids, computed from the extraction), and id -> name."""
    from layerscope.extract import Extraction

    ids = candidates.ids()
    computed = dict(zip(candidates.names, candidates.compute(extraction), strict=True))
    for name, parts in candidates.by_type.items():
        unknown = sorted(set(parts.values()) - set(computed))
        if unknown:
            raise LayerscopeError(f"candidate '{name}' takes its scores from {', '.join(unknown)}, not computed")
        computed[name] = computed[parts.get("Classification", next(iter(parts.values())))]
    source = np.asarray(extraction.pooled if layers is None else layers)
    n, dim = len(extraction.texts), max(int(extraction.pooled.shape[-1]), int(source.shape[-1]))
    stacked = np.zeros((len(ids), n, dim), dtype=np.float32)  # narrower ones (whitened) padded with zeros
    for position, name in enumerate(ids.values()):
        vectors = np.asarray(computed[name], dtype=np.float32)
        if vectors.shape[0] != n or vectors.shape[1] > dim:
            raise LayerscopeError(f"candidate '{name}' gave embeddings of shape {vectors.shape}, expected ({n}, <= {dim})")
        stacked[position, :, : vectors.shape[1]] = vectors
    positions = [extraction.layers.index(layer) for layer in wanted]
    kept = source[positions]
    if kept.shape[-1] < dim:  # whitened layers: zero columns change no evaluator's score
        kept = np.concatenate([kept, np.zeros((*kept.shape[:-1], dim - kept.shape[-1]), dtype=kept.dtype)], axis=-1)
    pooled = np.concatenate([stacked, kept.astype(np.float32, copy=False)], axis=0)
    return Extraction(pooled, [*ids, *wanted], list(extraction.texts), extraction.kept, dict(extraction.record),
                      extraction.from_cache), ids


def _by_type_rows(scores: pd.DataFrame, candidates: Candidates | None, ids: Mapping[int, str]) -> pd.DataFrame:
    """Each by-type candidate's rows replaced by those of its task type's entry (bootstrap resamples included)."""
    if candidates is None or not candidates.by_type:
        return scores
    id_of = {name: key for key, name in ids.items()}
    scores = scores.set_index(["layer", "task"]).sort_index()
    for name, parts in candidates.by_type.items():
        target = id_of[name]
        for task, task_type in scores.loc[target, "task_type"].items():
            source = parts.get(task_type)
            if source is None:
                raise LayerscopeError(f"candidate '{name}' names no entry for {task} ({task_type})")
            columns = ["main_score", "scores"]  # the target keeps its own layer id and depth
            scores.loc[(target, task), columns] = scores.loc[(id_of[source], task), columns]
    return scores.reset_index()


def _named(frame: pd.DataFrame, ids: Mapping[int, str]) -> pd.DataFrame:
    """``candidate`` (the name; ``layer N`` for a layer) beside ``layer``; no depth for a candidate."""
    candidate = [ids.get(int(layer), f"layer {int(layer)}") for layer in frame["layer"]]
    if "depth_pct" in frame.columns:
        frame = frame.assign(depth_pct=frame["depth_pct"].where(frame["layer"] >= 0))
    else:
        frame = frame.copy()
    frame.insert(1, "candidate", candidate)
    return frame


def few_label_choice(extraction: Extraction, draws: Sequence[LabelDraw], scores: pd.DataFrame, *, seed: int,
                     estimators: Mapping[str, Any] | None = None, confidence: float = 0.95,
                     ) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """The layer each task's K-per-class draw chooses by cross-validation, and its test score against the best and last.

    The layer with the best cross-validated accuracy is the choice only when its gain over the last
    layer on the held-out labelled examples is beyond the noise (the ``confidence`` interval of
    :func:`~layerscope.evaluate.few_labels.gain_over_last` lies above 0); otherwise the last layer is.

    Parameters
    ----------
    extraction : Extraction
        Embeddings holding every drawn text at the layers of ``scores``.
    draws : sequence of LabelDraw
        :func:`~layerscope.evaluate.few_labels.draw_labels` of the classification tasks.
    scores : pandas.DataFrame
        :func:`~layerscope.evaluate.evaluate_layers`'s frame (test scores of every layer).
    seed : int
        Seed of the folds, the classifier and the bootstrap of the gain.
    estimators : mapping, optional
        Task -> its classifier (MTEB's ``task.evaluator_model``); default a logistic regression with
        MTEB's settings (:func:`~layerscope.evaluate.few_labels.out_of_fold_hits`).
    confidence : float
        Level of the gain's interval.

    Returns
    -------
    few_labels : pandas.DataFrame
        Per task, then the ``average`` row (one layer for every task, from the tasks' mean
        cross-validated accuracy and mean gain): ``task, cv_best_layer, cv_accuracy, cv_gain,
        cv_gain_low, cv_gain_high, chosen_layer, score, best_layer, best_score, last_score, regret,
        vs_last, cv_best_score, cv_best_regret, n_labelled`` (x 100; ``regret`` = best - chosen,
        ``vs_last`` = chosen - last, both for the chosen layer; ``cv_best_*`` for the CV-best layer).
    cv_scores : pandas.DataFrame
        ``task, layer, cv_accuracy`` (x 100).
    notes : list of str
        Classes drawn short of K, drawn texts without an embedding (empty texts).
    """
    from layerscope.evaluate.few_labels import fold_accuracy, out_of_fold_hits

    layers = sorted(int(layer) for layer in scores["layer"].unique())
    positions = [extraction.layers.index(layer) for layer in layers]
    row_of = {text: row for row, text in enumerate(extraction.texts)}
    test = scores.pivot(index="layer", columns="task", values="main_score").loc[layers] * 100
    notes: list[str] = []
    cv_rows, by_task = [], {}
    for task in dict.fromkeys(draw.task for draw in draws):
        per_subset, task_hits = [], []
        n_labelled = 0
        for draw in (d for d in draws if d.task == task):
            keep = np.array([text in row_of for text in draw.texts], dtype=bool)
            if not keep.all():
                notes.append(f"{task}: {int((~keep).sum())} drawn texts have no embedding (empty) and were left out")
            short = {label: count for label, count in draw.per_class.items() if count < draw.labels_per_class}
            if short:
                notes.append(f"{task}: fewer training examples than asked in class(es) "
                             + ", ".join(f"'{label}' ({count})" for label, count in short.items()) + ": all used")
            rows = np.array([row_of[text] for text, kept in zip(draw.texts, keep, strict=True) if kept])
            vectors = np.asarray(extraction.pooled)[np.ix_(positions, rows)]  # (layers, n, dim)
            hits, folds = out_of_fold_hits(vectors, draw.labels[keep], seed=seed,
                                           estimator=(estimators or {}).get(task))
            per_subset.append(fold_accuracy(hits, folds))
            task_hits.append(hits)
            n_labelled += int(keep.sum())
        accuracy = np.mean(per_subset, axis=0) * 100
        cv_rows += [{"task": task, "layer": layer, "cv_accuracy": value} for layer, value in zip(layers, accuracy,
                                                                                               strict=True)]
        by_task[task] = (accuracy, np.concatenate(task_hits, axis=1), n_labelled)
    rows = [_comparison(task, accuracy, {task: hits}, test[task], layers, n, seed, confidence)
            for task, (accuracy, hits, n) in by_task.items()]
    mean_cv = np.mean([accuracy for accuracy, _, _ in by_task.values()], axis=0)
    rows.append(_comparison(AVERAGE, mean_cv, {task: hits for task, (_, hits, _) in by_task.items()},
                            test[list(by_task)].mean(axis=1), layers, sum(n for _, _, n in by_task.values()), seed,
                            confidence))
    return pd.DataFrame(rows), pd.DataFrame(cv_rows), notes


def _comparison(task: str, cv_accuracy: np.ndarray, hits: Mapping[str, np.ndarray], test: pd.Series, layers: list[int],
                n_labelled: int, seed: int, confidence: float) -> dict[str, Any]:
    from layerscope.evaluate.few_labels import choose_layer, gain_over_last

    preference = sorted(range(len(layers)), key=lambda i: (layers[i] < 0, i))  # ties: a layer before a candidate
    cv_best = choose_layer(np.asarray(cv_accuracy)[preference], [layers[i] for i in preference])
    gain, low, high = gain_over_last(hits, layers.index(cv_best), confidence=confidence, seed=seed)
    chosen = cv_best if low > 0 else layers[-1]
    best = int(test.idxmax())
    score, best_score, last_score = float(test.loc[chosen]), float(test.loc[best]), float(test.loc[layers[-1]])
    return {"task": task, "cv_best_layer": cv_best, "cv_accuracy": float(cv_accuracy[layers.index(cv_best)]),
            "cv_gain": gain, "cv_gain_low": low, "cv_gain_high": high, "chosen_layer": chosen,
            "score": score, "best_layer": best, "best_score": best_score, "last_score": last_score,
            "regret": best_score - score, "vs_last": score - last_score,
            "cv_best_score": float(test.loc[cv_best]), "cv_best_regret": best_score - float(test.loc[cv_best]),
            "n_labelled": n_labelled}
