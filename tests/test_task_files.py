"""Task files (issue 12): every kind from every format scored at every layer equals MTEB run by hand.

Each kind of task file (classification, its clustering, STS, pair classification, reranking) is
written as CSV, TSV, JSONL and parquet, scored by ``evaluate_layers`` at every layer of a tiny model,
and compared with the same MTEB task built by hand (MTEB's own classes, data typed in here) run by
``mteb.evaluate`` on the same embeddings. Every bad file gets its one line.
"""

from __future__ import annotations

import json
import os
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

from layerscope.config import TaskFileConfig  # noqa: E402
from layerscope.errors import LayerscopeError  # noqa: E402
from layerscope.evaluate import evaluate_layers, resolve, task_file  # noqa: E402
from layerscope.evaluate.runner import main_score  # noqa: E402
from layerscope.extract import extract  # noqa: E402
from layerscope.models.tiny import tiny_model  # noqa: E402
from mteb_helpers import FixedEncoder  # noqa: E402

FORMATS = ("csv", "tsv", "jsonl", "parquet")
SUBJECTS = {
    "animal": ["cat", "dog", "horse", "parrot", "wolf", "rabbit", "owl"],
    "vehicle": ["train", "car", "bus", "truck", "plane", "bicycle", "ferry"],
    "food": ["bread", "soup", "mango", "cake", "rice", "cheese", "apple"],
}
PLACES = ["in the morning", "near the river"]


def _classification_rows() -> pd.DataFrame:
    """14 rows per class: 10 marked train, 4 marked test (and one row with an empty text, removed)."""
    rows = []
    for label, nouns in SUBJECTS.items():
        for i, (noun, place) in enumerate((noun, place) for place in PLACES for noun in nouns):
            rows.append({"text": f"The {noun} was seen {place}.", "label": label, "split": "train" if i < 10 else "test"})
    rows.append({"text": "   ", "label": "food", "split": "train"})
    return pd.DataFrame(rows)


def _sts_rows() -> pd.DataFrame:
    first = ["The cat sleeps.", "A dog barks.", "The train is late.", "Fresh bread.", "A red car.", "Soup is hot.",
             "The owl hunts.", "A bus stops.", "Cake for dessert."]
    second = ["A kitten naps.", "The car honks.", "The bus is late.", "Warm bread.", "A blue truck.", "A cold drink.",
              "The wolf howls.", "A ferry departs.", "Mango for lunch."]
    scores = [4.6, 0.8, 3.9, 4.2, 3.1, 1.4, 2.6, 2.9, 2.2]
    split = ["test"] * 7 + ["train"] * 2  # train rows are not evaluated (STS has no training)
    return pd.DataFrame({"sentence1": first, "sentence2": second, "score": scores, "split": split})


def _pair_rows() -> pd.DataFrame:
    first = ["The cat sleeps.", "A dog barks.", "The train is late.", "Fresh bread.", "A red car.", "Soup is hot.",
             "The owl hunts.", "A bus stops."]
    second = ["A kitten naps.", "The market opens.", "The bus is late.", "An old bridge.", "A blue truck.",
              "Snow on the hills.", "A hawk hunts.", "The phone rings."]
    return pd.DataFrame({"sentence1": first, "sentence2": second, "label": [1, 0, 1, 0, 1, 0, 1, 0],
                         "split": ["test"] * 8})


def _reranking_rows() -> pd.DataFrame:
    """Three queries, two positives and two negatives each, one (query, positive, negative) per row."""
    queries = {
        "Which animals live on a farm?": (["The horse grazes.", "Cows stand in the field."],
                                          ["The train leaves at noon.", "Soup is hot."]),
        "How do people travel to work?": (["The bus was crowded.", "She rides a bicycle."],
                                          ["The owl hunts at night.", "Fresh bread cools."]),
        "What is for dinner tonight?": (["Rice with fish.", "A warm vegetable soup."],
                                        ["The ferry crossed the bay.", "A dog barked."]),
    }
    rows = [{"query": query, "positive": positive, "negative": negative, "split": "test"}
            for query, (positives, negatives) in queries.items()
            for positive, negative in zip(positives, negatives, strict=True)]
    return pd.DataFrame(rows)


TABLES = {"topics": _classification_rows, "similarity": _sts_rows, "duplicates": _pair_rows, "search": _reranking_rows}


