"""Per-layer downstream evaluation: cached all-layer path vs MTEB's own per-layer run, tasks, errors."""

from __future__ import annotations

import json
import os
import random
import tempfile

os.environ.setdefault("MTEB_CACHE", tempfile.mkdtemp(prefix="layerscope-test-mteb-"))
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

mteb = pytest.importorskip("mteb")

from datasets import Dataset, DatasetDict  # noqa: E402
from mteb.abstasks.classification import AbsTaskClassification  # noqa: E402
from mteb.abstasks.clustering_legacy import AbsTaskClusteringLegacy  # noqa: E402
from mteb.abstasks.pair_classification import AbsTaskPairClassification  # noqa: E402
from mteb.abstasks.retrieval import AbsTaskRetrieval  # noqa: E402
from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData  # noqa: E402
from mteb.abstasks.sts import AbsTaskSTS  # noqa: E402
from mteb.abstasks.task_metadata import TaskMetadata  # noqa: E402

from layerscope.errors import LayerscopeError  # noqa: E402
from layerscope.evaluate import average_by_layer, evaluate_layers, paper32, resolve, run_mteb  # noqa: E402
from layerscope.evaluate import tasks as task_module  # noqa: E402
from layerscope.evaluate.encoder import DirectLayerEncoder  # noqa: E402
from layerscope.evaluate.runner import COLUMNS, main_score  # noqa: E402
from layerscope.models.tiny import tiny_model  # noqa: E402

ANIMALS = [
    "The cat sleeps on the warm windowsill.",
    "A dog barked at the mail carrier.",
    "Horses graze in the quiet meadow.",
    "The parrot repeated every word it heard.",
    "Wolves howl under the full moon.",
    "A small rabbit hid in the tall grass.",
    "The owl hunts mice at night.",
    "Cows stood in the muddy field.",
    "The kitten chased a ball of yarn.",
    "Bees buzz around the flowering tree.",
]
VEHICLES = [
    "The train left the station at noon.",
    "A red car sped down the highway.",
    "The bus was late again this morning.",
    "Trucks carry freight across the country.",
    "The airplane landed smoothly in the rain.",
    "A bicycle leaned against the fence.",
    "The ferry crossed the bay in an hour.",
    "Motorcycles roared past the cafe.",
    "The subway was crowded at rush hour.",
    "A tractor plowed the wide field.",
]
FOOD = [
    "Fresh bread cooled on the kitchen counter.",
    "She added basil to the tomato sauce.",
    "The soup needed a pinch more salt.",
    "Ripe mangoes filled the market stall.",
    "He grilled fish over an open fire.",
    "Chocolate cake is best served warm.",
]


def _meta(name: str, type_: str, main_score_name: str) -> TaskMetadata:
    return TaskMetadata(
        name=name,
        description="tiny in-memory task for layerscope tests",
        reference="https://github.com/embeddings-benchmark/mteb",
        dataset={"path": "NA", "revision": "NA"},
        type=type_,
        category="t2t",
        eval_splits=["test"],
        eval_langs=["eng-Latn"],
        main_score=main_score_name,
        date=("2024-01-01", "2024-01-02"),
        domains=[],
        task_subtypes=[],
        license="mit",
        annotations_creators="derived",
        dialect=[],
        sample_creation="created",
        bibtex_citation="",
        modalities=["text"],
    )


class TinyClassification(AbsTaskClassification):
    metadata = _meta("TinyClassification", "Classification", "accuracy")
    samples_per_label = 4
    n_experiments = 3

    def load_data(self, num_proc: int | None = None, **kwargs) -> None:
        train = ANIMALS[:6] + VEHICLES[:6]
        test = ANIMALS[6:] + VEHICLES[6:]
        self.dataset = DatasetDict(
            {
                "train": Dataset.from_dict({"text": train, "label": [0] * 6 + [1] * 6}),
                "test": Dataset.from_dict({"text": test, "label": [0] * 4 + [1] * 4}),
            }
        )
        self.data_loaded = True


class TinyClustering(AbsTaskClusteringLegacy):
    metadata = _meta("TinyClustering", "Clustering", "v_measure")

    def load_data(self, num_proc: int | None = None, **kwargs) -> None:
        sentences = ANIMALS[:5] + VEHICLES[:5] + FOOD[:5]
        labels = [0] * 5 + [1] * 5 + [2] * 5
        self.dataset = DatasetDict({"test": Dataset.from_dict({"sentences": [sentences], "labels": [labels]})})
        self.data_loaded = True


