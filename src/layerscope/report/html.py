"""The self-contained HTML report of a run, and the comparison report of several runs.

:func:`build_report` reads one run from ``<directory>/results.duckdb`` and writes
``<directory>/report.html``: the run's configuration, a summary answering "which layer, and why",
the per-layer table, the plots (also written as PNG files to ``<directory>/plots/``), the
Table-2-style selection table, the metric-score correlations, a few example texts, and the
experiments stored in the directory. :func:`compare_runs` overlays several runs.

The HTML file is self-contained: images are embedded as base64 ``data:`` URIs, the CSS is inline,
there is no script, and a Content-Security-Policy forbids any request, so it reads the same offline
and can be mailed around. Every text taken from the data (model names, task names, configuration
values, example texts) is escaped with :func:`html.escape` (SPEC section 9). Files are written
atomically.

Sections whose inputs are missing (a run with metrics but no task scores, or the reverse) are
replaced by a short note saying what is missing and how to get it.
"""

from __future__ import annotations

import base64
import contextlib
import html
import json
import logging
import os
import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from layerscope.analysis.selection import metric_directions
from layerscope.analysis.summary import Summary, summarize
from layerscope.analysis.tables import default_normalization
from layerscope.config import Config, config_from_dict
from layerscope.errors import LayerscopeError
from layerscope.report import plots
from layerscope.store import ResultsStore, atomic_write_json, atomic_write_text

__all__ = [
    "COMPARE_FILENAME",
    "EXAMPLES_FILENAME",
    "PLOTS_DIRNAME",
    "REPORT_FILENAME",
    "RunData",
    "RunSummary",
    "build_report",
    "compare_runs",
    "load_run",
    "summarize_run",
    "write_examples",
    "write_plots",
]

logger = logging.getLogger(__name__)

REPORT_FILENAME = "report.html"
COMPARE_FILENAME = "compare.html"
EXAMPLES_FILENAME = "examples.json"
PLOTS_DIRNAME = "plots"

MAX_EXAMPLE_CHARS = 600
MAX_EMBEDDED_BYTES = 8 * 2**20
MAX_EXPERIMENT_IMAGES = 6


# ---------------------------------------------------------------------------------------- data


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

    @property
    def model(self) -> str:
        """Model id of the run (the runs table's), or ``"unknown model"``."""
        value = self.info.get("model_id")
        return str(value) if value else "unknown model"

    @property
    def revision(self) -> str | None:
        """Revision of the model, if recorded."""
        value = self.info.get("revision")
        return str(value) if value and not _is_missing(value) else None

    @property
    def dataset(self) -> str | None:
        """Text source of the run, if recorded."""
        value = self.info.get("data_source")
        return str(value) if value and not _is_missing(value) else None

    @property
    def typed_config(self) -> Config | None:
        """The run's configuration as a typed object, when it was stored as one."""
        try:
            return config_from_dict(self.config)
        except LayerscopeError:
            return None


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
        )


#: Deprecated name of :class:`layerscope.analysis.Summary`.
RunSummary = Summary


def summarize_run(run: RunData, *, select_by: str | None = None) -> Summary:
    """:func:`layerscope.analysis.summarize` of a stored run (its configured label-free metric by default).

    Parameters
    ----------
    run : RunData
        From :func:`load_run`.
    select_by : str, optional
        Metric of the headline label-free choice (default: the run's configured one).
    """
    config = run.config
    present = set(run.metrics["metric"].astype(str)) if not run.metrics.empty else set()
    if select_by is not None and select_by not in present:
        raise LayerscopeError(f"cannot choose a layer by '{select_by}': the run has no such metric "
                              f"(it has {', '.join(sorted(present)) or 'no metrics'})")
    mapping = config.get("task_to_dataset") if isinstance(config, Mapping) else None
    if mapping is None and config.get("kind") == "analysis":  # analyze: each task's metrics on its own texts
        mapping = {task: task for task in config.get("tasks", [])}
    return summarize(
        run.metrics if not run.metrics.empty else None,
        run.scores if not run.scores.empty else None,
        select_by=select_by or config.get("select_by"),
        task_to_dataset=mapping if isinstance(mapping, Mapping) else None,
    )


