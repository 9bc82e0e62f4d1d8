"""A layer chosen from a few labels: K labelled examples per class, cross-validated at every layer.

For a classification task (a text + label file, or a built-in classification task), K examples of
each class are drawn from its training pool (seeded), and every layer's cached embeddings of those
examples are scored by stratified k-fold cross-validation of MTEB's own classifier for the task
(``task.evaluator_model``, a logistic regression with ``max_iter=100``), accuracy being MTEB's main
classification score. The layer with the best mean cross-validated accuracy (ties: the shallowest, the
smaller and faster model) is the choice only when it beats the last layer beyond the noise: the
paired bootstrap interval of its gain over the last layer on the held-out labelled examples
(:func:`gain_over_last`) lies above 0. Otherwise the last layer is kept: with a few dozen labels the
layers' cross-validated accuracies are often too close to rank, and the best of 30 noisy estimates is
mostly luck (measured in ``benchmarks/bench_few_labels.py``).
:func:`~layerscope.evaluate.select.select_layer_with_labels` reports both layers' test scores (MTEB's
evaluator) against the best and the last layer.

Draws: for the training pool of task ``T`` (subset ``S``), classes in sorted order, class ``c`` keeps the
first ``min(K, n_c)`` of ``rng.permutation(n_c)`` (its rows in pool order), with
``rng = numpy.random.default_rng([seed, zlib.crc32(f"{T}/{S}".encode())])``. Folds:
``StratifiedKFold(n_splits=min(5, smallest class drawn), shuffle=True, random_state=seed)``; the
classifier gets ``random_state=seed``. The same seed gives the same draws, folds and choice.
"""

from __future__ import annotations

import warnings
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from layerscope.errors import LayerscopeError
from layerscope.evaluate.sampling import subset_splits, task_subsets

if TYPE_CHECKING:
    from mteb.abstasks import AbsTask

__all__ = [
    "GUARD_RESAMPLES",
    "MAX_FOLDS",
    "LabelDraw",
    "choose_layer",
    "draw_labels",
    "draw_per_class",
    "fold_accuracy",
    "gain_over_last",
    "is_classification",
    "out_of_fold_hits",
]

#: Folds of the cross-validation (fewer when a class has fewer labelled examples).
MAX_FOLDS = 5

#: Paired bootstrap resamples of the labelled examples behind the guard against the last layer.
GUARD_RESAMPLES = 1000


def is_classification(task: AbsTask) -> bool:
    """Whether the few-label choice applies: a single-label MTEB classification task with a training pool."""
    from mteb.abstasks.classification import AbsTaskClassification
    from mteb.abstasks.multilabel_classification import AbsTaskMultilabelClassification
    from mteb.abstasks.regression import AbsTaskRegression

    # multilabel and regression tasks are MTEB subclasses of classification, without single labels
    return isinstance(task, AbsTaskClassification) and not isinstance(task, (AbsTaskMultilabelClassification,
                                                                            AbsTaskRegression))


