"""Scores by task type beside the average (issue 22 item 3): per-layer table, Table 2, report, ``analyze``.

Every per-type number is checked against a float64 mean written here from the raw scores frame (the mean
of ``main_score`` over each MTEB type's tasks at a layer, x 100); Table 2's per-type values against the
raw scores at the layers each rule picks; the report's tables are parsed back; the real ``layerscope
analyze`` prints the type table and Table 2's per-type columns for a tiny model on three task types.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from layerscope.analysis import per_layer_table, select_layers, selection_table, summarize
from layerscope.analysis.by_type import (
    BEST_PER_TYPE_RULE,
    best_layers_by_type,
    scores_by_type_table,
    selection_text_table,
    type_label,
)
from layerscope.report import build_report
from layerscope.store import ResultsStore
from test_report import TableParser

LAST = 12
#: Task -> (MTEB type, depth fraction where its score peaks): each type peaks at its own depth.
TASKS = {
    "news": ("Classification", 0.25), "reviews": ("Classification", 0.35),
    "topics": ("Clustering", 0.5), "nli": ("PairClassification", 0.6), "answers": ("Reranking", 0.7),
    "boolq": ("Retrieval", 0.75), "fiqa": ("Retrieval", 0.85), "lee": ("STS", 0.95),
}
# Values shown with one decimal in the tables: equal to the reference up to that rounding.
SHOWN = 0.05 + 1e-9


def raw_scores(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for index, (task, (task_type, peak)) in enumerate(TASKS.items()):
        for layer in range(LAST + 1):
            depth = layer / LAST
            value = 0.3 + 0.02 * index + 0.4 * np.exp(-((depth - peak) ** 2) / 0.02) + 0.005 * rng.standard_normal()
            rows.append({"layer": layer, "depth_pct": 100.0 * depth, "task": task, "task_type": task_type,
                         "main_score": float(value)})
    return pd.DataFrame(rows)


def raw_metrics(seed: int = 1) -> pd.DataFrame:
    """DiME on each task's own texts (a random profile: each task's layer differs) and on all texts."""
    rng = np.random.default_rng(seed)
    rows = [{"layer": layer, "metric": "dime", "normalization": "maxEntropy", "value": float(rng.uniform()),
             "dataset": dataset} for dataset in [*TASKS, "all"] for layer in range(LAST + 1)]
    return pd.DataFrame(rows)


def reference_by_type(scores: pd.DataFrame) -> pd.DataFrame:
    """Layer x type: the float64 mean of main_score over the type's tasks, x 100."""
    values = scores.assign(main_score=scores["main_score"].astype(np.float64))
    return 100.0 * values.groupby(["layer", "task_type"])["main_score"].mean().unstack("task_type")


def test_per_layer_columns_are_the_mean_of_each_types_tasks() -> None:
    scores = raw_scores()
    table = per_layer_table(None, scores)
    expected = reference_by_type(scores)
    assert [column for column in table.columns if column.startswith("score_")] == [
        f"score_{task_type}" for task_type in sorted(expected.columns)]
    for task_type in expected.columns:
        # rtol: the same few float64 numbers summed in another order (a grid row vs a group)
        np.testing.assert_allclose(table[f"score_{task_type}"].to_numpy(), expected[task_type].to_numpy(), rtol=1e-12)
    assert table.attrs["task_type_counts"] == {"Classification": 2, "Clustering": 1, "PairClassification": 1,
                                               "Reranking": 1, "Retrieval": 2, "STS": 1}
    best = best_layers_by_type(table)
    assert best == {task_type: int(expected[task_type].idxmax()) for task_type in expected.columns}
    assert len(set(best.values())) >= 4  # the data are built so that types prefer different layers
    # the same grid as the average: a layer lacking one task is left out of every column alike
    holed = scores[~((scores["layer"] == 4) & (scores["task"] == "lee"))]
    table = per_layer_table(None, holed).set_index("layer")
    assert table.loc[4].filter(like="score").isna().all() and np.isnan(table.loc[4, "avg_score"])
    complete = reference_by_type(holed[holed["layer"] != 4])
    np.testing.assert_allclose(table.drop(index=4)["score_Retrieval"].to_numpy(), complete["Retrieval"].to_numpy(),
                               rtol=1e-12)  # as above
    # scores without a type column (hand-made tables) keep the average only
    assert not any(column.startswith("score_") for column in per_layer_table(None, scores.drop(columns="task_type")))