def _write(frame: pd.DataFrame, path) -> None:
    suffix = path.suffix
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".tsv":
        frame.to_csv(path, sep="\t", index=False)
    elif suffix == ".jsonl":
        path.write_text("".join(json.dumps(record) + "\n" for record in frame.to_dict("records")), encoding="utf-8")
    else:
        frame.to_parquet(path)


# ------------------------------------------------------------------------------------------ by hand


def _meta(name: str, type_: str, main: str) -> TaskMetadata:
    return TaskMetadata(name=name, description="built by hand", reference=None, dataset={"path": "NA", "revision": "NA"},
                        type=type_, category="t2t", eval_splits=["test"], eval_langs=["eng-Latn"], main_score=main,
                        date=None, domains=[], task_subtypes=[], license=None, annotations_creators=None, dialect=[],
                        sample_creation="created", bibtex_citation="", modalities=["text"])


def _codes(labels) -> list[int]:
    names = sorted(set(labels))
    return [names.index(label) for label in labels]


class HandClassification(AbsTaskClassification):
    metadata = _meta("HandClassification", "Classification", "accuracy")

    def load_data(self, num_proc=None, **kwargs) -> None:
        rows = _classification_rows()
        rows = rows[rows["text"].str.strip() != ""]
        codes = _codes(rows["label"].tolist())
        train, test = (rows["split"] == "train").to_numpy(), (rows["split"] == "test").to_numpy()
        self.dataset = DatasetDict({
            "train": Dataset.from_dict({"text": rows["text"][train].tolist(), "label": list(np.array(codes)[train])}),
            "test": Dataset.from_dict({"text": rows["text"][test].tolist(), "label": list(np.array(codes)[test])}),
        })
        self.data_loaded = True


class HandClustering(AbsTaskClusteringLegacy):
    metadata = _meta("HandClustering", "Clustering", "v_measure")

    def load_data(self, num_proc=None, **kwargs) -> None:
        rows = _classification_rows()
        rows = rows[(rows["text"].str.strip() != "") & (rows["split"] == "test")]
        self.dataset = DatasetDict({"test": Dataset.from_dict({"sentences": [rows["text"].tolist()],
                                                               "labels": [_codes(rows["label"].tolist())]})})
        self.data_loaded = True


class HandSTS(AbsTaskSTS):
    metadata = _meta("HandSTS", "STS", "cosine_spearman")

    def load_data(self, num_proc=None, **kwargs) -> None:
        rows = _sts_rows()
        rows = rows[rows["split"] == "test"]
        self.min_score, self.max_score = rows["score"].min(), rows["score"].max()
        self.dataset = DatasetDict({"test": Dataset.from_dict({"sentence1": rows["sentence1"].tolist(),
                                                               "sentence2": rows["sentence2"].tolist(),
                                                               "score": rows["score"].tolist()})})
        self.data_loaded = True


class HandPairs(AbsTaskPairClassification):
    metadata = _meta("HandPairs", "PairClassification", "max_ap")

    def load_data(self, num_proc=None, **kwargs) -> None:
        rows = _pair_rows()
        self.dataset = DatasetDict({"test": Dataset.from_dict({"sentence1": rows["sentence1"].tolist(),
                                                               "sentence2": rows["sentence2"].tolist(),
                                                               "labels": rows["label"].tolist()})})
        self.data_loaded = True


class HandReranking(AbsTaskRetrieval):
    metadata = _meta("HandReranking", "Reranking", "map_at_1000")

    def load_data(self, num_proc=None, **kwargs) -> None:
        rows = _reranking_rows()
        queries = list(dict.fromkeys(rows["query"]))
        docs = list(dict.fromkeys([*rows["positive"], *rows["negative"]]))
        relevant = {f"q{queries.index(q)}": {} for q in queries}
        candidates: dict[str, list[str]] = {f"q{queries.index(q)}": [] for q in queries}
        for row in rows.itertuples():
            q = f"q{queries.index(row.query)}"
            relevant[q][f"d{docs.index(row.positive)}"] = 1
            candidates[q] += [f"d{docs.index(row.positive)}", f"d{docs.index(row.negative)}"]
        split = RetrievalSplitData(queries=Dataset.from_list([{"id": f"q{i}", "text": q} for i, q in enumerate(queries)]),
                                   corpus=Dataset.from_list([{"id": f"d{i}", "text": d} for i, d in enumerate(docs)]),
                                   relevant_docs=relevant, top_ranked=candidates)
        self.dataset = {"default": {"test": split}}
        self.data_loaded = True