class TinySTS(AbsTaskSTS):
    metadata = _meta("TinySTS", "STS", "cosine_spearman")
    min_score = 0
    max_score = 5

    def load_data(self, num_proc: int | None = None, **kwargs) -> None:
        first = [ANIMALS[0], ANIMALS[1], VEHICLES[0], FOOD[0], ANIMALS[8], VEHICLES[3]]
        second = [ANIMALS[8], VEHICLES[1], VEHICLES[2], FOOD[1], FOOD[2], VEHICLES[6]]
        scores = [4.5, 0.5, 3.5, 3.0, 0.2, 3.2]
        self.dataset = DatasetDict({"test": Dataset.from_dict({"sentence1": first, "sentence2": second, "score": scores})})
        self.data_loaded = True


class TinyPairs(AbsTaskPairClassification):
    metadata = _meta("TinyPairs", "PairClassification", "max_ap")

    def load_data(self, num_proc: int | None = None, **kwargs) -> None:
        first = [ANIMALS[2], ANIMALS[3], VEHICLES[4], VEHICLES[5], FOOD[3], FOOD[4]]
        second = [ANIMALS[4], VEHICLES[7], VEHICLES[8], FOOD[5], FOOD[0], ANIMALS[9]]
        labels = [1, 0, 1, 0, 1, 0]
        self.dataset = DatasetDict({"test": Dataset.from_dict({"sentence1": first, "sentence2": second, "labels": labels})})
        self.data_loaded = True


class TinyReranking(AbsTaskRetrieval):
    metadata = _meta("TinyReranking", "Reranking", "map_at_1000")

    def load_data(self, num_proc: int | None = None, **kwargs) -> None:
        corpus = [{"id": f"d{i}", "text": text} for i, text in enumerate(ANIMALS[:3] + VEHICLES[:3] + FOOD[:3])]
        queries = [
            {"id": "q0", "text": "Which animals live on the farm?"},
            {"id": "q1", "text": "How do people travel to work?"},
            {"id": "q2", "text": "What is for dinner tonight?"},
        ]
        split = RetrievalSplitData(
            queries=Dataset.from_list(queries),
            corpus=Dataset.from_list(corpus),
            relevant_docs={f"q{q}": {f"d{3 * q + k}": 1 for k in range(3)} for q in range(3)},
            top_ranked={f"q{q}": [f"d{i}" for i in range(9)] for q in range(3)},
        )
        self.dataset = {"default": {"test": split}}
        self.data_loaded = True


TINY_TASKS = (TinyClassification, TinyClustering, TinySTS, TinyPairs, TinyReranking)


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama", num_layers=3, seed=0)


@pytest.fixture(scope="module")
def cached_frame(model) -> pd.DataFrame:
    return evaluate_layers(model, [cls(seed=0) for cls in TINY_TASKS], layers="all", seed=0, progress=False)


def _numbers(scores: dict) -> dict[str, float]:
    """Flatten MTEB's score dict to its numeric leaves (for comparisons)."""
    flat: dict[str, float] = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}", inner)
        elif isinstance(value, list):
            for i, inner in enumerate(value):
                walk(f"{prefix}[{i}]", inner)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[prefix] = float(value)

    walk("", scores)
    return {k: v for k, v in flat.items() if "evaluation_time" not in k}


def test_frame_layout(cached_frame, model) -> None:
    assert list(cached_frame.columns) == COLUMNS
    assert len(cached_frame) == (model.num_layers + 1) * len(TINY_TASKS)
    assert sorted(cached_frame["layer"].unique()) == list(range(model.num_layers + 1))
    assert set(cached_frame["task_type"]) == {"Classification", "Clustering", "STS", "PairClassification", "Reranking"}
    last = cached_frame[cached_frame["layer"] == model.num_layers]
    assert (last["depth_pct"] == 100.0).all()
    assert cached_frame["main_score"].notna().all()
    for row in cached_frame.itertuples():
        assert main_score(json.loads(row.scores)) == pytest.approx(row.main_score)


