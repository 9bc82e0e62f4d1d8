"""The offline task suite: MTEB task classes over the bundled corpora (no network), suite v1's 11 tasks.

Every task builds its data in memory from the corpora of :mod:`layerscope.data.bundled` (see
``layerscope datasets``), samples it with a fixed seed, and is evaluated by MTEB's own evaluators.
Sizes are capped so that these 11 tasks (about 1,450 unique texts, long documents cut to their first
~``MAX_CHARS`` = 400 characters) run over all 31 layers of SmolLM2 in a few minutes on 2 CPU cores.
Texts shared between tasks (e.g. the BBC articles of the classification, clustering and pair tasks)
are encoded once. They are group ``offline-v1``; the current suite, ``offline`` (v2, :data:`SUITES`),
adds the tasks of :mod:`~layerscope.evaluate.offline_v2` over data fetched from the package registries.

Provenance (source, license, package and version, reference, citation) is read from the corpus
table of :mod:`layerscope.data.bundled`, where it is written once. Each task class registers itself
in the task registry (:func:`~layerscope.evaluate.registry.register_task`, group ``offline``) when it
is defined: a new offline task is one class here, declared by its class keywords, e.g.
``class MyTask(PooledClassification, corpus="bbc", description="...")`` with ``pools = (16, 20)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from datasets import Dataset, DatasetDict
from mteb.abstasks import AbsTask
from mteb.abstasks.classification import AbsTaskClassification
from mteb.abstasks.clustering_legacy import AbsTaskClusteringLegacy
from mteb.abstasks.pair_classification import AbsTaskPairClassification
from mteb.abstasks.retrieval import AbsTaskRetrieval
from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData
from mteb.abstasks.sts import AbsTaskSTS
from mteb.abstasks.task_metadata import TaskMetadata

from layerscope.data.bundled import CorpusInfo, corpus_info
from layerscope.evaluate.registry import register_task
from layerscope.evaluate.sampling import (
    DATA_SEED,
    MAX_CHARS,
    classification_dataset,
    clip,
    clustering_dataset,
    split_pools,
)

__all__ = [
    "MAIN_SCORES",
    "OFFLINE_TASKS",
    "SUITES",
    "LocalTask",
    "OfflineTask",
    "PooledClassification",
    "PooledClustering",
    "TaskInfo",
    "suite_label",
    "suite_record",
    "task_metadata",
]

#: MTEB's main score of each task type, as the offline suite and task files use them.
MAIN_SCORES = {
    "Classification": "accuracy",
    "Clustering": "v_measure",
    "STS": "cosine_spearman",
    "PairClassification": "max_ap",
    "Reranking": "map_at_1000",
    "Retrieval": "ndcg_at_10",
}

#: Version of each offline suite (a group of the registry). ``offline`` is the current suite: suite v1's
#: 11 tasks plus those of :mod:`~layerscope.evaluate.offline_v2` over fetched data; ``offline-v1`` keeps
#: the 11, so runs recorded on it stay comparable. Every analysis run records its suite
#: (:func:`suite_record`).
SUITES = {"offline": 2, "offline-v1": 1}


def task_metadata(
    *,
    name: str,
    description: str,
    type: str,
    path: str,
    revision: str,
    reference: str | None = None,
    license: str | None = "not specified",
    domains: Sequence[str] = (),
    subtypes: Sequence[str] = (),
    date: tuple[str, str] | None = None,
    annotations: str | None = "derived",
    citation: str = "",
    languages: Sequence[str] = ("eng-Latn",),
    sample_creation: str = "found",
) -> TaskMetadata:
    """MTEB metadata of a local task (test split, text to text; the main score follows from the type)."""
    return TaskMetadata(
        name=name,
        description=description,
        reference=reference,
        dataset={"path": path, "revision": revision},
        type=type,
        category="t2t",
        modalities=["text"],
        eval_splits=["test"],
        eval_langs=list(languages),
        main_score=MAIN_SCORES[type],
        date=date,
        domains=list(domains),
        task_subtypes=list(subtypes),
        license=license,
        annotations_creators=annotations,
        dialect=[],
        sample_creation=sample_creation,
        bibtex_citation=citation,
    )


class LocalTask:
    """Mixin of tasks whose data is built in memory (offline tasks, task files): no hub needed."""

    dataset: Any
    data_loaded: bool

    def build(self) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        """Build the task's data in memory (no network)."""
        if self.data_loaded:
            return
        self.dataset = self.build()
        self.data_loaded = True

    def texts(self) -> list[str]:
        """Unique texts of the task, in first-seen order (for sizes and budgets)."""
        self.load_data()
        seen: dict[str, None] = {}
        for value in _walk_texts(self.dataset):
            seen.setdefault(value, None)
        return list(seen)