HAND = {"topics": HandClassification, "topics-clustering": HandClustering, "similarity": HandSTS,
        "duplicates": HandPairs, "search": HandReranking}


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("task-files")
    for fmt in FORMATS:
        (root / fmt).mkdir()
        for stem, rows in TABLES.items():
            _write(rows(), root / fmt / f"{stem}.{fmt}")
    return root


@pytest.fixture(scope="module")
def extraction(model):
    """One extraction of every text of every file: both sides read exactly the same embeddings."""
    texts: list[str] = []
    for rows in TABLES.values():
        frame = rows()
        for column in ("text", "sentence1", "sentence2", "query", "positive", "negative"):
            if column in frame:
                texts += [t for t in frame[column] if t.strip()]
    return extract(model, list(dict.fromkeys(texts)), layers="all", progress=False)


@pytest.fixture(scope="module")
def by_hand(extraction) -> dict[tuple[str, int], dict]:
    """MTEB's scores of each hand-built task at each layer (a plain ``mteb.evaluate``, fresh tasks), on one
    thread as layerscope's evaluators run (``run_task``): the classifier's BLAS reductions are the same."""
    from threadpoolctl import threadpool_limits

    scores = {}
    for position, layer in enumerate(extraction.layers):
        encoder = FixedEncoder(list(extraction.texts), extraction.pooled[position])
        for name, cls in HAND.items():
            with threadpool_limits(limits=1):
                result = mteb.evaluate(encoder, cls(), cache=None, show_progress_bar=False, co2_tracker=False)
            scores[(name, layer)] = result.task_results[0].scores
    return scores


def _numbers(scores: dict) -> dict[str, float]:
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


# ------------------------------------------------------------------------------------------ scores


@pytest.mark.numeric
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.UndefinedMetricWarning")
def test_every_kind_at_every_layer_equals_mteb_by_hand(fmt, folder, model, extraction, by_hand) -> None:
    files = ",".join(str(folder / fmt / f"{stem}.{fmt}") for stem in TABLES)
    frame = evaluate_layers(model, files, extraction=extraction, task_files={"split_column": "split", "clustering": True},
                            progress=False, eval_workers=1)
    assert set(frame["task"]) == set(HAND)
    assert dict(zip(frame["task"], frame["task_type"], strict=False)) == {
        "topics": "Classification", "topics-clustering": "Clustering", "similarity": "STS",
        "duplicates": "PairClassification", "search": "Reranking"}
    assert sorted(frame["layer"].unique()) == list(extraction.layers) == list(range(model.num_layers + 1))
    for row in frame.itertuples():
        expected = by_hand[(row.task, row.layer)]
        # the same embeddings and evaluators: scores of order 1 agree to rounding (1e-9 leaves room for
        # similarities batched otherwise; a wrong text, label or split moves a score by 1/n or more)
        assert row.main_score == pytest.approx(main_score(expected), abs=1e-9), (row.task, row.layer)
        got, want = _numbers(json.loads(row.scores)), _numbers(expected)
        assert got.keys() == want.keys()
        for key, value in want.items():
            assert got[key] == pytest.approx(value, abs=1e-9, nan_ok=True), (row.task, row.layer, key)
    # the kinds really differ across layers of a random model: the comparison is not between constants
    assert frame.groupby("task")["main_score"].nunique().max() > 1


@pytest.mark.numeric
def test_list_cells_of_jsonl_equal_one_row_per_pair(tmp_path, model, extraction) -> None:
    """A JSONL reranking file with lists of positives and negatives per query scores like the flat rows."""
    flat = _reranking_rows()
    grouped = flat.groupby("query", sort=False).agg({"positive": list, "negative": list}).reset_index()
    _write(grouped, tmp_path / "lists.jsonl")
    _write(flat, tmp_path / "flat.csv")
    scores = evaluate_layers(model, [tmp_path / "lists.jsonl", tmp_path / "flat.csv"], extraction=extraction,
                             layers=[1], progress=False, eval_workers=1)
    # the same pairs scored in other groupings (other similarity batch shapes): the same ranks, and a mean
    # of order 1 a few ulps apart at most
    by_task = scores.set_index("task")["main_score"]
    assert by_task["lists"] == pytest.approx(by_task["flat"], rel=1e-12, abs=1e-12)