# ---------------------------------------------------------------------------------------- plots


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
    title = _run_title(run)
    markers = {
        "best_layer": summary.best_layer,
        "chosen_layer": summary.chosen_layer,
        "chosen_label": summary.chosen_label,
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


# ---------------------------------------------------------------------------------------- html helpers


def _e(value: Any) -> str:
    """Escape any value for HTML text and attributes."""
    return html.escape("" if value is None else str(value), quote=True)


def _is_missing(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _number(value: Any, decimals: int = 3) -> str:
    """A number as text: NaN as an en dash, large magnitudes with fewer decimals."""
    if _is_missing(value):
        return "\u2013"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    number = float(value)
    if not np.isfinite(number):
        return "\u2013"
    if abs(number) >= 1000:
        return f"{number:,.0f}"
    if abs(number) >= 100 and decimals > 1:
        return f"{number:.1f}"
    return f"{number:.{decimals}f}"


def _signed(value: float | None, decimals: int = 1) -> str:
    if value is None or not np.isfinite(value):
        return "\u2013"
    css = "gain-pos" if value > 0.05 else "gain-neg" if value < -0.05 else ""
    text = f"{value:+.{decimals}f}"
    return f'<span class="{css}">{_e(text)}</span>' if css else _e(text)


def _image(path: Path, alt: str, caption: str | None = None) -> str:
    """``<figure>`` with the PNG embedded as a data URI (empty string when unreadable or too big)."""
    try:
        data = path.read_bytes()
    except OSError as error:
        logger.warning("cannot embed %s: %s", path, error)
        return ""
    if len(data) > MAX_EMBEDDED_BYTES:
        return f'<p class="note">Image {_e(path.name)} is too large to embed ({len(data) / 2**20:.1f} MiB).</p>'
    encoded = base64.b64encode(data).decode("ascii")
    caption_html = f"<figcaption>{caption}</figcaption>" if caption else ""
    return f'<figure><img alt="{_e(alt)}" src="data:image/png;base64,{encoded}">{caption_html}</figure>'


def _header(text: str) -> str:
    """Escaped header text; a second line (after a newline) is shown smaller."""
    first, _, second = text.partition("\n")
    return _e(first) + (f'<br><span class="sub">{_e(second)}</span>' if second else "")


def _table(
    frame: pd.DataFrame,
    columns: Sequence[tuple[str, str, Callable[[Any], str]]],
    *,
    row_class: Callable[[pd.Series], str] | None = None,
    cell_style: Callable[[str, Any], str] | None = None,
    text_columns: Iterable[str] = (),
    group: Callable[[pd.Series], str] | None = None,
    header_groups: Sequence[tuple[str, int]] | None = None,
) -> str:
    """An HTML table.

    ``columns``: (column, header, formatter returning *escaped* HTML); headers are plain text (a
    newline starts a smaller second line). ``group`` labels rows: a label row is inserted where it
    changes. ``header_groups``: (label, number of columns) spanning the header's columns.
    """
    text = set(text_columns)
    head = "".join(
        f'<th class="text">{_header(header)}</th>' if column in text else f"<th>{_header(header)}</th>"
        for column, header, _ in columns
    )
    top = ""
    if header_groups:
        top = "<tr>" + "".join(
            f'<th class="span" colspan="{int(span)}">{_e(label)}</th>' for label, span in header_groups
        ) + "</tr>"
    body: list[str] = []
    current: str | None = None
    for _, row in frame.iterrows():
        if group is not None:
            label = group(row)
            if label != current:
                body.append(f'<tr class="group"><td colspan="{len(columns)}">{_e(label)}</td></tr>')
                current = label
        css = row_class(row) if row_class else ""
        cells = []
        for column, _, render in columns:
            value = row[column] if column in row.index else None
            classes = ' class="text"' if column in text else ""
            style = cell_style(column, value) if cell_style else ""
            style_attr = f' style="{_e(style)}"' if style else ""
            cells.append(f"<td{classes}{style_attr}>{render(value)}</td>")
        class_attr = f' class="{_e(css)}"' if css else ""
        body.append(f"<tr{class_attr}>{''.join(cells)}</tr>")
    return (
        f'<div class="table-scroll"><table><thead>{top}<tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _key_value(rows: Sequence[tuple[str, str]]) -> str:
    """Two-column table; values are already escaped HTML."""
    body = "".join(f"<tr><td>{_e(key)}</td><td>{value}</td></tr>" for key, value in rows)
    return f'<table class="kv"><tbody>{body}</tbody></table>'


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


def _section(anchor: str, title: str, body: str) -> tuple[str, str, str]:
    return anchor, title, f'<section id="{_e(anchor)}"><h2>{_e(title)}</h2>{body}</section>'


def _render_page(title: str, heading: str, subheading: str, sections: Sequence[tuple[str, str, str]]) -> str:
    from layerscope import __version__

    template = string.Template(resources.files("layerscope.report").joinpath("template.html").read_text("utf-8"))
    nav = "".join(f'<a href="#{_e(anchor)}">{_e(name)}</a>' for anchor, name, _ in sections)
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    footer = (
        f"Generated by layerscope {_e(__version__)} on {_e(now)}. Implements Skean et al., "
        "<i>Layer by Layer: Uncovering Hidden Representations in Language Models</i> (ICML 2025)."
    )
    return template.substitute(
        version=_e(__version__),
        title=_e(title),
        heading=_e(heading),
        subheading=subheading,
        nav=nav,
        body="\n".join(html_text for _, _, html_text in sections),
        footer=footer,
    )


def _run_title(run: RunData) -> str:
    parts = [run.model]
    if run.revision and run.revision not in ("main", "None"):
        parts[0] += f" @ {run.revision}"
    if run.dataset:
        parts.append(run.dataset)
    return " \u00b7 ".join(parts)


def _config_value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return _e(", ".join(str(item) for item in value))
    if isinstance(value, Mapping):
        return _e(", ".join(f"{key}: {item}" for key, item in value.items()))
    return _e(value)


def _timestamp(value: Any) -> datetime | None:
    if _is_missing(value):
        return None
    try:
        return pd.Timestamp(value).to_pydatetime()
    except (TypeError, ValueError):
        return None


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(seconds, 60)
    if minutes < 60:
        return f"{int(minutes)} min {rest:.0f} s"
    hours, minutes = divmod(minutes, 60)
    return f"{int(hours)} h {int(minutes)} min"


# ---------------------------------------------------------------------------------------- sections


def _summary_section(run: RunData, summary: Summary) -> tuple[str, str, str]:
    cards: list[str] = []
    per_layer = summary.per_layer

    def card(kind: str, key: str, layer: int | None, detail: str) -> None:
        depth = summary.depth_of(layer)
        value = "\u2013" if layer is None else f"layer {layer}"
        depth_text = "" if depth is None else f" ({depth:.0f}% depth)"
        cards.append(
            f'<div class="card {kind}"><div class="k">{_e(key)}</div><div class="v">{_e(value)}'
            f'<span class="muted">{_e(depth_text)}</span></div><div class="d">{detail}</div></div>'
        )

    last_score = summary.score_at(summary.last_layer) if summary.last_layer is not None else None
    if summary.best_layer is not None:
        best_score = summary.score_at(summary.best_layer)
        gain = None if best_score is None or last_score is None else best_score - last_score
        card("best", "Best layer with labels", summary.best_layer,
             f"average score {_e(_number(best_score, 1))}; {_signed(gain)} vs. last layer")
    if summary.chosen_layer is not None:
        chosen_score = summary.score_at(summary.chosen_layer)
        if chosen_score is not None and last_score is not None:
            detail = (f"{_e(summary.chosen_label)}: average score {_e(_number(chosen_score, 1))}; "
                      f"{_signed(chosen_score - last_score)} vs. last layer")
        else:
            detail = f"{_e(summary.chosen_label)} (no task scores to check it against)"
        card("chosen", "Chosen without labels", summary.chosen_layer, detail)
    if summary.last_layer is not None:
        detail = (f"average score {_e(_number(last_score, 1))}" if last_score is not None
                  else "the usual default")
        card("last", "Last layer", summary.last_layer, detail)
    if summary.selection is not None:
        depth_rows = summary.selection[summary.selection["kind"] == "depth"]
        if not depth_rows.empty:
            row = depth_rows.loc[depth_rows["average"].idxmax()]
            card("depth", f"Depth baseline ({row['rule'].split()[-1]})",
                 None if _is_missing(row["layer"]) else int(row["layer"]),
                 f"average score {_e(_number(row['average'], 1))}; {_signed(float(row['gain_vs_last']))} vs. last layer")

    sentences: list[str] = []
    if summary.best_layer is not None and summary.last_layer is not None:
        best_score = summary.score_at(summary.best_layer)
        if summary.best_layer == summary.last_layer:
            sentences.append("The last layer is the best layer on the task average for this run.")
        elif best_score is not None and last_score is not None:
            sentences.append(
                f"An intermediate layer ({summary.best_layer}, {summary.depth_of(summary.best_layer):.0f}% depth) "
                f"beats the last layer by {best_score - last_score:.1f} points on the task average."
            )
    if summary.chosen_layer is not None:
        direction = "highest" if summary.chosen_higher_is_better else "lowest"
        sentences.append(
            f"Without labels, the layer where {plots.metric_label(summary.chosen_metric or '')} is {direction} "
            f"is layer {summary.chosen_layer}."
        )
    lead = f'<p class="lead">{_e(" ".join(sentences))}</p>' if sentences else ""
    body = lead + (f'<div class="cards">{"".join(cards)}</div>' if cards else "")
    if per_layer is None:
        body += _note("Nothing to summarise: the run has no metrics and no task scores.")
    elif run.scores.empty:
        body += _note(
            "This run has no task scores, so the label-free choice cannot be checked against a best layer. "
            "Run `layerscope analyze` with tasks (the default offline suite) to add them."
        )
    elif run.metrics.empty:
        body += _note("This run has task scores but no representation metrics: no label-free choice to show.")
    for note in summary.notes:
        body += _note(note)
    return _section("summary", "Which layer, and why", body)


def _config_section(run: RunData) -> tuple[str, str, str]:
    config = run.config
    rows: list[tuple[str, str]] = [("Run id", _e(run.run_id)), ("Status", _e(run.info.get("status"))),
                                   ("Model", _e(run.model))]
    if run.revision:
        rows.append(("Revision", _e(run.revision)))
    typed = run.typed_config
    if typed is not None:
        rows += [(label, _e(value)) for label, value in typed.describe() if label not in ("Model", "Revision")]
    elif run.dataset:
        rows.append(("Text source", _e(run.dataset)))
    if run.info.get("data_hash"):
        rows.append(("Text content hash", _e(run.info.get("data_hash"))))
    skipped = run.info.get("skipped")
    if isinstance(skipped, str) and skipped:
        with contextlib.suppress(json.JSONDecodeError):
            skipped = json.loads(skipped)
    if isinstance(skipped, Mapping):
        total = sum(int(value) for value in skipped.values() if isinstance(value, (int, float)))
        detail = ", ".join(f"{key}: {value}" for key, value in skipped.items()) or "none"
        rows.append(("Skipped texts", _e(f"{total} ({detail})" if skipped else "none")))
    elif skipped:
        rows.append(("Skipped texts", _e(skipped)))
    rows.append(("layerscope version", _e(run.info.get("layerscope_version"))))
    started, finished = _timestamp(run.info.get("created_at")), _timestamp(run.info.get("finished_at"))
    if started:
        rows.append(("Started (UTC)", _e(started.strftime("%Y-%m-%d %H:%M:%S"))))
    if finished:
        rows.append(("Finished (UTC)", _e(finished.strftime("%Y-%m-%d %H:%M:%S"))))
    if started and finished:
        rows.append(("Wall time", _e(_duration((finished - started).total_seconds()))))
    timings = config.get("timings")
    if isinstance(timings, Mapping) and timings:
        rows.append(("Timings", _e(", ".join(
            f"{key}: {_duration(float(value)) if isinstance(value, (int, float)) else value}"
            for key, value in timings.items()))))
    if run.info.get("error"):
        rows.append(("Error", _e(run.info.get("error"))))
    body = _key_value(rows)

    if not run.metrics.empty and {"n_used", "n_skipped"} <= set(run.metrics.columns):
        counts = (
            run.metrics.groupby("metric")
            .agg(n_used=("n_used", "max"), n_skipped=("n_skipped", "max"))
            .reset_index()
        )
        counts = counts[counts["n_used"].notna() | counts["n_skipped"].notna()]
        if not counts.empty:
            body += "<h3>Prompts per metric</h3>"
            body += '<p class="caption">Largest count over layers; prompts are skipped where a metric is undefined (e.g. curvature needs 3 tokens) or states are not finite.</p>'
            body += _table(counts, [
                ("metric", "metric", lambda value: _e(plots.metric_label(str(value)))),
                ("n_used", "used", _number_html(0)),
                ("n_skipped", "skipped", _number_html(0)),
            ], text_columns=["metric"])
    full = json.dumps(config, indent=2, sort_keys=True, default=str, ensure_ascii=False)
    body += f"<details><summary>Full configuration (JSON)</summary><pre>{_e(full)}</pre></details>"
    return _section("configuration", "Run configuration", body)


def _number_html(decimals: int) -> Callable[[Any], str]:
    return lambda value: _e(_number(value, decimals))


def _shade(values: pd.Series, higher_is_better: bool) -> Callable[[Any], str]:
    """Background shading of a table column: darker blue = better (by the metric's direction)."""
    finite = values[np.isfinite(values.to_numpy(dtype=float))]
    low = float(finite.min()) if len(finite) else 0.0
    high = float(finite.max()) if len(finite) else 1.0
    span = high - low

    def style(value: Any) -> str:
        if _is_missing(value) or not np.isfinite(float(value)) or span <= 0:
            return ""
        goodness = (float(value) - low) / span
        if not higher_is_better:
            goodness = 1.0 - goodness
        return f"background-color: rgba(0, 114, 178, {0.03 + 0.32 * goodness:.2f})"

    return style


def _per_layer_section(run: RunData, summary: Summary) -> tuple[str, str, str]:
    table = summary.per_layer
    if table is None:
        return _section("layers", "Per-layer table", _note("No per-layer values in this run."))
    metric_columns = plots.order_metrics(
        column for column in table.columns if column not in ("layer", "depth_pct", "avg_score", "n_tasks")
    )
    directions = metric_directions(metric_columns, strict=False)
    frame = table.copy()

    def badges(row: pd.Series) -> str:
        marks = []
        if summary.best_layer is not None and row["layer"] == summary.best_layer:
            marks.append('<span class="badge best">best with labels</span>')
        if summary.chosen_layer is not None and row["layer"] == summary.chosen_layer:
            marks.append(f'<span class="badge chosen">{_e(summary.chosen_label)}</span>')
        if summary.last_layer is not None and row["layer"] == summary.last_layer:
            marks.append('<span class="badge last">last</span>')
        return "".join(marks)

    frame["marks"] = [badges(row) for _, row in frame.iterrows()]
    columns: list[tuple[str, str, Callable[[Any], str]]] = [
        ("layer", "layer", _number_html(0)),
        ("depth_pct", "depth %", _number_html(0)),
    ]
    if "avg_score" in frame.columns:
        columns.append(("avg_score", "avg score\n(x100)", _number_html(1)))
    for metric in metric_columns:
        norm = default_normalization(run.metrics, metric)
        arrow = {True: " \u2191", False: " \u2193"}.get(directions.get(metric), "")
        sub = norm if norm and norm not in ("raw", "none") else ""
        columns.append((metric, plots.metric_label(metric) + arrow + (f"\n{sub}" if sub else ""), _number_html(3)))
    columns.append(("marks", "", lambda value: str(value)))  # badges are built from escaped parts above

    def row_class(row: pd.Series) -> str:
        classes = []
        if summary.best_layer is not None and row["layer"] == summary.best_layer:
            classes.append("best")
        if summary.chosen_layer is not None and row["layer"] == summary.chosen_layer:
            classes.append("chosen")
        return " ".join(classes)

    shades = {column: _shade(frame[column], directions.get(column, True)) for column in metric_columns}
    if "avg_score" in frame.columns:
        shades["avg_score"] = _shade(frame["avg_score"], True)

    def cell_style(column: str, value: Any) -> str:
        return shades[column](value) if column in shades else ""

    legend = '<p class="legend">Rows:'
    if summary.best_layer is not None:
        legend += '<span style="background:#e3f2ea"></span>best layer with labels'
    if summary.chosen_layer is not None:
        legend += '<span style="background:#fcebdc"></span>label-free choice'
    legend += (". Cells: darker blue = better within the column (\u2193 lower is better, \u2191 higher is better, "
              "the directions used for label-free selection).</p>")
    body = legend + _table(frame, columns, row_class=row_class, cell_style=cell_style, text_columns=["marks"])
    grid = table.attrs.get("score_grid", {})
    captions = []
    if grid:
        captions.append(f"Average score over {grid.get('n_tasks')} tasks.")
    if metric_columns:
        captions.append("Metrics in their default normalization (entropies: maxEntropy), averaged over text sources "
                        "when there are several.")
    caption = " ".join(captions)
    body += f'<p class="caption">{_e(caption)}</p>'
    return _section("layers", "Per-layer table", body)


def _plots_section(run: RunData, summary: Summary, images: Mapping[str, Path]) -> tuple[str, str, str]:
    parts: list[str] = []
    if "metric_curves" in images:
        parts.append("<h3>Metrics per layer</h3>")
        marks = []
        if summary.best_layer is not None:
            marks.append("dashed: best layer with labels")
        if summary.chosen_layer is not None:
            marks.append("dotted: label-free choice")
        caption = "Each metric in its default normalization against depth" + (f" ({'; '.join(marks)})" if marks else "")
        parts.append(_image(images["metric_curves"], "metric curves per layer", _e(caption + ".")))
    elif run.metrics.empty:
        parts.append(_note("No representation metrics in this run."))
    if "task_scores" in images:
        parts.append("<h3>Task scores per layer</h3>")
        parts.append(_image(images["task_scores"], "task scores per layer",
                            "Thin lines: single tasks; thick: mean of the task type; last panel: the overall average."))
    elif run.scores.empty:
        parts.append(_note("No task scores in this run: run `layerscope analyze` with tasks to see where the "
                           "representations are most useful."))
    for name, path in images.items():
        if name.startswith("histogram_"):
            metric = name.removeprefix("histogram_")
            parts.append(f"<h3>Per-prompt {_e(plots.metric_label(metric).lower())}</h3>")
            parts.append(_image(path, f"per-prompt {metric} by layer",
                                "Top: share of prompts per value bin at each layer (a split into two bands is the "
                                "bimodality of section 7 of the paper). Bottom: a few layers in detail."))
    return _section("plots", "Plots", "".join(parts))


_RULE_GROUPS = {
    "labels": "With labels",
    "oracle": "With labels",
    "baseline": "Without labels: baselines",
    "depth": "Without labels: baselines",
    "metric": "Without labels: metric rules (per task, on the task's own texts)",
}


def _selection_section(summary: Summary) -> tuple[str, str, str]:
    table = summary.selection
    if table is None:
        return _section("selection", "Layer selection (Table 2)",
                        _note("Needs task scores: this run has none, so no rule can be scored."))
    fixed = ["rule", "kind", "layer", "depth_pct", "average", "gain_vs_last", "n_tasks", "n_fallback"]
    type_columns = [column for column in table.columns if column not in fixed]
    metric_rows = table[table["kind"] == "metric"]
    best_rule = str(metric_rows.loc[metric_rows["average"].idxmax(), "rule"]) if not metric_rows.empty else None
    columns: list[tuple[str, str, Callable[[Any], str]]] = [
        ("rule", "rule", _e),
        ("layer", "layer", lambda value: _e("per task" if _is_missing(value) else int(value))),
        ("depth_pct", "depth %\n(mean)", _number_html(0)),
        ("average", "average\n(x100)", _number_html(1)),
        ("gain_vs_last", "vs. last\nlayer", lambda value: _signed(None if _is_missing(value) else float(value))),
    ]
    columns += [(column, str(column), _number_html(1)) for column in type_columns]
    if table["n_fallback"].fillna(0).gt(0).any():
        columns.append(("n_fallback", "tasks on\nfallback", _number_html(0)))

    def row_class(row: pd.Series) -> str:
        if row["kind"] == "labels":
            return "best"
        if best_rule is not None and row["rule"] == best_rule:
            return "chosen"
        return ""

    body = (
        '<p class="caption">Average task score when each task uses the layer a rule picks (the paper\'s Table 2). '
        "Metric rules pick, per task, the layer where the metric computed on that task's texts is best; the depth "
        "rules need no metric; \u201cbest layer per task\u201d is an oracle. Highlighted: the best rule with labels "
        "and the best label-free metric rule (which rule is best is itself known only with labels).</p>"
    )
    body += _table(table, columns, row_class=row_class, text_columns=["rule"],
                   group=lambda row: _RULE_GROUPS.get(str(row["kind"]), str(row["kind"])))
    return _section("selection", "Layer selection (Table 2)", body)


def _correlation_section(run: RunData, summary: Summary, images: Mapping[str, Path]) -> tuple[str, str, str]:
    frame = summary.correlations
    if frame is None or frame.empty:
        reason = ("needs both metrics and task scores" if run.metrics.empty or run.scores.empty
                  else "could not be computed (see the notes in the summary)")
        return _section("correlations", "Metrics vs. task scores", _note(f"Correlations {reason}."))
    body = ('<p class="caption">How each metric\'s layer profile tracks task scores. Spearman and Kendall are '
            "signed (a useful lower-is-better metric is negative); distance correlation lies in [0, 1].</p>")
    if "correlations" in images:
        body += _image(images["correlations"], "correlation of metrics with task scores")
    frame = frame[frame["scope"].isin(["per_task", "average_curve"])]
    frame = frame.assign(
        normalization=frame["normalization"].fillna("").astype(str),
        key=frame["scope"].astype(str) + "_" + frame["method"].astype(str),
    )
    rows = frame.pivot(index=["metric", "normalization"], columns="key", values="value").reset_index()
    order = {name: index for index, name in enumerate(plots.order_metrics(rows["metric"].astype(str)))}
    rows = rows.sort_values("metric", key=lambda column: column.map(order), kind="stable")
    tasks = frame[frame["scope"] == "per_task"].groupby(["metric", "normalization"])["n_tasks"].max()
    rows["tasks"] = [tasks.get((metric, norm)) for metric, norm in zip(rows["metric"], rows["normalization"], strict=True)]
    method_names = {"spearman": "Spearman \u03c1", "kendall": "Kendall \u03c4", "dcor": "dCor"}
    columns: list[tuple[str, str, Callable[[Any], str]]] = [
        ("metric", "metric", lambda value: _e(plots.metric_label(str(value)))),
        ("normalization", "normalization", _e),
    ]
    groups: list[tuple[str, int]] = [("", 2)]
    for scope, scope_label in (("per_task", "each task, mean over tasks"), ("average_curve", "task-averaged curve")):
        present = [method for method in ("spearman", "kendall", "dcor") if f"{scope}_{method}" in rows.columns]
        columns += [(f"{scope}_{method}", method_names[method], _number_html(2)) for method in present]
        if scope == "per_task" and present:
            columns.append(("tasks", "tasks", _number_html(0)))
            groups.append((scope_label, len(present) + 1))
        elif present:
            groups.append((scope_label, len(present)))
    body += _table(rows, columns, text_columns=["metric", "normalization"], header_groups=groups)
    return _section("correlations", "Metrics vs. task scores", body)


def _load_examples(run: RunData, examples: Sequence[Any] | None) -> list[tuple[int | None, str]]:
    """Example texts as (prompt index or None, text)."""
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
    found: list[tuple[int | None, str]] = []
    if isinstance(source, Mapping):
        source = source.get("examples", [])
    if not isinstance(source, (list, tuple)):
        return found
    for item in source:
        if isinstance(item, Mapping):
            text = item.get("text")
            index = item.get("index", item.get("prompt_index"))
            found.append((int(index) if isinstance(index, (int, np.integer)) else None, "" if text is None else str(text)))
        else:
            found.append((None, str(item)))
    return found


def _examples_section(run: RunData, summary: Summary, examples: Sequence[Any] | None,
                      max_examples: int) -> tuple[str, str, str]:
    found = _load_examples(run, examples)[:max_examples]
    if not found:
        return _section("examples", "Example texts", _note(
            f"No example texts stored with this run (the analyze command writes them to {EXAMPLES_FILENAME})."))
    values = run.prompt_values
    layers: dict[int, str] = {}
    for layer, role in ((summary.chosen_layer, summary.chosen_label or "label-free"),
                        (summary.best_layer, "best with labels"), (summary.last_layer, "last")):
        if layer is not None:
            layers[layer] = f"{layers[layer]}, {role}" if layer in layers else str(role)
    items: list[str] = []
    for index, text in found:
        shown = text if len(text) <= MAX_EXAMPLE_CHARS else text[:MAX_EXAMPLE_CHARS] + "\u2026"
        meta: list[str] = []
        if index is not None:
            meta.append(f"text #{index}")
            if not values.empty and "prompt_index" in values.columns:
                mine = values[(values["prompt_index"] == index) & (values["metric"] == "prompt_entropy")]
                shown_values = []
                for layer, role in layers.items():
                    hit = mine.loc[mine["layer"] == layer, "value"]
                    if len(hit):
                        shown_values.append(f"{_number(hit.iloc[0], 3)} at layer {layer} ({role})")
                if shown_values:
                    meta.append("prompt entropy " + ", ".join(shown_values))
        meta.append(f"{len(text)} characters")
        separator = " \u00b7 "
        items.append(f'<li><div class="text">{_e(shown)}</div><div class="meta">{_e(separator.join(meta))}</div></li>')
    body = f'<ul class="examples">{"".join(items)}</ul>'
    return _section("examples", "Example texts", body)


def _normalized_name(name: str) -> str:
    return "".join(character for character in name.lower() if character.isalnum())


def _experiment_images(directory: Path, experiment: str, plots_dir: Path) -> list[Path]:
    """PNG files in ``directory`` (two levels deep) whose name or folder names the experiment.

    The report's own generic experiment plots (``<plots_dir>/experiment_*.png``) are not counted:
    they are redrawn when an experiment has no plot of its own.
    """
    key = _normalized_name(experiment)
    if not key:
        return []
    found: list[Path] = []
    for pattern in ("*.png", "*/*.png", "*/*/*.png"):
        for path in sorted(directory.glob(pattern)):
            if path.parent == plots_dir and path.name.startswith("experiment_"):
                continue
            names = [path.stem, *(parent.name for parent in path.relative_to(directory).parents if parent.name)]
            if any(key in _normalized_name(name) for name in names):
                found.append(path)
    return found[:MAX_EXPERIMENT_IMAGES]


def _experiments_section(run: RunData, plots_dir: Path) -> tuple[str, str, str] | None:
    frame = run.experiments
    if frame is None or frame.empty:
        return None
    runs = run.runs.set_index("run_id") if not run.runs.empty else pd.DataFrame()
    parts: list[str] = ['<p class="caption">Further experiments (paper section 7) stored in this directory.</p>']
    for experiment, rows in frame.groupby("experiment", sort=True):
        models = []
        for run_id in rows["run_id"].unique():
            model = runs.loc[run_id, "model_id"] if run_id in runs.index else None
            models.append(str(model) if model else str(run_id))
        conditions = rows["condition"].dropna().astype(str).unique() if "condition" in rows.columns else []
        keys = rows["key"].dropna().astype(str).unique()
        layers = rows["layer"].dropna().unique() if "layer" in rows.columns else []
        facts = [
            ("Runs", _e(", ".join(dict.fromkeys(models)))),
            ("Conditions", _e(_shorten(conditions))),
            ("Values", _e(_shorten(keys))),
            ("Layers", _e(len(layers))),
            ("Rows", _e(len(rows))),
        ]
        parts.append(f"<h3>{_e(experiment)}</h3>{_key_value(facts)}")
        images = _experiment_images(run.directory, str(experiment), plots_dir)
        if not images:
            generated = _experiment_plot(rows, str(experiment), plots_dir)
            images = [generated] if generated is not None else []
        for path in images:
            parts.append(_image(path, f"{experiment}: {path.name}", _e(path.name)))
        if not images:
            parts.append(_note("No plot for this experiment (no per-layer values and no PNG file in the directory)."))
    return _section("experiments", "Experiments", "".join(parts))


def _shorten(values: Sequence[Any], limit: int = 12) -> str:
    values = [str(value) for value in values]
    if not values:
        return "\u2013"
    if len(values) <= limit:
        return ", ".join(values)
    return ", ".join(values[:limit]) + f", \u2026 ({len(values)} in all)"


def _experiment_plot(rows: pd.DataFrame, experiment: str, plots_dir: Path) -> Path | None:
    """A generic plot of an experiment's per-layer values: value per layer, one line per condition."""
    data = rows.dropna(subset=["layer"]) if "layer" in rows.columns else rows.iloc[0:0]
    if data.empty:
        return None
    keys = list(dict.fromkeys(data["key"].astype(str)))[:6]
    data = data[data["key"].astype(str).isin(keys)].copy()
    data["condition"] = data["condition"].fillna("all") if "condition" in data.columns else "all"
    if data["run_id"].nunique() > 1:
        data["condition"] = data["run_id"].str[:8] + " " + data["condition"].astype(str)
    try:
        return plots.plot_lines_by_condition(
            data, "layer", "value", "condition", plots_dir / f"experiment_{_normalized_name(experiment)}.png",
            facet="key" if len(keys) > 1 else None, title=experiment, xlabel="layer",
            ylabel=keys[0] if len(keys) == 1 else "value", hue_label="condition",
        )
    except LayerscopeError as error:
        logger.warning("experiment %s: no plot: %s", experiment, error)
        return None


# ---------------------------------------------------------------------------------------- public


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

    sections = [
        _summary_section(run, summary),
        _per_layer_section(run, summary),
        _plots_section(run, summary, images),
        _selection_section(summary),
        _correlation_section(run, summary, images),
        _examples_section(run, summary, examples, max_examples),
    ]
    experiments = _experiments_section(run, target_plots)
    if experiments is not None:
        sections.append(experiments)
    sections.append(_config_section(run))
    subheading_parts = [f"revision {run.revision}" if run.revision else None, f"texts: {run.dataset}" if run.dataset else None]
    status = run.info.get("status")
    if status and status != "finished":
        subheading_parts.append(f"status: {status}")
    subheading_parts.append(f"run {run.run_id}")
    subheading = _e(" \u00b7 ".join(part for part in subheading_parts if part))
    page = _render_page(f"layerscope report: {_run_title(run)}", f"layerscope report: {run.model}", subheading,
                        sections)
    target = Path(out) if out is not None else run.directory / REPORT_FILENAME
    atomic_write_text(target, page)
    logger.info("report written to %s", target)
    return target


def _run_label(run: RunData, vary_dataset: bool) -> str:
    label = run.model.rsplit("/", 1)[-1]
    if run.revision and run.revision not in ("main", "None"):
        label += f" @ {run.revision}"
    if vary_dataset and run.dataset:
        label += f" \u00b7 {run.dataset}"
    return label


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
        Metric of each run's label-free choice (see :func:`summarize_run`).

    Returns
    -------
    pathlib.Path
        The written HTML file.
    """
    if not directories:
        raise LayerscopeError("compare needs at least one results directory")
    loaded: list[RunData] = []
    for directory in directories:
        if all_runs:
            with ResultsStore(Path(directory), read_only=True) as store:
                ids = store.runs(status="finished")["run_id"].tolist() or store.runs()["run_id"].tolist()
            loaded.extend(load_run(directory, run_id) for run_id in ids)
        else:
            loaded.append(load_run(directory))
    if not loaded:
        raise LayerscopeError("no runs found in the given directories")
    vary_dataset = len({run.dataset for run in loaded}) > 1
    labels: list[str] = []
    for run in loaded:
        label = _run_label(run, vary_dataset)
        if label in labels or sum(_run_label(other, vary_dataset) == label for other in loaded) > 1:
            label += f" [{run.run_id[:6]}]"
        labels.append(label)

    summaries = [summarize_run(run, select_by=select_by) for run in loaded]
    tables = {label: summary.per_layer for label, summary in zip(labels, summaries, strict=True)
              if summary.per_layer is not None}
    target = Path(out)
    html_path = target if target.suffix.lower() in (".html", ".htm") else target / COMPARE_FILENAME
    plots_dir = html_path.parent / PLOTS_DIRNAME

    sections: list[tuple[str, str, str]] = []
    rows = []
    for label, run, summary in zip(labels, loaded, summaries, strict=True):
        last_score = summary.score_at(summary.last_layer)
        best_score = summary.score_at(summary.best_layer)
        chosen_score = summary.score_at(summary.chosen_layer)
        rows.append({
            "run": label, "model": run.model, "revision": run.revision or "", "texts": run.dataset or "",
            "layers": None if summary.last_layer is None else summary.last_layer + 1,
            "best": summary.best_layer, "best_score": best_score,
            "chosen": summary.chosen_layer, "rule": summary.chosen_label or "",
            "chosen_score": chosen_score, "last_score": last_score,
            "run_id": run.run_id[:8],
        })
    overview = pd.DataFrame(rows)
    columns: list[tuple[str, str, Callable[[Any], str]]] = [
        ("run", "run", _e), ("model", "model", _e), ("revision", "revision", _e)]
    if vary_dataset:
        columns.append(("texts", "texts", _e))
    columns += [
        ("layers", "layers", _number_html(0)),
        ("best", "best layer\n(labels)", _number_html(0)), ("best_score", "its score\n(x100)", _number_html(1)),
        ("chosen", "label-free\nlayer", _number_html(0)), ("rule", "rule", _e),
        ("chosen_score", "its score\n(x100)", _number_html(1)),
        ("last_score", "last layer\nscore (x100)", _number_html(1)),
        ("run_id", "run id", _e),
    ]
    body = _table(overview, columns, text_columns=["run", "model", "revision", "texts", "rule", "run_id"])
    sources = "".join(f"<li>{_e(label)}: {_e(run.directory)} (run {_e(run.run_id)})</li>"
                      for label, run in zip(labels, loaded, strict=True))
    body += f"<details><summary>Result directories and run ids</summary><ul>{sources}</ul></details>"
    if not vary_dataset and loaded[0].dataset:
        body += f'<p class="caption">All runs on the texts of {_e(loaded[0].dataset)}.</p>'
    sections.append(_section("runs", "Runs", body))

    plot_body = ""
    if tables:
        try:
            overlay = plots.plot_run_overlay(tables, plots_dir / "compare_overlay.png",
                                             title=f"{len(tables)} runs by depth")
            plot_body += _image(overlay, "metrics of several runs by depth",
                                "One line per run; each metric in its default normalization; depth % makes models of "
                                "different depth comparable.")
        except LayerscopeError as error:
            plot_body += _note(f"No overlay plot: {error}")
    else:
        plot_body += _note("None of the runs has per-layer values.")
    sections.append(_section("overlay", "Metrics and scores by depth", plot_body))

    selection_rows = []
    for label, summary in zip(labels, summaries, strict=True):
        if summary.selection is None:
            continue
        for _, row in summary.selection.iterrows():
            selection_rows.append({"run": label, "rule": row["rule"], "average": row["average"],
                                   "gain_vs_last": row["gain_vs_last"]})
    if selection_rows:
        wide = pd.DataFrame(selection_rows).pivot_table(index="rule", columns="run", values="average", sort=False)
        wide = wide.reset_index()
        columns = [("rule", "rule", _e)] + [(label, label, _number_html(1)) for label in labels if label in wide.columns]
        body = ('<p class="caption">Average task score (x100) of each layer-selection rule, per run '
                "(the paper's Table 2 side by side).</p>")
        body += _table(wide, columns, text_columns=["rule"])
        sections.append(_section("selection", "Layer selection", body))
    else:
        sections.append(_section("selection", "Layer selection", _note("No run has task scores.")))

    page = _render_page(
        f"layerscope comparison of {len(loaded)} runs",
        f"layerscope comparison: {len(loaded)} runs",
        _e(", ".join(labels)),
        sections,
    )
    atomic_write_text(html_path, page)
    logger.info("comparison written to %s", html_path)
    return html_path
