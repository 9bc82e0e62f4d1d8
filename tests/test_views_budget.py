"""The views budget (issue 25): one default everywhere, 'all' parsed, the line said before the work and
its numbers, the effective sizes recorded, the time estimate's arithmetic, mismatched view sizes named."""

from __future__ import annotations

import inspect
import logging

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

import layerscope as ls
from cli_helpers import cli_runs
from layerscope.config import (
    DEFAULT_LIDAR_TEXTS,
    DEFAULT_N_VIEWS,
    DEFAULT_VIEW_MAX_LENGTH,
    DEFAULT_VIEW_TEXTS,
    AnalysisConfig,
    ExtractConfig,
    MetricsConfig,
    ViewConfig,
)
from layerscope.errors import LayerscopeError
from layerscope.metrics import budget
from layerscope.metrics.registry import resolve
from layerscope.metrics.views import plan_views, shares
from layerscope.store import ResultsStore

TEXTS = [f"Sentence number {i} says something about topic {i % 5} in a few words." for i in range(24)]


# ------------------------------------------------------------------------------------------ one default


def test_every_command_defaults_to_the_one_budget():
    budget_fields = {"n_views": DEFAULT_N_VIEWS, "view_texts": DEFAULT_VIEW_TEXTS, "lidar_texts": DEFAULT_LIDAR_TEXTS,
                     "view_max_length": DEFAULT_VIEW_MAX_LENGTH}
    assert ViewConfig().to_dict() == budget_fields
    assert MetricsConfig().views == AnalysisConfig().views == ViewConfig()
    from layerscope.metrics.compute import compute_metrics
    from layerscope.pipeline import analyze

    for function in (analyze, compute_metrics):
        parameters = inspect.signature(function).parameters
        assert {name: parameters[name].default for name in budget_fields} == budget_fields, function.__name__
    from layerscope.cli import app

    for command in ("metrics", "analyze"):  # the options the CLI offers, with their defaults
        callback = next(c.callback for c in app.registered_commands if c.name == command)
        parameters = inspect.signature(callback).parameters
        assert {name: parameters[name].default for name in budget_fields} == budget_fields, command
    from layerscope.experiments.vision import vision

    assert inspect.signature(vision).parameters["view_images"].default is None  # None: the budget


@pytest.mark.parametrize(("given", "cap"), [("all", None), ("ALL", None), (" all ", None), (None, None),
                                            ("128", 128), (64, 64), (2, 2)])
def test_a_cap_is_a_number_or_all(given, cap):
    config = ViewConfig(view_texts=given, lidar_texts=given)
    assert config.view_texts == cap and config.lidar_texts == cap
    assert ViewConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("given", ["many", "1", 1, 0, -4, 2.5, True, ""])
def test_a_bad_cap_is_a_one_line_error(given):
    with pytest.raises(LayerscopeError) as caught:
        ViewConfig(view_texts=given)
    assert str(caught.value) == f"view_texts must be an integer >= 2 or 'all', got {given!r}"


def test_the_command_line_takes_all_and_numbers():
    from layerscope.cli import configured

    app = typer.Typer()
    seen = []

    @app.command()
    @configured(views=ViewConfig)
    def show(views: ViewConfig) -> None:
        seen.append(views)

    runner = CliRunner()
    for argv, expected in ((["--view-texts", "all", "--lidar-texts", "64"], ViewConfig(16, None, 64)),
                           (["--lidar-texts", "all", "--n-views", "8"], ViewConfig(8, DEFAULT_VIEW_TEXTS, None)),
                           ([], ViewConfig())):
        result = runner.invoke(app, argv)
        assert result.exit_code == 0, result.output
        assert seen.pop() == expected
    result = runner.invoke(app, ["--view-max-length", "all"])
    assert result.exit_code == 0 and seen.pop().view_max_length is None
    result = runner.invoke(app, ["--view-texts", "lots"])
    assert result.exit_code != 0 and "view_texts must be an integer >= 2 or 'all', got 'lots'" in str(result.exception)