@pytest.mark.numeric
@pytest.mark.parametrize("task_class", TINY_TASKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("layer", [2])
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.UndefinedMetricWarning")
def test_cached_layer_matches_mteb_direct_run(cached_frame, model, task_class, layer: int) -> None:
    """Parity: layer l from the one-pass cache == MTEB's own run on an encoder returning layer l."""
    direct = DirectLayerEncoder(model, layer)
    task = task_class(seed=0)  # a fresh task seeds exactly like evaluate_layers' reseeding
    result = mteb.evaluate(direct, task, cache=None, show_progress_bar=False, encode_kwargs={"batch_size": 8})
    expected = result.task_results[0].scores
    row = cached_frame[(cached_frame["task"] == task.metadata.name) & (cached_frame["layer"] == layer)].iloc[0]
    # embeddings encoded in batches of 8 against the one-pass cache: float32 ulps apart, which move the
    # scores of order 1 by far less than 1e-6 (a wrong layer or text moves them by far more)
    assert row.main_score == pytest.approx(main_score(expected), abs=1e-6)
    got, want = _numbers(json.loads(row.scores)), _numbers(expected)
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-6, nan_ok=True), key


def test_reruns_are_identical(cached_frame, model) -> None:
    random.random()  # disturb the global RNGs: every (layer, task) is reseeded
    np.random.default_rng().random()
    np.random.seed(123)  # noqa: NPY002
    again = evaluate_layers(model, [cls(seed=0) for cls in TINY_TASKS], layers="all", seed=0, progress=False)
    pd.testing.assert_frame_equal(again, cached_frame, check_exact=True)  # a rerun in this process: exact


def test_worker_processes_give_the_scores_of_one_process(cached_frame, model) -> None:
    """Layers evaluated in forked workers (each reseeded per task) score exactly as in turn, in this process."""
    serial = evaluate_layers(model, [cls(seed=0) for cls in TINY_TASKS], layers="all", seed=0, progress=False,
                             eval_workers=1)
    spread = evaluate_layers(model, [cls(seed=0) for cls in TINY_TASKS], layers="all", seed=0, progress=False,
                             eval_workers=3)
    assert serial.attrs["record"]["eval_workers"] == 1 and spread.attrs["record"]["eval_workers"] == 3
    # exact: the same embeddings, and the evaluators run on one thread everywhere (run_task's
    # threadpool_limits caps BLAS and OpenMP, torch's included; workers set torch to one thread)
    pd.testing.assert_frame_equal(serial, spread, check_exact=True)
    pd.testing.assert_frame_equal(serial, cached_frame, check_exact=True)
    with pytest.raises(LayerscopeError, match="eval_workers must be a positive integer"):
        evaluate_layers(model, [TinySTS(seed=0)], eval_workers=0, progress=False)


def test_second_call_reads_the_cache(model, tmp_path, monkeypatch) -> None:
    tasks = [TinySTS(seed=0), TinyClassification(seed=0)]
    first = evaluate_layers(model, tasks, layers=[0, 2], cache_dir=str(tmp_path), progress=False)
    assert first.attrs["record"]["from_cache"] is False

    def no_forward(*args, **kwargs):
        raise AssertionError("the model ran although the cache holds every text")

    monkeypatch.setattr(model.model, "forward", no_forward)
    second = evaluate_layers(model, [TinySTS(seed=0), TinyClassification(seed=0)], layers=[0, 2], cache_dir=str(tmp_path), progress=False)
    assert second.attrs["record"]["from_cache"] is True
    pd.testing.assert_frame_equal(first, second, check_exact=True)  # the cache read back: exact


def test_average_by_layer(cached_frame, model) -> None:
    averages = average_by_layer(cached_frame)
    assert list(averages["layer"]) == list(range(model.num_layers + 1))
    expected = cached_frame.groupby("layer")["main_score"].mean().to_numpy() * 100
    np.testing.assert_allclose(averages["average"], expected)
    assert (averages["n_tasks"] == len(TINY_TASKS)).all()


def test_paper32_names_resolve_offline() -> None:
    names = paper32()
    assert len(names) == 32 and len(set(names)) == 32
    tasks = resolve("paper32")
    assert [t.metadata.name for t in tasks] == names
    by_name = {t.metadata.name: t for t in tasks}
    assert all(list(t.eval_splits) == ["test"] for t in tasks)
    assert by_name["STS17"].hf_subsets == ["en-en"]
    assert sorted(by_name["AmazonCounterfactualClassification"].hf_subsets) == ["en", "en-ext"]
    assert by_name["MassiveIntentClassification"].hf_subsets == ["en"]
    types = {t.metadata.type for t in tasks}
    assert types == {"Classification", "Clustering", "Reranking", "STS", "PairClassification"}
    assert not any(t.data_loaded for t in tasks)  # nothing downloaded