def test_table_2_per_type_values_are_the_scores_at_the_layers_each_rule_picks() -> None:
    scores, metrics = raw_scores(), raw_metrics()
    table = selection_table(metrics, scores).set_index("rule")
    picks = select_layers(metrics, scores)
    raw = scores.set_index(["layer", "task"])["main_score"].astype(np.float64)
    types = sorted({task_type for task_type, _ in TASKS.values()})
    for rule, chosen in picks.groupby("rule"):
        for task_type in types:
            rows = chosen[chosen["task_type"] == task_type]
            expected = 100.0 * np.mean([raw[(layer, task)] for layer, task in zip(rows["layer"], rows["task"],
                                                                                    strict=True)])
            assert table.loc[rule, task_type] == pytest.approx(expected, rel=1e-12), (rule, task_type)  # as above
    # single-layer rules: each type's mean at that layer; min dime: layers differ between tasks
    by_type = reference_by_type(scores)
    last = table.loc["last layer"]
    np.testing.assert_allclose(last[types].to_numpy(dtype=float), by_type.loc[LAST, types].to_numpy(), rtol=1e-12)
    assert pd.isna(table.loc["min dime", "layer"])
    # the oracle per type: every type at its own best layer, so at least the best single layer on every type
    oracle = table.loc[BEST_PER_TYPE_RULE]
    np.testing.assert_allclose(oracle[types].to_numpy(dtype=float), by_type[types].max().to_numpy(), rtol=1e-12)
    assert (oracle[types] >= table.loc["best layer (labels)", types]).all()
    per_type_picks = picks[picks["rule"] == BEST_PER_TYPE_RULE].groupby("task_type")["layer"].unique()
    assert {kind: list(layers) for kind, layers in per_type_picks.items()} == {
        kind: [int(by_type[kind].idxmax())] for kind in types}
    assert pd.isna(oracle["layer"]) and oracle["kind"] == "oracle"
    # one task type: no such row (it would be the best layer itself)
    single = scores[scores["task_type"] == "Retrieval"]
    assert BEST_PER_TYPE_RULE not in set(selection_table(None, single)["rule"])


def test_analyze_text_tables_fit_120_columns_with_six_types(capsys) -> None:
    from layerscope.cli import print_text_table

    scores, metrics = raw_scores(), raw_metrics()
    summary = summarize(metrics, scores)
    expected = reference_by_type(scores)
    types = sorted(expected.columns)
    marks = {summary.best_layer: "<- best (labels)", LAST: "<- last layer (no labels)"}
    scores_table = scores_by_type_table(summary, marks)
    assert scores_table.columns == ("layer", "depth %", "avg", "clf", "clu", "pair", "rr", "retr", "sts", "")
    for row in scores_table.rows:
        layer = int(row[0])
        for cell, task_type in zip(row[3:9], types, strict=True):
            assert abs(float(cell.rstrip("*")) - expected.loc[layer, task_type]) <= SHOWN
            assert cell.endswith("*") == (layer == int(expected[task_type].idxmax()))
    text_2 = selection_text_table(summary)
    best = {kind: int(expected[kind].idxmax()) for kind in types}
    assert text_2.notes == ("best layer per type (labels): " + ", ".join(
        f"{type_label(kind)} {layer} ({100 * layer / LAST:.0f}%)" for kind, layer in best.items()),)
    print_text_table(scores_table)
    print_text_table(text_2)
    printed = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in printed) <= 120, max(printed, key=len)
    assert ("clf = Classification, clu = Clustering, pair = PairClassification, rr = Reranking, retr = Retrieval, "
            "sts = STS") in printed
    assert "tasks per type: clf 2, clu 1, pair 1, rr 1, retr 2, sts 1" in printed


def test_report_shows_the_per_type_columns_and_the_best_layer_per_type(tmp_path: Path) -> None:
    scores, metrics = raw_scores(), raw_metrics()
    with ResultsStore.in_directory(tmp_path) as store:
        store.write_run({"model": "tiny", "tasks": list(TASKS)}, metrics=metrics, scores=scores, model_id="tiny",
                        data_source="tasks")
    page = build_report(tmp_path).read_text("utf-8")
    expected = reference_by_type(scores)
    types = sorted(expected.columns)
    layers = TableParser("layers")
    layers.feed(page)
    body = [cells for _, cells in layers.rows if cells and cells[0].isdigit()]
    assert [int(cells[0]) for cells in body] == list(range(LAST + 1))
    for task_type in types:
        column = layers.headers.index(f"{task_type}(x100)")  # the header's two lines, joined by the parser
        assert [cells[column] for cells in body] == [f"{value:.1f}" for value in expected[task_type]]
    best = {kind: int(expected[kind].idxmax()) for kind in types}
    assert "best layer per type: " + ", ".join(f"{kind} {layer} ({100 * layer / LAST:.0f}%)"
                                               for kind, layer in best.items()) in page
    selection = TableParser("selection")
    selection.feed(page)
    rows = {cells[0]: cells for _, cells in selection.rows if len(cells) > 1}
    headers = selection.headers
    oracle = rows[BEST_PER_TYPE_RULE]
    assert oracle[headers.index("layer")] == "by type: " + ", ".join(f"{type_label(kind)} {layer}"
                                                                       for kind, layer in best.items())
    last = rows["last layer"]
    for task_type in types:
        assert oracle[headers.index(task_type)] == f"{expected[task_type].max():.1f}"
        assert last[headers.index(task_type)] == f"{expected.loc[LAST, task_type]:.1f}"
    assert page.count('src="data:image/png;base64,') >= 2  # the per-type lines are drawn in the scores plot