def test_describe_says_all_for_a_lifted_cap():
    rows = dict(ViewConfig(view_texts="all", lidar_texts=64).describe())
    assert rows == {"Views per text (LiDAR)": "16", "Texts with 2 views": "all", "Texts with all views": "64",
                    "Tokens per view": "128"}
    assert ViewConfig(n_views=8, view_texts=256, lidar_texts=None).budget() == \
        "LiDAR on all texts x 8 views, InfoNCE and DiME on 256 texts x 2 views"


# ------------------------------------------------------------------------------------------ the line said


def test_the_budget_line_counts_the_planned_views():
    specs = resolve("all")
    one = plan_views({"texts": range(1000)}, n_views=16, view_texts=512, lidar_texts=128, needs_pairs=True,
                     needs_lidar=True, seed=0)
    # 128 texts x 16 views (their first 2 serve the pairs) + 384 more texts x 2 views
    assert budget.budget_line(one, specs) == ("LiDAR on 128 texts x 16 views, InfoNCE and DiME on 512 texts x 2 "
                                              "views: 2,816 extra forward passes")
    small = plan_views({"texts": range(100)}, n_views=16, view_texts=512, lidar_texts=128, needs_pairs=True,
                       needs_lidar=True, seed=0)  # min(cap, texts): every text, all of them LiDAR texts
    assert budget.budget_line(small, specs) == ("LiDAR on 100 texts x 16 views, InfoNCE and DiME on 100 texts x 2 "
                                                "views: 1,600 extra forward passes")
    pairs_only = plan_views({"texts": range(1000)}, n_views=16, view_texts=300, lidar_texts=128, needs_pairs=True,
                            needs_lidar=False, seed=0)
    assert budget.budget_line(pairs_only, resolve("dime")) == "DiME on 300 texts x 2 views: 600 extra forward passes"
    assert budget.budget_line(pairs_only, resolve("dataset_entropy,curvature")) is None
    # several sets (analyze: one per task, and the union of all): the run's budget, spread over them
    sets = {"a": range(0, 50), "b": range(50, 300)}
    several = plan_views(sets, n_views=4, view_texts=100, lidar_texts=20, needs_pairs=True, needs_lidar=True, seed=0,
                         union="all")
    lidar, pairs = shares([50, 250], 20), shares([50, 250], 100)
    assert sum(lidar) == 20 and sum(pairs) == 100  # disjoint sets: their shares add up to the budget
    n_encoded = 4 * 20 + 2 * (100 - 20)
    assert several.n_encoded == n_encoded
    assert budget.budget_line(several, specs, union="all", views=ViewConfig(4, 100, 20)) == (
        f"LiDAR on 20 texts x 4 views, InfoNCE and DiME on 100 texts x 2 views (spread over 2 text sets), views cut "
        f"at 128 tokens: {n_encoded:,} extra forward passes")


def test_measure_says_the_line_before_the_work_and_records_the_effective_sizes(tiny_llama):
    said: list[str] = []
    first_pass: list[int] = []
    handle = tiny_llama.model.register_forward_pre_hook(lambda *_: first_pass.append(len(said)))
    try:
        measured = ls.measure(tiny_llama, TEXTS + [" "], views=ViewConfig(n_views=4, view_texts=10, lidar_texts=3),
                              progress=False, notify=said.append)
    finally:
        handle.remove()
    assert said == ["LiDAR on 3 texts x 4 views, InfoNCE and DiME on 10 texts x 2 views, views cut at 128 tokens: "
                    "26 extra forward passes"]
    assert first_pass[0] == 1  # said before the model ran
    assert measured.plan.n_encoded == 4 * 3 + 2 * (10 - 3) == 26
    record = measured.record["views"]
    assert record == {"n_views": 4, "view_texts": 10, "lidar_texts": 3, "view_max_length": 128, "run_pair_texts": 10,
                      "run_lidar_texts": 3, "view_passes": 26,
                      "sets": {"texts": {"texts": 24, "pair_texts": 10, "lidar_texts": 3}}}
    rows = measured.metrics.query("layer == 0").groupby("metric")["n_used"].max()
    assert rows["lidar"] == 3 and rows["infonce"] == rows["dime"] == 10 and rows["dataset_entropy"] == 24
    # caps above the set's size: every text, the record says min(cap, texts)
    again = ls.measure(tiny_llama, TEXTS, metrics="dime,lidar", views=ViewConfig(n_views=4, view_texts="all",
                                                                                 lidar_texts=100),
                       progress=False, notify=said.append)
    assert again.record["views"]["sets"]["texts"] == {"texts": 24, "pair_texts": 24, "lidar_texts": 24}
    assert again.record["views"]["view_texts"] == "all" and said[-1].endswith(": 96 extra forward passes")