def test_paper32_average_matches_paper_aggregation() -> None:
    from layerscope.evaluate import paper32_average

    rows = [{"layer": 1, "depth_pct": 50.0, "task": name, "main_score": 0.5} for name in paper32()]
    rows[0]["main_score"] = 0.82  # AmazonCounterfactual: already the mean of en and en-ext
    frame = pd.DataFrame(rows)
    average = paper32_average(frame)
    assert average["average"].iloc[0] == pytest.approx(100 * (0.82 + 31 * 0.5) / 32)
    with pytest.raises(LayerscopeError, match="missing tasks"):
        paper32_average(frame.iloc[1:])


def test_main_score_averages_subsets() -> None:
    scores = {"test": [{"hf_subset": "en", "main_score": 0.6}, {"hf_subset": "en-ext", "main_score": 0.8}]}
    assert main_score(scores) == pytest.approx(0.7)


def test_unknown_task_suggests_nearest() -> None:
    with pytest.raises(LayerscopeError, match=r"did you mean 'BBCNewsClassification'"):
        resolve("BBCNewsClasification")
    with pytest.raises(LayerscopeError, match=r"did you mean 'Banking77Classification'"):
        resolve(["Banking77Clasification"])
    with pytest.raises(LayerscopeError, match="no tasks"):
        resolve("")


def test_resolve_names_and_deduplicates() -> None:
    tasks = resolve("LeeDocumentSTS, offline")
    names = [t.metadata.name for t in tasks]
    assert names[0] == "LeeDocumentSTS" and len(names) == len(set(names)) == len(task_module.offline_names())


def test_hub_tasks_offline_say_hub_needed() -> None:
    # The hub check comes before the model is loaded: a bogus model name is never touched.
    with pytest.raises(LayerscopeError, match="needs the Hugging Face hub") as error:
        run_mteb("not-a-model", tasks="paper32")
    assert "\n" not in str(error.value)
    with pytest.raises(LayerscopeError, match="needs the Hugging Face hub"):
        evaluate_layers(tiny_model("llama", num_layers=1), ["STS12"], progress=False)


def test_offline_suite_metadata_and_budget() -> None:
    """Suite v1 (``offline-v1``) as it was; suite v2's budget is tested in test_offline_v2.py."""
    infos = task_module.describe_offline("offline-v1")
    assert {i.type for i in infos} == {"Classification", "Clustering", "STS", "Reranking", "PairClassification"}
    for info in infos:
        assert info.source and info.license and info.n_texts > 0 and info.main_score
    by_name = {i.name: i for i in infos}
    assert by_name["LeeDocumentSTS"].n_texts == 50
    unique: set[str] = set()
    for task in task_module.offline_suite(suite="offline-v1"):
        texts = task.texts()
        assert all(t == t.strip() and t for t in texts)
        unique.update(texts)
    assert len(unique) <= 1500  # encoding budget of the whole suite
    again: set[str] = set()
    for task in task_module.offline_suite(suite="offline-v1"):  # fresh instances rebuild the same fixed samples
        again.update(task.texts())
    assert again == unique


def test_lee_sts_pairs() -> None:
    task = task_module.LeeDocumentSTS()
    task.load_data()
    data = task.dataset["test"]
    assert len(data) == 1225
    assert len(set(data["sentence1"]) | set(data["sentence2"])) == 50


def test_same_article_pairs_are_topic_matched() -> None:
    task = task_module.BBCNewsSameArticlePairs()
    task.load_data()
    data = task.dataset["test"]
    labels = list(data["labels"])
    assert labels.count(1) == labels.count(0) == 100
    openings = dict(zip(task_module.BBCNewsClassification().texts(), range(10**6), strict=False))
    assert all(s in openings for s in data["sentence1"])  # shared with the classification task
    positives = {(a, b) for a, b, y in zip(data["sentence1"], data["sentence2"], labels, strict=True) if y == 1}
    negatives = [(a, b) for a, b, y in zip(data["sentence1"], data["sentence2"], labels, strict=True) if y == 0]
    assert not any(pair in positives for pair in negatives)


def test_reranking_candidates() -> None:
    task = task_module.RottenTomatoesPlotReranking()
    task.load_data()
    split = task.dataset["default"]["test"]
    assert len(split["queries"]) == 30 and len(split["corpus"]) == 150
    for query, candidates in split["top_ranked"].items():
        relevant = split["relevant_docs"][query]
        assert len(candidates) == len(set(candidates)) == 20
        assert set(relevant) <= set(candidates) and len(relevant) == 5