def _walk_texts(data: Any) -> Iterable[str]:
    if isinstance(data, (dict, DatasetDict)):
        for key, value in data.items():
            if key in ("relevant_docs", "top_ranked"):
                continue
            yield from _walk_texts(value)
    elif isinstance(data, Dataset):
        for column in ("text", "sentences", "sentence1", "sentence2"):
            if column in data.column_names:
                for value in data[column]:
                    yield from value if isinstance(value, list) else [value]


# MTEB's vocabulary for each corpus (its license identifier, domains, dates of the texts); the
# provenance itself (source, license text, package, reference, citation) is the corpus table's.
_CORPUS_TERMS: dict[str, dict[str, Any]] = {
    "bbc": {"license": "not specified", "domains": ["News", "Written"], "date": ("2004-01-01", "2005-12-31")},
    "r8": {"license": "not specified", "domains": ["News", "Written"], "date": ("1987-01-01", "1987-12-31")},
    "rotten-tomatoes": {"license": "not specified", "domains": ["Reviews", "Written"],
                        "date": ("2000-01-01", "2004-12-31")},
    "tweets": {"license": "cc-by-nc-sa-4.0", "domains": ["Social", "Written"], "date": ("2016-01-05", "2016-09-28")},
    "debates": {"license": "not specified", "domains": ["Spoken", "Government"], "date": ("2016-09-26", "2016-10-19")},
    "20ng": {"license": "not specified", "domains": ["News", "Written"], "date": ("1995-01-01", "1995-12-31")},
    "lee": {"license": "lgpl", "domains": ["News", "Written"], "date": ("2005-01-01", "2005-12-31")},
}


def _corpus_info(corpus: str) -> CorpusInfo:
    """Provenance of a bundled corpus, or of a fetched one (:mod:`layerscope.data.fetched`)."""
    if corpus in _CORPUS_TERMS:
        return corpus_info(corpus)
    from layerscope.data.fetched import fetched_info

    return fetched_info(corpus)


def _corpus_terms(corpus: str) -> dict[str, Any]:
    if corpus in _CORPUS_TERMS:
        return _CORPUS_TERMS[corpus]
    from layerscope.data.fetched import FETCHED

    return FETCHED[corpus].terms


def offline_metadata(corpus: str, *, name: str, description: str, type: str, subtypes: Sequence[str] = (),
                     annotations: str = "derived") -> TaskMetadata:
    """Metadata of an offline task over a bundled or fetched corpus, its provenance read from the corpus table."""
    info = _corpus_info(corpus)
    kind = "bundled" if corpus in _CORPUS_TERMS else "fetched"
    revision = f"{info.package}=={info.version}"
    if kind == "fetched":  # the archive itself, as pinned: name, version and sha256
        from layerscope.data.fetch import source
        from layerscope.data.fetched import FETCHED

        item = source(FETCHED[corpus].fetch)
        revision = f"{item.spec} sha256:{item.sha256}"
    return task_metadata(name=name, description=description, type=type, path=f"layerscope/{kind}/{corpus}",
                         revision=revision, reference=info.reference or None,
                         citation=info.citation, subtypes=subtypes, annotations=annotations, **_corpus_terms(corpus))


# MTEB's task type of each task class the offline suite builds on (retrieval with top_ranked = reranking)
_TYPES: tuple[tuple[type[AbsTask], str], ...] = (
    (AbsTaskClassification, "Classification"),
    (AbsTaskClusteringLegacy, "Clustering"),
    (AbsTaskSTS, "STS"),
    (AbsTaskPairClassification, "PairClassification"),
    (AbsTaskRetrieval, "Reranking"),
)
_CLASSES: list[type[AbsTask]] = []