def test_views_are_cut_at_their_token_budget_and_the_texts_are_not(tiny_llama, monkeypatch, caplog):
    from layerscope.metrics import compute

    lengths: dict[str, list[int]] = {"texts": [], "views": []}
    stage = ["texts"]
    original = compute.encode_planned

    def encode_planned(*args, **kwargs):
        stage[0] = "views"
        return original(*args, **kwargs)

    def seen(_module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        lengths[stage[0]].append(int(ids.shape[1]))

    monkeypatch.setattr(compute, "encode_planned", encode_planned)
    handle = tiny_llama.model.register_forward_pre_hook(seen, with_kwargs=True)
    try:
        measured = ls.measure(tiny_llama, TEXTS, metrics="dime", views=ViewConfig(view_texts=8, view_max_length=5),
                              progress=False)
    finally:
        handle.remove()
    assert max(lengths["texts"]) > 5  # the texts' pass keeps their full length (each has over 5 tokens)
    assert lengths["views"] and max(lengths["views"]) <= 5
    assert measured.record["views"]["view_max_length"] == 5
    # cut by design and said in the budget line: no "reached max_length" warning for the views
    assert not [r for r in caplog.records if "reached max_length" in r.getMessage()]
    with caplog.at_level(logging.WARNING, logger="layerscope.extract.engine"):
        ls.measure(tiny_llama, TEXTS, metrics="dataset_entropy", extraction=ExtractConfig(max_length=5), progress=False)
    assert [r for r in caplog.records if "reached max_length" in r.getMessage()]  # the texts' cut is still said


def test_the_estimate_is_said_from_a_probe_of_the_planned_passes(tiny_llama, monkeypatch):
    said: list[str] = []
    monkeypatch.setattr(budget, "PROBE_FROM_PASSES", 0)
    monkeypatch.setattr(budget, "SAY_FROM_SECONDS", 0.0)
    measured = ls.measure(tiny_llama, TEXTS, metrics="prompt_entropy,dime", views=ViewConfig(view_texts=8),
                          progress=False, notify=said.append)
    assert said[0] == "DiME on 8 texts x 2 views, views cut at 128 tokens: 16 extra forward passes"
    assert len(said) == 2 and said[1].startswith("about ")
    assert said[1].endswith("on this machine: 40 forward passes (24 texts + 16 views)")
    assert measured.record["estimated_s"] is not None and measured.record["estimated_s"] >= 0
    monkeypatch.setattr(budget, "PROBE_FROM_PASSES", 10_000)  # small work: no probe, nothing said about time
    quiet = ls.measure(tiny_llama, TEXTS, metrics="dime", views=ViewConfig(view_texts=8), progress=False,
                       notify=said.append)
    assert quiet.record["estimated_s"] is None and not said[-1].startswith("about ")


# ------------------------------------------------------------------------------------------ the estimate


class FakeClock:
    def __init__(self, times: list[float]) -> None:
        self.times = list(times)

    def __call__(self) -> float:
        return self.times.pop(0)


def test_the_estimate_scales_the_timed_probe_to_the_planned_passes():
    calls: dict[str, list[list[int]]] = {"texts": [], "views": []}
    clock = FakeClock([10.0, 12.0, 20.0, 23.25])  # 2 s for 32 texts, then 3.25 s for 32 views (exact binary)
    estimate = budget.estimate_work(2000, 2816, lambda rows: calls["texts"].append(list(rows)),
                                    lambda rows: calls["views"].append(list(rows)), 100, seed=3, probe=32, clock=clock)
    assert not clock.times  # one timed call each; the 2-row warm-ups are not timed
    for kind in ("texts", "views"):
        warm, timed = calls[kind]
        assert len(warm) == 2 and len(timed) == 32 and timed == sorted(set(timed)) and warm == timed[:2]
        assert all(0 <= row < 100 for row in timed)
    assert estimate.text_seconds == 2.0 / 32 and estimate.view_seconds == 3.25 / 32  # exact: powers of 2
    assert estimate.passes == 4816
    assert estimate.seconds == 2000 * 2.0 / 32 + 2816 * 3.25 / 32 == 411.0  # 125 + 286 s, exact in binary
    assert estimate.describe() == "about 7 min on this machine: 4,816 forward passes (2,000 texts + 2,816 views)"
    # fewer texts than the probe: all of them; no views planned: none timed
    calls = {"texts": [], "views": []}
    few = budget.estimate_work(10, 0, lambda rows: calls["texts"].append(list(rows)),
                               lambda rows: calls["views"].append(list(rows)), 10, clock=FakeClock([0.0, 5.0]))
    assert calls["texts"][1] == list(range(10)) and not calls["views"]
    assert few.seconds == 5.0 and few.describe().startswith("about 5 s on this machine")


@pytest.mark.parametrize(("seconds", "text"), [(45.4, "45 s"), (89, "89 s"), (90, "2 min"), (725, "12 min"),
                                               (5399, "90 min"), (5400, "1.5 h"), (9000, "2.5 h")])
def test_durations_read_as_people_say_them(seconds, text):
    assert budget.WorkEstimate(1, 0, seconds, 0.0).describe().startswith(f"about {text} on this machine")


# ------------------------------------------------------------------------------------------ view sizes differ


def _store(directory, sizes: dict[str, int], n_views: int = 16, model: str = "m") -> None:
    rows = [{"layer": layer, "depth_pct": 50.0 * layer, "metric": metric, "normalization": "raw",
             "value": 0.1 * layer + 0.01 * i, "n_used": used, "n_skipped": 0, "dataset": "bbc"}
            for i, (metric, used) in enumerate({"dataset_entropy": 600, **sizes}.items()) for layer in range(3)]
    with ResultsStore.in_directory(directory) as store:
        store.write_run({"kind": "metrics", "views": {"n_views": n_views}}, metrics=pd.DataFrame(rows),
                        model_id=model, data_source="bbc")


def test_compare_names_the_view_sizes_that_differ(tmp_path, caplog):
    from layerscope.report import compare_runs, load_run

    _store(tmp_path / "a", {"lidar": 128, "infonce": 512, "dime": 512}, model="one")
    _store(tmp_path / "b", {"lidar": 64, "infonce": 512, "dime": 512}, n_views=8, model="two")
    _store(tmp_path / "c", {"lidar": 128, "infonce": 512, "dime": 512}, model="three")
    assert load_run(tmp_path / "b").view_sizes() == {"lidar": (64, 8), "infonce": (512, 2), "dime": (512, 2)}
    with caplog.at_level(logging.WARNING, logger="layerscope.report.comparison"):
        page = compare_runs([tmp_path / "a", tmp_path / "b", tmp_path / "c"], tmp_path / "cmp").read_text()
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert warnings == ["the runs' invariance metrics were measured on different view sizes (LiDAR: 128 texts x 16 "
                        "views in 2 runs, 64 texts x 8 views in two): their values depend on the number of texts and "
                        "are not comparable side by side; rerun with the same --view-texts, --lidar-texts and "
                        "--n-views"]
    assert "The runs&#x27; invariance metrics were measured on different view sizes" in page
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="layerscope.report.comparison"):
        page = compare_runs([tmp_path / "a", tmp_path / "c"], tmp_path / "same").read_text()
    assert not caplog.records and "different view sizes" not in page


