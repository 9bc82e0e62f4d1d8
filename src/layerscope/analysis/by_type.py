"""Scores by task type beside the task average: the best layer differs by type.

Classification tends to favour earlier layers than the cosine-based tasks (clustering, STS, retrieval),
so a run's single task-averaged curve hides choices a reader needs. This module names the per-type
columns of :func:`~layerscope.analysis.per_layer_table` (``score_<type>``: the mean main score x 100
of the run's tasks of that MTEB type, over the same complete layer x task grid as ``avg_score``),
finds each type's best layer, and lays out the plain-text tables ``layerscope analyze`` prints
(:class:`TextTable`; the command line only renders them).

Types are MTEB's task metadata ``type`` (``Classification``, ``Clustering``, ``PairClassification``,
``Reranking``, ``Retrieval``, ``STS``...), read from the scores' ``task_type`` column.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from layerscope.analysis.summary import Summary

__all__ = [
    "BEST_PER_TYPE_RULE",
    "TYPE_COLUMN_PREFIX",
    "TYPE_LABELS",
    "TextTable",
    "best_layers_by_type",
    "best_layers_text",
    "scores_by_type_table",
    "selection_text_table",
    "type_column",
    "type_columns",
    "type_label",
    "type_legend",
    "without_type_columns",
]

#: Prefix of the per-type score columns of the per-layer table (``score_Classification``).
TYPE_COLUMN_PREFIX = "score_"

#: Short labels of MTEB's task types, for tables that must fit a terminal.
TYPE_LABELS: dict[str, str] = {
    "Classification": "clf",
    "MultilabelClassification": "mlc",
    "Clustering": "clu",
    "PairClassification": "pair",
    "Reranking": "rr",
    "Retrieval": "retr",
    "InstructionRetrieval": "iretr",
    "InstructionReranking": "irr",
    "STS": "sts",
    "Summarization": "summ",
    "BitextMining": "bitext",
}

#: Rule of Table 2 whose layer is each task type's own best layer.
BEST_PER_TYPE_RULE = "best layer per type (labels)"


def type_label(task_type: str) -> str:
    """Short label of a task type (``clf``, ``sts``); an unlisted type keeps its name, lower case, up to 8 letters."""
    return TYPE_LABELS.get(task_type, task_type.lower()[:8])


def type_column(task_type: str) -> str:
    """The per-layer table's column of ``task_type``."""
    return f"{TYPE_COLUMN_PREFIX}{task_type}"


def type_columns(frame: pd.DataFrame) -> dict[str, str]:
    """Per-type score columns of a per-layer table -> their task type, in the table's order."""
    return {str(column): str(column)[len(TYPE_COLUMN_PREFIX):] for column in frame.columns
            if str(column).startswith(TYPE_COLUMN_PREFIX)}


