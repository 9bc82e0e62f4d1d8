"""The comparison report of several runs (``layerscope compare``): models, revisions, text sources side by side."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from layerscope.analysis.by_type import best_layers_text, type_legend
from layerscope.errors import LayerscopeError
from layerscope.report import plots
from layerscope.report.elements import Section, escape, formatter, image, note, render_page, section, table
from layerscope.report.run_report import PLOTS_DIRNAME, summarize_run
from layerscope.store import atomic_write_text
from layerscope.store.runs import RunData, load_runs

__all__ = ["COMPARE_FILENAME", "compare_runs", "view_size_mismatch"]

logger = logging.getLogger(__name__)

COMPARE_FILENAME = "compare.html"


#: Characters of a text source kept in a run's label (legends and table columns must stay readable).
MAX_SOURCE_CHARS = 32


def _run_label(run: RunData, vary_dataset: bool) -> str:
    label = run.model.rsplit("/", 1)[-1]
    if run.revision and run.revision not in ("main", "None"):
        label += f" @ {run.revision}"
    if vary_dataset and run.dataset:
        source = run.dataset  # in full in the list of sources below the table
        label += " \u00b7 " + (source if len(source) <= MAX_SOURCE_CHARS else source[:MAX_SOURCE_CHARS - 1] + "\u2026")
    return label


def _labels(loaded: Sequence[RunData], vary_dataset: bool) -> list[str]:
    """One legend label per run; runs that would share one get their run id's start."""
    labels: list[str] = []
    for run in loaded:
        label = _run_label(run, vary_dataset)
        if label in labels or sum(_run_label(other, vary_dataset) == label for other in loaded) > 1:
            label += f" [{run.run_id[:6]}]"
        labels.append(label)
    return labels


def view_size_mismatch(loaded: Sequence[RunData], labels: Sequence[str]) -> str | None:
    """One line naming the invariance metrics whose runs saw different numbers of texts or views, or None.

    Their values depend on those sizes (InfoNCE is bounded by log N, LiDAR's entropy by the number of
    texts it saw, DiME's entropies grow with N), so runs measured on different sizes do not compare
    side by side (see the docs, metrics page, "Views budget").
    """
    from layerscope.metrics.registry import metric_label

    sizes = [run.view_sizes() for run in loaded]
    differing = []
    for metric in sorted({name for size in sizes for name in size}):
        seen: dict[tuple[int, int | None], list[str]] = {}
        for label, size in zip(labels, sizes, strict=True):
            if metric in size:
                seen.setdefault(size[metric], []).append(label)
        if len(seen) > 1:
            said = ", ".join(f"{texts:,} texts x {views if views is not None else '?'} views in "
                             f"{runs[0] if len(runs) == 1 else f'{len(runs)} runs'}"
                             for (texts, views), runs in seen.items())
            differing.append(f"{metric_label(metric)}: {said}")
    if not differing:
        return None
    return ("the runs' invariance metrics were measured on different view sizes (" + "; ".join(differing)
            + "): their values depend on the number of texts and are not comparable side by side; rerun with "
            "the same --view-texts, --lidar-texts and --n-views")


def compare_runs(
    directories: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    all_runs: bool = False,
    select_by: str | None = None,
) -> Path:
    """Overlay several runs (models, revisions, datasets) and write a comparison report.

    Parameters
    ----------
    directories : sequence of str or os.PathLike
        Output directories holding ``results.duckdb``.
    out : str or os.PathLike
        An ``.html`` file, or a directory (then ``<out>/compare.html``); the overlay PNG goes to
        ``plots/compare_overlay.png`` beside the HTML file.
    all_runs : bool, default False
        Take every finished run of each directory (e.g. a sweep's merged store) instead of its
        latest one.
    select_by : str, optional
        Metric of each run's label-free choice (see :func:`~layerscope.report.summarize_run`).

    Returns
    -------
    pathlib.Path
        The written HTML file.
    """
    if not directories:
        raise LayerscopeError("compare needs at least one results directory")
    loaded = [run for directory in directories for run in load_runs(directory, all_runs=all_runs)]
    if not loaded:
        raise LayerscopeError("no runs found in the given directories")
    vary_dataset = len({run.dataset for run in loaded}) > 1
    labels = _labels(loaded, vary_dataset)
    mismatch = view_size_mismatch(loaded, labels)
    if mismatch:
        logger.warning(mismatch)
    summaries = [summarize_run(run, select_by=select_by, uncertainty=False) for run in loaded]
    target = Path(out)
    html_path = target if target.suffix.lower() in (".html", ".htm") else target / COMPARE_FILENAME

    parts = [
        _runs_section(loaded, labels, summaries, vary_dataset, mismatch),
        _overlay_section(labels, summaries, html_path.parent / PLOTS_DIRNAME),
        _selection_section(labels, summaries),
    ]
    page = render_page(
        f"layerscope comparison of {len(loaded)} runs",
        f"layerscope comparison: {len(loaded)} runs",
        escape(", ".join(labels)),
        parts,
    )
    atomic_write_text(html_path, page)
    logger.info("comparison written to %s", html_path)
    return html_path


