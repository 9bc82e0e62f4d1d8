"""A layer choice with its uncertainty (issue 12 point 3): bootstrap intervals and the few-label choice.

The bootstrap's resampled scores are compared with ``mteb.evaluate`` run on resamples built here by
hand (MTEB's own task classes, the documented draws), for a classification and an STS task file at
two layers of a tiny model; the interval logic is checked on planted resamples; the few-label choice
is deterministic under its seed and equal to a scikit-learn cross-validation written here; bad
options get one line and exit 2 through the real entry point.
"""

from __future__ import annotations

import json
import zlib

import numpy as np
import pandas as pd
import pytest

mteb = pytest.importorskip("mteb")

from datasets import Dataset, DatasetDict  # noqa: E402
from mteb.abstasks.classification import AbsTaskClassification  # noqa: E402
from mteb.abstasks.pair_classification import AbsTaskPairClassification  # noqa: E402
from mteb.abstasks.sts import AbsTaskSTS  # noqa: E402
from mteb.abstasks.task_metadata import TaskMetadata  # noqa: E402

from cli_helpers import cli_runs  # noqa: E402
from layerscope.errors import LayerscopeError  # noqa: E402
from layerscope.evaluate import evaluate_layers, resolve  # noqa: E402
from layerscope.evaluate.runner import _load, collect_texts  # noqa: E402
from layerscope.evaluate.select import select_layer_with_labels  # noqa: E402
from layerscope.evaluate.uncertainty import (  # noqa: E402
    attach_bootstrap,
    best_versus_last,
    bootstrap_draws,
    bootstrap_layers,
    layer_intervals,
    task_intervals,
)
from layerscope.extract import extract  # noqa: E402
from layerscope.models.tiny import tiny_model  # noqa: E402
from mteb_helpers import FixedEncoder  # noqa: E402

N_RESAMPLES = 8
RESAMPLE_SEED = 5
SPLIT = {"split_column": "split"}
NOUNS = {
    "animal": ["cat", "dog", "horse", "parrot", "wolf", "rabbit"],
    "vehicle": ["train", "car", "bus", "truck", "plane", "ferry"],
    "food": ["bread", "soup", "mango", "cake", "rice", "cheese"],
}
PLACES = ["in the morning", "near the river", "after lunch"]


