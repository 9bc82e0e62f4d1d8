"""Typed configurations, the view plan, and the CLI options built from them (issue 11 points 1 and 3)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from layerscope.config import (
    AnalysisConfig,
    ExtractConfig,
    MetricsConfig,
    ModelConfig,
    TextConfig,
    ViewConfig,
    config_from_dict,
)
from layerscope.errors import LayerscopeError
from layerscope.metrics.views import plan_views, shares

CONFIGS = [
    ModelConfig("minilm-l6", revision="v1", dtype="bfloat16"),
    TextConfig("bbc", column="text", limit=20, seed=3),
    ExtractConfig(pooling="last", final_norm="all", max_length=64, batch_size=8, cache_dtype="float16"),
    ViewConfig(n_views=4, view_texts=8, lidar_texts=2),
    MetricsConfig(texts=TextConfig("bbc"), metrics="dime,lidar", options={"dime": {"seed": 3}}, seed=1),
    AnalysisConfig(tasks="LeeDocumentSTS, BBCNewsClustering", metrics="all", dataset=TextConfig("tweets", limit=5),
                   select_by="infonce"),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda config: type(config).__name__)
def test_round_trip_through_json(config):
    data = json.loads(json.dumps(config.to_dict()))
    again = type(config).from_dict(data)
    assert again == config and again.to_dict() == config.to_dict()
    if config.kind:
        assert config_from_dict(data) == config
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.seed = 5  # type: ignore[misc]


def test_values_are_normalized_once():
    config = CONFIGS[-1]
    assert config.tasks == ("LeeDocumentSTS", "BBCNewsClustering")
    assert config.metrics[0] == "prompt_entropy" and "dime" in config.metrics  # "all" -> registry order
    assert CONFIGS[4].metrics == ("dime", "lidar")
    with pytest.raises(TypeError):
        CONFIGS[4].options["dime"]["seed"] = 4  # nested options are read-only too


@pytest.mark.parametrize(("make", "message"), [
    (lambda: ExtractConfig(pooling="meen"), "unknown pooling 'meen' (did you mean 'mean'?)"),
    (lambda: ExtractConfig(final_norm="last"), "unknown final norm 'last'"),
    (lambda: ExtractConfig(max_length=0), "max_length must be an integer >= 1, got 0"),
    (lambda: ExtractConfig(batch_size="big"), "batch_size (or 'auto') must be an integer >= 1"),
    (lambda: ViewConfig(n_views=1), "n_views must be an integer >= 2, got 1"),
    (lambda: TextConfig("bbc", limit=0), "limit must be an integer >= 1, got 0"),
    (lambda: ModelConfig("smollm2-135m", dtype="fp8"), "unknown dtype 'fp8'"),
    (lambda: ModelConfig("smollm2-135m", device="tpu"), "unknown device 'tpu'"),
    (lambda: MetricsConfig(metrics="dimee"), "did you mean 'dime'"),
    (lambda: AnalysisConfig(metrics="lidar,infonce", select_by="dime"), "--select-by dime is not among the metrics computed"),
    (lambda: AnalysisConfig(select_by="dimee"), "did you mean 'dime'"),
    (lambda: AnalysisConfig(tasks=""), "no tasks selected"),
    (lambda: ExtractConfig.from_dict({"poling": "mean"}), "unknown ExtractConfig option 'poling' (did you mean 'pooling'?)"),
])
def test_bad_values_are_one_line_errors(make, message):
    with pytest.raises(LayerscopeError) as caught:
        make()
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_describe_lists_the_labelled_fields_of_nested_configs():
    rows = dict(CONFIGS[-1].describe())
    assert rows["Model"] == "smollm2-135m" and rows["Pooling"] == "mean" and rows["Tasks"] == "LeeDocumentSTS, BBCNewsClustering"
    assert rows["Text source"] == "tweets" and rows["Label-free choice by"] == "infonce"
    assert "Revision" not in rows  # unset fields are left out


def test_stored_dicts_of_other_kinds_are_not_guessed():
    assert config_from_dict({"experiment": "bimodality", "model_id": "x"}) is None
    assert config_from_dict({"kind": "unknown-kind"}) is None


# ------------------------------------------------------------------------------------------ view plan


def test_view_plan_spreads_the_runs_budget_over_the_sets_and_nests_lidar_inside_pairs():
    sets = {"a": list(range(0, 10)), "b": list(range(5, 30))}
    plan = plan_views(sets, n_views=16, view_texts=8, lidar_texts=4, needs_pairs=True, needs_lidar=True, seed=0,
                      union="all")
    # the budget is the run's, spread by size: 8 pair texts over sets of 10 and 25 texts are 2 + 2 minimums
    # and 4 more in proportion to 8 : 23 (1.03 and 2.97: 1 and 2, the larger remainder to b): 3 and 5;
    # the 4 LiDAR texts are the minimums, 2 each
    assert shares([10, 25], 8) == [3, 5] and shares([10, 25], 4) == [2, 2]
    for name, pairs, lidar in (("a", 3, 2), ("b", 5, 2)):
        part = plan.sets[name]
        np.testing.assert_array_equal(part.rows, np.unique(sets[name]))  # row indices here: integers, exact
        assert len(part.pair_rows) == pairs and len(part.lidar_rows) == lidar
        assert set(part.lidar_rows) <= set(part.pair_rows) <= set(part.rows)
        # the subsets are prefixes of one seeded permutation of the set
        order = np.random.default_rng(0).permutation(len(part.rows))
        np.testing.assert_array_equal(part.pair_rows, np.sort(part.rows[order[:pairs]]))
    union = plan.sets["all"]
    np.testing.assert_array_equal(union.rows, np.arange(30))
    np.testing.assert_array_equal(union.pair_rows, np.union1d(plan.sets["a"].pair_rows, plan.sets["b"].pair_rows))
    assert len(union.pair_rows) <= 8  # never more than the budget (fewer where the sets' picks overlap)
    np.testing.assert_array_equal(plan.lidar_rows, union.lidar_rows)
    np.testing.assert_array_equal(np.sort(plan.pair_order), union.pair_rows)
    assert plan.n_encoded == 16 * len(plan.lidar_rows) + 2 * len(plan.pair_only_rows)
    # positions index the stacked view tensors
    assert [int(plan.pair_order[i]) for i in plan.pair_positions("a")] == plan.sets["a"].pair_rows.tolist()
    assert [int(plan.lidar_rows[i]) for i in plan.lidar_positions("b")] == plan.sets["b"].lidar_rows.tolist()


@pytest.mark.parametrize("sizes", [[10, 25], [1, 3, 500, 40, 2], [7] * 22, [100], [3, 0, 9]])
@pytest.mark.parametrize("budget", [2, 16, 128, 10_000])
def test_shares_are_proportional_with_a_minimum_and_add_up_to_the_budget(sizes, budget):
    got = np.array(shares(sizes, budget))
    size = np.array(sizes)
    floor = np.minimum(size, 2)
    assert (got >= floor).all() and (got <= size).all()
    if floor.sum() <= budget:
        assert got.sum() == min(budget, size.sum())  # integers: exact
        room = size - floor
        if room.sum():  # each share within one text of its proportional part of what the minimums leave
            ideal = floor + (min(budget, size.sum()) - floor.sum()) * room / room.sum()
            assert np.all(np.abs(got - ideal) < 1 + 1e-9)  # 1e-9: float rounding of the ideal share
    else:
        np.testing.assert_array_equal(got, floor)  # the minimums win over a budget too small for them
    assert shares(sizes, None) == [None] * len(sizes)


def test_view_plan_is_deterministic_and_plans_only_what_is_needed():
    sets = {"a": list(range(50))}
    first = plan_views(sets, n_views=4, view_texts=10, lidar_texts=3, needs_pairs=True, needs_lidar=False, seed=1)
    again = plan_views(sets, n_views=4, view_texts=10, lidar_texts=3, needs_pairs=True, needs_lidar=False, seed=1)
    np.testing.assert_array_equal(first.pair_order, again.pair_order)
    assert len(first.lidar_rows) == 0 and len(first.pair_only_rows) == 10
    other = plan_views(sets, n_views=4, view_texts=10, lidar_texts=3, needs_pairs=True, needs_lidar=False, seed=2)
    assert not np.array_equal(first.pair_order, other.pair_order)
    nothing = plan_views(sets, n_views=4, view_texts=None, lidar_texts=None, needs_pairs=False, needs_lidar=False,
                         seed=0)
    assert nothing.n_encoded == 0
    everything = plan_views(sets, n_views=4, view_texts=None, lidar_texts=None, needs_pairs=True, needs_lidar=True,
                            seed=0)
    assert len(everything.lidar_rows) == 50 and len(everything.pair_only_rows) == 0  # LiDAR's views serve the pairs


# ------------------------------------------------------------------------------------------ CLI options


@pytest.mark.parametrize("command", ["extract", "metrics", "evaluate", "analyze"])
def test_cli_options_come_from_the_config_fields(command):
    from layerscope.cli import app

    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "300"})
    assert result.exit_code == 0
    text = "".join(result.output.split())  # click wraps help lines, at hyphens too
    for cls in (ModelConfig, ExtractConfig):
        for item in dataclasses.fields(cls):
            flag = item.metadata.get("flag") or "--" + item.name.replace("_", "-")
            assert flag in text, (command, flag)
            assert "".join(item.metadata["help"].split()) in text