def _runs_section(loaded: Sequence[RunData], labels: Sequence[str], summaries: Sequence[Any],
                  vary_dataset: bool, mismatch: str | None = None) -> Section:
    """One row per run: its model, depth, best and label-free layers and their scores."""
    rows = []
    for label, run, summary in zip(labels, loaded, summaries, strict=True):
        rows.append({
            "run": label, "model": run.model, "revision": run.revision or "", "texts": run.dataset or "",
            "layers": None if summary.last_layer is None else summary.last_layer + 1,
            "best": summary.best_layer, "best_score": summary.score_at(summary.best_layer),
            "chosen": summary.chosen_layer, "rule": summary.chosen_label or "",
            "chosen_score": summary.score_at(summary.chosen_layer),
            "last_score": summary.score_at(summary.last_layer),
            "by_type": best_layers_text(summary.best_layer_by_type, summary.last_layer),
            "run_id": run.run_id[:8],
        })
    columns: list[tuple[str, str, Callable[[Any], str]]] = [
        ("run", "run", escape), ("model", "model", escape), ("revision", "revision", escape)]
    columns += [
        ("layers", "layers", formatter(0)),
        ("best", "best layer\n(labels)", formatter(0)), ("best_score", "its score\n(x100)", formatter(1)),
        ("chosen", "label-free\nlayer", formatter(0)), ("rule", "label-free\nrule", escape),
        ("chosen_score", "its score\n(x100)", formatter(1)),
        ("last_score", "last layer\nscore (x100)", formatter(1)),
    ]
    if any(summary.best_layer_by_type for summary in summaries):
        columns.append(("by_type", "best layer\nper task type", escape))
    columns.append(("run_id", "run id", escape))
    body = table(pd.DataFrame(rows), columns, text_columns=["run", "model", "revision", "rule", "by_type", "run_id"])
    sources = "".join(f"<li>{escape(label)}: {escape(run.directory)} (run {escape(run.run_id)}; texts: "
                      f"{escape(run.dataset or 'unknown')})</li>"
                      for label, run in zip(labels, loaded, strict=True))
    body += f"<details><summary>Result directories, run ids and text sources</summary><ul>{sources}</ul></details>"
    if not vary_dataset and loaded[0].dataset:
        body += f'<p class="caption">All runs on the texts of {escape(loaded[0].dataset)}.</p>'
    types = list(dict.fromkeys(task_type for summary in summaries for task_type in summary.task_types))
    if types:
        body += (f'<p class="caption">Best layer per task type: the layer with the highest mean score of the run\'s '
                 f"tasks of that type ({escape(type_legend(types))}; depth % in brackets).</p>")
    if mismatch:
        body += note(mismatch[0].upper() + mismatch[1:] + ".")
    return section("runs", "Runs", body)


def _overlay_section(labels: Sequence[str], summaries: Sequence[Any], plots_dir: Path) -> Section:
    """Every run's per-layer table overlaid by depth."""
    tables = {label: summary.per_layer for label, summary in zip(labels, summaries, strict=True)
              if summary.per_layer is not None}
    if not tables:
        return section("overlay", "Metrics and scores by depth", note("None of the runs has per-layer values."))
    try:
        overlay = plots.plot_run_overlay(tables, plots_dir / "compare_overlay.png", title=f"{len(tables)} runs by depth")
    except LayerscopeError as error:
        return section("overlay", "Metrics and scores by depth", note(f"No overlay plot: {error}"))
    return section("overlay", "Metrics and scores by depth", image(
        overlay, "metrics of several runs by depth",
        "One line per run; each metric in its default normalization; depth % makes models of different depth "
        "comparable."))


def _selection_section(labels: Sequence[str], summaries: Sequence[Any]) -> Section:
    """The paper's Table 2 of every run, side by side."""
    rows = [{"run": label, "rule": row["rule"], "average": row["average"]}
            for label, summary in zip(labels, summaries, strict=True) if summary.selection is not None
            for _, row in summary.selection.iterrows()]
    if not rows:
        return section("selection", "Layer selection", note("No run has task scores."))
    wide = pd.DataFrame(rows).pivot_table(index="rule", columns="run", values="average", sort=False).reset_index()
    columns: list[tuple[str, str, Callable[[Any], str]]] = [("rule", "rule", escape)]
    columns += [(label, label, formatter(1)) for label in labels if label in wide.columns]
    body = ('<p class="caption">Average task score (x100) of each layer-selection rule, per run (the paper\'s '
            "Table 2 side by side; metric rules choose each task's layer from the metric on that task's texts).</p>")
    return section("selection", "Layer selection", body + table(wide, columns, text_columns=["rule"]))
