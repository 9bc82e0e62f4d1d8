"""Label-free selection rules and their held-out evaluation protocol (issue 13, points 1 and 5).

Each rule family is checked on small hand-made grids whose answer is worked out in the test; the
protocol on planted models, including one that would change the chosen rule if its data leaked into
the choice; the loaders on the authors' fixture (skipped without it) and on a store built here.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from layerscope.analysis import (
    AuthorsResults,
    FixedDepth,
    LastLayer,
    MetricRule,
    ModelData,
    RankAggregateRule,
    SelectionRule,
    ValleyFractionRule,
    ValleyRecoveryRule,
    WindowMetricRule,
    authors_coverage,
    authors_models,
    choose_rule,
    default_candidates,
    evaluate_selector,
    load_authors_results,
    model_family,
    rank_rules,
    rules_of_family,
    run_models,
    run_protocol,
    score_rule,
    select_layers,
)
from layerscope.analysis.protocol import folds
from layerscope.analysis.rules import _average_ranks
from layerscope.errors import LayerscopeError
from layerscope.store import ResultsStore

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------ helpers


def scores_frame(matrix: np.ndarray, layers: Sequence[int], tasks: Sequence[str]) -> pd.DataFrame:
    """Long scores from a (layers, tasks) matrix."""
    rows = [
        {"layer": int(layer), "task": task, "task_type": "STS", "main_score": float(matrix[i, j])}
        for i, layer in enumerate(layers)
        for j, task in enumerate(tasks)
    ]
    return pd.DataFrame(rows)


def metrics_frame(profiles: Mapping[tuple[str, str], Sequence[float]], layers: Sequence[int]) -> pd.DataFrame:
    """Long metrics from {(metric, dataset): values per layer}."""
    rows = [
        {
            "layer": int(layer),
            "metric": metric,
            "normalization": "raw",
            "value": float(value),
            "dataset": dataset,
        }
        for (metric, dataset), values in profiles.items()
        for layer, value in zip(layers, values, strict=True)
    ]
    return pd.DataFrame(rows)


def make_model(
    name: str = "toy",
    *,
    n_layers: int = 11,
    tasks: Sequence[str] = ("a", "b", "c"),
    scores: np.ndarray | None = None,
    score_layers: Sequence[int] | None = None,
    profiles: Mapping[tuple[str, str], Sequence[float]] | None = None,
    family: str | None = None,
    last_layer: int | None = None,
) -> ModelData:
    layers = list(range(n_layers))
    score_layers = list(score_layers) if score_layers is not None else layers
    if scores is None:
        scores = np.full((len(score_layers), len(tasks)), 0.5)
    metrics = metrics_frame(profiles, layers) if profiles else None
    return ModelData.from_frames(
        name,
        metrics,
        scores_frame(scores, score_layers, tasks),
        family=family or "toy",
        last_layer=last_layer if last_layer is not None else n_layers - 1,
    )


def valley(n_layers: int = 11, low_at: int = 4) -> list[float]:
    """A V-shaped profile: 1 at layer 0, 0 at ``low_at``, rising 0.1 per layer after it."""
    return [1.0 - layer / low_at if layer <= low_at else 0.1 * (layer - low_at) for layer in range(n_layers)]


# ------------------------------------------------------------------------------------------ rule families


def test_last_layer_and_fixed_depth() -> None:
    model = make_model(score_layers=[0, 2, 4, 8, 10], scores=np.full((5, 3), 0.5))
    assert set(LastLayer().choose(model).values()) == {10}
    assert set(FixedDepth(0.35).choose(model).values()) == {4}  # floor(3.5 + 0.5) = 4
    assert set(FixedDepth(0.6).choose(model).values()) == {8}  # 6 is unscored: 4 and 8 tie -> the deeper
    assert set(FixedDepth(0.0).choose(model).values()) == {0}
    # scores stopping short of L: the last-layer rule takes the deepest scored layer
    short = make_model(score_layers=[0, 1, 2, 3, 4, 5, 6, 7, 8], scores=np.full((9, 3), 0.5), last_layer=10)
    assert set(LastLayer().choose(short).values()) == {8}
    assert set(FixedDepth(0.5).choose(short).values()) == {5}


def test_metric_rule_per_task_on_all_texts_and_fallbacks() -> None:
    dime_a = [5, 4, 3, 2, 1, 0.5, 1, 2, 3, 4, 5]  # min at 5
    dime_b = [5, 4, 3, 2, 1, 2, 3, 0.1, 3, 4, 5]  # min at 7
    dime_all = [9, 9, 9, 1, 9, 9, 9, 9, 9, 9, 9]  # min at 3
    model = make_model(profiles={("dime", "a"): dime_a, ("dime", "b"): dime_b, ("dime", "all"): dime_all})
    assert model.all_texts_dataset == "all"
    per_task = MetricRule("dime", "min", texts="task")
    assert per_task.choose(model) == {"a": 5, "b": 7, "c": 10}  # task c has no texts of its own: last layer
    choice, fallbacks = per_task.choose_with_fallbacks(model)
    assert fallbacks == frozenset({"c"})
    assert MetricRule("dime", "min", texts="task", fallback="all").choose(model) == {"a": 5, "b": 7, "c": 3}
    assert set(MetricRule("dime", "min", texts="all").choose(model).values()) == {3}
    assert MetricRule("dime", "max", texts="task").choose(model) == {"a": 0, "b": 0, "c": 10}  # ties: shallower
    # the registered direction: lower is better for DiME
    assert MetricRule("dime").name == "min dime per task"
    assert MetricRule("dime", texts="all").choose(model) == MetricRule("dime", "min", texts="all").choose(model)
    # a metric the model lacks: every task falls back to the last layer
    missing = MetricRule("infonce", "min", texts="task")
    assert set(missing.choose(model).values()) == {10}
    assert score_rule(missing, model).n_fallback == 3


def test_metric_rule_ignores_nan_and_unscored_layers() -> None:
    values = [5, 4, float("nan"), 3, 2, 1, 2, 3, 0.0, 4, 5]  # the minimum (layer 8) has no scores
    model = make_model(
        profiles={("dime", "wikitext"): values},
        score_layers=[0, 1, 2, 3, 4, 5, 6, 7, 9, 10],
        scores=np.full((10, 3), 0.5),
    )
    assert model.single_source
    # one text source serves every task (as in selection.py); the unscored layer 8 cannot be chosen
    assert MetricRule("dime", "min", texts="task").choose(model) == {"a": 5, "b": 5, "c": 5}
    assert MetricRule("dime", "max", texts="all").choose(model) == dict.fromkeys("abc", 0)


def test_window_metric_rule() -> None:
    profile = [0.0, 1, 2, 3, 4, 5, 4, 3, 2.5, 3, 6]  # global min at 0; in [0.5, 1] the min is at 8
    model = make_model(profiles={("dime", "all"): profile})
    assert set(WindowMetricRule("dime", 0.5, 1.0, direction="min").choose(model).values()) == {8}
    assert set(WindowMetricRule("dime", 0.0, 1.0, direction="min").choose(model).values()) == {0}
    assert set(WindowMetricRule("dime", 0.5, 0.9, direction="max").choose(model).values()) == {5}
    assert WindowMetricRule("dime", 0.5, 1.0).name == "min dime in depth 50-100% on all texts"
    # a window without scored layers: the scored layer nearest its middle (5: 0 and 10 tie -> deeper)
    sparse = make_model(profiles={("dime", "all"): profile}, score_layers=[0, 10], scores=np.full((2, 3), 0.5))
    assert set(WindowMetricRule("dime", 0.4, 0.6).choose(sparse).values()) == {10}


def test_rank_aggregate_rule() -> None:
    # 5 layers (L = 4). dime (min): ranks 5 1 2 3 4; lidar (max): ranks 5 4 1 2 3 -> means 5 2.5 1.5 2.5 3.5
    profiles = {("dime", "all"): [5, 1, 2, 3, 4], ("lidar", "all"): [0, 1, 5, 4, 3]}
    model = make_model(n_layers=5, profiles=profiles)
    rule = RankAggregateRule(("dime", "lidar"))
    assert rule.resolved_directions == ("min", "max")
    assert set(rule.choose(model).values()) == {2}
    # inside [0.75, 1] only layers 3 and 4 compete: dime ranks 1 2, lidar ranks 1 2 -> layer 3
    assert set(RankAggregateRule(("dime", "lidar"), 0.75, 1.0).choose(model).values()) == {3}
    # flipping lidar's direction: lidar ranks 1 2 5 4 3 -> means 3 1.5 3.5 3.5 3.5 -> layer 1
    flipped = RankAggregateRule(("dime", "lidar"), directions=("min", "min"))
    assert set(flipped.choose(model).values()) == {1}
    assert flipped.name == "rank-average(min dime, min lidar) on all texts"
    # a layer where one metric is missing does not compete
    holes = {("dime", "all"): [5, 1, 2, 3, 4], ("lidar", "all"): [0, 1, float("nan"), 4, 3]}
    # valid layers 0 1 3 4: dime ranks 4 1 2 3, lidar ranks 4 3 1 2 -> means 4 2 1.5 2.5 -> layer 3
    assert set(rule.choose(make_model(n_layers=5, profiles=holes)).values()) == {3}


def test_average_ranks_match_scipy() -> None:
    from scipy.stats import rankdata

    rng = np.random.default_rng(0)
    values = rng.integers(0, 4, size=(2, 9, 5)).astype(float)  # many ties
    valid = rng.random((9, 5)) > 0.2
    ours = _average_ranks(values, valid)
    for metric in range(2):
        for column in range(5):
            rows = valid[:, column]
            expected = rankdata(values[metric, rows, column], method="average")
            np.testing.assert_allclose(ours[metric, rows, column], expected)
            assert np.isnan(ours[metric, ~rows, column]).all()


def test_valley_rules() -> None:
    profile = valley()  # min at 4 (0.0), last layer 10 at 0.6
    model = make_model(profiles={("prompt_entropy", "all"): profile})
    assert set(ValleyFractionRule("prompt_entropy", 0.5).choose(model).values()) == {7}  # 4 + 0.5 * 6
    assert set(ValleyFractionRule("prompt_entropy", 0.0).choose(model).values()) == {4}
    assert set(ValleyFractionRule("prompt_entropy", 1.0).choose(model).values()) == {10}
    assert set(ValleyFractionRule("prompt_entropy", 0.25).choose(model).values()) == {6}  # 5.5 rounds up
    # recovery: first layer after 4 with value >= 0 + f * 0.6
    assert set(ValleyRecoveryRule("prompt_entropy", 0.5).choose(model).values()) == {7}  # 0.3 at layer 7
    assert set(ValleyRecoveryRule("prompt_entropy", 0.9).choose(model).values()) == {10}  # 0.54: layer 10 (0.6)
    assert set(ValleyRecoveryRule("prompt_entropy", 0.1).choose(model).values()) == {5}
    # no rise after the minimum: the deepest layer
    falling = make_model(profiles={("prompt_entropy", "all"): [1 - 0.1 * layer for layer in range(11)]})
    assert set(ValleyRecoveryRule("prompt_entropy", 0.5).choose(falling).values()) == {10}
    # the valley comes from the whole profile; the target goes to the nearest scored layer
    sparse = make_model(
        profiles={("prompt_entropy", "all"): profile}, score_layers=[0, 5, 10], scores=np.full((3, 3), 0.5)
    )
    assert set(ValleyFractionRule("prompt_entropy", 0.5).choose(sparse).values()) == {5}  # target 7


def test_valley_rule_per_task() -> None:
    profiles = {("prompt_entropy", "a"): valley(low_at=2), ("prompt_entropy", "b"): valley(low_at=6)}
    model = make_model(profiles=profiles)
    choice = ValleyFractionRule("prompt_entropy", 0.5, texts="task").choose(model)
    assert choice == {"a": 6, "b": 8, "c": 10}  # 2 + 4 = 6, 6 + 2 = 8, c: no metric -> last layer


def test_score_rule_regret_and_gain() -> None:
    matrix = np.array([[0.1, 0.2], [0.5, 0.4], [0.3, 0.5]])  # averages 0.15, 0.45, 0.40
    model = make_model(n_layers=3, tasks=("a", "b"), scores=matrix)

    @dataclasses.dataclass(frozen=True)
    class Planted(SelectionRule):
        family = "planted"

        @property
        def name(self) -> str:
            return "planted"

        def choose_with_fallbacks(self, model: ModelData) -> tuple[dict[str, int], frozenset[str]]:
            return {"a": 1, "b": 2}, frozenset()

    score = score_rule(Planted(), model)
    assert score.oracle == pytest.approx(45.0) and score.oracle_layer == 1
    assert score.last == pytest.approx(40.0)
    assert score.average == pytest.approx(50.0)
    assert score.regret == pytest.approx(-5.0)  # per-task choices can beat the best single layer
    assert score.gain_vs_last == pytest.approx(10.0) and score.win
    last = score_rule(LastLayer(), model)
    assert last.regret == pytest.approx(5.0) and not last.win and last.gain_vs_last == 0.0


def test_rules_are_frozen_named_and_validated() -> None:
    candidates = default_candidates()
    assert 100 <= len(candidates) <= 400
    names = [rule.name for rule in candidates]
    assert len(set(names)) == len(names)
    assert len(set(candidates)) == len(candidates)
    families = {rule.family for rule in candidates}
    assert families == {
        "last_layer", "fixed_depth", "metric_per_task", "metric_all_texts", "window_metric",
        "rank_aggregate", "valley_fraction", "valley_recovery",
    }  # fmt: skip
    rule = RankAggregateRule(("dime", "infonce"), 0.6, 1.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        rule.lo = 0.1  # type: ignore[misc]
    assert json.loads(rule.params_json())["metrics"] == ["dime", "infonce"]
    assert RankAggregateRule(**json.loads(rule.params_json())) == rule  # lists become tuples again
    for bad in (
        lambda: FixedDepth(1.5),
        lambda: WindowMetricRule("dime", 0.8, 0.2),
        lambda: MetricRule("dime", "up"),
        lambda: MetricRule("dime", texts="some"),
        lambda: RankAggregateRule(("dime", "lidar"), directions=("min",)),
        lambda: ValleyRecoveryRule("prompt_entropy", -0.1),
    ):
        with pytest.raises(LayerscopeError):
            bad()
    assert rules_of_family(candidates, "fixed_depth") == tuple(r for r in candidates if isinstance(r, FixedDepth))
    with pytest.raises(LayerscopeError):
        rules_of_family(candidates, "no such family")


def test_model_family() -> None:
    assert model_family("EleutherAI/pythia-410m") == "pythia"
    assert model_family("llm2vec-mntp-unsup-simcse-8b") == "llm2vec"
    assert model_family("HuggingFaceTB/SmolLM2-135M") == "smollm2"
    assert model_family("sentence-transformers/all-MiniLM-L6-v2") == "minilm"
    assert model_family("bert-base") == "bert"
    assert model_family("runs/tiny/checkpoints/step128") == "tiny-neox"
    assert model_family("Qwen/Qwen2-0.5B") == "qwen2"


# ------------------------------------------------------------------------------------------ protocol


def planted(
    name: str, good: int, *, family: str = "toy", margin: float = 0.05, noise_seed: int | None = None
) -> ModelData:
    """11 layers, 2 tasks (4 with noise): layer ``good`` scores 0.6, the other of (5, 10) 0.6 - margin,
    the rest 0.3; ``noise_seed`` adds task-to-task noise (sd 0.01) so that bootstrap intervals are wide."""
    n_tasks = 2 if noise_seed is None else 4
    matrix = np.full((11, n_tasks), 0.3)
    other = 10 if good == 5 else 5
    matrix[good] = 0.6
    matrix[other] = 0.6 - margin
    if noise_seed is not None:
        matrix += np.random.default_rng(noise_seed).normal(0.0, 0.01, matrix.shape)
    return make_model(name, tasks=("a", "b", "c", "d")[:n_tasks], scores=matrix, family=family)


def test_choose_rule_and_its_tie_order() -> None:
    models = [planted("m1", 5), planted("m2", 5)]
    assert choose_rule([LastLayer(), FixedDepth(0.5)], models) == FixedDepth(0.5)
    # equal regrets: the earlier candidate (depth 50% and depth 52% both pick layer 5)
    assert choose_rule([FixedDepth(0.52), FixedDepth(0.5)], models) == FixedDepth(0.52)
    assert choose_rule([FixedDepth(0.5), FixedDepth(0.52)], models) == FixedDepth(0.5)
    # equal mean regret, more wins against the last layer first
    even = [planted("e1", 5, margin=0.1), planted("e2", 10, margin=0.1)]
    ranking = rank_rules([LastLayer(), FixedDepth(0.5)], even)
    assert ranking["mean_regret"].tolist() == pytest.approx([5.0, 5.0])
    assert ranking["rule"].tolist() == ["depth 50%", "last layer"]  # 1 win against 0


def test_held_out_model_never_reaches_the_choice() -> None:
    """A held-out model planted so that its data would flip the choice: the protocol must not see it."""
    training = [planted("a", 5), planted("b", 5), planted("c", 5)]  # depth 50% regret 0, last layer 5
    leaky = planted("h", 10, margin=0.6)  # depth 50% regret 60, last layer 0
    models = [*training, leaky]
    candidates = [LastLayer(), FixedDepth(0.5)]
    assert choose_rule(candidates, training) == FixedDepth(0.5)
    assert choose_rule(candidates, models) == LastLayer()  # what a leak would pick

    seen: list[tuple[str, ...]] = []

    def spy(rules: Sequence[SelectionRule], train: Sequence[ModelData]) -> SelectionRule:
        seen.append(tuple(model.name for model in train))
        return choose_rule(rules, train)

    per_model, summary = evaluate_selector(candidates, models, scheme="model", chooser=spy, n_boot=50)
    row = per_model.set_index("model").loc["h"]
    assert row["rule"] == "depth 50%"  # what the training models alone imply
    assert row["regret"] == pytest.approx(60.0) and not row["win"]
    assert row["n_training"] == 3
    assert sorted(seen) == sorted(tuple(m.name for m in models if m.name != out) for out in "abch")
    # when a, b or c is held out the training set holds h: its pull shows there, and only there
    assert per_model.set_index("model").loc[["a", "b", "c"], "rule"].tolist() == ["last layer"] * 3
    assert summary["wins"].iloc[0] == 0

    # leave-one-family-out: h's family held out together, trained on the others only
    families = [planted("a", 5, family="x"), planted("b", 5, family="x"), planted("c", 5, family="y"),
                planted("h", 10, margin=0.6, family="z")]  # fmt: skip
    splits = {label: ([m.name for m in out], [m.name for m in train]) for label, out, train in folds(families, "family")}
    assert splits == {"x": (["a", "b"], ["c", "h"]), "y": (["c"], ["a", "b", "h"]), "z": (["h"], ["a", "b", "c"])}
    per_family, _ = evaluate_selector(candidates, families, scheme="family", n_boot=0)
    assert per_family.set_index("model").loc["h", "rule"] == "depth 50%"


def test_the_guard_keeps_a_rule_only_where_it_beat_the_last_layer_held_out() -> None:
    from layerscope.analysis.protocol import guarded_chooser

    candidates = [LastLayer(), FixedDepth(0.5)]
    guarded = guarded_chooser(choose_rule)
    # every model best at depth 50%: held out, depth 50% beats the last layer each time, and is kept
    agree = [planted("a", 5), planted("b", 5), planted("c", 5)]
    assert guarded(candidates, agree) == FixedDepth(0.5)
    # two models best at 50% (last 5 points below), two best at the last layer (50% 4 points below): on all
    # four depth 50% has the lower mean regret (2 against 2.5), but chosen on three and scored on the fourth
    # it ties twice (a, b: the other three pick the last layer) and loses twice (c, d: 4 points each)
    split = [planted("a", 5), planted("b", 5), planted("c", 10, margin=0.04), planted("d", 10, margin=0.04)]
    assert choose_rule(candidates, split) == FixedDepth(0.5)
    assert guarded(candidates, split) == LastLayer()
    # too few models to judge: the last layer
    assert guarded(candidates, agree[:1]) == LastLayer()


def test_protocol_result_and_bootstrap_determinism() -> None:
    models = [
        planted("p", 5, family="x", noise_seed=1),
        planted("q", 5, family="y", noise_seed=2),
        planted("r", 10, family="y", noise_seed=3),
    ]
    candidates = [LastLayer(), FixedDepth(0.5)]
    first = run_protocol(models, candidates, selectors={"paper": MetricRule("dime")}, n_boot=300, seed=7)
    again = run_protocol(models, candidates, selectors={"paper": MetricRule("dime")}, n_boot=300, seed=7)
    pd.testing.assert_frame_equal(first.per_model, again.per_model, check_exact=True)  # a rerun here: exact
    pd.testing.assert_frame_equal(first.summary, again.summary, check_exact=True)
    other = run_protocol(models, candidates, selectors={"paper": MetricRule("dime")}, n_boot=300, seed=8)
    assert not np.allclose(first.per_model["regret_low"], other.per_model["regret_low"])
    assert set(first.summary["scheme"]) == {"model", "family", "fixed"}
    assert first.selector == FixedDepth(0.5)  # two of three models prefer layer 5
    assert first.held_out_regret("model") == pytest.approx(
        first.per_model.query("selector == 'protocol' and scheme == 'model'")["regret"].mean()
    )
    low, high = first.summary[["regret_low", "regret_high"]].to_numpy().T
    assert (low <= high).all()
    # a model's resamples depend on the seed and its name only, not on the other models
    alone, _ = evaluate_selector(LastLayer(), models[:2], n_boot=300, seed=7)
    more, _ = evaluate_selector(LastLayer(), models, n_boot=300, seed=7)
    pd.testing.assert_frame_equal(alone, more.iloc[:2], check_exact=True)  # each model's rows computed alone: exact
    with pytest.raises(LayerscopeError):
        folds([models[0], models[0]], "model")
    with pytest.raises(LayerscopeError):
        folds(models[:1], "model")


# ------------------------------------------------------------------------------------------ loaders


def fixture_dir() -> Path | None:
    for candidate in (os.environ.get("LAYERSCOPE_AUTHORS_RESULTS"), REPO.parent / "shared" / "fixtures" / "authors_results"):
        if candidate and (Path(candidate) / "authors_mteb_scores.csv").is_file():
            return Path(candidate)
    return None


FIXTURE = fixture_dir()
needs_fixture = pytest.mark.skipif(
    FIXTURE is None,
    reason="authors' results fixture not found: expected ../shared/fixtures/authors_results beside the clone "
    "or $LAYERSCOPE_AUTHORS_RESULTS",
)
USABLE = ["llm2vec-mntp-unsup-simcse-8b", "mamba-370m", "pythia-14m", "pythia-160m", "pythia-410m", "pythia-70m"]


@pytest.fixture(scope="module")
def authors() -> AuthorsResults:
    assert FIXTURE is not None
    return load_authors_results(FIXTURE)


@pytest.fixture(scope="module")
def authors_data(authors: AuthorsResults) -> list[ModelData]:
    return authors_models(authors)


@needs_fixture
def test_authors_loader(authors: AuthorsResults, authors_data: list[ModelData]) -> None:
    assert [model.name for model in authors_data] == USABLE
    by_name = {model.name: model for model in authors_data}
    assert {model.family for model in authors_data} == {"pythia", "mamba", "llm2vec"}
    assert len(by_name["pythia-410m"].layers) == 25 and len(by_name["pythia-410m"].tasks) == 32
    assert len(by_name["mamba-370m"].layers) == 27 and by_name["mamba-370m"].last_scored_layer == 48
    assert len(by_name["llm2vec-mntp-unsup-simcse-8b"].layers) == 28
    assert by_name["pythia-410m"].all_texts_dataset == "wikitext"
    assert by_name["llm2vec-mntp-unsup-simcse-8b"].all_texts_dataset is None  # its per-task sources are averaged
    coverage = authors_coverage(authors).set_index("model")
    assert sorted(coverage.index[coverage["fully_complete"]]) == ["pythia-14m", "pythia-160m", "pythia-410m", "pythia-70m"]
    assert sorted(coverage.index[coverage["usable"]]) == USABLE
    with pytest.raises(LayerscopeError, match="incomplete"):
        authors_models(authors, models=["mamba-790m"])


@needs_fixture
def test_metric_rules_agree_with_select_layers(authors: AuthorsResults, authors_data: list[ModelData]) -> None:
    """The per-task single-metric rules choose exactly what selection.select_layers chooses."""
    for model in authors_data:
        metrics, scores = authors.model(model.name)
        chosen = select_layers(
            metrics, scores, task_to_dataset=authors.task_to_dataset, last_layer=model.last_layer, both_directions=True
        )
        for (rule_name, metric), group in chosen[chosen["kind"] == "metric"].groupby(["rule", "metric"]):
            direction = rule_name.split(" ", 1)[0]
            ours = MetricRule(metric, direction, texts="task").choose(model)
            assert ours == dict(zip(group["task"], group["layer"].astype(int), strict=True)), (model.name, rule_name)


@needs_fixture
def test_table2_numbers_from_the_rules(authors_data: list[ModelData]) -> None:
    pythia = next(model for model in authors_data if model.name == "pythia-410m")
    dime = score_rule(MetricRule("dime", "min", texts="task"), pythia)
    assert f"{dime.average:.2f}" == "48.50" and dime.n_fallback == 3
    assert dime.oracle_layer == 17 and round(dime.oracle, 1) == 51.9 and round(dime.last, 1) == 46.8
    assert dime.regret == pytest.approx(dime.oracle - dime.average)


@needs_fixture
def test_protocol_on_the_fixture(authors_data: list[ModelData]) -> None:
    depths = rules_of_family(default_candidates(), "fixed_depth")
    per_model, summary = evaluate_selector(depths, authors_data, scheme="model", n_boot=200)
    assert len(per_model) == len(USABLE) and (per_model["n_training"] == len(USABLE) - 1).all()
    assert set(per_model["rule"]) == {"depth 75%"}
    assert summary["mean_regret"].iloc[0] == pytest.approx(1.90, abs=0.005)
    assert summary["wins"].iloc[0] == 6
    last, _ = evaluate_selector(LastLayer(), authors_data, n_boot=0)
    assert last["regret"].mean() == pytest.approx(5.995, abs=0.005)


def write_toy_run(store: ResultsStore, model_id: str, *, seed: int, with_scores: bool = True) -> str:
    rng = np.random.default_rng(seed)
    tasks = ["sts-a", "clf-b"]
    layers = list(range(7))
    profiles = {("dime", task): rng.random(len(layers)) for task in tasks}
    profiles[("dime", "all")] = rng.random(len(layers))
    metrics = metrics_frame(profiles, layers).assign(depth_pct=lambda frame: 100 * frame["layer"] / 6)
    scores = scores_frame(rng.random((len(layers), len(tasks))), layers, tasks).assign(
        depth_pct=lambda frame: 100 * frame["layer"] / 6
    )
    config = {"command": "analyze", "model": model_id, "seed": seed, "task_to_dataset": {task: task for task in tasks}}
    return store.write_run(
        config, metrics=metrics, scores=scores if with_scores else None, model_id=model_id, revision="main"
    )


def test_run_folder_loader(tmp_path: Path) -> None:
    folder = tmp_path / "runs" / "demo"
    with ResultsStore.in_directory(folder) as store:
        smol = write_toy_run(store, "HuggingFaceTB/SmolLM2-135M", seed=1)
        write_toy_run(store, "no-scores-model", seed=2, with_scores=False)
        write_toy_run(store, str(tmp_path / "tiny" / "checkpoints" / "step64"), seed=3)
    models = run_models(folder)
    assert [model.name for model in models] == ["SmolLM2-135M", "tiny-step64"]
    assert [model.family for model in models] == ["smollm2", "tiny-neox"]
    model = models[0]
    assert model.all_texts_dataset == "all" and model.last_layer == 6 and model.tasks == ["clf-b", "sts-a"]
    assert model.task_to_dataset == {"sts-a": "sts-a", "clf-b": "clf-b"}
    with ResultsStore(folder, read_only=True) as store:
        metrics = store.metrics(smol)
    for task in model.tasks:
        own = metrics[(metrics["dataset"] == task)].set_index("layer")["value"]
        assert MetricRule("dime", "min", texts="task").choose(model)[task] == int(own.idxmin())
    every = metrics[metrics["dataset"] == "all"].set_index("layer")["value"]
    assert set(MetricRule("dime", "min", texts="all").choose(model).values()) == {int(every.idxmin())}
    per_model, summary = evaluate_selector(default_candidates(), models, n_boot=20)
    assert len(per_model) == 2 and summary["n_models"].iloc[0] == 2
    assert run_models(folder, run_ids=[smol], names={smol: "smol"})[0].name == "smol"
    with pytest.raises(LayerscopeError):
        run_models(tmp_path / "missing")