def _topics() -> pd.DataFrame:
    """18 rows per class (6 nouns x 3 places): the first 12 train, the last 6 test, classes interleaved."""
    rows = []
    for i in range(18):
        for label, nouns in NOUNS.items():
            noun, place = nouns[i % 6], PLACES[i // 6]
            rows.append({"text": f"The {noun} was seen {place}.", "label": label, "split": "train" if i < 12 else "test"})
    return pd.DataFrame(rows)


def _similarity() -> pd.DataFrame:
    first = ["The cat sleeps.", "A dog barks.", "The train is late.", "Fresh bread.", "A red car.", "Soup is hot.",
             "The owl hunts.", "A bus stops.", "Cake for dessert.", "The wolf runs.", "Rice is cooked.", "A jet lands."]
    second = ["A kitten naps.", "The car honks.", "The bus is late.", "Warm bread.", "A blue truck.", "A cold drink.",
              "The wolf howls.", "A ferry departs.", "Mango for lunch.", "A fox runs.", "The rice boils.", "A cab stops."]
    scores = [4.6, 0.8, 3.9, 4.2, 3.1, 1.4, 2.6, 2.9, 2.2, 3.5, 4.0, 1.9]
    return pd.DataFrame({"sentence1": first, "sentence2": second, "score": scores})


# ------------------------------------------------------------------------------------------ by hand


def _meta(name: str, type_: str, main: str) -> TaskMetadata:
    return TaskMetadata(name=name, description="built by hand", reference=None, dataset={"path": "NA", "revision": "NA"},
                        type=type_, category="t2t", eval_splits=["test"], eval_langs=["eng-Latn"], main_score=main,
                        date=None, domains=[], task_subtypes=[], license=None, annotations_creators=None, dialect=[],
                        sample_creation="created", bibtex_citation="", modalities=["text"])


class HandClassification(AbsTaskClassification):
    metadata = _meta("HandClassification", "Classification", "accuracy")

    def __init__(self, test_rows: np.ndarray) -> None:
        super().__init__()
        rows = _topics()
        names = sorted(NOUNS)
        train, test = rows[rows["split"] == "train"], rows[rows["split"] == "test"].iloc[test_rows]
        self.dataset = DatasetDict({
            "train": Dataset.from_dict({"text": train["text"].tolist(), "label": [names.index(x) for x in train["label"]]}),
            "test": Dataset.from_dict({"text": test["text"].tolist(), "label": [names.index(x) for x in test["label"]]}),
        })
        self.data_loaded = True


class HandSTS(AbsTaskSTS):
    metadata = _meta("HandSTS", "STS", "cosine_spearman")

    def __init__(self, pairs: np.ndarray) -> None:
        super().__init__()
        rows = _similarity()
        self.min_score, self.max_score = rows["score"].min(), rows["score"].max()
        rows = rows.iloc[pairs]
        self.dataset = DatasetDict({"test": Dataset.from_dict({"sentence1": rows["sentence1"].tolist(),
                                                               "sentence2": rows["sentence2"].tolist(),
                                                               "score": rows["score"].tolist()})})
        self.data_loaded = True


class HandPairs(AbsTaskPairClassification):
    metadata = _meta("HandPairs", "PairClassification", "max_ap")

    def __init__(self) -> None:
        super().__init__()
        rows = _similarity()
        self.dataset = DatasetDict({"test": Dataset.from_dict({"sentence1": rows["sentence1"].tolist(),
                                                               "sentence2": rows["sentence2"].tolist(),
                                                               "labels": (rows["score"] > 2.5).astype(int).tolist()})})
        self.data_loaded = True


def _draws(key: str, n_units: int) -> np.ndarray:
    """The documented draws of one evaluation part, written out here."""
    return np.random.default_rng([RESAMPLE_SEED, zlib.crc32(key.encode())]).integers(0, n_units, size=(N_RESAMPLES, n_units))


def _main_score(encoder: FixedEncoder, task) -> float:
    """A plain ``mteb.evaluate``, its main score averaged over the test split's subsets.

    On one thread, as layerscope's evaluators run (``run_task``): the classifier's BLAS reductions are
    then the same computation, so the scores agree to rounding whatever the machine's thread count."""
    from threadpoolctl import threadpool_limits

    from layerscope.evaluate.runner import main_score

    with threadpool_limits(limits=1):
        return main_score(mteb.evaluate(encoder, task, cache=None, show_progress_bar=False,
                                        co2_tracker=False).task_results[0].scores)


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("select")
    _topics().to_csv(root / "topics.csv", index=False)
    _similarity().to_csv(root / "similarity.csv", index=False)
    return root


@pytest.fixture(scope="module")
def run(model, files):
    """Tasks, their embeddings, the point scores and the bootstrap of both task files at every layer."""
    tasks = resolve([files / "topics.csv", files / "similarity.csv"], files=SPLIT)
    _load(tasks)
    extraction = extract(model, collect_texts(tasks), progress=False)
    scores = evaluate_layers(model, tasks, extraction=extraction, progress=False, eval_workers=1)
    boot = bootstrap_layers(scores, extraction, tasks, n_resamples=N_RESAMPLES, resample_seed=RESAMPLE_SEED,
                            progress=False, eval_workers=1)
    return tasks, extraction, scores, boot


def _resampled(boot: pd.DataFrame, layer: int, task: str) -> list[float]:
    row = boot[(boot["layer"] == layer) & (boot["task"] == task)].iloc[0]
    return json.loads(row["scores"])["bootstrap"]["main_scores"]


# ------------------------------------------------------------------------------------------ bootstrap


@pytest.mark.numeric
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.UndefinedMetricWarning")
@pytest.mark.parametrize("kind", ["classification", "sts"])
def test_bootstrap_equals_mteb_on_hand_made_resamples(run, model, kind) -> None:
    tasks, extraction, scores, boot = run
    if kind == "classification":
        name, n_units, hand = "topics", 18, HandClassification
    else:
        name, n_units, hand = "similarity", 12, HandSTS
    draws = _draws(f"{name}/default/test/0", n_units)
    assert np.array_equal(bootstrap_draws(next(t for t in tasks if t.metadata.name == name), N_RESAMPLES,
                                          RESAMPLE_SEED)[f"{name}/default/test/0"], draws)  # indices: exact
    intervals = task_intervals(boot).set_index(["layer", "task"])
    for layer in (1, model.num_layers):  # an inner layer and the last one
        position = extraction.layers.index(layer)
        encoder = FixedEncoder(list(extraction.texts), extraction.pooled[position])
        reference = [_main_score(encoder, hand(rows)) for rows in draws]
        assert _resampled(boot, layer, name) == pytest.approx(reference, abs=1e-12)
        # the interval: percentiles of the resamples re-centred on the point estimate (their median moved onto it)
        point = 100 * scores.set_index(["layer", "task"]).loc[(layer, name), "main_score"]
        centred = 100 * np.array(reference) - np.median(100 * np.array(reference)) + point
        low, high = np.quantile(centred, [0.025, 0.975])
        assert intervals.loc[(layer, name), "score"] == pytest.approx(point)
        assert intervals.loc[(layer, name), ["low", "high"]].tolist() == pytest.approx([low, high])
    # the resamples differ from each other and between layers: the comparison is not between constants
    assert len(set(_resampled(boot, 1, name))) > 1


def test_point_scores_are_kept_and_intervals_contain_them(run) -> None:
    _, _, scores, boot = run
    assert boot["main_score"].tolist() == scores["main_score"].tolist()
    assert [json.loads(s)["test"] for s in boot["scores"]] == [json.loads(s)["test"] for s in scores["scores"]]
    per_task = task_intervals(boot)
    assert (per_task["low"] <= per_task["score"] + 1e-9).all() and (per_task["score"] <= per_task["high"] + 1e-9).all()
    per_layer = layer_intervals(boot)
    assert (per_layer["low"] <= per_layer["score"] + 1e-9).all() and (per_layer["score"] <= per_layer["high"] + 1e-9).all()
    assert per_layer["score"].tolist() == pytest.approx(
        (scores.groupby("layer")["main_score"].mean() * 100).tolist())
    last = per_layer.iloc[-1]
    assert (last["vs_last"], last["vs_last_low"], last["vs_last_high"]) == (0, 0, 0)
    assert per_layer.attrs["n_resamples"] == N_RESAMPLES and per_layer.attrs["units"] == {
        "topics": "test examples", "similarity": "pairs"}
    # another resample seed draws other resamples
    assert not np.array_equal(bootstrap_draws(run[0][0], N_RESAMPLES, RESAMPLE_SEED + 1)["topics/default/test/0"],
                              _draws("topics/default/test/0", 18))


def test_plans_built_once_are_those_of_the_bootstrap(run) -> None:
    from layerscope.evaluate.uncertainty import bootstrap_plan

    tasks, extraction, scores, boot = run
    plans = [bootstrap_plan(task, N_RESAMPLES, RESAMPLE_SEED) for task in tasks]
    # the documented draws (written here from the formula), and the units they cover
    expected = {"topics": ("topics/default/test/0", 18), "similarity": ("similarity/default/test/0", 12)}
    for plan in plans:
        key, n_units = expected[plan.task.metadata.name]
        assert list(plan.indices) == [key] and plan.n_units == n_units
        assert np.array_equal(plan.indices[key], _draws(key, n_units))  # indices: exact
    # plans of another seed or other tasks are refused, not silently used
    other = [bootstrap_plan(task, N_RESAMPLES, RESAMPLE_SEED + 1) for task in tasks]
    for wrong in (other, plans[::-1]):
        with pytest.raises(LayerscopeError, match="^the bootstrap plans are not those of these tasks and resamples$"):
            bootstrap_layers(scores, extraction, tasks, n_resamples=N_RESAMPLES, resample_seed=RESAMPLE_SEED,
                             plans=wrong, progress=False)


def _planted(points: dict[int, float], resampled: dict[int, np.ndarray]) -> pd.DataFrame:
    """A scores frame of one task whose rows carry the given resamples."""
    frame = pd.DataFrame({"layer": list(points), "depth_pct": [25.0 * layer for layer in points], "task": "t",
                          "task_type": "STS", "main_score": list(points.values()), "scores": "{}"})
    return attach_bootstrap(frame, {(layer, "t"): values for layer, values in resampled.items()}, units={"t": "pairs"},
                            n_units={"t": 50}, resample_seed=0, confidence=0.95)


def test_paired_difference_on_planted_layers() -> None:
    rng = np.random.default_rng(0)
    shared = rng.normal(0, 0.05, size=200)  # noise common to every layer (easy or hard examples drawn)
    # layer 2 is better than the others by 0.03 on every resample; the layers' own intervals overlap widely
    points = {0: 0.5, 1: 0.5, 2: 0.53, 3: 0.5, 4: 0.5}
    resampled = {layer: point + shared + rng.normal(0, 0.002, size=200) for layer, point in points.items()}
    intervals = layer_intervals(_planted(points, resampled))
    verdict = best_versus_last(intervals)
    assert (verdict.best_layer, verdict.last_layer) == (2, 4)
    assert verdict.best_low < verdict.last_high  # unpaired, the intervals overlap
    assert verdict.beyond_noise and verdict.low > 0 and verdict.not_above == 0.0
    assert verdict.difference == pytest.approx(3.0)
    assert "beyond the noise" in verdict.describe() and "excludes 0" in verdict.describe()
    # equal layers: the best one is the best by chance, within the noise
    points = {layer: 0.5 + (0.001 if layer == 1 else 0.0) for layer in range(5)}
    resampled = {layer: 0.5 + shared + rng.normal(0, 0.01, size=200) for layer in points}
    verdict = best_versus_last(layer_intervals(_planted(points, resampled)))
    assert verdict.best_layer == 1 and not verdict.beyond_noise and verdict.low < 0 < verdict.high
    assert 0.2 < verdict.not_above < 0.8 and "within the noise" in verdict.describe()
    # the last layer best: said so
    points = {0: 0.4, 1: 0.6}
    verdict = best_versus_last(layer_intervals(_planted(points, {0: 0.4 + shared, 1: 0.6 + shared})))
    assert verdict.best_layer == verdict.last_layer == 1 and "is the best layer" in verdict.describe()


def _planted_tasks(points: dict[str, dict[int, float]], resampled: dict[str, dict[int, np.ndarray]]) -> pd.DataFrame:
    """A scores frame of several tasks (task -> layer -> point / resamples)."""
    frame = pd.DataFrame([{"layer": layer, "depth_pct": 50.0 * layer, "task": task, "task_type": "STS",
                           "main_score": point, "scores": "{}"}
                          for task, by_layer in points.items() for layer, point in by_layer.items()])
    return attach_bootstrap(frame, {(layer, task): values for task, by_layer in resampled.items()
                                    for layer, values in by_layer.items()},
                            units={task: "pairs" for task in points}, n_units={task: 50 for task in points},
                            resample_seed=0, confidence=0.9)


@pytest.mark.numeric
def test_an_undefined_resample_is_left_out_counted_and_named() -> None:
    rng = np.random.default_rng(1)
    points = {"a": {0: 0.5, 1: 0.6, 2: 0.55}, "b": {0: 0.4, 1: 0.45, 2: 0.42}}
    resampled = {task: {layer: point + rng.normal(0, 0.02, size=40) for layer, point in by_layer.items()}
                 for task, by_layer in points.items()}
    holed = {task: {layer: values.copy() for layer, values in by_layer.items()} for task, by_layer in resampled.items()}
    holed["b"][1][[3, 17]] = np.nan  # e.g. an STS resample whose gold scores are all equal
    kept = np.setdiff1d(np.arange(40), [3, 17])
    reference = layer_intervals(_planted_tasks(points, {task: {layer: values[kept] for layer, values in by_layer.items()}
                                                        for task, by_layer in resampled.items()}))
    intervals = layer_intervals(_planted_tasks(points, holed))
    # the same numbers as if those resamples had never been drawn, and no NaN anywhere; means and
    # quantiles of 38 values of order 50 reached another way (NaNs left out): a few ulps, 1e-12 relative
    pd.testing.assert_frame_equal(intervals, reference, check_exact=False, rtol=1e-12, atol=1e-12)
    assert np.isfinite(intervals.drop(columns="depth_pct").to_numpy(dtype=float)).all()
    assert intervals.attrs["n_undefined"] == 2 and intervals.attrs["undefined_tasks"] == ["b"]
    verdict = best_versus_last(intervals)
    assert (verdict.n_undefined, verdict.undefined_tasks) == (2, ("b",))
    assert "2 of 40 resamples left out: a score of b is undefined on them" in verdict.describe()
    assert "of 38 resamples" in verdict.describe()
    # per task: only that (layer, task) loses them, its interval from the 38 defined ones
    per_task = task_intervals(_planted_tasks(points, holed)).set_index(["layer", "task"])
    assert per_task["n_undefined"].to_dict() == {(layer, task): 2 * ((layer, task) == (1, "b"))
                                                 for layer in (0, 1, 2) for task in ("a", "b")}
    values = 100 * holed["b"][1][kept]
    centred = values - np.median(values) + 100 * points["b"][1]
    assert per_task.loc[(1, "b"), ["low", "high"]].tolist() == pytest.approx(np.quantile(centred, [0.05, 0.95]).tolist())
    # a task undefined on (nearly) every resample: one line, not a NaN verdict
    holed["b"][2][:] = np.nan
    holed["b"][2][0] = 0.4
    with pytest.raises(LayerscopeError, match=r"^fewer than 2 of 40 bootstrap resamples give every task a defined score "
                                              r"\(undefined on b\)"):
        layer_intervals(_planted_tasks(points, holed))


def test_bootstrap_refuses_what_it_cannot_resample(run) -> None:
    from mteb.abstasks.regression import AbsTaskRegression

    from layerscope.evaluate.uncertainty import check_bootstrap_tasks

    class Regression(AbsTaskRegression):
        metadata = _meta("SomeRegression", "Regression", "kendalltau")

    with pytest.raises(LayerscopeError, match="no bootstrap interval for task SomeRegression"):
        check_bootstrap_tasks([*run[0], Regression()])
    with pytest.raises(LayerscopeError, match="carry no bootstrap resamples"):
        layer_intervals(run[2])


# ------------------------------------------------------------------------------------------ few labels


def _reference_cv(model, files, labels_per_class: int, seed: int, vectors_of=None) -> tuple[int, np.ndarray, np.ndarray]:
    """The few-label choice written with scikit-learn directly: CV-best layer, CV accuracy, out-of-fold hits.

    ``vectors_of(texts) -> (n_layers, n, dim)`` gives the embeddings (default: every layer of ``model``)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from threadpoolctl import threadpool_limits

    rows = _topics()
    train = rows[rows["split"] == "train"].reset_index(drop=True)
    labels = np.array([sorted(NOUNS).index(label) for label in train["label"]])
    rng = np.random.default_rng([seed, zlib.crc32(b"topics/default")])
    drawn = np.sort(np.concatenate([np.flatnonzero(labels == c)[rng.permutation(int((labels == c).sum()))[:labels_per_class]]
                                    for c in range(3)]))
    texts = train["text"].iloc[drawn].tolist()
    vectors = extract(model, texts, progress=False).pooled if vectors_of is None else vectors_of(texts)
    y = labels[drawn]
    folds = StratifiedKFold(n_splits=min(5, labels_per_class), shuffle=True, random_state=seed)
    accuracy, out_of_fold = [], np.zeros((len(vectors), len(y)), dtype=bool)
    for position, layer_vectors in enumerate(vectors):
        hits = []
        for fit_rows, test_rows in folds.split(layer_vectors, y):
            with threadpool_limits(limits=1):  # as out_of_fold_hits fits: the same BLAS reductions
                classifier = LogisticRegression(max_iter=100, random_state=seed).fit(layer_vectors[fit_rows], y[fit_rows])
            right = classifier.predict(layer_vectors[test_rows]) == y[test_rows]
            out_of_fold[position, test_rows] = right
            hits.append(np.mean(right))
        accuracy.append(np.mean(hits))
    return int(np.argmax(accuracy)), 100 * np.array(accuracy), out_of_fold


def _reference_gain(differences: dict[str, np.ndarray], seed: int, n_resamples: int = 1000,
                    confidence: float = 0.95) -> tuple[float, float, float]:
    """Paired bootstrap of the mean over tasks of the hit-rate difference, re-centred on the estimate, x 100."""
    gain = 100 * np.mean([d.mean() for d in differences.values()])
    draws = []
    for task, d in differences.items():
        rng = np.random.default_rng([seed, zlib.crc32(f"{task}/few-labels".encode())])
        draws.append(d[rng.integers(0, len(d), size=(n_resamples, len(d)))].mean(axis=1))
    resampled = 100 * np.mean(draws, axis=0)
    centred = resampled - np.median(resampled) + gain
    low, high = np.quantile(centred, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(gain), float(low), float(high)


@pytest.mark.numeric
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.UndefinedMetricWarning")
def test_labels_per_class_is_deterministic_and_equals_scikit_learn(model, files) -> None:
    def choose(seed: int):
        return select_layer_with_labels(model, files / "topics.csv", bootstrap=0, labels_per_class=4,
                                        resample_seed=seed, task_files=SPLIT, progress=False, eval_workers=1)

    first, again, other = choose(3), choose(3), choose(4)
    pd.testing.assert_frame_equal(first.few_labels, again.few_labels, check_exact=True)  # a rerun here: exact
    pd.testing.assert_frame_equal(first.cv_scores, again.cv_scores, check_exact=True)
    assert first.record["draws"] == again.record["draws"]
    assert first.record["draws"][0]["rows"] != other.record["draws"][0]["rows"]  # another seed draws others
    assert first.record["draws"][0]["per_class"] == {"0": 4, "1": 4, "2": 4}
    cv_best, accuracy, hits = _reference_cv(model, files, 4, 3)
    assert first.cv_scores["cv_accuracy"].tolist() == pytest.approx(accuracy.tolist())
    row = first.few_labels.iloc[0]
    assert row["task"] == "topics" and row["cv_best_layer"] == cv_best and row["n_labelled"] == 12
    gain, low, high = _reference_gain({"topics": hits[cv_best].astype(float) - hits[-1]}, seed=3)
    assert [row["cv_gain"], row["cv_gain_low"], row["cv_gain_high"]] == pytest.approx([gain, low, high])
    last = int(first.layers["layer"].iloc[-1])
    assert row["chosen_layer"] == (cv_best if low > 0 else last)
    test = first.layers.set_index("layer")["score"]  # one task: the layers' scores are its test scores
    chosen = row["chosen_layer"]
    assert row["score"] == pytest.approx(test[chosen]) and row["best_score"] == pytest.approx(test.max())
    assert row["cv_best_score"] == pytest.approx(test[cv_best])
    assert row["last_score"] == pytest.approx(test.iloc[-1])
    assert row["regret"] == pytest.approx(test.max() - test[chosen]) and row["regret"] >= 0
    assert first.few_labels.iloc[-1]["task"] == "average"
    assert not any("fewer training examples" in note for note in first.notes)  # every class had K


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.UndefinedMetricWarning")
def test_recipes_are_candidates_scored_bootstrapped_and_chosen_like_layers(model, files) -> None:
    """select's recipe candidates: the scores of the recipes scored on their own, a by-type set taking each
    task's scores and resamples from its type's recipe, the last layer still last, the few-label CV on them."""
    from layerscope.analysis.recipe_runs import RunRecipeSet, recipe_candidates
    from layerscope.analysis.recipes import evaluate_recipes, parse_recipe_set, recipe_embeddings

    text = "classification=zmean:0.5-1;*=last+standardize"
    tasks = resolve([files / "topics.csv", files / "similarity.csv"], files=SPLIT)
    candidates = recipe_candidates([RunRecipeSet(parse_recipe_set(text), "given")],
                                   [task.metadata.type for task in tasks], model.num_layers)
    assert candidates.names == ("recipe zmean:0.5-1", "recipe last+standardize")
    assert dict(candidates.by_type) == {f"recipes {text}": {"Classification": "recipe zmean:0.5-1",
                                                            "STS": "recipe last+standardize"}}
    choice = select_layer_with_labels(model, tasks, bootstrap=N_RESAMPLES, resample_seed=RESAMPLE_SEED,
                                      labels_per_class=4, progress=False, eval_workers=1, candidates=candidates)
    ids = {name: key for key, name in choice.candidates.items()}
    zmean, standardize, by_type = ids["recipe zmean:0.5-1"], ids["recipe last+standardize"], ids[f"recipes {text}"]
    assert [zmean, standardize, by_type] == [-3, -2, -1]
    assert choice.layers["layer"].tolist() == [-3, -2, -1, *range(model.num_layers + 1)]  # the last layer stays last
    assert choice.last_layer == model.num_layers and choice.layers["candidate"].iloc[0] == "recipe zmean:0.5-1"
    assert choice.layers.set_index("layer").loc[[-3, -2, -1], "depth_pct"].isna().all()

    # the same scores as the recipes scored on their own (analyze's path), on the same texts
    _load(tasks)
    extraction = extract(model, collect_texts(tasks), progress=False)
    alone = evaluate_recipes(extraction, ["zmean:0.5-1", "last+standardize"], tasks, eval_workers=1)
    alone = alone.set_index(["recipe", "task"])["main_score"]
    scores = choice.scores.set_index(["layer", "task"])
    for recipe, key in (("zmean:0.5-1", zmean), ("last+standardize", standardize)):
        for task in ("topics", "similarity"):
            # float32 embeddings of the same float64 computation, fitted on the same rows: rel 1e-6
            assert scores.loc[(key, task), "main_score"] == pytest.approx(alone[(recipe, task)], rel=1e-6)
    # the by-type set: each task's score and its resamples from its type's recipe, exactly (copied rows)
    assert scores.loc[(by_type, "topics"), "scores"] == scores.loc[(zmean, "topics"), "scores"]
    assert scores.loc[(by_type, "similarity"), "scores"] == scores.loc[(standardize, "similarity"), "scores"]
    expected = 50 * (scores.loc[(zmean, "topics"), "main_score"] + scores.loc[(standardize, "similarity"), "main_score"])
    assert choice.layers.set_index("layer").loc[by_type, "score"] == pytest.approx(expected, rel=1e-12)
    # without a bootstrap too: one row per candidate, the by-type set's score the mean of its types' recipes
    plain = select_layer_with_labels(model, tasks, bootstrap=0, progress=False, eval_workers=1, candidates=candidates)
    assert plain.layers["layer"].tolist() == choice.layers["layer"].tolist()
    assert plain.layers.set_index("layer").loc[by_type, "score"] == pytest.approx(expected, rel=1e-12)

    # the few-label CV reads the classification recipe's embeddings (the by-type set: the same ones)
    cv = choice.cv_scores.set_index("layer")["cv_accuracy"]
    assert cv[by_type] == cv[zmean]
    position = {text: row for row, text in enumerate(extraction.texts)}
    recipe_vectors = recipe_embeddings(extraction.pooled, extraction.layers, "zmean:0.5-1",
                                       last_layer=model.num_layers).numpy()

    def vectors_of(texts):
        return recipe_vectors[[position[text] for text in texts]][None].astype(np.float32)

    _, accuracy, _ = _reference_cv(model, files, 4, RESAMPLE_SEED, vectors_of=vectors_of)
    assert cv[zmean] == pytest.approx(accuracy[0], abs=1e-9)  # accuracies are counts / n: equal when the fits agree


@pytest.mark.numeric
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.UndefinedMetricWarning")
def test_select_scores_layers_as_analyze_does_shipped_normalization_and_conditioning(files, tmp_path) -> None:
    """A model shipping a sentence-transformers pipeline that ends in Normalize: its last layer is scored
    L2-normalized by default (MTEB's score of the model as shipped), raw with normalize=False, and a
    conditioning is fitted on the tasks' texts; each equal to MTEB run directly on embeddings made here."""
    import layerscope as ls

    folder = tmp_path / "shipped"
    tiny = tiny_model("llama", num_layers=2)
    tiny.model.save_pretrained(str(folder))
    tiny.tokenizer.save_pretrained(str(folder))
    modules = [{"idx": i, "name": str(i), "path": path, "type": f"sentence_transformers.models.{kind}"}
               for i, (path, kind) in enumerate([("", "Transformer"), ("1_Pooling", "Pooling"),
                                                 ("2_Normalize", "Normalize")])]
    (folder / "modules.json").write_text(json.dumps(modules))
    model = ls.load_model(str(folder), device="cpu")
    assert model.ships_normalized
    tasks = resolve(files / "topics.csv", files=SPLIT)
    _load(tasks)
    raw = extract(model, collect_texts(tasks), progress=False)
    last = raw.pooled[2].astype(np.float64)

    def unit(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    def z_scores(x):
        return (x - x.mean(axis=0)) / x.std(axis=0)

    for normalize, condition, vectors in ((None, "none", unit(last)), (False, "none", last),
                                          (None, "standardize", z_scores(unit(last)))):
        choice = select_layer_with_labels(model, tasks, bootstrap=0, progress=False, eval_workers=1,
                                          normalize=normalize, condition=condition, cache_dir=None)
        expected = _main_score(FixedEncoder(list(raw.texts), vectors), tasks[0])
        # float32 embeddings of the same float64 formula: the classifier lands on the same predictions
        assert choice.layers.set_index("layer").loc[2, "score"] == pytest.approx(100 * expected, abs=1e-6)
        assert choice.record["normalize"]["normalized_as_shipped"] == (None if normalize is False else 2)
        assert choice.record["condition"] == condition


def test_the_use_hint_names_the_export_of_what_the_choice_took() -> None:
    from types import SimpleNamespace

    from layerscope.cli.selection import use_hint
    from layerscope.evaluate.select import LayerChoice

    def choice(best: int, beyond: bool, few_chosen: int | None, candidates: dict[int, str]) -> LayerChoice:
        few = None if few_chosen is None else pd.DataFrame({"chosen_layer": [few_chosen]})
        scores = pd.DataFrame({"task_type": ["Classification", "STS"]})
        return LayerChoice(scores, pd.DataFrame(), pd.DataFrame(), best, 6, SimpleNamespace(best_layer=best,
                           beyond_noise=beyond), few, None, [], {"model": {"model_id": "m"}}, {}, candidates)

    assert use_hint(choice(4, False, None, {})) is None  # within the noise: the last layer stays
    assert use_hint(choice(6, True, 6, {})) is None
    assert use_hint(choice(4, True, None, {})) == ("to use it: layerscope export --model m --layer 4 "
                                                   "--fit-dataset YOUR_TEXTS --out DIR")
    recipes = {-2: "recipe zmean:0.5-1", -1: "recipes auto"}
    assert "--recipe 'zmean:0.5-1' --fit-dataset" in use_hint(choice(4, False, -2, recipes))  # the few labels'
    assert "--recipe 'auto' --task-type classification|sts --fit-dataset" in use_hint(choice(-1, True, None, recipes))


def _planted_choice(signal_layer: int | None, seed: int):
    """few_label_choice on 3 layers x 2 tasks of planted embeddings: class means far apart at
    ``signal_layer`` only (None: pure noise everywhere); test scores 50 / 70 / 60 at layers 0 / 1 / 2."""
    from types import SimpleNamespace

    from layerscope.evaluate.few_labels import LabelDraw
    from layerscope.evaluate.select import few_label_choice

    rng = np.random.default_rng(seed)
    texts, pooled, draws = [], [], []
    for task in ("t1", "t2"):
        labels = np.repeat(np.arange(3), 8)
        names = [f"{task} text {i}" for i in range(len(labels))]
        layers = rng.normal(size=(3, len(labels), 6))
        if signal_layer is not None:
            layers[signal_layer, :, :3] += 6.0 * np.eye(3)[labels]
        texts += names
        pooled.append(layers)
        draws.append(LabelDraw(task, "default", names, labels, np.arange(len(labels)), {"0": 8, "1": 8, "2": 8},
                               len(labels), 8))
    extraction = SimpleNamespace(layers=[0, 1, 2], texts=texts, pooled=np.concatenate(pooled, axis=1))
    scores = pd.DataFrame([{"layer": layer, "task": task, "main_score": value}
                           for task in ("t1", "t2") for layer, value in zip((0, 1, 2), (0.5, 0.7, 0.6), strict=True)])
    few, _, _ = few_label_choice(extraction, draws, scores, seed=seed)
    return few.set_index("task")


def test_few_label_choice_leaves_the_last_layer_only_for_a_gain_beyond_the_noise() -> None:
    planted = _planted_choice(signal_layer=1, seed=0)
    assert (planted["cv_best_layer"] == 1).all() and (planted["chosen_layer"] == 1).all()
    assert (planted["cv_gain_low"] > 0).all() and planted.loc["average", "cv_gain"] > 30
    assert planted.loc["average", ["score", "regret", "vs_last"]].tolist() == pytest.approx([70.0, 0.0, 10.0])
    # pure noise: some layer other than the last wins the cross-validation by chance, and is not taken
    noise = _planted_choice(signal_layer=None, seed=2)
    assert noise.loc["average", "cv_best_layer"] != 2 and noise.loc["average", "cv_gain_low"] <= 0
    assert noise.loc["average", "chosen_layer"] == 2
    assert noise.loc["average", ["score", "vs_last"]].tolist() == pytest.approx([60.0, 0.0])
    best = noise.loc["average", "cv_best_layer"]
    assert noise.loc["average", "cv_best_score"] == pytest.approx({0: 50.0, 1: 70.0}[best])


def test_gain_over_last_is_the_paired_bootstrap_written_out() -> None:
    from layerscope.evaluate.few_labels import gain_over_last

    rng = np.random.default_rng(7)
    hits = {"a": rng.random((4, 15)) < 0.6, "b": rng.random((4, 40)) < 0.5}
    for position in (0, 2):
        expected = _reference_gain({task: rows[position].astype(float) - rows[-1] for task, rows in hits.items()},
                                   seed=11, n_resamples=500, confidence=0.9)
        assert gain_over_last(hits, position, n_resamples=500, confidence=0.9, seed=11) == pytest.approx(expected)
    assert gain_over_last(hits, 3, seed=11) == (0.0, 0.0, 0.0)  # the last layer against itself


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.UndefinedMetricWarning")
def test_classes_short_of_k_are_named_even_when_all_are(model, files) -> None:
    result = select_layer_with_labels(model, files / "topics.csv", bootstrap=0, labels_per_class=10_000,
                                      task_files=SPLIT, progress=False, eval_workers=1)
    per_class = result.record["draws"][0]["per_class"]
    [note] = [note for note in result.notes if "fewer training examples" in note]
    assert len(per_class) == 3 and all(f"'{label}' ({count})" in note for label, count in per_class.items())


def test_labels_per_class_needs_a_classification_task(model, files) -> None:
    with pytest.raises(LayerscopeError, match="--labels-per-class needs a classification task"):
        select_layer_with_labels(model, files / "similarity.csv", labels_per_class=8, progress=False)
    # with a classification task among others, the others are scored but left out of the choice (said so)
    result = select_layer_with_labels(model, [files / "topics.csv", files / "similarity.csv"], bootstrap=0,
                                      labels_per_class=4, task_files=SPLIT, progress=False, eval_workers=1)
    assert result.few_labels["task"].tolist() == ["topics", "average"]
    assert any("classification tasks only (not similarity)" in note for note in result.notes)


# ------------------------------------------------------------------------------------------ analyze


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.UndefinedMetricWarning")
def test_analyze_carries_intervals_to_the_store_and_the_report(model, files, tmp_path, capsys) -> None:
    from layerscope.pipeline import analyze
    from layerscope.report.run_report import summarize_run
    from layerscope.store.runs import load_run

    result = analyze(loaded_model=model, tasks=[str(files / "similarity.csv")], metrics="dime", select_by="dime",
                     out=tmp_path, n_views=2, view_texts=4, lidar_texts=2, progress=False, eval_workers=1,
                     bootstrap=4, resample_seed=1)
    intervals = result.summary.intervals
    assert intervals is not None and intervals.attrs["n_resamples"] == 4 and result.summary.verdict is not None
    stored = summarize_run(load_run(tmp_path), uncertainty=False)
    pd.testing.assert_frame_equal(stored.intervals, intervals, check_exact=True)  # read back from the store: exact
    html = (tmp_path / "report.html").read_text()
    assert "95% interval" in html and "4 bootstrap resamples" in html
    assert result.record["intervals"] == {"bootstrap": 4, "confidence": 0.95, "resample_seed": 1}
    from layerscope.cli import print_analysis

    print_analysis(result)
    printed = " ".join(capsys.readouterr().out.split())
    assert "interval" in printed and "95% interval from 4 bootstrap resamples" in printed
    assert "with intervals: " + result.summary.verdict.describe() in printed


# ------------------------------------------------------------------------------------------ command line


def test_bad_options_get_one_line_and_status_2(files) -> None:
    topics, similarity = str(files / "topics.csv"), str(files / "similarity.csv")
    expected = {
        ("--tasks", similarity, "--labels-per-class", "8"): "--labels-per-class needs a classification task",
        ("--tasks", topics, "--bootstrap", "1"): "bootstrap (resamples; 0 turns the intervals off) must be an integer >= 2",
        ("--tasks", topics, "--confidence", "1.5"): "confidence must be a number between 0 and 1",
        ("--tasks", topics, "--labels-per-class", "1"): "labels_per_class must be an integer >= 2",
        ("--tasks", topics, "--bootstrap", "many"): "Invalid value for '--bootstrap'",
        ("--bootstrap", "10",): "Missing option '--tasks'",
        ("--tasks", topics, "--recipes", "classification=zmaen:0.5-1"): "--recipes: ",
        ("--tasks", topics, "--recipes", "none|auto"): "--recipes none cannot be given with other recipe sets",
    }
    # the model is never loaded (its name does not even exist): the options fail first
    results = cli_runs(*(["select", "--model", "not-a-model", *args] for args in expected))
    for (code, lines, _), (args, message) in zip(results, expected.items(), strict=True):
        assert code == 2, (args, lines)
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (args, lines)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.UndefinedMetricWarning")
def test_select_command_end_to_end(files, tmp_path) -> None:
    """``layerscope select`` on a tiny model saved to a folder: the table, the verdict, the files."""
    saved = tiny_model("llama", num_layers=2)
    saved.model.save_pretrained(str(tmp_path / "model"))
    saved.tokenizer.save_pretrained(str(tmp_path / "model"))
    [(code, lines, out)] = cli_runs(["select", "--model", str(tmp_path / "model"), "--device", "cpu", "--tasks",
                                      str(files / "topics.csv"), "--split-column", "split", "--bootstrap", "3",
                                      "--labels-per-class", "4", "--no-cache", "--eval-workers", "1",
                                      "--out", str(tmp_path / "out")])
    assert code == 0, lines
    assert "95% intervals from 3 bootstrap resamples of the test examples" in " ".join(out.split())
    assert "of the last layer 2" in out or "beats the last layer" in out or "is the best layer" in out
    assert "Layer chosen from 4 labelled examples per class" in " ".join(out.split())
    saved_choice = json.loads((tmp_path / "out" / "select.json").read_text())
    assert saved_choice["last_layer"] == 2 and saved_choice["verdict"]["n_resamples"] == 3
    assert saved_choice["record"]["resample_seed"] == 0 and saved_choice["config"]["select"]["labels_per_class"] == 4
    # the default recipes (auto): the set's recipe for classification, a candidate before the layers
    from layerscope.analysis.recipe_runs import auto_recipe_set
    from layerscope.analysis.recipes import recipe_for

    recipe = f"recipe {recipe_for(auto_recipe_set(kind='language-model'), 'Classification').text}"  # no modules.json
    assert [row["layer"] for row in saved_choice["layers"]] == [-1, 0, 1, 2]
    assert saved_choice["candidates"] == {"-1": recipe} and saved_choice["layers"][0]["candidate"] == recipe
    assert saved_choice["config"]["select"]["recipes"] == ["auto"]
    assert recipe in out
    with np.load(tmp_path / "out" / "resamples.npz") as resamples:
        assert resamples["topics/default/test/0"].shape == (3, 18)
    few = pd.read_csv(tmp_path / "out" / "few_labels.csv").set_index("task")
    assert set(few.index) == {"topics", "average"}
    average = few.loc["average"]
    assert average["chosen_layer"] == (average["cv_best_layer"] if average["cv_gain_low"] > 0 else 2)
    assert "beyond the noise (interval above 0), else the last layer" in " ".join(out.split())
    # the same model shipped as a sentence encoder: the record has no recipe for its kind, and select says so
    from layerscope.analysis.recipe_runs import kind_record

    if not kind_record(kind="sentence-encoder").get("beats_last_held_out"):
        (tmp_path / "model" / "modules.json").write_text(json.dumps(
            [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]))
        [(code, lines, out)] = cli_runs(["select", "--model", str(tmp_path / "model"), "--device", "cpu", "--tasks",
                                         str(files / "topics.csv"), "--split-column", "split", "--bootstrap", "0",
                                         "--no-cache", "--eval-workers", "1", "--out", str(tmp_path / "encoder")])
        assert code == 0, lines
        assert "--recipes auto is the last layer for a sentence-encoder" in " ".join(out.split())
        assert json.loads((tmp_path / "encoder" / "select.json").read_text())["candidates"] == {}


@pytest.mark.numeric
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.UndefinedMetricWarning")
@pytest.mark.parametrize("kind", ["int", "str"])
def test_counted_scores_equal_mtebs_own_scoring(kind, monkeypatch) -> None:
    from layerscope.evaluate import uncertainty

    rng = np.random.default_rng(3)
    names = np.array(["cat", "dog", "emu", "yak", "owl"]) if kind == "str" else np.arange(5) * 7
    labels = names[rng.choice(4, size=40, p=[0.4, 0.3, 0.2, 0.1])]
    predictions = [names[rng.choice(4, size=40, p=[0.5, 0.3, 0.2, 0.0])] for _ in range(3)]  # one class never predicted
    labels[0] = predictions[0][0] = predictions[1][0] = names[4]  # a class only example 0 has: absent from most resamples
    rows = rng.integers(0, 40, size=(25, 40))
    assert 0 < sum(0 in drawn for drawn in rows) < len(rows)

    def mteb_scores(metric: str) -> list[float]:  # MTEB's own calls, averaged over the experiments as MTEB does
        scores = [[AbsTaskClassification._calculate_scores(None, labels[drawn], p[drawn])[metric] for p in predictions]
                  for drawn in rows]
        return [float(np.mean(values)) for values in scores]

    for metric in uncertainty.COUNTED_METRICS:
        expected = mteb_scores(metric)
        # float64 sums of the same counts in another order: 1e-12 is rounding, a wrong class set is >= 1e-3
        assert uncertainty.counted_scores(labels, predictions, rows, metric) == pytest.approx(expected, abs=1e-12), metric
        monkeypatch.setattr(uncertainty, "_COUNT_CHUNK", 3 * 40 * 4)  # 4 resamples a chunk
        probe = type("Probe", (), {"metadata": type("M", (), {"main_score": metric})})()
        assert uncertainty._classification_scores(probe, labels, predictions, rows) == pytest.approx(expected, abs=1e-12)
        monkeypatch.undo()
    assert len(set(mteb_scores("f1"))) > 1  # the resamples differ: not a comparison of constants
    with pytest.raises(LayerscopeError, match="^cannot count 'ap': one of accuracy, f1, "):
        uncertainty.counted_scores(labels, predictions, rows, "ap")


@pytest.mark.numeric
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.UndefinedMetricWarning")
@pytest.mark.parametrize("hand", [HandPairs, lambda: HandSTS(np.arange(12)), lambda: HandClassification(np.arange(18))],
                         ids=["pairs", "sts", "classification"])
def test_rescored_resamples_equal_mteb_on_the_resampled_copies(run, hand) -> None:
    from layerscope.evaluate.encoder import LayerView
    from layerscope.evaluate.runner import main_score, run_task
    from layerscope.evaluate.uncertainty import _rescored_resamples, bootstrap_plan

    extraction = run[1]
    view = LayerView(extraction.texts, name="layerscope/tiny", revision=None)
    view.set_layer(1, extraction.pooled[extraction.layers.index(1)])
    plan = bootstrap_plan(hand(), N_RESAMPLES, RESAMPLE_SEED)
    copies = [main_score(run_task(view, resampled, None)) for resampled in plan.copies()]  # MTEB on each copy
    # the same MTEB scoring of the same per-example values, recorded once: 1e-12 is rounding
    assert _rescored_resamples(view, plan, None) == pytest.approx(copies, abs=1e-12)
    assert len(set(copies)) > 1


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.UndefinedMetricWarning")
def test_select_rerun_reads_its_scores_back_and_says_so(files, tmp_path) -> None:
    saved = tiny_model("llama", num_layers=2)
    saved.model.save_pretrained(str(tmp_path / "model"))
    saved.tokenizer.save_pretrained(str(tmp_path / "model"))
    command = ["select", "--model", str(tmp_path / "model"), "--device", "cpu", "--tasks", str(files / "topics.csv"),
               "--split-column", "split", "--bootstrap", "3", "--cache-dir", str(tmp_path / "cache"),
               "--eval-workers", "1"]
    first, second = cli_runs([*command, "--out", str(tmp_path / "first")], [*command, "--out", str(tmp_path / "again")])
    assert first[0] == second[0] == 0, (first[1], second[1])
    runs = [json.loads((tmp_path / name / "select.json").read_text()) for name in ("first", "again")]
    scored = len(runs[0]["layers"])  # the layers and the candidates beside them (a recipe)
    assert runs[0]["record"]["kept"] == {"layers": 0, "bootstrap_units": 0}
    assert runs[1]["record"]["kept"] == {"layers": scored, "bootstrap_units": scored}  # one task: a unit per layer
    assert "read back from the cache" not in first[2]
    assert f"read back from the cache: {scored} layers' scores, {scored} bootstrap units" in " ".join(second[2].split())
    assert runs[1]["layers"] == runs[0]["layers"] and runs[1]["verdict"] == runs[0]["verdict"]  # read back exactly