def test_task_metadata_says_where_it_came_from(folder) -> None:
    path = folder / "csv" / "topics.csv"
    tasks = resolve([str(path), "LeeDocumentSTS"], files=TaskFileConfig(split_column="split", clustering=True))
    assert [task.metadata.name for task in tasks] == ["topics", "topics-clustering", "LeeDocumentSTS"]
    meta = tasks[0].metadata
    assert meta.dataset["path"] == str(path.resolve()) and meta.dataset["revision"].startswith("sha256:")
    assert "text='text'" in meta.description and "removed 1 row with an empty text" in meta.description
    assert "split by column 'split': 30 train, 12 test" in meta.description
    assert tasks[0].seed == 42  # MTEB's own task seed unless one is given
    assert resolve(str(path), seed=7, files={"split_column": "split"})[0].seed == 7


def test_names_are_unique(folder, tmp_path) -> None:
    _write(_sts_rows(), tmp_path / "similarity.csv")
    _write(_sts_rows(), tmp_path / "LeeDocumentSTS.csv")
    tasks = resolve([str(folder / "csv" / "similarity.csv"), str(tmp_path / "similarity.csv"),
                     str(folder / "csv" / "similarity.csv"), "LeeDocumentSTS", str(tmp_path / "LeeDocumentSTS.csv")])
    assert [task.metadata.name for task in tasks] == ["similarity", "similarity-2", "LeeDocumentSTS", "LeeDocumentSTS-2"]


def test_explicit_columns_and_case(tmp_path) -> None:
    rows = _classification_rows().rename(columns={"text": "Text", "label": "topic"})
    _write(rows, tmp_path / "tickets.csv")
    tasks = task_file(tmp_path / "tickets.csv", label_column="topic", split_column="split")  # Text matches 'text'
    assert tasks[0].table.columns == {"text": "Text", "label": "topic"}
    with pytest.raises(LayerscopeError, match=r"no label column 'label'.*columns found: Text, topic, split"):
        task_file(tmp_path / "tickets.csv")
    renamed = rows.rename(columns={"Text": "body"})
    _write(renamed, tmp_path / "tickets.csv")
    tasks = task_file(tmp_path / "tickets.csv", text_column="body", label_column="topic", split_column="split")
    assert tasks[0].table.columns == {"text": "body", "label": "topic"}
    # one set of options serves a list of files of several kinds: an option names its kind's column
    _write(_reranking_rows().drop(columns="split").rename(columns={"negative": "distractor"}), tmp_path / "search.csv")
    tasks = resolve([str(tmp_path / "tickets.csv"), str(tmp_path / "search.csv")],
                    files={"text_column": "body", "label_column": "topic", "split_column": "split",
                           "negative_column": "distractor"})
    assert [(t.metadata.name, t.metadata.type) for t in tasks] == [("tickets", "Classification"), ("search", "Reranking")]
    assert tasks[1].table.columns == {"query": "query", "positive": "positive", "negative": "distractor"}


def test_seeded_stratified_split(tmp_path) -> None:
    rows = pd.DataFrame([{"text": f"Note {i} about the {noun}.", "label": label}
                         for label, nouns in SUBJECTS.items() for i in range(3 if label != "food" else 4)
                         for noun in nouns[:6]])
    assert rows["label"].value_counts().to_dict() == {"food": 24, "animal": 18, "vehicle": 18}
    _write(rows, tmp_path / "topics.csv")
    table = task_file(tmp_path / "topics.csv")[0].table
    held = table.rows.groupby("label")["test"].sum().to_dict()
    assert held == {"animal": 9, "food": 12, "vehicle": 9}
    # the documented rule: per class (sorted), default_rng(split_seed).permutation, the first round(f n) held out
    rng = np.random.default_rng(42)
    for label in sorted(held):
        index = np.flatnonzero(table.rows["label"] == label)
        expected = index[rng.permutation(len(index))[: held[label]]]
        assert set(expected) == set(np.flatnonzero(table.rows["test"].to_numpy() & (table.rows["label"] == label)))
    again = task_file(tmp_path / "topics.csv")[0].table
    assert (again.rows["test"] == table.rows["test"]).all()
    other = task_file(tmp_path / "topics.csv", split_seed=1)[0].table
    assert not (other.rows["test"] == table.rows["test"]).all()
    assert other.rows.groupby("label")["test"].sum().to_dict() == held
    quarter = task_file(tmp_path / "topics.csv", test_fraction=0.25)[0].table
    assert quarter.rows.groupby("label")["test"].sum().to_dict() == {"animal": 5, "food": 6, "vehicle": 5}