class OfflineTask(LocalTask):
    """Base of the offline tasks: declared by class keywords, registered when defined.

    ``class Name(OfflineTask, AbsTaskX, corpus=..., description=..., subtypes=..., annotations=...)``
    gives the class its MTEB metadata (named after the class, the type following from the MTEB base
    unless ``task_type`` says otherwise, e.g. ``"Retrieval"`` for an :class:`AbsTaskRetrieval` without
    ``top_ranked``; the provenance from the corpus table) and registers it in the task registry (group
    ``offline``, in definition order; ``suite=1``, the default, also puts it in ``offline-v1``: only
    suite v1's 11 tasks say so). A subclass without ``corpus`` is an intermediate base.

    Attributes
    ----------
    corpus : str
        Bundled corpus the texts come from (``layerscope datasets``).
    """

    corpus: ClassVar[str]

    def __init_subclass__(cls, *, corpus: str | None = None, description: str = "", subtypes: Sequence[str] = (),
                          annotations: str = "derived", task_type: str | None = None, suite: int = 1,
                          **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if corpus is None:
            return
        cls.corpus = corpus
        task_type = task_type or next(name for base, name in _TYPES if issubclass(cls, base))
        cls.metadata = offline_metadata(corpus, name=cls.__name__, description=description, type=task_type,
                                        subtypes=subtypes, annotations=annotations)
        register_task(cls, groups=("offline", "offline-v1") if suite == 1 else ("offline",))
        if suite == 1:
            _CLASSES.append(cls)

    @property
    def source(self) -> str:
        """Citation of the original data (from the corpus table)."""
        return _corpus_info(self.corpus).source

    @property
    def license_note(self) -> str:
        """License of the data and of the package carrying it (from the corpus table)."""
        return _corpus_info(self.corpus).license


def _labelled(name: str) -> pd.DataFrame:
    """A bundled corpus, or a fetched one (its archive fetched on first use)."""
    if name in _CORPUS_TERMS:
        from layerscope.data import load_labelled

        return load_labelled(name)
    from layerscope.data.fetched import load_fetched

    return load_fetched(name)


# --------------------------------------------------------------------------------------------- data


def _bbc_pools() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train pool (16 per topic) and test set (20 per topic) of BBC articles with at least 1,000 characters."""
    frame = _labelled("bbc").drop_duplicates("text")
    frame = frame[frame["text"].str.len() >= 1000].reset_index(drop=True)
    return split_pools(frame, 16, 20, np.random.default_rng(DATA_SEED))


def _classification_pools(
    name: str, train_per_label: int, test_per_label: int, *, min_chars: int = 0, keep: Any = None,
    max_chars: int = MAX_CHARS,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    frame = _labelled(name)
    if keep is not None:
        frame = frame[keep(frame)]
    frame = frame.assign(text=frame["text"].map(lambda text: clip(text, max_chars)))
    frame = frame[frame["text"].str.len() >= max(min_chars, 1)].drop_duplicates("text").reset_index(drop=True)
    return split_pools(frame, train_per_label, test_per_label, np.random.default_rng(DATA_SEED))


def _clipped_classification(train: pd.DataFrame, test: pd.DataFrame) -> DatasetDict:
    """The classification dataset of two pools, texts cut to ~``MAX_CHARS`` characters."""
    return classification_dataset(train.assign(text=train["text"].map(clip)), test.assign(text=test["text"].map(clip)))[0]


class PooledClassification(OfflineTask, AbsTaskClassification):
    """Classification over a fixed stratified sample of a corpus: ``pools`` = (train, test) texts per label.

    Texts are cut to ~``max_chars`` characters (default ``MAX_CHARS``); those shorter than
    ``min_chars`` and duplicates are dropped first, and ``keep(frame)`` (a row mask) filters the corpus.
    """

    pools: ClassVar[tuple[int, int]]
    min_chars: ClassVar[int] = 0
    max_chars: ClassVar[int] = MAX_CHARS

    @staticmethod
    def keep(frame: pd.DataFrame) -> Any:
        """Rows of the corpus to sample from (default: all)."""
        return np.ones(len(frame), dtype=bool)

    def build(self) -> DatasetDict:
        return _clipped_classification(*_classification_pools(self.corpus, *self.pools, min_chars=self.min_chars,
                                                              keep=self.keep, max_chars=self.max_chars))


class PooledClustering(OfflineTask, AbsTaskClusteringLegacy):
    """One clustering set: the texts of both pools of a :class:`PooledClassification`, by label."""

    pools_of: ClassVar[type[PooledClassification]]

    def build(self) -> DatasetDict:
        source = self.pools_of
        frame = pd.concat(_classification_pools(source.corpus, *source.pools, min_chars=source.min_chars,
                                                keep=source.keep))
        return clustering_dataset(frame["text"].map(clip).tolist(), frame["label"].tolist())


# -------------------------------------------------------------------------------------------- tasks


class BBCNewsClassification(
    OfflineTask, AbsTaskClassification, corpus="bbc", subtypes=["Topic classification"], annotations="expert-annotated",
    description=f"Topic of BBC News articles (business, entertainment, politics, sport, tech); first ~{MAX_CHARS} "
    "characters (title + lead) of each article; 80 training / 100 test articles.",
):
    """BBC News topic (5 classes): 16 training articles per topic to draw from, 20 test articles per topic."""

    def build(self) -> DatasetDict:
        return _clipped_classification(*_bbc_pools())


class ReutersR8Classification(
    PooledClassification, corpus="r8", subtypes=["Topic classification"], annotations="expert-annotated",
    description="Topic of Reuters-21578 newswire (8 most frequent single-label topics, lowercased, punctuation "
    f"removed); first ~{MAX_CHARS} characters; 96 training / 96 test documents, balanced.",
):
    """Reuters R8 topic (8 classes), 12 training and 12 test documents per topic."""

    pools = (12, 12)


class RottenTomatoesClassification(
    PooledClassification, corpus="rotten-tomatoes", subtypes=["Sentiment/Hate speech"], annotations="human-annotated",
    description="Polarity of Rotten Tomatoes review snippets (fresh vs rotten); 32 training / 160 test snippets.",
):
    """Rotten Tomatoes review snippets, fresh vs rotten."""

    pools, min_chars = (16, 80), 20

    @staticmethod
    def keep(frame: pd.DataFrame) -> Any:
        return frame["label"] != "plot"


class ElectionTweetsClassification(
    PooledClassification, corpus="tweets", subtypes=["Political classification"],
    description="Author (Hillary Clinton or Donald Trump) of 2016 campaign tweets, retweets excluded; "
    "32 training / 160 test tweets.",
):
    """Author of 2016 election tweets (Clinton vs Trump), retweets excluded."""

    pools, min_chars = (16, 80), 20

    @staticmethod
    def keep(frame: pd.DataFrame) -> Any:
        return ~frame["is_retweet"]


class DebatePartyClassification(
    PooledClassification, corpus="debates", subtypes=["Political classification"],
    description="Party of the speaker (Democratic, Republican, or moderator) of statements of at least 40 "
    "characters from the 2016 US presidential and vice-presidential debates; 48 training / 150 test.",
):
    """Party of the speaker of a 2016 debate statement (Democratic, Republican, Moderator)."""

    pools, min_chars = (16, 50), 40


class TwentyNewsgroupsClusteringOffline(
    OfflineTask, AbsTaskClusteringLegacy, corpus="20ng", subtypes=["Thematic clustering"],
    description="Clustering of 20 Newsgroups test posts (lowercased, punctuation removed) by newsgroup; "
    f"8 posts per group, first ~{MAX_CHARS} characters; one set of 160 posts.",
):
    """20 Newsgroups posts clustered by newsgroup (the offline counterpart of MTEB's TwentyNewsgroupsClustering)."""

    def build(self) -> DatasetDict:
        _, test = _classification_pools("20ng", 0, 8, min_chars=100, keep=lambda f: f["split"] == "test")
        return clustering_dataset(test["text"].tolist(), test["label"].tolist())


class BBCNewsClustering(
    OfflineTask, AbsTaskClusteringLegacy, corpus="bbc", subtypes=["Thematic clustering"], annotations="expert-annotated",
    description=f"Clustering of 180 BBC News articles (first ~{MAX_CHARS} characters) into their 5 topics; the same "
    "articles as BBCNewsClassification.",
):
    """The 180 BBC articles of BBCNewsClassification clustered by topic."""

    def build(self) -> DatasetDict:
        frame = pd.concat(_bbc_pools())
        return clustering_dataset(frame["text"].map(clip).tolist(), frame["label"].tolist())


class ReutersR8Clustering(
    PooledClustering, corpus="r8", subtypes=["Thematic clustering"], annotations="expert-annotated",
    description=f"Clustering of 192 Reuters-21578 documents (first ~{MAX_CHARS} characters) into their 8 topics; the "
    "same documents as ReutersR8Classification.",
):
    """The 192 Reuters documents of ReutersR8Classification clustered by topic."""

    pools_of = ReutersR8Classification


class LeeDocumentSTS(
    OfflineTask, AbsTaskSTS, corpus="lee", annotations="human-annotated",
    description="Document-level semantic similarity: mean human rating (rescaled to [0, 1]) of every pair of "
    "50 short Australian news documents (1,225 pairs); full documents.",
):
    """Lee, Pincombe & Welsh (2005): human similarity of all 1,225 pairs of 50 news documents."""

    min_score = 0
    max_score = 1

    def build(self) -> DatasetDict:
        from layerscope.data import lee_similarities

        texts = [" ".join(t.split()) for t in _labelled("lee")["text"]]
        pairs = lee_similarities()
        return DatasetDict(
            {
                "test": Dataset.from_dict(
                    {
                        "sentence1": [texts[i] for i in pairs["i"]],
                        "sentence2": [texts[j] for j in pairs["j"]],
                        "score": pairs["score"].tolist(),
                    }
                )
            }
        )


class RottenTomatoesPlotReranking(
    OfflineTask, AbsTaskRetrieval, corpus="rotten-tomatoes",
    description=f"Query: the plot synopsis of a film (first ~{MAX_CHARS} characters). Candidates: 5 review snippets "
    "of that film (relevant) and 15 snippets about 15 other films (irrelevant). 30 films, 150 reviews.",
):
    """Rerank reviews for a film's plot synopsis: its own 5 reviews among 15 reviews of other films."""

    n_movies: ClassVar[int] = 30
    own_reviews: ClassVar[int] = 5
    other_reviews: ClassVar[int] = 15

    def build(self) -> dict[str, dict[str, RetrievalSplitData]]:
        frame = _labelled("rotten-tomatoes")
        frame = frame[frame["has_plot_and_reviews"]].assign(text=lambda f: f["text"].map(clip))
        frame = frame[frame["text"].str.len() >= 20].drop_duplicates("text")
        plots = frame[frame["label"] == "plot"].drop_duplicates("movie").set_index("movie")["text"]
        reviews = frame[frame["label"] != "plot"]
        counts = reviews.groupby("movie").size()
        eligible = sorted(set(plots.index) & set(counts[counts >= self.own_reviews].index))
        rng = np.random.default_rng(DATA_SEED)
        movies = [eligible[i] for i in np.sort(rng.choice(len(eligible), self.n_movies, replace=False))]
        queries, corpus, relevant, top_ranked = [], [], {}, {}
        by_movie: dict[str, list[str]] = {}
        for m, movie in enumerate(movies):
            pool = reviews[reviews["movie"] == movie]
            take = np.sort(rng.choice(len(pool), self.own_reviews, replace=False))
            by_movie[movie] = [f"m{m}-r{k}" for k in range(self.own_reviews)]
            for k, row in enumerate(take):
                corpus.append({"id": f"m{m}-r{k}", "text": pool["text"].iloc[row]})
            queries.append({"id": f"q{m}", "text": plots[movie]})
        for m, movie in enumerate(movies):
            others = [i for i in range(len(movies)) if i != m]
            negatives = [by_movie[movies[o]][int(rng.integers(self.own_reviews))] for o in rng.choice(others, self.other_reviews, replace=False)]
            candidates = by_movie[movie] + negatives
            top_ranked[f"q{m}"] = [candidates[i] for i in rng.permutation(len(candidates))]
            relevant[f"q{m}"] = {doc: 1 for doc in by_movie[movie]}
        split = RetrievalSplitData(
            queries=Dataset.from_list(queries),
            corpus=Dataset.from_list(corpus),
            relevant_docs=relevant,
            top_ranked=top_ranked,
        )
        return {"default": {"test": split}}


class BBCNewsSameArticlePairs(
    OfflineTask, AbsTaskPairClassification, corpus="bbc", subtypes=["Discourse coherence"],
    description="Pair classification derived from BBC News: article opening vs the following passage of the "
    "same article (positive) or of another article of the same topic (negative); 100 + 100 pairs.",
):
    """Do two excerpts come from the same BBC article? Negatives are topic-matched.

    Derived pair classification: for each of the 100 test articles of BBCNewsClassification,
    ``sentence1`` is its opening (title + lead, the same text as in the classification task) and
    ``sentence2`` is the next, disjoint passage (the following ~``MAX_CHARS`` characters) of either the same
    article (label 1) or of another article of the same topic (label 0, a derangement within the
    topic). Topic-matched negatives mean topic similarity alone cannot solve it: the embedding has
    to capture what the article is about (entities, event), a document-continuation/coherence test.
    """

    def build(self) -> DatasetDict:
        _, test = _bbc_pools()
        openings = test["text"].map(clip).tolist()
        continuations = []
        for text, opening in zip(test["text"], openings, strict=True):
            rest = " ".join(text.split())[len(opening) :]
            continuations.append(clip(rest))
        rng = np.random.default_rng(DATA_SEED)
        partner = np.arange(len(test))
        for _, index in test.groupby("label").indices.items():
            shift = int(rng.integers(1, len(index)))
            partner[index] = np.roll(index, shift)  # a derangement within the topic
        first = openings + openings
        second = continuations + [continuations[p] for p in partner]
        labels = [1] * len(openings) + [0] * len(openings)
        return DatasetDict({"test": Dataset.from_dict({"sentence1": first, "sentence2": second, "labels": labels})})


#: Suite v1's 11 task classes, in reporting order (the registry's ``offline-v1`` group); the current
#: suite, ``offline``, adds those of :mod:`~layerscope.evaluate.offline_v2`.
OFFLINE_TASKS: tuple[type[AbsTask], ...] = tuple(_CLASSES)


def _spec_items(spec: Any) -> list[str]:
    """The items of a task specification as text: a group or task name, a file, a task instance's name."""
    if isinstance(spec, str):
        return [part.strip() for part in spec.split(",") if part.strip()]
    if isinstance(spec, AbsTask):
        return [spec.metadata.name]
    if not isinstance(spec, Iterable):
        return [str(spec)]
    return [item for part in spec for item in _spec_items(part)]


def suite_label(spec: Any) -> str:
    """A task specification with its suites' versions, as runs name their text source: ``offline (suite v2)``."""
    return ", ".join(f"{item} (suite v{SUITES[item]})" if item in SUITES and not item.endswith(f"-v{SUITES[item]}")
                     else item for item in _spec_items(spec))


def suite_record(spec: Any, tasks: Sequence[AbsTask]) -> dict[str, Any]:
    """What a run records of its task suite: ``{"name", "version", "tasks"}``.

    Parameters
    ----------
    spec : str, Path, AbsTask or iterable of those
        The run's task specification as given (``"offline"``, ``"offline-v1,my.csv"``, names, tasks).
    tasks : sequence of AbsTask
        The tasks it resolved to.

    Returns
    -------
    dict
        ``name``: the offline suite the specification names (the first, if several), else the
        specification itself; ``version``: that suite's version (:data:`SUITES`), else None;
        ``tasks``: the names of all tasks run, in order.
    """
    items = _spec_items(spec)
    named = [item for item in items if item in SUITES]
    name = named[0] if named else ",".join(items)
    return {"name": name, "version": SUITES.get(name), "tasks": [task.metadata.name for task in tasks]}


@dataclass(frozen=True)
class TaskInfo:
    """One row of ``layerscope tasks``."""

    name: str
    type: str
    n_texts: int
    main_score: str
    corpus: str
    source: str
    license: str
    description: str
