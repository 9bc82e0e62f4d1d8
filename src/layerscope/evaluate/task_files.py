"""Task files: a user's labelled table (.csv, .tsv, .jsonl, .parquet) as real MTEB task objects.

The kind of task follows from the columns (each default name below can be renamed with its column
option, e.g. ``--label-column category``; a default name also matches case-insensitively):

==============================================  =========================================================
columns                                          task (MTEB class, main score)
==============================================  =========================================================
``query`` + ``positive`` (+ ``negative``)        reranking (``AbsTaskRetrieval``, type Reranking, MAP@1000)
``sentence1`` + ``sentence2`` + ``score``        STS (``AbsTaskSTS``, Spearman of cosine similarity)
``sentence1`` + ``sentence2`` + ``label`` (0/1)  pair classification (``AbsTaskPairClassification``, max AP)
``text`` + ``label``                             classification (``AbsTaskClassification``: logistic
                                                 regression on ``samples_per_label`` = 8 per class, 10
                                                 experiments, accuracy); with ``clustering``, also a
                                                 clustering task on the same texts (legacy
                                                 ``AbsTaskClusteringLegacy``, V-measure)
==============================================  =========================================================

checked in that order (a file with a query column is a reranking file). The split: the rows a
``split_column`` marks ``train``/``test``, or else a seeded stratified split of each class
(``test_fraction``, ``split_seed``) for classification; the kinds without training use every row, or
the rows marked ``test`` when a split column is given. Reranking rows are grouped by query: a cell of
``positive``/``negative`` holds one text (or, in JSONL and parquet, a list); a query's candidates are
its positives and negatives, or every document of the file when it has no negative. Each task is
named after the file's stem (made unique) and its metadata says where it came from (path, sha256,
columns, split, rows removed). A bad file raises one :class:`~layerscope.errors.LayerscopeError`
line naming the file and the fix.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from datasets import Dataset, DatasetDict
from mteb.abstasks import AbsTask
from mteb.abstasks.classification import AbsTaskClassification
from mteb.abstasks.clustering_legacy import AbsTaskClusteringLegacy
from mteb.abstasks.pair_classification import AbsTaskPairClassification
from mteb.abstasks.retrieval import AbsTaskRetrieval
from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData
from mteb.abstasks.sts import AbsTaskSTS
from mteb.abstasks.task_metadata import TaskMetadata

from layerscope.config import TaskFileConfig
from layerscope.errors import LayerscopeError
from layerscope.evaluate.offline import LocalTask, task_metadata
from layerscope.evaluate.registry import TASK_FILE_SUFFIXES
from layerscope.evaluate.sampling import (
    classification_dataset,
    clustering_dataset,
    stratified_split,
    test_count,
)

__all__ = ["KINDS", "ROLES", "TaskTable", "read_task_file", "task_file"]

logger = logging.getLogger(__name__)

#: Column roles, each with its default column name (= the role) and its option ``<role>_column``.
ROLES = ("text", "label", "sentence1", "sentence2", "score", "query", "positive", "negative")

#: Kind -> (MTEB task type, required roles), in the order the kinds are recognised.
KINDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "reranking": ("Reranking", ("query", "positive")),
    "sts": ("STS", ("sentence1", "sentence2", "score")),
    "pair": ("PairClassification", ("sentence1", "sentence2", "label")),
    "classification": ("Classification", ("text", "label")),
}
_KIND_NAMES = {"reranking": "reranking", "sts": "STS", "pair": "pair classification",
               "classification": "classification", "clustering": "clustering"}
_TITLES = {"reranking": "Reranking", "sts": "STS", "pair": "Pair classification",
           "classification": "Classification", "clustering": "Clustering"}
_BINARY = {"0": 0, "1": 1, "false": 0, "true": 1, "no": 0, "yes": 1}
_KIND_HELP = ("text + label (classification), sentence1 + sentence2 + score (STS), sentence1 + sentence2 + "
              "0/1 label (pair classification) or query + positive [+ negative] (reranking)")


@dataclass
class TaskTable:
    """A task file read and checked: its kind, the columns used, and its clean rows.

    Attributes
    ----------
    path : Path
        The file.
    kind : str
        ``classification``, ``sts``, ``pair`` or ``reranking``.
    columns : dict of str to str
        Role -> the file's column.
    rows : pandas.DataFrame
        Clean rows, columns named by role, plus a boolean ``test`` column (the evaluation rows).
    split_column : str or None
        The file's train/test column, if one was given.
    notes : list of str
        What was done to the file (rows removed), for the task's description.
    split_note : str
        How the rows were split (or which were evaluated), for the task's description.
    sha256 : str
        Digest of the file's bytes.
    """

    path: Path
    kind: str
    columns: dict[str, str]
    rows: pd.DataFrame
    split_column: str | None = None
    notes: list[str] = field(default_factory=list)
    split_note: str = ""
    sha256: str = ""


# ------------------------------------------------------------------------------------------ errors


def _similarity(first: str, second: str) -> float:
    return difflib.SequenceMatcher(None, first.lower(), second.lower()).ratio()


def _nearest(name: str, columns: list[str], role: str = "") -> str:
    """`` (nearest: 'x')``: the column most like ``name`` (ties go to the one most like the role)."""
    if not columns:
        return ""
    best = max(columns, key=lambda column: (_similarity(name, column), _similarity(role, column)))
    return f" (nearest: '{best}')"


def _missing(path: Path, role: str, name: str, columns: list[str], kind: str) -> LayerscopeError:
    return LayerscopeError(
        f"{path}: no {role} column '{name}' for {_KIND_NAMES[kind]}; columns found: "
        f"{', '.join(columns) or 'none'}{_nearest(name, columns, role)}; name it with --{role}-column"
    )


# ------------------------------------------------------------------------------------------ columns


def _find(columns: list[str], role: str, explicit: str | None) -> str | None:
    """The file's column for ``role``: the explicit name if present, else the default name (any case)."""
    if explicit is not None:
        return explicit if explicit in columns else None
    if role in columns:
        return role
    matches = [column for column in columns if column.strip().lower() == role]
    return matches[0] if len(matches) == 1 else None


