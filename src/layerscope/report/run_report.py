"""The self-contained HTML report of one run (``layerscope report DIR``).

:func:`build_report` reads one run from ``<directory>/results.duckdb`` (:func:`~layerscope.store.load_run`),
summarises it with :func:`layerscope.analysis.summarize` (the same function ``analyze`` prints from),
writes its PNG plots to ``<directory>/plots/`` (:func:`write_plots`) and assembles
``<directory>/report.html`` from the sections of :mod:`layerscope.report.sections`: a summary
answering "which layer, and why", the per-layer table, the plots, the Table-2-style selection table,
the metric-score correlations with their uncertainty, a few example texts
(``examples.json``, :func:`write_examples`), the experiments stored in the directory, and what the
run did and was asked to do. Files are written atomically.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from layerscope.analysis.correlation import correlation_uncertainty
from layerscope.analysis.summary import Summary, summarize
from layerscope.errors import LayerscopeError
from layerscope.report import plots, sections
from layerscope.report.elements import escape, render_page
from layerscope.report.plots import LayerMarks
from layerscope.report.recipe_sections import recipe_section
from layerscope.store import atomic_write_json, atomic_write_text
from layerscope.store.runs import RunData, load_run

__all__ = [
    "EXAMPLES_FILENAME",
    "PLOTS_DIRNAME",
    "REPORT_FILENAME",
    "RunSummary",
    "build_report",
    "load_examples",
    "run_title",
    "summarize_run",
    "write_examples",
    "write_plots",
]

logger = logging.getLogger(__name__)

REPORT_FILENAME = "report.html"
EXAMPLES_FILENAME = "examples.json"
PLOTS_DIRNAME = "plots"

#: Deprecated name of :class:`layerscope.analysis.Summary`.
RunSummary = Summary


def run_title(run: RunData) -> str:
    """``"model @ revision · text source"`` (the revision only when it is not the default)."""
    parts = [run.model]
    if run.revision and run.revision not in ("main", "None"):
        parts[0] += f" @ {run.revision}"
    if run.dataset:
        parts.append(run.dataset)
    return " \u00b7 ".join(parts)


def _task_mapping(run: RunData) -> Mapping[str, str] | None:
    """Task -> the metric text set computed on its texts, as the run recorded it."""
    config = run.config
    mapping = config.get("task_to_dataset") if isinstance(config, Mapping) else None
    if mapping is None and config.get("kind") == "analysis":  # analyze: each task's metrics on its own texts
        mapping = {task: task for task in config.get("tasks", [])}
    return mapping if isinstance(mapping, Mapping) else None


def summarize_run(run: RunData, *, select_by: str | None = None, uncertainty: bool = True) -> Summary:
    """:func:`layerscope.analysis.summarize` of a stored run (its configured label-free metric by default).

    Parameters
    ----------
    run : RunData
        From :func:`~layerscope.store.load_run`.
    select_by : str, optional
        Rule of the headline label-free choice (``--select-by`` text; default: the run's configured one).
    uncertainty : bool, default True
        Add the permutation p-values and intervals over tasks of
        :func:`layerscope.analysis.correlation_uncertainty` to ``summary.correlations``.
    """
    present = set(run.metrics["metric"].astype(str)) if not run.metrics.empty else set()
    if select_by is not None:
        from layerscope.analysis.choice import parse_rule

        absent = [metric for metric in parse_rule(select_by).metrics_used() if metric not in present]
        if absent:
            raise LayerscopeError(f"cannot choose a layer by '{select_by}': the run has no such metric "
                                  f"(it has {', '.join(sorted(present)) or 'no metrics'})")
    mapping = _task_mapping(run)
    summary = summarize(
        run.metrics if not run.metrics.empty else None,
        run.scores if not run.scores.empty else None,
        select_by=select_by or run.config.get("select_by"),
        task_to_dataset=mapping,
        recipe_scores=run.recipes if not run.recipes.empty else None,
    )
    if uncertainty and summary.correlations is not None and not summary.correlations.empty:
        try:
            attrs = dict(summary.correlations.attrs)
            summary.correlations = correlation_uncertainty(summary.correlations, run.metrics, run.scores,
                                                           task_to_dataset=mapping)
            summary.correlations.attrs.update(attrs)
        except LayerscopeError as error:
            summary.notes.append(f"No p-values or intervals for the correlations: {error}")
    return summary


def write_plots(
    directory: str | os.PathLike[str],
    run_id: str | None = None,
    *,
    plots_dir: str | os.PathLike[str] | None = None,
    select_by: str | None = None,
    run: RunData | None = None,
    summary: Summary | None = None,
) -> dict[str, Path]:
    """Write the PNG plots of a run and return them by name.

    Parameters
    ----------
    directory : str or os.PathLike
        Output directory holding ``results.duckdb``.
    run_id : str, optional
        Run to plot (default: the latest finished run).
    plots_dir : str or os.PathLike, optional
        Where to write (default ``<directory>/plots``). Existing files of the same names are
        replaced.
    select_by : str, optional
        Metric of the label-free choice marked on the curves (see :func:`summarize_run`).
    run, summary : optional
        Already loaded data (saves reading the database again).

    Returns
    -------
    dict of str to pathlib.Path
        ``metric_curves``, ``task_scores``, ``correlations`` and ``histogram_<metric>`` for every
        per-prompt metric, each present only when the run has the data for it.
    """
    run = run or load_run(directory, run_id)
    summary = summary or summarize_run(run, select_by=select_by)
    target = Path(plots_dir) if plots_dir is not None else run.directory / PLOTS_DIRNAME
    title = run_title(run)
    markers: LayerMarks = {
        "best_layer": summary.best_layer,
        "chosen_layer": summary.chosen_layer,
        "chosen_label": sections.headline_label(run, summary),
        "last_layer": summary.last_layer,
    }
    written: dict[str, Path] = {}

    def attempt(name: str, draw: Callable[[], Path]) -> None:
        try:
            written[name] = draw()
        except LayerscopeError as error:
            summary.notes.append(f"Plot '{name}' not drawn: {error}")
            logger.warning("plot %s not drawn: %s", name, error)

    if not run.metrics.empty:
        attempt("metric_curves", lambda: plots.plot_metric_curves(
            run.metrics, target / "metric_curves.png", title=f"Metrics per layer: {title}", **markers))
    if not run.scores.empty:
        attempt("task_scores", lambda: plots.plot_task_scores(
            run.scores, target / "task_scores.png", title=f"Task scores per layer: {title}", **markers))
    if summary.correlations is not None and not summary.correlations.empty:
        correlations = summary.correlations
        attempt("correlations", lambda: plots.plot_correlations(
            correlations, target / "correlations.png", title=f"Metric vs. task score: {title}"))
    if not run.prompt_values.empty:
        for metric in sorted(run.prompt_values["metric"].astype(str).unique()):
            attempt(f"histogram_{metric}", lambda metric=metric: plots.plot_prompt_histogram(
                run.prompt_values, target / f"histogram_{metric}.png", metric=metric,
                last_layer=summary.last_layer, title=title))
    return written


def write_examples(
    directory: str | os.PathLike[str],
    texts: Sequence[str],
    *,
    indices: Sequence[int] | None = None,
    max_examples: int = 5,
) -> Path:
    """Store a few example texts next to the results, for the report.

    Parameters
    ----------
    directory : str or os.PathLike
        The run's output directory.
    texts : sequence of str
        The run's texts (only the first ``max_examples`` are kept, cut to 2,000 characters).
    indices : sequence of int, optional
        Their prompt indices in the run (default ``0, 1, ...``); with them the report shows each
        example's per-prompt entropy.
    max_examples : int, default 5
        How many to keep.

    Returns
    -------
    pathlib.Path
        ``<directory>/examples.json``, written atomically.
    """
    chosen_indices = list(indices) if indices is not None else list(range(len(texts)))
    records = [
        {"index": int(index), "text": str(text)[:2000]}
        for index, text in list(zip(chosen_indices, texts, strict=False))[:max_examples]
    ]
    return atomic_write_json(Path(directory) / EXAMPLES_FILENAME, records)


def load_examples(run: RunData, examples: Sequence[Any] | None = None) -> list[tuple[int | None, str]]:
    """Example texts as (prompt index or None, text).

    From ``examples`` (strings, or mappings with ``text`` and ``index``) when given, else the run
    directory's ``examples.json`` (:func:`write_examples`), else the configuration's ``examples``.
    """
    source: Any = examples
    if source is None:
        path = run.directory / EXAMPLES_FILENAME
        if path.is_file():
            try:
                source = json.loads(path.read_text("utf-8"))
            except (OSError, json.JSONDecodeError) as error:
                logger.warning("cannot read %s: %s", path, error)
    if source is None:
        source = run.config.get("examples")
    if isinstance(source, Mapping):
        source = source.get("examples", [])
    if not isinstance(source, (list, tuple)):
        return []
    found: list[tuple[int | None, str]] = []
    for item in source:
        if isinstance(item, Mapping):
            text = item.get("text")
            index = item.get("index", item.get("prompt_index"))
            found.append((int(index) if isinstance(index, (int, np.integer)) else None, "" if text is None else str(text)))
        else:
            found.append((None, str(item)))
    return found


def build_report(
    directory: str | os.PathLike[str],
    run_id: str | None = None,
    *,
    out: str | os.PathLike[str] | None = None,
    select_by: str | None = None,
    examples: Sequence[Any] | None = None,
    max_examples: int = 5,
    plots_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Build the self-contained HTML report of one run (``layerscope report DIR``).

    Parameters
    ----------
    directory : str or os.PathLike
        Output directory holding ``results.duckdb``.
    run_id : str, optional
        Run to report (default: the latest finished run, else the latest run).
    out : str or os.PathLike, optional
        HTML file to write (default ``<directory>/report.html``).
    select_by : str, optional
        Metric of the headline label-free choice (default: the config's ``select_by``, else the
        first of DiME, InfoNCE, dataset entropy, prompt entropy the run has).
    examples : sequence, optional
        Example texts (strings, or mappings with ``text`` and ``index``); default: the
        directory's ``examples.json`` (see :func:`write_examples`), else the config's ``examples``.
    max_examples : int, default 5
        How many example texts to show.
    plots_dir : str or os.PathLike, optional
        Where the PNG plots go (default ``<directory>/plots``).

    Returns
    -------
    pathlib.Path
        The written HTML file.

    Raises
    ------
    LayerscopeError
        No database in ``directory``, no run, or an unknown ``run_id``.
    """
    run = load_run(directory, run_id)
    summary = summarize_run(run, select_by=select_by)
    target_plots = Path(plots_dir) if plots_dir is not None else run.directory / PLOTS_DIRNAME
    images = write_plots(directory, run=run, summary=summary, plots_dir=target_plots)

    parts = [
        sections.summary_section(run, summary),
        sections.per_layer_section(run, summary),
        sections.plots_section(run, summary, images),
        sections.selection_section(run, summary),
        *([] if (recipes := recipe_section(run, summary)) is None else [recipes]),
        sections.correlation_section(run, summary, images),
        sections.examples_section(run, summary, load_examples(run, examples)[:max_examples],
                                  f"the analyze command writes them to {EXAMPLES_FILENAME}"),
    ]
    experiments = sections.experiments_section(run, target_plots)
    if experiments is not None:
        parts.append(experiments)
    parts.append(sections.config_section(run))
    subheading_parts = [f"revision {run.revision}" if run.revision else None, f"texts: {run.dataset}" if run.dataset else None]
    status = run.info.get("status")
    if status and status != "finished":
        subheading_parts.append(f"status: {status}")
    subheading_parts.append(f"run {run.run_id}")
    subheading = escape(" \u00b7 ".join(part for part in subheading_parts if part))
    page = render_page(f"layerscope report: {run_title(run)}", f"layerscope report: {run.model}", subheading, parts)
    target = Path(out) if out is not None else run.directory / REPORT_FILENAME
    atomic_write_text(target, page)
    logger.info("report written to %s", target)
    return target