@pytest.mark.slow
def test_offline_suite_on_minilm_all_layers() -> None:
    import layerscope as ls

    model = ls.load_model("minilm-l6")
    frame = evaluate_layers(model, "offline", layers="all", progress=False)
    assert len(frame) == 7 * len(task_module.offline_names())
    averages = average_by_layer(frame)
    # all-MiniLM-L6-v2 is trained as a sentence embedder: its last layer beats the embedding layer
    assert averages["average"].iloc[-1] > averages["average"].iloc[0]


@pytest.mark.numeric
def test_default_seed_is_mteb_own_and_equals_a_plain_mteb_run(model) -> None:
    """Issue 12 (5b): by default each task keeps MTEB's seed (42), so a layer scores as ``mteb.evaluate`` does.

    The plain run is MTEB alone on a fixed-embedding encoder (no layerscope reseeding); evaluate_layers
    reads the same embeddings (``extraction=``). ``seed=`` still overrides, for that call only.
    """
    from threadpoolctl import threadpool_limits

    from layerscope.evaluate.encoder import LayerView
    from layerscope.extract import extract

    layer = 2
    texts = task_module.RottenTomatoesClassification().texts()
    extraction = extract(model, texts, layers=[layer], progress=False)
    view = LayerView(list(extraction.texts), name="fixed-embeddings")
    view.set_layer(layer, extraction.pooled[0])

    def plain(seed: int | None = None) -> float:
        task = task_module.RottenTomatoesClassification(**({} if seed is None else {"seed": seed}))
        # on one thread, as evaluate_layers' evaluators run (run_task): the logistic regression is then
        # the same computation, so the scores are equal exactly (on other thread counts its BLAS
        # reductions may round otherwise, and a flipped prediction moves the accuracy by 1/n)
        with threadpool_limits(limits=1):
            result = mteb.evaluate(view, task, cache=None, show_progress_bar=False, co2_tracker=False)
        return main_score(result.task_results[0].scores)

    task = task_module.RottenTomatoesClassification()
    assert task.seed == 42
    random.random()  # disturb the global RNGs: the evaluation reseeds (layer, task) itself
    default = evaluate_layers(model, [task], layers=[layer], extraction=extraction, progress=False, eval_workers=1)
    assert default["main_score"].iloc[0] == plain()
    assert default.attrs["record"]["seed"] is None
    assert default.attrs["record"]["task_seeds"] == {"RottenTomatoesClassification": 42}
    override = evaluate_layers(model, [task], layers=[layer], seed=0, extraction=extraction, progress=False,
                               eval_workers=1)
    assert override["main_score"].iloc[0] == plain(seed=0) != plain()  # the seed moves the score
    assert task.seed == 42  # the override applied to that call only
    again = evaluate_layers(model, [task], layers=[layer], extraction=extraction, progress=False, eval_workers=1)
    pd.testing.assert_frame_equal(again, default, check_exact=True)  # a rerun in this process: exact
    assert [t.seed for t in resolve("offline")] == [42] * len(task_module.offline_names())
    assert {t.seed for t in resolve("offline", seed=3)} == {3}


def test_registry_groups_and_names() -> None:
    from layerscope.evaluate.catalog import create, groups, register_task, registry

    v1 = [cls.metadata.name for cls in task_module.OFFLINE_TASKS]  # suite v1's 11 tasks, kept as they were
    assert groups()["offline-v1"] == v1 and len(v1) == 11
    assert groups()["offline"][: len(v1)] == v1 and len(groups()["offline"]) == 22
    assert groups()["paper32"] == paper32()
    assert registry()["LeeDocumentSTS"].local and not registry()["STS12"].local
    assert isinstance(create("LeeDocumentSTS"), task_module.LeeDocumentSTS)
    assert create("STS12", seed=5).seed == 5
    with pytest.raises(ValueError, match="already registered"):
        register_task(lambda seed=None: TinySTS(), name="LeeDocumentSTS")
    tiny = TinySTS(seed=1)
    assert resolve([tiny])[0] is tiny  # instances pass through
    from layerscope.evaluate import registry as registry_module

    register_task(TinySTS, groups=("mine",))  # a new task: one registration, then every name path knows it
    try:
        tasks = resolve("mine, TinySTS")
        assert [type(t) for t in tasks] == [TinySTS] and tasks[0].seed == 42
    finally:
        registry_module._REGISTRY.pop("TinySTS")