def detect(path: Path, columns: list[str], config: TaskFileConfig) -> tuple[str, dict[str, str]]:
    """The kind of a task file and the column of each role it uses (see the module's table).

    The kind follows from the roles whose column is in the file (an explicit column option counts
    only where the file has that column, so one set of options serves a list of files of several
    kinds); then every role the kind needs (and an explicit ``negative``) must be there.
    """
    explicit = {role: getattr(config, f"{role}_column") for role in ROLES}
    found = {role: _find(columns, role, explicit[role]) for role in ROLES}
    present = {role for role in ROLES if found[role] is not None}
    if present & {"query", "positive"}:
        kind = "reranking"
    elif present & {"sentence1", "sentence2"}:
        kind = "sts" if "score" in present else "pair" if "label" in present else ""
        if not kind:
            role = "score" if explicit["score"] or not explicit["label"] else "label"
            if explicit[role]:
                raise _missing(path, role, explicit[role], columns, "sts" if role == "score" else "pair")
            unused = [column for column in columns if column not in found.values()]
            raise LayerscopeError(
                f"{path}: a sentence1 + sentence2 file needs a score column (STS) or a 0/1 label column (pair "
                f"classification); columns found: {', '.join(columns)}{_nearest('score', unused)}; name it with "
                "--score-column or --label-column")
    elif present & {"text", "label"}:
        kind = "classification"
    else:
        named = [role for role in ROLES if explicit[role] is not None]
        if named:
            role = named[0]
            raise _missing(path, role, explicit[role], columns, next(k for k, (_, need) in KINDS.items() if role in need
                                                                     or role == "negative"))
        example = f", e.g. --text-column {columns[0]} --label-column {columns[1]}" if len(columns) > 1 else ""
        raise LayerscopeError(f"{path}: cannot tell the task from its columns ({', '.join(columns) or 'none'}); use "
                              f"{_KIND_HELP}, or name your columns with the column options{example}")
    roles = KINDS[kind][1] + (("negative",) if kind == "reranking" else ())
    for role in roles:
        if found[role] is None and (role in KINDS[kind][1] or explicit[role] is not None):
            raise _missing(path, role, explicit[role] or role, columns, kind)
    return kind, {role: found[role] for role in roles if found[role] is not None}  # type: ignore[misc]


