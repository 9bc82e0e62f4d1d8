"""Loader for the paper authors' published per-layer results (CSV form).

The authors of *Layer by Layer* published per-layer MTEB scores and metric values
(OFSkean/information_flow). Converted to three CSV files, they are the external reference our
analysis must reproduce (SPEC section 6; ``../shared/fixtures/authors_results/README.md``):

``authors_mteb_scores.csv``
    ``model, revision, layer, task, task_type, main_score``
``authors_layer_metrics.csv``
    ``model, revision, dataset, split, metric, normalization, layer, value``
``task_to_metric_dataset.csv``
    ``task, task_type, metric_dataset``

:func:`load_authors_results` turns them into layerscope's own data contracts (metric names
``prompt_entropy`` and ``dataset_entropy`` for the authors' ``entropy_sentence`` and
``entropy_dataset``; ``depth_pct`` from each model's true depth), so the same analysis functions
run on them as on layerscope's runs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from layerscope.analysis.selection import METRIC_ALIASES, selection_table
from layerscope.errors import LayerscopeError, unknown

__all__ = [
    "AUTHORS_RESULTS_ENV",
    "AuthorsResults",
    "KNOWN_LAST_LAYERS",
    "authors_results_dir",
    "load_authors_results",
]

#: Environment variable naming a directory with the three CSV files.
AUTHORS_RESULTS_ENV = "LAYERSCOPE_AUTHORS_RESULTS"

SCORES_FILE = "authors_mteb_scores.csv"
METRICS_FILE = "authors_layer_metrics.csv"
TASK_MAP_FILE = "task_to_metric_dataset.csv"

#: Number of blocks L of the models in the authors' results. Their tables do not always reach the
#: last layer (some runs stopped early), so depth cannot be read from the largest layer seen.
KNOWN_LAST_LAYERS: dict[str, int] = {
    "pythia-14m": 6,
    "pythia-70m": 6,
    "pythia-160m": 12,
    "pythia-410m": 24,
    "pythia-1b": 16,
    "pythia-1.4b": 24,
    "pythia-2.8b": 32,
    "mamba-130m": 24,
    "mamba-370m": 48,
    "mamba-790m": 48,
    "mamba-1.4b": 48,
    "mamba-2.8b": 64,
    "bert-base": 12,
    "bert-large": 24,
}
_LLM2VEC_8B = re.compile(r"^llm2vec-.*-8b$")  # LLM2Vec on Llama-3-8B: 32 blocks


def authors_results_dir() -> Path | None:
    """The directory named by ``$LAYERSCOPE_AUTHORS_RESULTS`` if it holds the CSV files, else None."""
    value = os.environ.get(AUTHORS_RESULTS_ENV)
    if not value:
        return None
    directory = Path(value).expanduser()
    return directory if (directory / SCORES_FILE).is_file() else None


def _last_layer(model: str, largest_seen: int, overrides: Mapping[str, int]) -> int:
    if model in overrides:
        return int(overrides[model])
    if model in KNOWN_LAST_LAYERS:
        return KNOWN_LAST_LAYERS[model]
    if _LLM2VEC_8B.match(model):
        return 32
    return largest_seen


def _read_csv(path: Path, columns: Sequence[str]) -> pd.DataFrame:
    if not path.is_file():
        raise LayerscopeError(f"authors' results: missing file {path}")
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as error:
        raise LayerscopeError(f"cannot parse {path}: {error}") from error
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise LayerscopeError(f"{path} lacks column(s) {', '.join(missing)}")
    return frame


@dataclass(frozen=True)
class AuthorsResults:
    """The authors' results in layerscope's data contracts.

    Attributes
    ----------
    metrics : pandas.DataFrame
        ``model, revision, dataset, split, metric, normalization, layer, depth_pct, value, n_used,
        n_skipped`` (one split per metric and dataset, see :func:`load_authors_results`).
    scores : pandas.DataFrame
        ``model, revision, layer, depth_pct, task, task_type, main_score, scores``.
    task_to_dataset : dict of str to str
        MTEB task -> the metric ``dataset`` computed on its texts.
    last_layers : dict of str to int
        Model -> its last layer L.
    """

    metrics: pd.DataFrame
    scores: pd.DataFrame
    task_to_dataset: dict[str, str]
    last_layers: dict[str, int]

    def models(self, *, with_scores: bool = True) -> list[tuple[str, str]]:
        """(model, revision) pairs, sorted; by default those with task scores."""
        frame = self.scores if with_scores else pd.concat([self.scores, self.metrics])
        pairs = frame[["model", "revision"]].drop_duplicates().itertuples(index=False)
        return sorted((str(model), str(revision)) for model, revision in pairs)

    def model(self, model: str, revision: str = "main") -> tuple[pd.DataFrame, pd.DataFrame]:
        """The (metrics, scores) of one model and revision (metrics may be empty)."""
        known = {name for name, _ in self.models(with_scores=False)}
        if model not in known:
            raise unknown("model", model, known)
        metrics = self.metrics[(self.metrics["model"] == model) & (self.metrics["revision"] == revision)]
        scores = self.scores[(self.scores["model"] == model) & (self.scores["revision"] == revision)]
        if metrics.empty and scores.empty:
            revisions = {rev for name, rev in self.models(with_scores=False) if name == model}
            raise unknown(f"revision of {model}", revision, revisions)
        return metrics.reset_index(drop=True), scores.reset_index(drop=True)

    def selection_table(self, model: str, revision: str = "main", **options: Any) -> pd.DataFrame:
        """Table 2 for one model (see :func:`layerscope.analysis.selection_table`).

        The task -> dataset mapping and the model's last layer are filled in; other options pass
        through.
        """
        metrics, scores = self.model(model, revision)
        if scores.empty:
            raise LayerscopeError(f"the authors' results have no task scores for {model} at {revision}")
        options.setdefault("task_to_dataset", self.task_to_dataset)
        options.setdefault("last_layer", self.last_layers.get(model))
        return selection_table(metrics if not metrics.empty else None, scores, **options)


def load_authors_results(
    path: str | os.PathLike[str] | None = None,
    *,
    split_preference: Sequence[str] = ("train", "test"),
    rename_metrics: bool = True,
    last_layers: Mapping[str, int] | None = None,
) -> AuthorsResults:
    """Read the authors' per-layer results (CSV files) into layerscope's data contracts.

    Parameters
    ----------
    path : str or os.PathLike, optional
        Directory with ``authors_mteb_scores.csv``, ``authors_layer_metrics.csv`` and
        ``task_to_metric_dataset.csv``; default ``$LAYERSCOPE_AUTHORS_RESULTS``.
    split_preference : sequence of str, default ("train", "test")
        For each (model, revision, dataset, metric, normalization) the first split present is
        kept: the README's rule ("the task's train split metrics where they exist, else test").
    rename_metrics : bool, default True
        Use layerscope's metric names (``prompt_entropy``, ``dataset_entropy``).
    last_layers : Mapping of str to int, optional
        Model -> last layer L overrides (defaults: :data:`KNOWN_LAST_LAYERS`, 32 for LLM2Vec-8B,
        else the largest layer seen).

    Returns
    -------
    AuthorsResults
    """
    if path is None:
        found = authors_results_dir()
        if found is None:
            raise LayerscopeError(
                f"no authors' results directory: pass a path or set {AUTHORS_RESULTS_ENV} to a folder "
                f"with {SCORES_FILE}, {METRICS_FILE} and {TASK_MAP_FILE}"
            )
        directory = found
    else:
        directory = Path(path).expanduser()
    scores = _read_csv(
        directory / SCORES_FILE, ("model", "revision", "layer", "task", "task_type", "main_score")
    )
    metrics = _read_csv(
        directory / METRICS_FILE,
        ("model", "revision", "dataset", "split", "metric", "normalization", "layer", "value"),
    )
    task_map = _read_csv(directory / TASK_MAP_FILE, ("task", "metric_dataset"))

    for frame in (scores, metrics):
        frame["model"] = frame["model"].astype(str)
        frame["revision"] = frame["revision"].astype(str)
        frame["layer"] = frame["layer"].astype(int)

    # one split per (model, revision, dataset, metric, normalization): the first preferred one present
    rank = {split: position for position, split in enumerate(split_preference)}
    metrics = metrics[metrics["split"].isin(list(rank))].copy()
    metrics["_rank"] = metrics["split"].map(rank)
    keys = ["model", "revision", "dataset", "metric", "normalization"]
    best_rank = metrics.groupby(keys)["_rank"].transform("min")
    metrics = metrics[metrics["_rank"] == best_rank].drop(columns="_rank")
    if rename_metrics:
        metrics["metric"] = metrics["metric"].replace(METRIC_ALIASES)

    largest = (
        pd.concat([scores[["model", "layer"]], metrics[["model", "layer"]]]).groupby("model")["layer"].max()
    )
    overrides = dict(last_layers or {})
    depth_of = {model: _last_layer(model, int(layer), overrides) for model, layer in largest.items()}
    for frame in (scores, metrics):
        frame["depth_pct"] = 100.0 * frame["layer"] / frame["model"].map(depth_of)
    metrics["n_used"] = pd.NA
    metrics["n_skipped"] = pd.NA
    scores["scores"] = None

    metrics = metrics[
        [
            "model",
            "revision",
            "dataset",
            "split",
            "metric",
            "normalization",
            "layer",
            "depth_pct",
            "value",
            "n_used",
            "n_skipped",
        ]
    ].sort_values(["model", "revision", "dataset", "metric", "normalization", "layer"], ignore_index=True)
    scores = scores[
        ["model", "revision", "layer", "depth_pct", "task", "task_type", "main_score", "scores"]
    ].sort_values(["model", "revision", "task", "layer"], ignore_index=True)
    return AuthorsResults(
        metrics=metrics,
        scores=scores,
        task_to_dataset=dict(
            zip(task_map["task"].astype(str), task_map["metric_dataset"].astype(str), strict=True)
        ),
        last_layers=depth_of,
    )