def without_type_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` without its per-type score columns (e.g. for a table of metrics)."""
    return frame.drop(columns=list(type_columns(frame)))


def best_layers_by_type(per_layer: pd.DataFrame | None) -> dict[str, int]:
    """Each task type's best layer (its highest mean score; ties: the shallower), from a per-layer table."""
    if per_layer is None:
        return {}
    best: dict[str, int] = {}
    for column, task_type in type_columns(per_layer).items():
        values = per_layer[column].astype(float)
        if values.notna().any():
            best[task_type] = int(per_layer.loc[values.idxmax(), "layer"])
    return best


def best_layers_text(best: Mapping[str, int], last_layer: int | None, *, short: bool = True) -> str:
    """``"clf 3 (25%), sts 10 (83%)"``: each type's best layer and its depth."""
    def depth(layer: int) -> str:
        return "" if not last_layer else f" ({100.0 * layer / last_layer:.0f}%)"

    return ", ".join(f"{type_label(task_type) if short else task_type} {layer}{depth(layer)}"
                     for task_type, layer in best.items())


def type_legend(types: Iterable[str], counts: Mapping[str, int] | None = None) -> str:
    """One line explaining the short labels, e.g. ``"clf = Classification (2 tasks), sts = STS (1 task)"``."""
    counts = dict(counts or {})

    def count(task_type: str) -> str:
        n = counts.get(task_type)
        return "" if n is None else f" ({n} task{'s' if n != 1 else ''})"

    return ", ".join(f"{type_label(task_type)} = {task_type}{count(task_type)}" for task_type in types)


@dataclass(frozen=True)
class TextTable:
    """A table as text cells, for a terminal (the command line renders it; nothing here prints).

    Attributes
    ----------
    title : str
        Shown above the table.
    columns : tuple of str
        Headers.
    rows : tuple of tuple of str
        Cells, one tuple per row.
    left : tuple of str
        Columns aligned left (the others right).
    highlighted : frozenset of int
        Row positions to emphasise.
    notes : tuple of str
        Lines shown under the table.
    """

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    left: tuple[str, ...] = ()
    highlighted: frozenset[int] = field(default_factory=frozenset)
    notes: tuple[str, ...] = ()


def _cell(value: object, decimals: int = 1) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{float(value):.{decimals}f}"


def scores_by_type_table(summary: Summary, marks: Mapping[int, str] | None = None) -> TextTable | None:
    """Per layer: the task average and each task type's mean score (x 100), each type's best layer starred.

    Parameters
    ----------
    summary : Summary
        A run's summary (:func:`~layerscope.analysis.summarize`).
    marks : Mapping of int to str, optional
        Layer -> a short label shown in a last column (e.g. the best and the label-free layers).

    Returns
    -------
    TextTable or None
        None when the run's tasks are of fewer than two types (the average then says it all).
    """
    frame = summary.per_layer
    columns = {} if frame is None else type_columns(frame)
    if frame is None or len(columns) < 2 or "avg_score" not in frame.columns:
        return None
    best = best_layers_by_type(frame)
    marks = dict(marks or {})
    rows, highlighted = [], set()
    for position, (_, row) in enumerate(frame.iterrows()):
        layer = int(row["layer"])
        cells = [str(layer), f"{row['depth_pct']:.0f}", _cell(row["avg_score"])]
        cells += [_cell(row[column]) + ("*" if best.get(task_type) == layer else "")
                  for column, task_type in columns.items()]
        rows.append((*cells, *((marks.get(layer, ""),) if marks else ())))
        if layer in marks:
            highlighted.add(position)
    headers = ("layer", "depth %", "avg", *(type_label(task_type) for task_type in columns.values()),
               *(("",) if marks else ()))
    counts = frame.attrs.get("task_type_counts", {})
    return TextTable(
        title="Task scores by type, x 100 (* = the type's best layer)",
        columns=headers, rows=tuple(rows), left=("",), highlighted=frozenset(highlighted),
        notes=(type_legend(columns.values()),  # two short lines rather than one too wide for a terminal
               "tasks per type: " + ", ".join(f"{type_label(task_type)} {counts[task_type]}"
                                              for task_type in columns.values() if task_type in counts)))


def selection_text_table(summary: Summary) -> TextTable | None:
    """Table 2 (:attr:`Summary.selection`) as text: each rule's layer, average and per-type scores.

    Per-type columns appear when the run's tasks are of two types or more, with a last line naming each
    type's own best layer (the ``best layer per type`` oracle row uses them).
    """
    frame = summary.selection
    if frame is None:
        return None
    fixed = {"rule", "kind", "layer", "depth_pct", "average", "gain_vs_last", "n_tasks", "n_fallback"}
    types = [str(column) for column in frame.columns if column not in fixed]
    if len(types) < 2:
        types = []
    rows = []
    for _, row in frame.iterrows():
        layer = ("by type" if row["rule"] == BEST_PER_TYPE_RULE else "recipe" if row["kind"] == "recipe"
                 else "varies" if pd.isna(row["layer"]) else str(int(row["layer"])))
        rows.append((str(row["rule"]), layer, _cell(row["depth_pct"], 0), _cell(row["average"]),
                     f"{row['gain_vs_last']:+.1f}", *(_cell(row[task_type]) for task_type in types)))
    notes: list[str] = []
    best = best_layers_by_type(summary.per_layer)
    if types and best:
        notes.append(f"best layer per type (labels): {best_layers_text(best, summary.last_layer)}")
    return TextTable(
        title="Layer choice per task (Table 2 of the paper): average task score x 100"
              + (", and per task type" if types else ""),
        columns=("rule", "layer", "depth %", "average", "vs last", *(type_label(task_type) for task_type in types)),
        rows=tuple(rows), left=("rule",), notes=tuple(notes))
