"""Reading runs back: one run of a results database with everything a report shows of it.

:func:`load_run` reads a run's row, configuration and per-layer tables from
``<directory>/results.duckdb`` into a :class:`RunData`; :func:`load_runs` reads the latest run of a
directory, or every finished run (a sweep's merged store). What a run *did* (how many texts each
metric saw, what was skipped) is read from its stored rows here, never from what was requested.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from layerscope.config import Config, config_from_dict
from layerscope.errors import LayerscopeError
from layerscope.store.db import ResultsStore

__all__ = ["RunData", "load_run", "load_runs"]


def _text(value: Any) -> str | None:
    """A stored value as text, or None when it is missing (None, NaN, empty)."""
    if value is None or isinstance(value, float) and value != value:  # NaN is not equal to itself
        return None
    text = str(value)
    return text if text and text not in ("nan", "NaT", "<NA>") else None


@dataclass
class RunData:
    """Everything the report shows of one run, read from a results database.

    Attributes
    ----------
    directory : pathlib.Path
        The run's output directory.
    run_id : str
        The run's id.
    info : dict
        Its row of the ``runs`` table (``model_id, revision, status, created_at, skipped, ...``).
    config : dict
        Its configuration.
    metrics, scores, prompt_values : pandas.DataFrame
        Its rows of those tables (possibly empty).
    experiments : pandas.DataFrame
        ``experiment_values`` of every run in the directory (experiments are often separate runs).
    runs : pandas.DataFrame
        The directory's ``runs`` table.
    recipes : pandas.DataFrame
        Its task scores under recipe sets (``recipe_scores``: ``recipe_set, source, recipe, task, task_type,
        main_score, scores``; empty for a run without recipes).
    """

    directory: Path
    run_id: str
    info: dict[str, Any]
    config: dict[str, Any]
    metrics: pd.DataFrame
    scores: pd.DataFrame
    prompt_values: pd.DataFrame
    experiments: pd.DataFrame = field(default_factory=pd.DataFrame)
    runs: pd.DataFrame = field(default_factory=pd.DataFrame)
    recipes: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def model(self) -> str:
        """Model id of the run (the runs table's), or ``"unknown model"``."""
        return _text(self.info.get("model_id")) or "unknown model"

    @property
    def revision(self) -> str | None:
        """Revision of the model, if recorded."""
        return _text(self.info.get("revision"))

    @property
    def dataset(self) -> str | None:
        """Text source of the run, if recorded."""
        return _text(self.info.get("data_source"))

    @property
    def typed_config(self) -> Config | None:
        """The run's configuration as a typed object, when it was stored as one."""
        try:
            return config_from_dict(self.config)
        except LayerscopeError:
            return None

    @property
    def skipped(self) -> dict[str, Any]:
        """What the run skipped (e.g. ``{"empty_texts": 2}``), as recorded when it finished."""
        value: Any = self.info.get("skipped")
        if isinstance(value, str):
            with contextlib.suppress(json.JSONDecodeError):
                value = json.loads(value)
        if isinstance(value, dict):
            return value
        return {} if _text(value) is None else {"skipped": value}

    def view_sizes(self) -> dict[str, tuple[int, int | None]]:
        """How many texts (and views each) every invariance metric of the run saw.

        Read from the stored rows (``n_used``, largest over layers, on the all-texts set where the run
        has one, else over its sets) and, for the views per text, from the configuration (2 for the
        two-view metrics; ``n_views`` for LiDAR, None when the configuration does not say).

        Returns
        -------
        dict of str to (int, int or None)
            Metric -> (texts, views per text), e.g. ``{"lidar": (128, 16), "dime": (512, 2)}``.
        """
        from layerscope.metrics.registry import find

        frame = self.metrics
        if frame.empty or "n_used" not in frame.columns:
            return {}
        if "dataset" in frame.columns and (frame["dataset"] == "all").any():
            frame = frame[frame["dataset"] == "all"]
        views = self.config.get("views") if isinstance(self.config.get("views"), dict) else {}
        options = self.config.get("options") if isinstance(self.config.get("options"), dict) else {}
        n_views = views.get("n_views", self.config.get("n_views", options.get("n_views")))
        sizes: dict[str, tuple[int, int | None]] = {}
        for metric, used in frame.dropna(subset=["n_used"]).groupby("metric")["n_used"].max().items():
            spec = find(str(metric))
            if spec is not None and spec.n_views > 0:
                sizes[str(metric)] = (int(used), 2 if spec.n_views == 2 else
                                      (int(n_views) if isinstance(n_views, int) else None))
        return sizes

    def text_counts(self) -> pd.DataFrame:
        """How many texts each metric was computed on, per text set, as the metric rows record it.

        Returns
        -------
        pandas.DataFrame
            ``dataset, metric, n_used, n_skipped, n_texts`` (``n_texts = n_used + n_skipped``: the
            set's texts), the largest count over layers. Empty when the rows carry no counts.
        """
        columns = ["dataset", "metric", "n_used", "n_skipped", "n_texts"]
        frame = self.metrics
        if frame.empty or "n_used" not in frame.columns or frame["n_used"].isna().all():
            return pd.DataFrame(columns=columns)
        frame = frame.assign(
            dataset=frame["dataset"].fillna("") if "dataset" in frame.columns else "",
            n_skipped=frame["n_skipped"].fillna(0) if "n_skipped" in frame.columns else 0,
        )
        counts = (frame.dropna(subset=["n_used"])
                  .groupby(["dataset", "metric"], sort=False)
                  .agg(n_used=("n_used", "max"), n_skipped=("n_skipped", "max"))
                  .reset_index())
        counts["n_texts"] = counts["n_used"] + counts["n_skipped"]
        return counts[columns].astype({"n_used": int, "n_skipped": int, "n_texts": int})


def load_run(directory: str | os.PathLike[str], run_id: str | None = None) -> RunData:
    """Read one run of ``<directory>/results.duckdb``.

    Parameters
    ----------
    directory : str or os.PathLike
        Output directory holding ``results.duckdb`` (or the database file itself).
    run_id : str, optional
        Run to read; default: the latest finished run, else the latest run of any status.

    Returns
    -------
    RunData

    Raises
    ------
    LayerscopeError
        No database, no run, or an unknown ``run_id``.
    """
    path = Path(directory)
    directory_path = path.parent if path.is_file() else path
    with ResultsStore(path, read_only=True) as store:
        runs = store.runs()
        if runs.empty:
            raise LayerscopeError(f"no runs in {store.path}: run `layerscope analyze --out {directory_path}` first")
        if run_id is None:
            run_id = store.latest_run_id() or store.latest_run_id(status=None)
        assert run_id is not None  # runs is not empty
        config = store.run_config(run_id)  # raises a one-line error for an unknown id
        info = runs[runs["run_id"] == run_id].iloc[0].to_dict()
        return RunData(
            directory=directory_path,
            run_id=run_id,
            info=info,
            config=config,
            metrics=store.metrics(run_id),
            scores=store.scores(run_id),
            prompt_values=store.prompt_values(run_id),
            experiments=store.experiment_values(),
            runs=runs,
            recipes=store.recipe_scores(run_id),
        )


def load_runs(directory: str | os.PathLike[str], *, all_runs: bool = False) -> list[RunData]:
    """The latest run of ``directory``, or with ``all_runs`` every finished one (else every run).

    Parameters
    ----------
    directory : str or os.PathLike
        Output directory holding ``results.duckdb``.
    all_runs : bool, default False
        Read every finished run (e.g. a sweep's merged store) instead of the latest one.
    """
    if not all_runs:
        return [load_run(directory)]
    with ResultsStore(Path(directory), read_only=True) as store:
        ids = store.runs(status="finished")["run_id"].tolist() or store.runs()["run_id"].tolist()
    return [load_run(directory, run_id) for run_id in ids]