def draw_per_class(labels: Sequence[Any], labels_per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``labels_per_class`` rows of every class (all rows of smaller classes), sorted.

    Classes are visited in sorted order; class ``c`` keeps the first ``min(K, n_c)`` entries of
    ``rng.permutation(n_c)`` over its rows in their given order.
    """
    values = np.asarray(list(labels))
    chosen = []
    for label in sorted(set(values.tolist())):
        rows = np.flatnonzero(values == label)
        chosen.append(rows[rng.permutation(len(rows))[:labels_per_class]])
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=int)


@dataclass
class LabelDraw:
    """The K-per-class draw of one training pool (a task's subset).

    Attributes
    ----------
    task, subset : str
        Where it comes from.
    texts : list of str
        The drawn texts, in pool order.
    labels : numpy.ndarray
        Their labels.
    rows : numpy.ndarray
        Their rows in the training pool.
    per_class : dict
        Class -> examples drawn (fewer than K where the pool has fewer).
    pool_size : int
        Rows of the training pool.
    labels_per_class : int
        K, as asked.
    """

    task: str
    subset: str
    texts: list[str]
    labels: np.ndarray
    rows: np.ndarray
    per_class: dict[str, int] = field(default_factory=dict)
    pool_size: int = 0
    labels_per_class: int = 0


def draw_labels(task: AbsTask, labels_per_class: int, seed: int) -> list[LabelDraw]:
    """K labelled examples per class from each training pool of a loaded classification task.

    Parameters
    ----------
    task : AbsTask
        A single-label classification task whose data is loaded.
    labels_per_class : int
        K.
    seed : int
        Seed of the draws (see the module's docstring).

    Returns
    -------
    list of LabelDraw
        One per subset the task evaluates.

    Raises
    ------
    LayerscopeError
        A class with fewer than 2 training examples (cross-validation needs 2 per class).
    """
    name = task.metadata.name
    draws = []
    for subset in task_subsets(task):
        pool = subset_splits(task, subset)[task.train_split]
        texts = list(pool[task.input_column_name])
        labels = np.asarray(list(pool[task.label_column_name]))
        rng = np.random.default_rng([int(seed), zlib.crc32(f"{name}/{subset}".encode())])
        rows = draw_per_class(labels, labels_per_class, rng)
        drawn = labels[rows]
        classes, counts = np.unique(drawn, return_counts=True)
        if counts.min() < 2:
            small = classes[int(np.argmin(counts))]
            raise LayerscopeError(f"task {name}: class '{small}' has {int(counts.min())} training example; the "
                                  "few-label choice cross-validates on 2 or more per class: add training rows")
        draws.append(LabelDraw(name, subset, [texts[i] for i in rows], drawn, rows,
                               {str(c): int(n) for c, n in zip(classes, counts, strict=True)}, len(texts),
                               int(labels_per_class)))
    return draws


def out_of_fold_hits(embeddings: np.ndarray, labels: Sequence[Any], *, seed: int, estimator: Any = None,
                     max_folds: int = MAX_FOLDS) -> tuple[np.ndarray, list[np.ndarray]]:
    """Whether each labelled example is classified right when its fold is held out, at every layer.

    Parameters
    ----------
    embeddings : numpy.ndarray
        ``(layers, n, dim)`` embeddings of the labelled examples.
    labels : sequence
        ``n`` labels (2 or more per class).
    seed : int
        Seed of the folds (shuffled) and of the classifier's ``random_state``.
    estimator : sklearn estimator, optional
        The classifier (cloned per fit); default MTEB's, ``LogisticRegression(max_iter=100)``.
    max_folds : int
        Folds, fewer when the smallest class has fewer examples.

    Returns
    -------
    hits : numpy.ndarray
        ``(layers, n)`` bool: example ``i`` predicted right by the classifier fitted on the other folds.
    folds : list of numpy.ndarray
        The rows of each held-out fold; the folds are the same at every layer.
    """
    from sklearn.base import clone
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from threadpoolctl import threadpool_limits

    labels = np.asarray(list(labels))
    _, counts = np.unique(labels, return_counts=True)
    if len(counts) < 2 or counts.min() < 2:
        raise LayerscopeError("cross-validation needs two or more classes with two or more examples each")
    folds = list(StratifiedKFold(n_splits=int(min(max_folds, counts.min())), shuffle=True,
                                 random_state=seed).split(np.zeros(len(labels)), labels))
    model = clone(estimator if estimator is not None else LogisticRegression(max_iter=100))
    if "random_state" in model.get_params():
        model.set_params(random_state=seed)
    hits = np.zeros((len(embeddings), len(labels)), dtype=bool)
    # small problems: one BLAS thread is faster, and the classifier warns on every layer that stops early
    with threadpool_limits(limits=1), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=ConvergenceWarning)
        for position, vectors in enumerate(np.asarray(embeddings)):
            for train, test in folds:
                hits[position, test] = clone(model).fit(vectors[train], labels[train]).predict(vectors[test]) == labels[test]
    return hits, [test for _, test in folds]


def fold_accuracy(hits: np.ndarray, folds: Sequence[np.ndarray]) -> np.ndarray:
    """``(layers,)`` mean over the folds of each fold's accuracy, from :func:`out_of_fold_hits`."""
    return np.mean([hits[:, test].mean(axis=1) for test in folds], axis=0)


def gain_over_last(hits: Mapping[str, np.ndarray], position: int, *, n_resamples: int = GUARD_RESAMPLES,
                   confidence: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """How much better layer ``position`` classifies the held-out labelled examples than the last layer.

    The gain is the mean over the tasks of the difference of out-of-fold hit rates (layer minus last
    layer, x 100); its interval comes from a paired bootstrap: each task's labelled examples resampled
    with replacement (``n_resamples`` times, draws of
    :func:`~layerscope.evaluate.uncertainty.resample_indices` with the key ``"<task>/few-labels"``),
    the same draw for both layers, re-centred on the gain as the score intervals are.

    Parameters
    ----------
    hits : mapping of str to numpy.ndarray
        Task -> ``(layers, n)`` out-of-fold hits (:func:`out_of_fold_hits`), the last layer last.
    position : int
        The layer's row in each array.
    n_resamples, confidence, seed
        The bootstrap.

    Returns
    -------
    (gain, low, high) : tuple of float
    """
    from layerscope.evaluate.intervals import _interval
    from layerscope.evaluate.resampling import resample_indices

    differences = {task: (rows[position].astype(float) - rows[-1].astype(float)) for task, rows in hits.items()}
    gain = 100 * float(np.mean([difference.mean() for difference in differences.values()]))
    resampled = np.mean([difference[resample_indices(f"{task}/few-labels", len(difference), n_resamples, seed)]
                         .mean(axis=1) for task, difference in differences.items()], axis=0) * 100
    low, high = _interval(resampled, np.asarray(gain), confidence)
    return gain, float(low), float(high)


def choose_layer(cv_scores: Sequence[float], layers: Sequence[int]) -> int:
    """The layer with the best cross-validated score; ties go to the shallowest (the cheaper model)."""
    scores = np.asarray(cv_scores, dtype=float)
    if not len(scores) or not np.isfinite(scores).any():
        raise LayerscopeError("no cross-validated score to choose a layer from")
    return int(np.asarray(layers)[int(np.nanargmax(scores))])
