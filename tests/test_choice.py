"""--select-by as text: rules parsed, written back, and applied to a run's metrics without scores."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from layerscope.analysis.choice import choose_layer, parse_rule, rule_spec
from layerscope.analysis.rules import (
    FixedDepth,
    LastLayer,
    MetricRule,
    RankAggregateRule,
    ValleyFractionRule,
    ValleyRecoveryRule,
    WindowMetricRule,
)
from layerscope.errors import LayerscopeError


def metrics_frame() -> pd.DataFrame:
    """Hand-made profiles on 11 layers (L = 10): DiME lowest at layer 3, InfoNCE lowest at 8,
    LiDAR highest at 6; an 'all' set and a task set that says otherwise."""
    layers = np.arange(11)
    profiles = {"dime": (layers - 3.0) ** 2, "infonce": (layers - 8.0) ** 2, "lidar": -(layers - 6.0) ** 2}
    rows = []
    for metric, values in profiles.items():
        normalization = "raw" if metric == "infonce" else "maxEntropy"
        for dataset, shift in (("all", 0.0), ("TaskA", 100.0)):
            for layer, value in zip(layers, values, strict=True):
                rows.append({"layer": int(layer), "depth_pct": 10.0 * layer, "metric": metric,
                             "normalization": normalization, "value": value - shift * (layer == 0), "dataset": dataset})
    return pd.DataFrame(rows)


@pytest.mark.parametrize(("spec", "rule"), [
    ("last", LastLayer()),
    ("depth:0.75", FixedDepth(0.75)),
    ("dime", MetricRule("dime", None, texts="all")),
    ("max:dime", MetricRule("dime", "max", texts="all")),
    ("dime@0.5-0.9", WindowMetricRule("dime", 0.5, 0.9, None, texts="all")),
    ("rank:infonce+lidar", RankAggregateRule(("infonce", "lidar"), 0.0, 1.0, None, texts="all")),
    ("rank:dime+min:lidar@0.2-1", RankAggregateRule(("dime", "lidar"), 0.2, 1.0, ("min", "min"), texts="all")),
    ("valley:dataset_entropy:0.75", ValleyFractionRule("dataset_entropy", 0.75, texts="all")),
    ("recovery:dime:50%", ValleyRecoveryRule("dime", 0.5, texts="all")),
])
def test_specs_parse_into_rules_and_back(spec, rule):
    assert parse_rule(spec) == rule
    assert parse_rule(rule_spec(rule)) == rule


def test_percent_depths_and_bad_specs():
    assert parse_rule("depth:75%") == FixedDepth(0.75)
    for spec, message in [("dimee", "did you mean 'dime'"), ("depth:1.5", "between 0 and 1"),
                          ("rank:", "needs metrics"), ("up:dime", "min: or max:"), ("depth:x", "not a depth"),
                          ("valley:dime", "valley: needs a metric and a fraction"), ("recovery:dime:2", "between 0 and 1"),
                          ("valley:dimee:0.5", "did you mean 'dime'")]:
        with pytest.raises(LayerscopeError, match=message):
            parse_rule(spec)
    with pytest.raises(LayerscopeError, match="per task"):
        rule_spec(MetricRule("dime", texts="task"))


@pytest.mark.parametrize(("spec", "layer"), [
    ("dime", 3), ("infonce", 8), ("lidar", 6), ("max:dime", 10), ("dime@0.5-1", 5), ("depth:0.75", 8), ("last", 10),
    ("rank:dime+infonce", 3),  # ranks tie between 3 and 8 in a symmetric way: the shallower wins
    # DiME's valley is layer 3: 3 + 0.5 * (10 - 3) = 6.5 rounds half up to 7; its rise 0 -> 49 is half
    # regained where (l - 3)^2 >= 24.5, first at layer 8
    ("valley:dime:0.5", 7), ("valley:dime:0", 3), ("valley:dime:1", 10), ("recovery:dime:0.5", 8),
])
def test_choices_on_the_all_texts_set_without_scores(spec, layer):
    assert choose_layer(metrics_frame(), parse_rule(spec)) == layer


def test_a_rule_missing_its_metric_cannot_choose():
    frame = metrics_frame()
    assert choose_layer(frame[frame["metric"] != "lidar"], parse_rule("rank:dime+lidar")) is None
    assert choose_layer(frame.iloc[0:0], parse_rule("dime")) is None
