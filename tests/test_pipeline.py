"""The main job end to end on a tiny random model (issue 5 points 3, 6)."""

from __future__ import annotations

import numpy as np
import pytest

import layerscope as ls
from layerscope.pipeline import ALL_TASKS, analyze
from layerscope.store import ResultsStore


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from layerscope.models.tiny import tiny_model

    out = tmp_path_factory.mktemp("analyze")
    model = tiny_model("llama")
    tasks = ["LeeDocumentSTS", "DebatePartyClassification"]
    calls = []
    handle = model.model.register_forward_pre_hook(
        lambda module, args, kwargs: calls.append(kwargs["input_ids"].shape[0]), with_kwargs=True)
    try:
        result = analyze(loaded_model=model, tasks=tasks, out=out, n_views=4, view_texts=16, lidar_texts=8, select_by="dime",
                         max_length=64, progress=False)
    finally:
        handle.remove()
    return result, model, out, calls


def test_analyze_writes_store_plots_and_report(tiny_run):
    result, model, out, _ = tiny_run
    assert (out / "results.duckdb").is_file() and (out / "report.html").is_file()
    assert list((out / "plots").glob("*.png"))
    with ResultsStore.in_directory(out, read_only=True) as store:
        runs = store.runs()
        assert len(runs) == 1 and runs.iloc[0]["status"] == "finished"
        metrics = store.metrics(result.run_id)
        scores = store.scores(result.run_id)
    assert set(metrics["dataset"]) == {"LeeDocumentSTS", "DebatePartyClassification", ALL_TASKS}
    assert set(scores["task"]) == {"LeeDocumentSTS", "DebatePartyClassification"}
    assert set(scores["layer"]) == set(range(model.num_layers + 1))
    assert np.isfinite(metrics["value"]).all()
    # the run records its task suite: here two named tasks, no versioned suite
    assert result.record["suite"] == {"name": "LeeDocumentSTS,DebatePartyClassification", "version": None,
                                      "tasks": ["LeeDocumentSTS", "DebatePartyClassification"]}
    assert runs.iloc[0]["data_source"] == "tasks: LeeDocumentSTS, DebatePartyClassification"


def test_each_text_goes_through_the_model_once_plus_its_views(tiny_run):
    result, _, _, calls = tiny_run
    n_texts = result.record["n_kept"]
    everything = result.metrics.query("dataset == @ALL_TASKS and layer == 0")
    n_pair = int(everything.query("metric == 'dime'").n_used.iloc[0])
    n_lidar = int(everything.query("metric == 'lidar'").n_used.iloc[0])
    assert 0 < n_pair < n_texts and 0 < n_lidar <= n_pair
    # texts exactly once (token hook + cache), 4 views of the LiDAR subset whose first 2 serve DiME and
    # InfoNCE too, 2 views of the rest of the DiME/InfoNCE subset; the MTEB evaluation and the
    # per-task metrics read that same pass
    assert sum(calls) == n_texts + 2 * (n_pair - n_lidar) + 4 * n_lidar


def test_selection_table_and_chosen_layers(tiny_run):
    result, model, _, _ = tiny_run
    rules = set(result.selection["rule"])
    assert {"last layer", "best layer (labels)", "min dime", "depth 70%"} <= rules
    average = result.scores.groupby("layer")["main_score"].mean()
    assert result.best_layer == int(average.idxmax())
    dime = result.metrics.query("metric == 'dime' and dataset == @ALL_TASKS and normalization == 'maxEntropy'")
    assert result.chosen_layer == int(dime.loc[dime.value.idxmin(), "layer"])


def test_rerun_replaces_rows_instead_of_duplicating(tiny_run):
    result, model, out, _ = tiny_run
    again = analyze(loaded_model=model, tasks=["LeeDocumentSTS", "DebatePartyClassification"], out=out, n_views=4,
                    select_by="dime",
                    view_texts=16, lidar_texts=8, max_length=64, progress=False, report=False)
    assert again.run_id == result.run_id
    with ResultsStore.in_directory(out, read_only=True) as store:
        assert len(store.runs()) == 1
        assert len(store.metrics(result.run_id)) == len(result.metrics)


def test_bad_select_by_fails_before_running(tmp_path):
    with pytest.raises(ls.LayerscopeError, match="did you mean 'dime'"):
        analyze(model="smollm2-135m", select_by="dimee", out=tmp_path)


def test_select_by_takes_rules_and_the_default_is_the_recorded_one(tiny_run):
    from layerscope.analysis import summarize
    from layerscope.analysis.choice import default_rule, held_out_record, rule_spec

    result, model, _, _ = tiny_run
    on_all = result.metrics[result.metrics["dataset"] == ALL_TASKS]
    depth = summarize(result.metrics, result.scores, select_by="depth:0.75")
    assert depth.chosen_layer == round(0.75 * model.num_layers) and depth.chosen_label == "depth 75%"
    rank = summarize(result.metrics, result.scores, select_by="rank:dime+infonce")
    dime = on_all.query("metric == 'dime' and normalization == 'maxEntropy'").set_index("layer")["value"].rank()
    infonce = on_all.query("metric == 'infonce' and normalization == 'raw'").set_index("layer")["value"].rank()
    total = dime + infonce
    assert rank.chosen_layer == int(total[total == total.min()].index.min())
    auto = summarize(result.metrics, result.scores)
    record = held_out_record()
    assert auto.chosen_rule == rule_spec(default_rule()) == (record["rule"] if record else "dime")


def test_the_record_holds_the_views_each_set_got(tiny_run):
    """Issue 25: the run records its views budget and each text set's share of it."""
    import json

    result, _, out, _ = tiny_run
    views = json.loads((out / "record.json").read_text())["views"]
    assert views == result.record["views"]
    assert (views["n_views"], views["view_texts"], views["lidar_texts"]) == (4, 16, 8)
    sizes = result.metrics.groupby(["dataset", "metric"])["n_used"].max()
    texts = result.metrics.query("metric == 'dataset_entropy'").groupby("dataset")["n_used"].max()
    from layerscope.metrics.views import shares

    parts = {name: got for name, got in views["sets"].items() if name != ALL_TASKS}
    expected = dict(zip(parts, zip(shares([got["texts"] for got in parts.values()], 16),
                                   shares([got["texts"] for got in parts.values()], 8), strict=True), strict=True))
    for name, got in views["sets"].items():
        assert got["texts"] == texts[name]
        assert got["pair_texts"] == sizes[name, "dime"] == sizes[name, "infonce"]
        assert got["lidar_texts"] == sizes[name, "lidar"]
        if name != ALL_TASKS:  # the union holds every set's view texts; each set its share of the run's budget
            assert (got["pair_texts"], got["lidar_texts"]) == expected[name]
    union = views["sets"][ALL_TASKS]
    assert (union["pair_texts"], union["lidar_texts"]) == (views["run_pair_texts"], views["run_lidar_texts"])
    assert union["pair_texts"] <= 16 and union["lidar_texts"] <= 8
    assert views["view_passes"] == result.record["n_forward_texts"] - result.record["n_kept"]