def test_analyze_prints_the_type_columns(tmp_path: Path) -> None:
    """The real command on a tiny model and three task types (classification, clustering, STS)."""
    pytest.importorskip("mteb")
    from cli_helpers import cli_runs
    from layerscope.models.tiny import tiny_model
    from layerscope.store.runs import load_run
    from test_select import _similarity, _topics

    model = tiny_model("llama", num_layers=3)
    model.model.save_pretrained(str(tmp_path / "model"))
    model.tokenizer.save_pretrained(str(tmp_path / "model"))
    _topics().to_csv(tmp_path / "topics.csv", index=False)
    _similarity().to_csv(tmp_path / "similarity.csv", index=False)
    out = tmp_path / "run"
    [(code, errors, printed)] = cli_runs(
        ["analyze", "--model", str(tmp_path / "model"), "--tasks", f"{tmp_path / 'topics.csv'},{tmp_path / 'similarity.csv'}",
         "--split-column", "split", "--clustering", "--metrics", "dime", "--select-by", "dime", "--n-views", "2",
         "--view-texts", "4", "--lidar-texts", "2", "--no-cache", "--eval-workers", "1", "--out", str(out)])
    assert code == 0, errors
    expected = reference_by_type(load_run(out).scores)
    assert sorted(expected.columns) == ["Classification", "Clustering", "STS"]
    lines = printed.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Task scores by type"))
    header = [cell.strip() for cell in lines[start + 2].split("\u2503")[1:-1]]
    assert header[:6] == ["layer", "depth %", "avg", "clf", "clu", "sts"]
    rows = [[cell.strip() for cell in line.split("\u2502")[1:-1]] for line in lines[start + 4: start + 8]]
    assert [int(row[0]) for row in rows] == [0, 1, 2, 3]
    for row in rows:
        for cell, task_type in zip(row[3:6], ["Classification", "Clustering", "STS"], strict=True):
            assert abs(float(cell.rstrip("*")) - expected.loc[int(row[0]), task_type]) <= SHOWN
    assert "clf = Classification, clu = Clustering, sts = STS" in lines
    best = ", ".join(f"{type_label(kind)} {int(expected[kind].idxmax())} ({100 * int(expected[kind].idxmax()) / 3:.0f}%)"
                     for kind in sorted(expected.columns))
    assert f"best layer per type (labels): {best}" in lines
    table_2 = next(i for i, line in enumerate(lines) if line.startswith("Layer choice per task (Table 2"))
    header = [cell.strip() for cell in lines[table_2 + 2].split("\u2503")[1:-1]]
    assert header == ["rule", "layer", "depth %", "average", "vs last", "clf", "clu", "sts"]
    last_row = next(line for line in lines[table_2:] if re.match(r"\u2502 last layer ", line))
    cells = [cell.strip() for cell in last_row.split("\u2502")[1:-1]]
    for cell, task_type in zip(cells[5:], ["Classification", "Clustering", "STS"], strict=True):
        assert abs(float(cell) - expected.loc[3, task_type]) <= SHOWN


def test_compare_names_each_runs_best_layer_per_type(tmp_path: Path) -> None:
    from layerscope.report import compare_runs

    expected = {}
    for name, seed in (("first", 0), ("second", 3)):
        scores = raw_scores(seed)
        with ResultsStore.in_directory(tmp_path / name) as store:
            store.write_run({"model": name, "tasks": list(TASKS)}, scores=scores, model_id=f"org/{name}")
        by_type = reference_by_type(scores)
        expected[name] = ", ".join(f"{type_label(kind)} {int(by_type[kind].idxmax())} "
                                   f"({100 * int(by_type[kind].idxmax()) / LAST:.0f}%)" for kind in sorted(by_type))
    page = compare_runs([tmp_path / "first", tmp_path / "second"], tmp_path / "cmp").read_text("utf-8")
    runs = TableParser("runs")
    runs.feed(page)
    column = runs.headers.index("best layerper task type")
    assert {cells[0]: cells[column] for _, cells in runs.rows if cells and cells[0] in expected} == expected