# ------------------------------------------------------------------------------------------ bad files


def _bad(tmp_path, name: str, content) -> str:
    path = tmp_path / name
    if isinstance(content, pd.DataFrame):
        _write(content, path)
    else:
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(path)


BAD_FILES = {
    "missing column": ("tickets.csv", pd.DataFrame({"text": ["a", "b"], "labels": ["x", "y"]}), {},
                       r"tickets\.csv: no label column 'label' for classification; columns found: text, labels "
                       r"\(nearest: 'labels'\); name it with --label-column"),
    "missing explicit column": ("pairs.csv", _pair_rows(), {"sentence2_column": "second"},
                                r"pairs\.csv: no sentence2 column 'second' for pair classification; columns found: "
                                r"sentence1, sentence2, label, split \(nearest: 'sentence2'\)"),
    "cannot tell": ("notes.tsv", pd.DataFrame({"sentence": ["a"], "category": ["x"]}), {},
                    r"notes\.tsv: cannot tell the task from its columns \(sentence, category\); use text \+ label "
                    r"\(classification\), .*, e\.g\. --text-column sentence --label-column category"),
    "no score or label": ("pairs.tsv", pd.DataFrame({"sentence1": ["a"], "sentence2": ["b"], "sim": [1.0]}), {},
                          r"pairs\.tsv: a sentence1 \+ sentence2 file needs a score column \(STS\) or a 0/1 label "
                          r"column \(pair classification\); columns found: sentence1, sentence2, sim \(nearest: 'sim'\)"),
    "explicit column of no file kind": ("body.csv", pd.DataFrame({"body": ["a"], "category": ["x"]}),
                                        {"text_column": "bdy"}, r"body\.csv: no text column 'bdy' for classification; "
                                        r"columns found: body, category \(nearest: 'body'\)"),
    "one class": ("one.csv", pd.DataFrame({"text": [f"t{i}" for i in range(20)], "label": "spam"}), {},
                  r"one\.csv: the label column 'label' holds one class only \('spam'\); classification needs two or "
                  "more"),
    "small class": ("small.csv", pd.DataFrame({"text": [f"t{i}" for i in range(25)], "label": ["a"] * 20 + ["b"] * 5}),
                    {}, r"small\.csv: class 'b' has 5 rows; MTEB's classification protocol draws 8 per class to train "
                        r"on and --test-fraction 0.5 holds out 3 of them, so each class needs at least 16 rows"),
    "small train class": ("few.csv", pd.DataFrame({"text": [f"t{i}" for i in range(24)], "label": ["a", "b"] * 12,
                                                   "split": ["train"] * 14 + ["test"] * 10}), {"split_column": "split"},
                          r"few\.csv: class '(a|b)' has 7 training rows; MTEB's classification protocol draws 8 per "
                          "class"),
    "empty texts": ("blank.csv", pd.DataFrame({"text": ["", "  ", None], "label": ["a", "b", "a"]}), {},
                    r"blank\.csv: no rows left after removing 3 rows with an empty text of 3; fill the 'text'"),
    "score not numeric": ("sts.csv", pd.DataFrame({"sentence1": ["a", "", "b"], "sentence2": ["c", "x", "d"],
                                                   "score": ["4.5", "1", "high"]}), {},
                          r"sts\.csv: score column 'score' is not numeric \(row 3: 'high'\); give each pair's similarity "
                          "as a number"),
    "pair label not binary": ("pairs.jsonl", pd.DataFrame({"sentence1": ["a", "b"], "sentence2": ["c", "d"],
                                                          "label": [1, 3]}), {},
                              r"pairs\.jsonl: label column 'label' is not 0/1 \(row 2: '3'\)"),
    "binary file": ("image.csv", bytes(range(256)) * 4, {},
                    r"cannot read .*image\.csv: it looks binary \(a NUL byte at byte 0\), not a csv text table; save it "
                    "as UTF-8 csv"),
    "not utf-8": ("latin.tsv", "text\tlabel\ncaf\xe9\ta\n".encode("latin-1"), {},
                  r"cannot read .*latin\.tsv: not UTF-8 text \(byte 14\); save it as UTF-8 tsv"),
    "unreadable parquet": ("table.parquet", "text,label\na,b\n", {},
                           r"cannot parse .*table\.parquet as parquet: .*; check that it is a valid parquet file"),
    "jsonl line": ("broken.jsonl", '{"text": "a", "label": "x"}\n{"text": "b", "label": \n', {},
                   r"cannot parse .*broken\.jsonl: line 2 is not JSON \(.*\); fix or remove that line"),
    "bad split value": ("split.csv", pd.DataFrame({"text": ["a", "b"], "label": ["x", "y"], "split": ["train", "dev"]}),
                        {"split_column": "split"}, r"split\.csv: split column 'split' holds 'dev' in row 2; use train "
                                                   "or test"),
    "no negatives": ("rerank.csv", pd.DataFrame({"query": ["q"], "positive": ["p"]}), {},
                     r"rerank\.csv: query 'q' has no candidate that is not relevant; reranking needs some: add a "
                     "negative column"),
    "no rows": ("header.csv", "text,label\n", {}, r"header\.csv: no rows; a task file needs one row per example"),
    "not found": ("absent.csv", None, {}, r"file not found: .*absent\.csv"),
}


