"""Analysis on hand-built tables: correlations, label-free selection, depth baselines, coverage."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from layerscope.analysis import (
    correlate,
    correlation,
    depth_layer,
    format_table,
    metric_directions,
    per_layer_table,
    score_grid,
    select_layer,
    select_layers,
    selection_table,
)
from layerscope.errors import LayerscopeError


def make_scores(last_layer: int = 24, tasks: dict[str, str] | None = None) -> pd.DataFrame:
    """Scores that peak at different depths per task (a bump around 60% for 'a', 40% for 'b')."""
    tasks = tasks or {"a": "STS", "b": "Classification", "c": "Classification"}
    peaks = {"a": 0.6, "b": 0.4, "c": 0.8}
    rows = []
    for task, task_type in tasks.items():
        for layer in range(last_layer + 1):
            depth = layer / last_layer
            rows.append(
                {
                    "layer": layer,
                    "depth_pct": 100.0 * depth,
                    "task": task,
                    "task_type": task_type,
                    "main_score": 0.5 - (depth - peaks.get(task, 0.5)) ** 2,
                }
            )
    return pd.DataFrame(rows)


def long_metric(profile: dict[int, float], metric: str, dataset: str | None = None, norm: str = "maxEntropy"):
    frame = pd.DataFrame(
        {"layer": list(profile), "metric": metric, "normalization": norm, "value": list(profile.values())}
    )
    if dataset is not None:
        frame["dataset"] = dataset
    return frame


def test_anti_correlated_metric_gives_minus_one() -> None:
    scores = make_scores()
    average = scores.groupby("layer")["main_score"].mean()
    metrics = long_metric({layer: -3.0 * value + 1.0 for layer, value in average.items()}, "dime")
    table = correlate(metrics, scores)
    curve = table[table["scope"] == "average_curve"].set_index("method")["value"]
    assert curve["spearman"] == pytest.approx(-1.0)
    assert curve["kendall"] == pytest.approx(-1.0)
    assert curve["dcor"] == pytest.approx(1.0)
    per_task = table[table["scope"] == "per_task"].set_index("method")
    assert per_task.loc["spearman", "n_tasks"] == 3
    assert -1.0 <= per_task.loc["spearman", "value"] < -0.2  # the shared curve vs each task's own bump
    assert set(table["reason"]) == {""}


def test_per_task_metric_matched_to_its_task() -> None:
    scores = make_scores()
    pieces = []
    for task in ("a", "b", "c"):
        own = scores[scores["task"] == task].set_index("layer")["main_score"]
        pieces.append(
            long_metric({layer: -value for layer, value in own.items()}, "dime", dataset=f"{task}-texts")
        )
    metrics = pd.concat(pieces)
    mapping = {task: f"{task}-texts" for task in ("a", "b", "c")}
    table = correlate(metrics, scores, method="spearman", task_to_dataset=mapping, per_task=True)
    per_task = table[table["scope"] == "task"]
    assert per_task["value"].to_numpy() == pytest.approx([-1.0, -1.0, -1.0])
    assert per_task["dataset"].tolist() == ["a-texts", "b-texts", "c-texts"]
    # without the mapping no task finds its texts: NaN with a reason, never a crash
    unmatched = correlate(metrics, scores, method="spearman")
    row = unmatched[unmatched["scope"] == "per_task"].iloc[0]
    assert (
        np.isnan(row["value"]) and row["reason"] == "no metric on this task's texts" and row["n_tasks"] == 0
    )


def test_constant_series_are_nan_with_reason() -> None:
    scores = make_scores(last_layer=6)
    metrics = long_metric(dict.fromkeys(range(7), 0.3), "dime")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ConstantInputWarning leaks out
        table = correlate(metrics, scores, method=("spearman", "kendall"))
    assert table["value"].isna().all()
    assert set(table["reason"]) == {"constant metric"}
    assert correlation([1, 2, 3], [4, 4, 4], "spearman")[1] == "constant score"
    assert correlation([1, 2], [3, 4], "kendall")[1] == "fewer than 3 layers"
    value, reason = correlation([1, 2, np.nan, 4], [1, 2, 3, 5], "spearman")
    assert value == pytest.approx(1.0) and reason == ""
    with pytest.raises(LayerscopeError, match="unknown correlation method 'pearsn'"):
        correlate(metrics, scores, method="pearsn")


def test_select_layer_picks_the_argmin_or_argmax() -> None:
    profile = {0: 0.9, 1: 0.5, 2: 0.2, 3: 0.4, 4: 0.2, 5: np.nan}
    metrics = long_metric(profile, "dime")
    assert select_layer(metrics, by="dime") == 2  # lower is better; tie -> shallower; NaN ignored
    assert select_layer(metrics, by="dime", higher_is_better=True) == 0
    assert select_layer(metrics, by="dime", directions={"dime": True}) == 0
    assert select_layer(metrics, by="dime", layers=[3, 4, 5]) == 4
    with pytest.raises(LayerscopeError, match=r"unknown metric 'dme' \(did you mean 'dime'\?\)"):
        select_layer(metrics, by="dme")
    two = pd.concat([long_metric(profile, "dime", "x"), long_metric({0: 0.0, 1: 1.0}, "dime", "y")])
    with pytest.raises(LayerscopeError, match="several datasets"):
        select_layer(two, by="dime")
    assert select_layer(two, by="dime", dataset="y") == 0
    # the authors' names resolve to ours and back
    authors = long_metric({0: 1.0, 1: 0.1, 2: 0.5}, "entropy_dataset")
    assert select_layer(authors, by="dataset_entropy") == 1


def test_select_layer_default_normalization() -> None:
    metrics = pd.concat(
        [
            long_metric({0: 0.1, 1: 0.9}, "dataset_entropy", norm="raw"),
            long_metric({0: 0.9, 1: 0.1}, "dataset_entropy", norm="maxEntropy"),
        ]
    )
    assert select_layer(metrics, by="dataset_entropy") == 1  # maxEntropy preferred
    assert select_layer(metrics, by="dataset_entropy", normalization="raw") == 0


def test_metric_directions() -> None:
    found = metric_directions(["dime", "infonce", "entropy_dataset", "prompt_entropy"])
    assert found == {"dime": False, "infonce": False, "entropy_dataset": False, "prompt_entropy": False}
    assert metric_directions(["dime"], {"dime": True}) == {"dime": True}
    with pytest.raises(LayerscopeError, match="no known direction for metric 'mystery'"):
        metric_directions(["mystery"])
    assert metric_directions(["mystery"], strict=False) == {}


@pytest.mark.parametrize(
    ("last_layer", "expected"), [(24, (12, 17)), (30, (15, 21)), (6, (3, 4)), (12, (6, 8)), (5, (3, 4))]
)
def test_depth_baselines(last_layer: int, expected: tuple[int, int]) -> None:
    assert (depth_layer(0.5, last_layer), depth_layer(0.7, last_layer)) == expected


def test_depth_baseline_uses_nearest_scored_layer() -> None:
    assert depth_layer(0.7, 24, [0, 4, 8, 12, 16, 20, 24]) == 16
    assert depth_layer(0.5, 24, [10, 14]) == 14  # equally near: the deeper
    with pytest.raises(LayerscopeError):
        depth_layer(1.5, 24)


@pytest.mark.parametrize("last_layer", [24, 30])
def test_selection_table_rules(last_layer: int) -> None:
    scores = make_scores(last_layer)
    grid = scores.pivot(index="layer", columns="task", values="main_score")
    average = grid.mean(axis=1)
    pieces = []
    for task in ("a", "b"):  # 'c' has no metric on its texts: it falls back to the last layer
        pieces.append(
            long_metric({layer: -value for layer, value in grid[task].items()}, "dime", f"{task}-texts")
        )
    metrics = pd.concat(pieces)
    table = selection_table(metrics, scores, task_to_dataset={"a": "a-texts", "b": "b-texts"}).set_index(
        "rule"
    )

    best = int(average.idxmax())
    assert table.loc["best layer (labels)", "layer"] == best
    assert table.loc["best layer (labels)", "average"] == pytest.approx(100 * average.max())
    assert table.loc["last layer", "layer"] == last_layer
    assert table.loc["last layer", "gain_vs_last"] == 0.0
    assert table.loc["depth 50%", "layer"] == depth_layer(0.5, last_layer)
    assert table.loc["depth 70%", "layer"] == {24: 17, 30: 21}[last_layer]
    oracle = 100 * grid.max(axis=0).mean()
    assert table.loc["best layer per task (labels)", "average"] == pytest.approx(oracle)
    assert pd.isna(table.loc["best layer per task (labels)", "layer"])
    # min dime: oracle layer for a and b, last layer for c
    expected = 100 * np.mean([grid["a"].max(), grid["b"].max(), grid["c"].iloc[-1]])
    assert table.loc["min dime", "average"] == pytest.approx(expected)
    assert table.loc["min dime", "n_fallback"] == 1
    assert table.loc["min dime", "STS"] == pytest.approx(100 * grid["a"].max())
    assert list(table.index[:6]) == [
        "best layer (labels)",
        "best layer per type (labels)",  # two task types here
        "best layer per task (labels)",
        "last layer",
        "depth 50%",
        "depth 70%",
    ]
    assert (table["n_tasks"] == 3).all()
    text = format_table(table.reset_index())
    oracle_line = next(line for line in text.splitlines() if "per task" in line)
    assert "<NA>" not in text and oracle_line.split()[6] == "-"  # the oracle has no single layer

    detail = select_layers(metrics, scores, task_to_dataset={"a": "a-texts", "b": "b-texts"})
    chosen = detail[detail["rule"] == "min dime"].set_index("task")
    assert chosen.loc["a", "layer"] == int(grid["a"].idxmax())
    assert bool(chosen.loc["c", "fallback"]) and chosen.loc["c", "source"] == "last layer (no metric)"


def test_single_source_metric_serves_every_task_and_both_directions() -> None:
    scores = make_scores(12)
    metrics = long_metric({layer: abs(layer - 6) for layer in range(13)}, "dime", dataset="bundled")
    table = selection_table(metrics, scores, both_directions=True).set_index("rule")
    assert table.loc["min dime", "layer"] == 6 and table.loc["min dime", "n_fallback"] == 0
    assert table.loc["max dime", "layer"] == 0  # tie 0 / 12: the shallower
    table = selection_table(metrics.drop(columns="dataset"), scores).set_index("rule")
    assert table.loc["min dime", "layer"] == 6


def test_unknown_direction_metrics_are_skipped_unless_asked_for() -> None:
    scores = make_scores(6)
    metrics = pd.concat([long_metric(dict.fromkeys(range(7), 1.0), "mystery"), long_metric({0: 1.0}, "dime")])
    rules = set(selection_table(metrics, scores)["rule"])
    assert "min dime" in rules and not any("mystery" in rule for rule in rules)
    with pytest.raises(LayerscopeError, match="no known direction"):
        selection_table(metrics, scores, metrics=["mystery"])
    rules = set(selection_table(metrics, scores, metrics=["mystery"], directions={"mystery": True})["rule"])
    assert "max mystery" in rules


def test_incomplete_scores_are_made_complete() -> None:
    scores = make_scores(6)
    scores = scores[~((scores["layer"] == 3) & (scores["task"] == "b"))]  # layer 3 lacks task b
    grid = score_grid(scores)
    assert grid.layers == [0, 1, 2, 4, 5, 6] and grid.tasks == ["a", "b", "c"]
    assert grid.dropped_layers == (3,)
    by_task = score_grid(scores, coverage="tasks")
    assert by_task.layers == list(range(7)) and by_task.tasks == ["a", "c"]
    table = selection_table(None, scores).set_index("rule")
    assert table.loc["depth 50%", "layer"] in (2, 4)  # layer 3 has no complete scores
    # no layer has every task: fall back to the tasks every layer has
    ragged = make_scores(4)
    ragged = ragged[
        ~((ragged["task"] == "a") & (ragged["layer"] == 0))
        & ~((ragged["task"] == "b") & (ragged["layer"] == 1))
        & ~((ragged["task"] == "c") & (ragged["layer"] == 2))
        & ~((ragged["task"] == "a") & (ragged["layer"] == 3))
        & ~((ragged["task"] == "b") & (ragged["layer"] == 4))
    ]
    with pytest.raises(LayerscopeError, match="share no task"):
        score_grid(ragged)
    duplicated = pd.concat([scores, scores.head(1)])
    with pytest.raises(LayerscopeError, match="several rows"):
        score_grid(duplicated)
    with pytest.raises(LayerscopeError, match="lacks column"):
        score_grid(scores.drop(columns="main_score"))


def test_last_layer_comes_from_depth_when_scores_stop_early() -> None:
    scores = make_scores(24)
    scores = scores[scores["layer"] <= 10]  # the run stopped at layer 10 of 24
    table = selection_table(None, scores).set_index("rule")
    assert table.loc["last layer", "layer"] == 10
    assert table.loc["last layer", "depth_pct"] == pytest.approx(100 * 10 / 24)
    assert table.loc["depth 70%", "layer"] == 10  # nearest scored layer to 17


def test_per_layer_table() -> None:
    scores = make_scores(6)
    metrics = pd.concat(
        [
            long_metric({layer: 0.1 * layer for layer in range(7)}, "dime"),
            long_metric({layer: 1.0 for layer in range(7)}, "dime", norm="raw"),
            long_metric({layer: 2.0 for layer in range(1, 7)}, "curvature", norm="raw"),
        ]
    )
    table = per_layer_table(metrics, scores)
    assert list(table.columns) == ["layer", "depth_pct", "curvature", "dime", "avg_score", "score_Classification",
                                   "score_STS", "n_tasks"]
    assert len(table) == 7
    assert table["dime"].tolist() == pytest.approx(
        [0.1 * layer for layer in range(7)]
    )  # maxEntropy by default
    assert np.isnan(table.loc[0, "curvature"])
    expected = 100 * scores.groupby("layer")["main_score"].mean()
    assert table["avg_score"].to_numpy() == pytest.approx(expected.to_numpy())
    assert table["depth_pct"].iloc[-1] == 100.0
    text = format_table(table, decimals=2)
    assert text.splitlines()[1].split()[2] == "-"  # missing curvature at layer 0
    with pytest.raises(LayerscopeError, match="unknown metric"):
        per_layer_table(metrics, scores, metrics=["dimee"])


def test_rank_correlations_match_scipy() -> None:
    from scipy import stats

    rng = np.random.default_rng(0)
    for _ in range(20):
        x = rng.integers(0, 6, size=25).astype(float)  # with ties
        y = x * rng.normal(1.0, 0.5) + rng.normal(size=25)
        assert correlation(x, y, "spearman")[0] == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
        assert correlation(x, y, "kendall")[0] == pytest.approx(stats.kendalltau(x, y).statistic, abs=1e-12)
