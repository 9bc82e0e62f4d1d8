"""Text sources: bundled corpora, user files, and Hugging Face datasets when the hub is reachable.

>>> from layerscope.data import load_texts
>>> texts = load_texts("bbc", limit=256)          # bundled corpus, seeded subset
>>> texts = load_texts("prompts.jsonl", column="prompt")
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from layerscope.data import bundled, files, hub
from layerscope.data.bundled import CorpusInfo, available, lee_similarities, load_labelled
from layerscope.errors import LayerscopeError, suggest

__all__ = ["CorpusInfo", "Rows", "available", "lee_similarities", "load_labelled", "load_rows", "load_texts", "subset"]

logger = logging.getLogger(__name__)


def subset(count: int, limit: int | None, seed: int = 0) -> np.ndarray:
    """Indices of a seeded random subset of ``range(count)``, in increasing order.

    Parameters
    ----------
    count : int
        Number of items.
    limit : int or None
        Size of the subset; ``None`` or ``>= count`` keeps everything.
    seed : int
        Seed of the draw (NumPy ``default_rng``).

    Returns
    -------
    numpy.ndarray
        Sorted integer indices.
    """
    if limit is None or limit >= count:
        return np.arange(count)
    if limit <= 0:
        raise LayerscopeError(f"limit must be a positive number of texts, got {limit}")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(count, size=limit, replace=False))


def load_texts(source: str | Path, limit: int | None = None, seed: int = 0, column: str | None = None) -> list[str]:
    """Load texts from a bundled corpus, a user file, or a Hugging Face dataset (see :func:`load_rows`)."""
    return load_rows(source, limit=limit, seed=seed, column=column).texts


@dataclass(frozen=True)
class Rows:
    """Texts and the id of each one's row in its source (file row or line, corpus or dataset row)."""

    texts: list[str]
    ids: list[Any]
    source: str


def load_rows(source: str | Path, limit: int | None = None, seed: int = 0, column: str | None = None,
              id_column: str | None = None) -> Rows:
    """Load texts from a bundled corpus, a user file, or a Hugging Face dataset, with their row ids.

    Parameters
    ----------
    source : str or Path
        A bundled corpus name (``layerscope datasets`` lists them: ``bbc``, ``20ng``, ``r8``,
        ``r52``, ``tweets``, ``rotten-tomatoes``, ``debates``, ``lee``, ``lee-background``); a file
        (``.txt`` one text per line, ``.jsonl``/``.json``/``.csv``/``.tsv``/``.parquet`` with
        ``column``); or a hub dataset (``wikitext`` = wikitext-103-raw-v1 test split, or
        ``owner/name[:config][@split]``), which needs the network.
    limit : int, optional
        Keep a seeded random subset of this many texts (in source order).
    seed : int
        Seed of the subset.
    column : str, optional
        Column holding the texts in table files and hub datasets (default ``text``).
    id_column : str, optional
        Column of a table file holding each row's id (default: the row's position, from 0).

    Returns
    -------
    Rows
        The texts and their row ids (a subset keeps each text's own id).

    Raises
    ------
    LayerscopeError
        Empty source, unknown name (suggests the nearest bundled one), unparseable file, or a hub
        dataset while offline.
    """
    name = str(source)
    bundled_names = bundled.names()
    if not name.strip():
        raise LayerscopeError("no text source given; use a bundled corpus (" + ", ".join(bundled_names) + "), a file or a hub dataset")
    ids: list[Any] | None = None
    if name in bundled_names:
        texts = load_labelled(name)["text"].tolist()
    elif isinstance(source, Path) or files.looks_like_file(name):
        texts, ids = files.read_rows(name, column=column, id_column=id_column)
    else:
        close = suggest(name, bundled_names) if name not in hub.ALIASES else ""
        if close and "/" not in name:
            raise LayerscopeError(f"unknown dataset '{name}'{close}; bundled corpora: {', '.join(bundled_names)}")
        reason = hub.offline_reason()
        if reason is not None:
            raise LayerscopeError(
                f"'{name}' is not a bundled corpus or a file, and loading it from the Hugging Face hub needs the "
                f"network ({reason}); bundled corpora: {', '.join(bundled_names)}"
            )
        texts = hub.load_hub_texts(name, column=column)
    if not texts:
        raise LayerscopeError(f"no texts in '{name}'")
    ids = list(range(len(texts))) if ids is None else ids
    keep = subset(len(texts), limit, seed)
    if len(keep) < len(texts):
        texts, ids = [texts[i] for i in keep], [ids[i] for i in keep]
    logger.info("loaded %d texts from %s", len(texts), name)
    return Rows(texts, ids, name)