# ------------------------------------------------------------------------------------------ values


def _blank(value: Any) -> bool:
    if isinstance(value, (list, tuple, np.ndarray)):
        return len(value) == 0
    if isinstance(value, str):
        return not value.strip()
    return bool(pd.isna(value))


def _text(value: Any) -> str:
    return "" if _blank(value) else str(value).strip()


def _texts(value: Any) -> list[str]:
    """One text, or the texts of a list cell (JSONL arrays, parquet lists), blanks dropped."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return [text for text in (_text(item) for item in value) if text]
    text = _text(value)
    return [text] if text else []


def _label(value: Any) -> str | None:
    if _blank(value):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def _binary(value: Any) -> int | None:
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        return int(value) if value in (0, 1) else None
    text = str(value).strip().lower()
    if text in _BINARY:
        return _BINARY[text]
    try:
        number = float(text)
    except ValueError:
        return None
    return int(number) if number in (0.0, 1.0) else None


# ------------------------------------------------------------------------------------------ reading


def _split_column(path: Path, table: pd.DataFrame, config: TaskFileConfig, kind: str) -> pd.Series | None:
    """Test-row mask from the split column (values train/test, any case), or None without one.

    A classification file must have the column when one is named; a file of a kind without training
    (in a list of files) may lack it, and then every row is evaluated.
    """
    if config.split_column is None:
        return None
    columns = [str(column) for column in table.columns]
    if config.split_column not in columns and kind != "classification":
        return None
    if config.split_column not in columns:
        raise LayerscopeError(f"{path}: no split column '{config.split_column}'; columns found: {', '.join(columns)}"
                              f"{_nearest(config.split_column, columns)}; name it with --split-column")
    values = table[config.split_column].map(_text).str.lower()
    bad = ~values.isin(("train", "test"))
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise LayerscopeError(f"{path}: split column '{config.split_column}' holds "
                              f"'{_text(table[config.split_column].iloc[row])}' in row {row + 1}; use train or test")
    return values == "test"


def read_task_file(path: str | Path, config: TaskFileConfig | None = None) -> TaskTable:
    """Read and check a task file: its kind, its columns, its clean rows and split.

    Parameters
    ----------
    path : str or Path
        A ``.csv``, ``.tsv``, ``.jsonl`` or ``.parquet`` file.
    config : TaskFileConfig, optional
        Column names, split and clustering options (default: ``TaskFileConfig()``).

    Returns
    -------
    TaskTable

    Raises
    ------
    LayerscopeError
        One line naming the file and the fix: unreadable or binary file, a JSONL line that is not JSON,
        a missing column, one class only, a class too small for MTEB's protocol, no rows left after
        removing empty texts, a score column that is not numeric, a pair label that is not 0/1.
    """
    from layerscope.data.files import read_table

    config = config or TaskFileConfig()
    path = Path(path).expanduser()
    table = read_table(path, TASK_FILE_SUFFIXES)
    table.columns = [str(column) for column in table.columns]
    if table.empty:
        raise LayerscopeError(f"{path}: no rows; a task file needs one row per example ({_KIND_HELP})")
    kind, columns = detect(path, list(table.columns), config)
    test = _split_column(path, table, config, kind)
    rows = pd.DataFrame({role: table[column] for role, column in columns.items()})
    rows["test"] = test if test is not None else True
    rows["row"] = np.arange(1, len(rows) + 1)  # the file's data row, for messages
    prepare = {"classification": _classification_rows, "sts": _sts_rows, "pair": _pair_rows,
               "reranking": _reranking_rows}[kind]
    task_table = TaskTable(path, kind, columns, rows, config.split_column if test is not None else None,
                           sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    task_table.rows = prepare(task_table, config)
    return task_table


def _drop_empty(table: TaskTable, text_roles: tuple[str, ...], other: tuple[str, ...]) -> pd.DataFrame:
    """Rows with every text (and every ``other`` value) present; what was removed goes to the notes."""
    rows = table.rows
    empty_text = np.zeros(len(rows), dtype=bool)
    for role in text_roles:
        rows = rows.assign(**{role: rows[role].map(_text)})
        empty_text |= (rows[role] == "").to_numpy()
    empty_other = np.zeros(len(rows), dtype=bool)
    for role in other:
        empty_other |= rows[role].map(_blank).to_numpy() & ~empty_text
    kept = rows[~(empty_text | empty_other)].reset_index(drop=True)
    removed = []
    if empty_text.any():
        removed.append(_rows(int(empty_text.sum()), "with an empty text"))
    if empty_other.any():
        removed.append(_rows(int(empty_other.sum()), f"with no {' or '.join(other)}"))
    if kept.empty:
        names = " or ".join(f"'{table.columns[role]}'" for role in (*text_roles, *other) if role in table.columns)
        raise LayerscopeError(f"{table.path}: no rows left after removing {' and '.join(removed)} of {len(rows)}; "
                              f"fill the {names} column(s)")
    if removed:
        table.notes.append("removed " + " and ".join(removed))
        logger.warning("%s: removed %s", table.path, " and ".join(removed))  # the CLI shows warnings
    return kept


def _rows(count: int, what: str) -> str:
    return f"{count} row{'s' if count != 1 else ''} {what}"


def _classes_needed(test_fraction: float, per_class: int) -> int:
    n = per_class + 1
    while n - test_count(n, test_fraction) < per_class:
        n += 1
    return n


def _classification_rows(table: TaskTable, config: TaskFileConfig) -> pd.DataFrame:
    rows = _drop_empty(table, ("text",), ("label",))
    rows["label"] = rows["label"].map(_label)
    label_column = table.columns["label"]
    counts = rows["label"].value_counts()
    if len(counts) < 2:
        raise LayerscopeError(f"{table.path}: the label column '{label_column}' holds one class only "
                              f"('{counts.index[0]}'); classification needs two or more: add rows of other classes")
    per_class = FileClassification.samples_per_label
    if table.split_column:
        if not rows["test"].any():
            raise LayerscopeError(f"{table.path}: no rows marked test in '{config.split_column}'; mark some rows test")
        train_counts = rows.loc[~rows["test"], "label"].value_counts().reindex(counts.index, fill_value=0)
        small = train_counts[train_counts < per_class].sort_values()
        if len(small):
            raise LayerscopeError(
                f"{table.path}: class '{small.index[0]}' has {int(small.iloc[0])} training rows; MTEB's "
                f"classification protocol draws {per_class} per class to train on: add rows of that class marked "
                f"train in '{config.split_column}'")
        table.split_note = (f"split by column '{config.split_column}': {int((~rows['test']).sum())} train, "
                            f"{int(rows['test'].sum())} test")
        return rows
    need = _classes_needed(config.test_fraction, per_class)
    small = counts[counts < need].sort_values()
    if len(small):
        count = int(small.iloc[0])
        raise LayerscopeError(
            f"{table.path}: class '{small.index[0]}' has {count} rows; MTEB's classification protocol draws "
            f"{per_class} per class to train on and --test-fraction {config.test_fraction:g} holds out "
            f"{test_count(count, config.test_fraction)} of them, so each class needs at least {need} rows: add rows, "
            "lower --test-fraction or give a --split-column")
    rows["test"] = stratified_split(rows["label"], config.test_fraction, config.split_seed)
    table.split_note = (f"seeded stratified split (test fraction {config.test_fraction:g}, seed {config.split_seed}): "
                        f"{int((~rows['test']).sum())} train, {int(rows['test'].sum())} test")
    return rows


def _evaluation_rows(table: TaskTable, rows: pd.DataFrame, config: TaskFileConfig) -> pd.DataFrame:
    """The rows a task without training evaluates: all, or those marked test by the split column."""
    if not table.split_column:
        table.split_note = "every row evaluated (no training)"
        return rows
    kept = rows[rows["test"]].reset_index(drop=True)
    if kept.empty:
        raise LayerscopeError(f"{table.path}: no rows marked test in '{config.split_column}'; mark some rows test")
    table.split_note = f"the {len(kept)} rows marked test in '{config.split_column}' evaluated"
    return kept


def _sts_rows(table: TaskTable, config: TaskFileConfig) -> pd.DataFrame:
    rows = _drop_empty(table, ("sentence1", "sentence2"), ("score",))
    scores = pd.to_numeric(rows["score"], errors="coerce")
    if scores.isna().any():
        row = int(np.flatnonzero(scores.isna().to_numpy())[0])
        raise LayerscopeError(f"{table.path}: score column '{table.columns['score']}' is not numeric (row "
                              f"{rows['row'].iloc[row]}: '{_text(rows['score'].iloc[row])}'); give each pair's "
                              "similarity as a number")
    rows = _evaluation_rows(table, rows.assign(score=scores.astype(float)), config)
    if rows["score"].nunique() < 2:
        raise LayerscopeError(f"{table.path}: every score in '{table.columns['score']}' is {rows['score'].iloc[0]:g}; "
                              "STS needs pairs of different similarity")
    return rows


def _pair_rows(table: TaskTable, config: TaskFileConfig) -> pd.DataFrame:
    rows = _drop_empty(table, ("sentence1", "sentence2"), ("label",))
    labels = rows["label"].map(_binary)
    if labels.isna().any():
        row = int(np.flatnonzero(labels.isna().to_numpy())[0])
        raise LayerscopeError(
            f"{table.path}: label column '{table.columns['label']}' is not 0/1 (row {rows['row'].iloc[row]}: "
            f"'{_text(rows['label'].iloc[row])}'); pair classification needs 1 (a matching pair) or 0 per row; for "
            "graded similarity name the column with --score-column (STS)")
    rows = _evaluation_rows(table, rows.assign(label=labels.astype(int)), config)
    if rows["label"].nunique() < 2:
        raise LayerscopeError(f"{table.path}: the label column '{table.columns['label']}' holds one class only "
                              f"({int(rows['label'].iloc[0])}); pair classification needs pairs labelled 1 and 0")
    return rows


def _reranking_rows(table: TaskTable, config: TaskFileConfig) -> pd.DataFrame:
    """One row per query (first-seen order): its positives and negatives, each without repeats."""
    rows = _drop_empty(table, ("query",), ())
    rows = _evaluation_rows(table, rows, config)
    negatives = rows["negative"] if "negative" in rows else pd.Series([[]] * len(rows), index=rows.index)
    queries: dict[str, dict[str, list[str]]] = {}
    for query, positive, negative in zip(rows["query"], rows["positive"], negatives, strict=True):
        entry = queries.setdefault(query, {"positive": [], "negative": []})
        entry["positive"] += _texts(positive)
        entry["negative"] += _texts(negative)
    grouped = pd.DataFrame({"query": list(queries),
                            "positive": [list(dict.fromkeys(e["positive"])) for e in queries.values()],
                            "negative": [list(dict.fromkeys(n for n in e["negative"] if n not in e["positive"]))
                                         for e in queries.values()]})
    unanswered = grouped["positive"].map(len) == 0
    if unanswered.all():
        raise LayerscopeError(f"{table.path}: no query has a positive in '{table.columns['positive']}'; give each "
                              "query at least one relevant text")
    if unanswered.any():
        table.notes.append(f"removed {int(unanswered.sum())} queries without a positive")
        logger.warning("%s: removed %d queries without a positive", table.path, int(unanswered.sum()))
        grouped = grouped[~unanswered].reset_index(drop=True)
    documents = {doc for docs in (*grouped["positive"], *grouped["negative"]) for doc in docs}
    for query, positives, negatives in grouped.itertuples(index=False):
        if not negatives and documents <= set(positives):
            raise LayerscopeError(
                f"{table.path}: query '{query[:40]}' has no candidate that is not relevant; reranking needs some: add a "
                "negative column (or more queries: a query without negatives is ranked against every document)")
    table.notes.append(f"{len(grouped)} queries, {len(documents)} documents")
    return grouped


# ------------------------------------------------------------------------------------------ tasks


def _pairs_dataset(rows: pd.DataFrame, role: str, column: str) -> DatasetDict:
    """MTEB's STS / pair classification layout: sentence1, sentence2 and the ``role`` values as ``column``."""
    return DatasetDict({"test": Dataset.from_dict({"sentence1": rows["sentence1"].tolist(),
                                                   "sentence2": rows["sentence2"].tolist(),
                                                   column: rows[role].tolist()})})


