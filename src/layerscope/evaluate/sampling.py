"""Seeded samples of labelled rows and the dataset layouts MTEB's task types read.

Shared by the offline suite (:mod:`~layerscope.evaluate.offline`) and user task files
(:mod:`~layerscope.evaluate.task_files`): cutting long texts, stratified draws, train/test splits,
integer label codes, and the classification and (legacy, one set) clustering datasets.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from datasets import Dataset, DatasetDict

if TYPE_CHECKING:
    from mteb.abstasks import AbsTask

__all__ = [
    "DATA_SEED",
    "MAX_CHARS",
    "classification_dataset",
    "clip",
    "clustering_dataset",
    "label_codes",
    "split_pools",
    "stratified",
    "stratified_split",
    "subset_splits",
    "task_subsets",
    "test_count",
]

#: Long documents are cut to about this many characters (at a word boundary) to bound encoding cost.
MAX_CHARS = 400
#: Seed of the fixed samples that define the offline tasks (independent of the evaluation seed).
DATA_SEED = 20250201


def clip(text: str, max_chars: int = MAX_CHARS) -> str:
    """Collapse whitespace and cut ``text`` to at most ``max_chars`` characters at a word boundary."""
    text = " ".join(text.split())
    if len(text) <= max_chars:
        return text
    cut = text.rfind(" ", 0, max_chars + 1)
    return text[: cut if cut > max_chars // 2 else max_chars]


def stratified(frame: pd.DataFrame, per_label: int, rng: np.random.Generator) -> pd.DataFrame:
    """``per_label`` rows of every label (all rows of smaller labels), in a seeded order."""
    parts = []
    for _, group in frame.groupby("label", sort=True):
        take = rng.permutation(len(group))[: min(per_label, len(group))]
        parts.append(group.iloc[np.sort(take)])
    return pd.concat(parts).reset_index(drop=True)


def split_pools(frame: pd.DataFrame, train_per_label: int, test_per_label: int,
                rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A stratified draw of ``train_per_label + test_per_label`` rows per label, cut into train and test."""
    chosen = stratified(frame, train_per_label + test_per_label, rng)
    order = chosen.groupby("label").cumcount()
    return chosen[order < train_per_label].reset_index(drop=True), chosen[order >= train_per_label].reset_index(drop=True)


def test_count(n_rows: int, test_fraction: float) -> int:
    """Rows of a class of ``n_rows`` that :func:`stratified_split` holds out (at least 1, at most n - 1)."""
    return int(min(max(np.floor(test_fraction * n_rows + 0.5), 1), max(n_rows - 1, 0)))


def stratified_split(labels: Sequence[Any], test_fraction: float, seed: int) -> np.ndarray:
    """A seeded stratified train/test split: which rows are test.

    Each class holds out :func:`test_count` of its rows, drawn with ``numpy.random.default_rng(seed)``
    (classes in sorted order), so every class is in both parts when it has two rows or more.

    Returns
    -------
    numpy.ndarray
        Boolean mask, True for test rows, in the order of ``labels``.
    """
    labels = pd.Series(list(labels))
    rng = np.random.default_rng(seed)
    test = np.zeros(len(labels), dtype=bool)
    for _, index in sorted(labels.groupby(labels).indices.items()):
        held = rng.permutation(len(index))[: test_count(len(index), test_fraction)]
        test[index[held]] = True
    return test


def label_codes(labels: Sequence[Any]) -> tuple[list[int], list[Any]]:
    """Integer label codes (of the sorted names) and the names; MTEB's binary AP needs integer labels."""
    labels = pd.Series(list(labels))
    names = sorted(labels.unique())
    index = {name: i for i, name in enumerate(names)}
    return [index[label] for label in labels], names


def classification_dataset(train: pd.DataFrame, test: pd.DataFrame) -> tuple[DatasetDict, list[Any]]:
    """MTEB's classification layout (``text``, integer ``label``; train and test) of two labelled frames."""
    labels, names = label_codes(pd.concat([train["label"], test["label"]]))
    return (
        DatasetDict(
            {
                "train": Dataset.from_dict({"text": train["text"].tolist(), "label": labels[: len(train)]}),
                "test": Dataset.from_dict({"text": test["text"].tolist(), "label": labels[len(train) :]}),
            }
        ),
        names,
    )


def clustering_dataset(texts: list[str], labels: Sequence[Any]) -> DatasetDict:
    """MTEB's legacy (v1) clustering layout: one clustering set holding every text, on the test split."""
    codes, _ = label_codes(labels)
    return DatasetDict({"test": Dataset.from_dict({"sentences": [texts], "labels": [codes]})})


def task_subsets(task: AbsTask) -> list[str]:
    """The subsets MTEB evaluates for a loaded task, in its order (all of the data's keys when unset)."""
    return list(task.hf_subsets) if task.hf_subsets is not None else list(task.dataset)


def subset_splits(task: AbsTask, subset: str) -> Any:
    """What holds a subset's splits, as MTEB reads it (``dataset[split]`` for a flat ``default`` layout)."""
    return task.dataset if subset not in task.dataset and subset == "default" else task.dataset[subset]
