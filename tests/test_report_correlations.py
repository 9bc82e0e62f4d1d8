"""How sure the report's correlations are: permutation p-values and intervals over tasks, checked
against a brute-force loop over layer orders with :func:`layerscope.analysis.correlation.correlation`."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from layerscope.analysis import correlate
from layerscope.analysis.correlation import correlation, correlation_uncertainty

METHODS = ["spearman", "kendall", "dcor"]


def small_run(n_layers: int, n_tasks: int = 3, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One metric on one text set and a few tasks whose scores follow it loosely."""
    rng = np.random.default_rng(seed)
    layers = np.arange(n_layers)
    metric = np.sin(layers / max(1, n_layers - 1) * 3.0) + 0.3 * rng.standard_normal(n_layers)
    metrics = pd.DataFrame({"layer": layers, "metric": "dime", "normalization": "maxEntropy", "value": metric})
    scores = pd.DataFrame([
        {"layer": int(layer), "task": f"task{task}", "task_type": "STS",
         "main_score": 0.5 - 0.1 * metric[layer] + 0.08 * rng.standard_normal()}
        for task in range(n_tasks) for layer in layers
    ])
    return metrics, scores


def brute_force_p(pairs: list[tuple[np.ndarray, np.ndarray]], method: str) -> float:
    """Exact p-value of the mean correlation over ``pairs``, every layer order tried, one shared order."""
    observed = np.mean([correlation(x, y, method)[0] for x, y in pairs])
    null = [np.mean([correlation(x[list(order)], y, method)[0] for x, y in pairs])
            for order in itertools.permutations(range(len(pairs[0][0])))]
    null = np.asarray(null)
    hits = null >= observed - 1e-12 if method == "dcor" else np.abs(null) >= abs(observed) - 1e-12
    return float(hits.mean())


@pytest.mark.parametrize("method", METHODS)
def test_exact_p_values_match_a_brute_force_loop(method: str) -> None:
    metrics, scores = small_run(n_layers=6)  # 720 orders: enumerated
    correlations = correlate(metrics, scores, [method])
    result = correlation_uncertainty(correlations, metrics, scores).set_index("scope")
    x = metrics["value"].to_numpy()
    per_task = [(x, scores[scores["task"] == task].sort_values("layer")["main_score"].to_numpy())
                for task in sorted(scores["task"].unique())]
    curve = [(x, scores.groupby("layer")["main_score"].mean().to_numpy())]
    assert result.loc["per_task", "p_value"] == pytest.approx(brute_force_p(per_task, method))
    assert result.loc["average_curve", "p_value"] == pytest.approx(brute_force_p(curve, method))
    assert bool(result.loc["per_task", "exact"]) and result.loc["per_task", "n_permutations"] == 720
    # the values and the counts are correlate()'s own
    for scope in ("per_task", "average_curve"):
        row = correlations.set_index("scope").loc[scope]
        assert result.loc[scope, "value"] == pytest.approx(row["value"])
        assert result.loc[scope, "n_layers"] == 6 and result.loc[scope, "n_tasks"] == row["n_tasks"]


def test_interval_over_tasks_is_the_t_interval_of_the_task_values() -> None:
    metrics, scores = small_run(n_layers=9, n_tasks=4)
    correlations = correlate(metrics, scores, ["spearman"], per_task=True)
    values = correlations.loc[correlations["scope"] == "task", "value"].to_numpy()
    low, high = stats.t.interval(0.9, len(values) - 1, loc=values.mean(), scale=stats.sem(values))
    result = correlation_uncertainty(correlations, metrics, scores, confidence=0.9).set_index("scope")
    assert result.loc["per_task", "ci_low"] == pytest.approx(max(-1.0, low))
    assert result.loc["per_task", "ci_high"] == pytest.approx(min(1.0, high))
    assert np.isnan(result.loc["average_curve", "ci_low"])  # one curve: nothing to take an interval over
    assert "task" not in result.index  # one row per (metric, method, scope) the report shows


def test_random_permutations_are_seeded_and_find_a_real_relation() -> None:
    layers = np.arange(20)
    metrics = pd.DataFrame({"layer": layers, "metric": "dime", "normalization": "maxEntropy",
                            "value": layers.astype(float)})
    scores = pd.DataFrame([{"layer": int(layer), "task": task, "main_score": 0.1 * layer + shift}
                           for task, shift in (("a", 0.0), ("b", 0.5)) for layer in layers])
    correlations = correlate(metrics, scores, ["spearman"])
    first = correlation_uncertainty(correlations, metrics, scores, n_permutations=500, seed=3)
    again = correlation_uncertainty(correlations, metrics, scores, n_permutations=500, seed=3)
    pd.testing.assert_frame_equal(first, again, check_exact=True)  # a rerun in this process: exact
    assert not first["exact"].any() and (first["n_permutations"] == 500).all()
    # a perfect monotone relation: no shuffled order of 20 layers comes close, p is its smallest value
    np.testing.assert_allclose(first["p_value"], 1 / 501)


def test_undefined_correlations_get_no_p_value() -> None:
    metrics, scores = small_run(n_layers=8)
    metrics["value"] = 1.0  # a constant metric: every correlation undefined
    correlations = correlate(metrics, scores, ["spearman", "dcor"])
    result = correlation_uncertainty(correlations, metrics, scores)
    assert result["value"].isna().all() and result["p_value"].isna().all() and result["ci_low"].isna().all()