class FileTask(LocalTask):
    """Mixin of the tasks built from a task file: the checked table and metadata per instance."""

    table: TaskTable

    def __init__(self, table: TaskTable, metadata: TaskMetadata, seed: int | None = None) -> None:
        self.table = table
        self.metadata = metadata  # per instance: every file is its own task
        super().__init__(**({} if seed is None else {"seed": seed}))


class FileClassification(FileTask, AbsTaskClassification):
    """Classification from a text + label file (MTEB's logistic-regression protocol)."""

    def build(self) -> DatasetDict:
        rows = self.table.rows
        return classification_dataset(rows[~rows["test"]], rows[rows["test"]])[0]


class FileClustering(FileTask, AbsTaskClusteringLegacy):
    """Clustering of a text + label file's texts by label (one clustering set, V-measure)."""

    def build(self) -> DatasetDict:
        rows = _clustered_rows(self.table)
        return clustering_dataset(rows["text"].tolist(), rows["label"].tolist())


class FileSTS(FileTask, AbsTaskSTS):
    """STS from a sentence1 + sentence2 + score file (Spearman of cosine similarity)."""

    def __init__(self, table: TaskTable, metadata: TaskMetadata, seed: int | None = None) -> None:
        super().__init__(table, metadata, seed)
        self.min_score, self.max_score = float(table.rows["score"].min()), float(table.rows["score"].max())

    def build(self) -> DatasetDict:
        return _pairs_dataset(self.table.rows, "score", "score")