def test_the_compare_command_says_so_in_one_line(tmp_path):
    _store(tmp_path / "a", {"infonce": 512}, model="one")
    _store(tmp_path / "b", {"infonce": 300}, model="two")
    [(code, errors, _)] = cli_runs(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "c")])
    assert code == 0
    assert [line for line in errors if "view sizes" in line] == [
        "WARNING layerscope.report.comparison: the runs' invariance metrics were measured on different view sizes "
        "(InfoNCE: 512 texts x 2 views in one, 300 texts x 2 views in two): their values depend on the number of "
        "texts and are not comparable side by side; rerun with the same --view-texts, --lidar-texts and --n-views"]


def test_plan_ahead_is_the_plan_measure_makes(tiny_llama):
    texts = TEXTS[:12] + ["", "  "] + TEXTS[12:]
    sets = {"x": list(range(0, 20)), "y": list(range(10, 26)), "tiny": [12, 13, 3]}  # 'tiny': one non-empty text
    views = ViewConfig(n_views=4, view_texts=7, lidar_texts=3)
    specs = resolve("dime,lidar")
    ahead = budget.plan_ahead(texts, sets, specs, views, seed=5, union="all")
    measured = ls.measure(tiny_llama, texts, sets=sets, union="all", metrics="dime,lidar", views=views, seed=5,
                          progress=False, notify=lambda line: None)
    assert set(ahead.sets) == set(measured.plan.sets) == {"x", "y", "all"}
    for name in ahead.sets:
        for key in ("rows", "pair_rows", "lidar_rows"):
            np.testing.assert_array_equal(getattr(ahead.sets[name], key), getattr(measured.plan.sets[name], key))
    assert ahead.n_encoded == measured.plan.n_encoded


