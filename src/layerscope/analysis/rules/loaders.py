"""Models for the selection protocol: from the authors' stored results and from layerscope's run folders."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from layerscope.analysis.rules.model_data import ModelData, model_family
from layerscope.errors import LayerscopeError, unknown

__all__ = ["authors_coverage", "authors_models", "run_models"]

logger = logging.getLogger(__name__)


def authors_coverage(authors: Any | None = None, *, revision: str = "main", min_layer_fraction: float = 0.5) -> pd.DataFrame:
    """Which models of the authors' results have a score grid the selection protocol can use.

    A model qualifies when its complete score grid (:func:`layerscope.analysis.tables.score_grid`,
    coverage ``"layers"``: layers lacking a task are left out) holds every task of the fixture,
    includes the model's last layer L, and keeps at least ``min_layer_fraction`` of layers 0..L.

    Parameters
    ----------
    authors : AuthorsResults or path, optional
        Loaded results, or a directory for :func:`layerscope.analysis.load_authors_results`
        (default ``$LAYERSCOPE_AUTHORS_RESULTS``).
    revision : str, default "main"
        Checkpoint revision.
    min_layer_fraction : float, default 0.5
        Least share of layers 0..L with every task.

    Returns
    -------
    pandas.DataFrame
        One row per model with scores at ``revision``: ``model, last_layer, n_layers_scored,
        n_layers_complete, n_tasks, fully_complete`` (every layer 0..L has every task), ``usable,
        reason``.
    """
    from layerscope.analysis.authors import AuthorsResults, load_authors_results

    if not isinstance(authors, AuthorsResults):
        authors = load_authors_results(authors)
    all_tasks = set(authors.task_to_dataset) | set(authors.scores["task"].astype(str))
    rows: list[dict[str, object]] = []
    for name, rev in authors.models():
        if rev != revision:
            continue
        _, scores = authors.model(name, revision)
        last = int(authors.last_layers.get(name, scores["layer"].max()))
        complete = scores.groupby("layer")["task"].nunique()
        complete_layers = complete[complete == len(all_tasks)].index
        row: dict[str, object] = {
            "model": name,
            "last_layer": last,
            "n_layers_scored": int(scores["layer"].nunique()),
            "n_layers_complete": len(complete_layers),
            "n_tasks": int(scores["task"].nunique()),
            "fully_complete": len(complete_layers) == last + 1 and len(scores) == (last + 1) * len(all_tasks),
        }
        if len(complete_layers) == 0:
            row["usable"], row["reason"] = False, f"no layer has all {len(all_tasks)} tasks"
        elif int(complete_layers.max()) != last:
            row["usable"] = False
            row["reason"] = f"complete layers stop at {int(complete_layers.max())} of {last}"
        elif len(complete_layers) / (last + 1) < min_layer_fraction:
            row["usable"], row["reason"] = False, f"{len(complete_layers)} of {last + 1} layers complete"
        else:
            row["usable"], row["reason"] = True, f"{len(complete_layers)} of {last + 1} layers complete"
        rows.append(row)
    return pd.DataFrame.from_records(rows)


def authors_models(
    authors: Any | None = None,
    *,
    revision: str = "main",
    models: Iterable[str] | None = None,
    min_layer_fraction: float = 0.5,
    families: Mapping[str, str] | None = None,
) -> list[ModelData]:
    """The models of the authors' results that the selection protocol can use.

    See :func:`authors_coverage` for the rule. At revision ``main`` these are pythia-14m, -70m,
    -160m and -410m (every layer complete), mamba-370m (27 of 49 layers complete) and
    llm2vec-mntp-unsup-simcse-8b (28 of 33); the others stop short of the last layer or hold a
    few tasks only. Which models were left out, and why, is logged at INFO level.

    Parameters
    ----------
    authors, revision, min_layer_fraction
        As in :func:`authors_coverage`.
    models : iterable of str, optional
        Only these models (each must qualify).
    families : Mapping of str to str, optional
        Model -> family overrides.

    Returns
    -------
    list of ModelData
        In the fixture's model order (sorted names).
    """
    from layerscope.analysis.authors import AuthorsResults, load_authors_results

    if not isinstance(authors, AuthorsResults):
        authors = load_authors_results(authors)
    coverage = authors_coverage(authors, revision=revision, min_layer_fraction=min_layer_fraction)
    if coverage.empty:
        raise LayerscopeError(f"the authors' results hold no task scores at revision {revision}")
    reasons = dict(zip(coverage["model"], coverage["reason"], strict=True))
    usable = coverage.loc[coverage["usable"], "model"].tolist()
    names = usable
    if models is not None:
        names = list(models)
        for name in names:
            if name not in reasons:
                raise unknown(f"model at revision {revision}", name, reasons)
            if name not in usable:
                raise LayerscopeError(f"authors' results for {name}: incomplete score grid ({reasons[name]})")
    for name, reason in reasons.items():
        logger.info("authors' results: %s %s (%s)", name, "used" if name in usable else "left out", reason)
    found: list[ModelData] = []
    for name in names:
        metrics, scores = authors.model(name, revision)
        found.append(
            ModelData.from_frames(
                name,
                metrics,
                scores,
                task_to_dataset=authors.task_to_dataset,
                family=(families or {}).get(name),
                last_layer=authors.last_layers.get(name),
                source=f"authors' results ({revision})",
            )
        )
    return found


def _run_model_name(model_id: str, revision: str | None) -> str:
    parts = [part for part in re.split(r"[/\\]", model_id.rstrip("/\\")) if part]
    base = parts[-1] if parts else model_id
    if re.fullmatch(r"step\d+", base) and len(parts) >= 3 and parts[-2] == "checkpoints":
        base = f"{parts[-3]}-{base}"
    elif revision and revision not in ("main", "None"):
        base = f"{base}@{revision}"
    return base


def run_models(
    path: str | os.PathLike[str],
    *,
    run_ids: Iterable[str] | None = None,
    names: Mapping[str, str] | None = None,
    families: Mapping[str, str] | None = None,
    coverage: str = "layers",
) -> list[ModelData]:
    """Models from a layerscope run folder (``results.duckdb``): one per finished run with scores.

    Parameters
    ----------
    path : str or os.PathLike
        A run folder or the database file itself.
    run_ids : iterable of str, optional
        Only these runs (default: every finished run that has task scores).
    names : Mapping of str to str, optional
        Run id -> model name (default: the model id's last component, ``<folder>-step<N>`` for a
        ``train-tiny`` checkpoint, ``@<revision>`` for other revisions than main; repeated names
        get the run id appended).
    families : Mapping of str to str, optional
        Model name -> family overrides (default :func:`model_family` of the model id).
    coverage : {"layers", "tasks"}, default "layers"
        Passed to :func:`layerscope.analysis.tables.score_grid`.

    Returns
    -------
    list of ModelData
        In the store's run order.
    """
    from layerscope.store import ResultsStore

    location = Path(path)
    if not location.exists():
        raise LayerscopeError(f"no run folder or results database at {location}")
    found: list[ModelData] = []
    seen: set[str] = set()
    with ResultsStore(location, read_only=True) as store:
        runs = store.runs(status="finished")
        wanted = None if run_ids is None else [str(run_id) for run_id in run_ids]
        if wanted is not None:
            for run_id in wanted:
                if run_id not in set(runs["run_id"]):
                    raise unknown("finished run", run_id, runs["run_id"].tolist())
            runs = runs[runs["run_id"].isin(wanted)]
        for row in runs.itertuples(index=False):
            scores = store.scores(row.run_id)
            if scores.empty:
                logger.info("run %s in %s has no task scores: left out", row.run_id, location)
                continue
            metrics = store.metrics(row.run_id)
            config = store.run_config(row.run_id)
            model_id = str(row.model_id or config.get("model") or row.run_id)
            name = (names or {}).get(row.run_id) or _run_model_name(model_id, row.revision)
            if name in seen:
                name = f"{name}#{row.run_id[:8]}"
            seen.add(name)
            mapping = config.get("task_to_dataset")
            family = (families or {}).get(name) or model_family(model_id)
            found.append(
                ModelData.from_frames(
                    name,
                    metrics.drop(columns="run_id") if not metrics.empty else None,
                    scores.drop(columns="run_id"),
                    task_to_dataset=mapping if isinstance(mapping, Mapping) else None,
                    family=family,
                    coverage=coverage,
                    source=f"{location} run {row.run_id}",
                )
            )
    return found