class FilePairClassification(FileTask, AbsTaskPairClassification):
    """Pair classification from a sentence1 + sentence2 + 0/1 label file (max average precision)."""

    def build(self) -> DatasetDict:
        return _pairs_dataset(self.table.rows, "label", "labels")


class FileReranking(FileTask, AbsTaskRetrieval):
    """Reranking from a query + positive (+ negative) file (MTEB v2: retrieval with ``top_ranked``, MAP)."""

    split_seed: int = 42

    def build(self) -> dict[str, dict[str, RetrievalSplitData]]:
        rows = self.table.rows
        documents = list(dict.fromkeys(doc for docs in (*rows["positive"], *rows["negative"]) for doc in docs))
        doc_id = {doc: f"d{i}" for i, doc in enumerate(documents)}
        rng = np.random.default_rng(self.split_seed)
        relevant, top_ranked = {}, {}
        for q, (positives, negatives) in enumerate(zip(rows["positive"], rows["negative"], strict=True)):
            candidates = [doc_id[doc] for doc in positives + negatives] if negatives else list(doc_id.values())
            top_ranked[f"q{q}"] = [candidates[i] for i in rng.permutation(len(candidates))]  # no order to exploit
            relevant[f"q{q}"] = {doc_id[doc]: 1 for doc in positives}
        split = RetrievalSplitData(
            queries=Dataset.from_list([{"id": f"q{q}", "text": query} for q, query in enumerate(rows["query"])]),
            corpus=Dataset.from_list([{"id": doc_id[doc], "text": doc} for doc in documents]),
            relevant_docs=relevant,
            top_ranked=top_ranked,
        )
        return {"default": {"test": split}}