@pytest.mark.parametrize("case", BAD_FILES, ids=str)
def test_bad_files_get_one_line(tmp_path, case: str) -> None:
    name, content, options, message = BAD_FILES[case]
    path = _bad(tmp_path, name, content) if content is not None else str(tmp_path / name)
    with pytest.raises(LayerscopeError, match=message) as error:
        resolve(path, files=options)
    assert "\n" not in str(error.value)


def test_empty_rows_are_counted(tmp_path) -> None:
    rows = pd.DataFrame({"sentence1": ["a", "", "b", "c"], "sentence2": ["d", "e", "f", "g"],
                         "score": [1.0, 2.0, None, 3.0]})
    _write(rows, tmp_path / "sts.parquet")
    task = task_file(tmp_path / "sts.parquet")[0]
    assert len(task.table.rows) == 2
    assert "removed 1 row with an empty text and 1 row with no score" in task.metadata.description


def test_bad_options() -> None:
    with pytest.raises(LayerscopeError, match="test_fraction must be a number between 0 and 1"):
        TaskFileConfig(test_fraction=1.5)
    with pytest.raises(LayerscopeError, match="text_column must be a column name"):
        TaskFileConfig(text_column=" ")
    assert TaskFileConfig(test_fraction="0.3").test_fraction == 0.3  # the command line hands text
    with pytest.raises(LayerscopeError, match="unknown TaskFileConfig option 'text_colum'"):
        resolve("x.csv", files={"text_colum": "body"})


def test_analyze_scores_task_files_and_measures_their_texts(folder, model, tmp_path) -> None:
    """analyze(tasks=FILES): the files' tasks are scored (as evaluate_layers scores them) and their texts get metrics."""
    from layerscope.pipeline import ALL_TASKS, analyze

    files = [str(folder / "csv" / "topics.csv"), str(folder / "jsonl" / "similarity.jsonl")]
    options = {"split_column": "split"}
    result = analyze(loaded_model=model, tasks=files, task_files=options, metrics="dataset_entropy",
                     select_by="dataset_entropy", out=tmp_path, max_length=64, progress=False, report=False)
    assert set(result.scores["task"]) == {"topics", "similarity"}
    assert set(result.metrics["dataset"]) == {"topics", "similarity", ALL_TASKS}
    assert result.config.eval_seed is None
    alone = evaluate_layers(model, files, task_files=options, progress=False, eval_workers=1)
    merged = result.scores.merge(alone, on=["task", "layer"], suffixes=("", "_alone"))
    assert len(merged) == len(alone)
    np.testing.assert_allclose(merged["main_score"], merged["main_score_alone"], atol=1e-6)
