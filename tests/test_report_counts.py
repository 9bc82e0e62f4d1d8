"""What the report prints is what happened (issue 15, point 6): counts read from the run, the two
label-free answers labelled, layers that vary by task said in words, correlations with n and p."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from layerscope.config import AnalysisConfig, TextConfig
from layerscope.report import build_report, load_run, summarize_run
from layerscope.store import ResultsStore
from test_report import TASKS, TableParser, synthetic_frames

N_TEXTS = 1441


def per_task_metrics(metrics: pd.DataFrame) -> pd.DataFrame:
    """The metrics on all texts ("all") and on each task's own texts, whose DiME minimum moves by task."""
    frames = [metrics.assign(dataset="all", n_used=N_TEXTS, n_skipped=0)]
    layers = metrics["layer"].max()
    for index, task in enumerate(TASKS):
        own = metrics.assign(dataset=task, n_used=100 + index, n_skipped=0)
        center = 0.15 + 0.2 * index  # DiME's minimum at a different depth on each task's texts
        dime = own["metric"] == "dime"
        own.loc[dime, "value"] = 0.4 + 0.3 * (own.loc[dime, "layer"] / layers - center) ** 2
        views = own["metric"] == "dime"
        own.loc[views, "n_used"], own.loc[views, "n_skipped"] = 16, 84 + index  # views on a subset
        frames.append(own)
    return pd.concat(frames, ignore_index=True)


@pytest.fixture
def analysis_dir(tmp_path: Path) -> Path:
    """An analyze-like run: per-task text sets plus all texts, asked for 200 texts of an extra source."""
    directory = tmp_path / "analysis"
    frames = synthetic_frames()
    config = AnalysisConfig(tasks=tuple(TASKS), metrics=("prompt_entropy", "dataset_entropy", "dime", "curvature"),
                            dataset=TextConfig("rotten-tomatoes", limit=200), select_by="dime")
    with ResultsStore.in_directory(directory) as store:
        store.write_run(config.to_dict(), metrics=per_task_metrics(frames["metrics"]), scores=frames["scores"],
                        prompt_values=frames["prompt_values"], model_id="org/model", revision="main",
                        data_source="tasks: " + ", ".join(TASKS), skipped={"empty_texts": 3})
    return directory


def rows_of(page: str, section: str) -> list[list[str]]:
    parser = TableParser(section)
    parser.feed(page)
    return [cells for _, cells in parser.rows]


def test_counts_come_from_the_run_not_the_request(analysis_dir: Path) -> None:
    page = build_report(analysis_dir).read_text("utf-8")
    facts = {cells[0]: cells[1] for cells in rows_of(page, "configuration") if len(cells) == 2}
    assert facts["Texts used"] == f"{N_TEXTS:,} (+ 3 empty, skipped)"  # the run's rows, not the limit of 200
    # the request is shown as such, under its own heading: a limit of the extra source, not the run's count
    assert facts["Text limit (extra text source)"] == "200"
    assert page.index("Texts used") < page.index("Configuration (as requested)") < page.index("Text limit")
    assert f"Measured on {N_TEXTS:,} texts" in page
    # texts per metric and text set: every set, with the counts its rows recorded
    table = {cells[0]: cells for cells in rows_of(page, "configuration") if cells and cells[0] in ("all texts", *TASKS)}
    assert list(table) == ["all texts", *sorted(TASKS)]
    assert table["all texts"][1] == f"{N_TEXTS:,}"
    headers = TableParser("configuration")
    headers.feed(page)
    dime = headers.headers.index("DiME") - headers.headers.index("text set")
    for index, task in enumerate(TASKS):
        assert table[task][1] == str(100 + index)
        assert table[task][dime] == "16"  # DiME saw the texts given views, not the whole set


def test_two_min_dime_answers_are_labelled(analysis_dir: Path) -> None:
    page = build_report(analysis_dir).read_text("utf-8")
    summary = summarize_run(load_run(analysis_dir))
    selection = rows_of(page, "selection")
    rules = {cells[0]: cells for cells in selection if len(cells) > 1}
    # the card's answer: one layer for every task, from DiME on all texts
    headline = rules["min DiME on all texts"]
    assert headline[1] == str(summary.chosen_layer)
    assert headline[3] == f"{summary.score_at(summary.chosen_layer):.1f}"
    # Table 2's answer: each task's own layer, said in words
    assert rules["min dime"][1] == "varies by task"
    assert "<NA>" not in page and "&lt;NA&gt;" not in page
    groups = [cells[0] for cells in selection if len(cells) == 1]
    assert any("per task" in group for group in groups)
    assert "min DiME on all texts" in page.split('id="summary"')[1].split("</section>")[0]  # the card says which
    assert "min DiME per task" in page  # and the caption names the other one


def test_correlation_rows_carry_n_and_p(analysis_dir: Path) -> None:
    page = build_report(analysis_dir).read_text("utf-8")
    parser = TableParser("correlations")
    parser.feed(page)
    body = [cells for _, cells in parser.rows if cells and cells[0] in ("Prompt entropy", "Dataset entropy", "DiME",
                                                                         "Curvature")]
    assert len(body) == 4
    assert parser.headers[:3] == ["", "each task, mean over tasks [95% interval]", "task-averaged curve (permutation p)"]
    assert parser.headers[3:] == ["metric", "normalization", "Spearman \u03c1", "Kendall \u03c4", "dCor", "ntasks",
                                  "nlayers", "Spearman \u03c1", "Kendall \u03c4", "dCor", "nlayers"]
    for cells in body:
        assert (cells[5], cells[6], cells[10]) == (str(len(TASKS)), "13", "13")  # n: tasks, layers
        assert all("[" in cell and "]" in cell for cell in cells[2:5])  # interval over tasks
        assert all("p = " in cell or "p < 0.001" in cell for cell in cells[7:10])  # permutation p-value
    summary = summarize_run(load_run(analysis_dir))
    assert {"p_value", "ci_low", "ci_high"} <= set(summary.correlations.columns)
    assert summary.correlations["p_value"].between(0, 1).all()
    assert np.isfinite(summary.correlations.loc[summary.correlations["scope"] == "per_task", "ci_low"]).all()