_CLASSES: dict[str, type[FileTask]] = {"classification": FileClassification, "clustering": FileClustering,
                                       "sts": FileSTS, "pair": FilePairClassification, "reranking": FileReranking}


def _unique(name: str, taken: Collection[str]) -> str:
    if name not in taken:
        return name
    number = 2
    while f"{name}-{number}" in taken:
        number += 1
    return f"{name}-{number}"


def _clustered_rows(table: TaskTable) -> pd.DataFrame:
    """The rows a clustering task of a text + label file clusters: all, or those marked test."""
    rows = table.rows
    return rows[rows["test"]] if table.split_column else rows


def _metadata(table: TaskTable, kind: str, name: str) -> TaskMetadata:
    columns = ", ".join(f"{role}='{column}'" for role, column in table.columns.items())
    task_type = "Clustering" if kind == "clustering" else KINDS[kind][0]
    split_note = table.split_note
    if kind == "clustering":
        split_note = f"{len(_clustered_rows(table))} texts clustered" + (
            f" (the rows marked test in '{table.split_column}')" if table.split_column else "")
    description = (f"{_TITLES[kind]} from the task file {table.path.resolve()} (columns {columns}; "
                   f"{'; '.join([*table.notes, split_note])}; sha256 {table.sha256[:16]}).")
    return task_metadata(name=name, description=description, type=task_type, path=str(table.path.resolve()),
                         revision=f"sha256:{table.sha256[:16]}", license=None, annotations=None,
                         languages=("und-Zyyy",), sample_creation="found")