def test_set_rows_number_the_kept_inputs_and_name_the_sets_left_without_metrics(caplog):
    """A set's rows are its kept inputs numbered as the pass numbers them; skipped inputs are counted;
    a set with fewer than 2 kept texts gets no rows and a warning (none when asked not to warn)."""
    from layerscope.metrics.views import set_rows

    kept = np.array([0, 2, 3, 5])  # inputs 1 and 4 were empty: the pass has 4 rows
    sets = {"a": [0, 1, 2], "b": [3, 4, 5, 5], "c": [1, 2]}
    with caplog.at_level(logging.WARNING, logger="layerscope.metrics.views"):
        usable, missing = set_rows(sets, kept, 6)
    assert {name: rows.tolist() for name, rows in usable.items()} == {"a": [0, 1], "b": [2, 3]}
    assert missing == {"a": 1, "b": 1, "c": 1}
    assert [record.getMessage() for record in caplog.records] == ["text set 'c' has fewer than 2 texts: no metrics"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="layerscope.metrics.views"):
        assert set(set_rows(sets, kept, 6, warn=False)[0]) == {"a", "b"}
    assert not caplog.records


def test_the_probe_is_scaled_by_the_padding_of_its_batches_against_the_planned_pass(tiny_llama):
    """padding_scale: padded tokens per text of the planned pass / of the probe, both batched as extract
    batches them (length-sorted, a token budget per batch), written out here with a fixed batch size."""
    lengths = np.array([5, 40, 7, 38, 6, 39, 8, 37])
    probe, planned = [0, 1], list(range(8))
    # batch size 2, longest first: the probe pads 5 to 40 -> 80 tokens for 2 texts; the planned pass
    # pairs (40, 39), (38, 37), (8, 7), (6, 5) -> 2 * (40 + 38 + 8 + 6) = 184 tokens for 8 texts
    assert budget.padding_scale(lengths, probe, planned, tiny_llama, batch_size=2) == (184 / 8) / (80 / 2)
    # and estimate_work multiplies the probe's seconds per text and per view by the scales it is given
    estimate = budget.estimate_work(100, 50, lambda rows: None, lambda rows: None, 8, probe=2,
                                    clock=FakeClock([0.0, 4.0, 0.0, 8.0]), scale=lambda rows: (0.5, 0.25))
    assert (estimate.text_seconds, estimate.view_seconds) == (4.0 / 2 * 0.5, 8.0 / 2 * 0.25)