def task_file(path: str | Path, config: TaskFileConfig | Mapping[str, Any] | None = None, *, seed: int | None = None,
              taken: Collection[str] = (), **options: Any) -> list[AbsTask]:
    """The MTEB task(s) of one task file.

    Parameters
    ----------
    path : str or Path
        A ``.csv``, ``.tsv``, ``.jsonl`` or ``.parquet`` file (see the module's table of kinds).
    config : TaskFileConfig or mapping, optional
        Column names, split and clustering options.
    seed : int, optional
        The tasks' seed (default: MTEB's, 42).
    taken : collection of str
        Names in use: the tasks are named after the file's stem, made unique against these.
    **options
        Fields of :class:`~layerscope.config.TaskFileConfig` overriding ``config`` (e.g. ``text_column="body"``).

    Returns
    -------
    list of AbsTask
        One task; two for a text + label file with ``clustering`` (the classification, then
        ``<stem>-clustering``).
    """
    if not isinstance(config, TaskFileConfig):
        config = TaskFileConfig.from_dict(config or {})
    if options:
        config = config.replace(**options)
    table = read_task_file(path, config)
    kinds = [table.kind] + (["clustering"] if table.kind == "classification" and config.clustering else [])
    if "clustering" in kinds and _clustered_rows(table)["label"].nunique() < 2:
        raise LayerscopeError(f"{table.path}: the rows marked test in '{table.split_column}' hold one class only; "
                              "clustering needs two or more: mark rows of other classes test")
    names = set(taken)
    tasks: list[AbsTask] = []
    for kind in kinds:
        stem = table.path.stem if kind != "clustering" else f"{table.path.stem}-clustering"
        name = _unique(stem, names)
        names.add(name)
        task = _CLASSES[kind](table, _metadata(table, kind, name), seed=seed)
        if isinstance(task, FileReranking):
            task.split_seed = config.split_seed
        tasks.append(task)
    return tasks
