"""Augmented text views for the invariance metrics (SPEC section 4, paper appendix D).

The paper's pipeline is nlpaug's ``Sequential([SplitAug(), RandomCharAug(), KeyboardAug()])`` with
the library defaults (each augmenter touches 30 % of the words, at most 10). nlpaug draws from both
Python's ``random`` and NumPy's global generator, so every (text, view) draw is seeded with both,
from a seed derived from ``(seed, view, text)``: a text's views depend on neither its position nor
the other texts in the list (the same text gets the same views in any subset), and the caller's
global random states are restored afterwards.
"""

from __future__ import annotations

import functools
import hashlib
import random
from collections.abc import Sequence
from typing import Any

import numpy as np

from layerscope.errors import LayerscopeError

__all__ = ["paper_pipeline", "text_views"]


@functools.lru_cache(maxsize=1)
def paper_pipeline() -> Any:
    """The paper's nlpaug pipeline, built once per process (nlpaug's import takes seconds).

    Raises
    ------
    LayerscopeError
        When nlpaug is not installed.
    """
    try:
        import nlpaug.augmenter.char as nac
        import nlpaug.augmenter.word as naw
        import nlpaug.flow as naf
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise LayerscopeError("text views need nlpaug: pip install 'layerscope[augment]'") from error
    return naf.Sequential([naw.SplitAug(), nac.RandomCharAug(), nac.KeyboardAug()])


def _draw_seed(seed: int, view: int, text: str) -> int:
    """A 32-bit seed for one (view, text) draw, independent across draws and across processes."""
    digest = int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, view, digest]).generate_state(1)[0])


def text_views(texts: Sequence[str], n_views: int, seed: int = 0) -> list[list[str]]:
    """Augmented views of each text with the paper's nlpaug pipeline.

    Parameters
    ----------
    texts : sequence of str
        N texts.
    n_views : int
        Views per text (2 for InfoNCE and DiME, 16 for LiDAR).
    seed : int, default 0
        The same seed gives the same views; view ``v`` of a text depends only on ``(seed, v, text)``,
        so the first 2 of 16 views equal the 2 views of ``n_views=2``, whatever else is in the list.

    Returns
    -------
    list of list of str, shape (n_views, N)
        ``views[v][i]`` is view ``v`` of ``texts[i]``: each inner list is a full text list, ready to
        be encoded like the originals. A text with no non-space character is returned unchanged.
    """
    if isinstance(texts, str):
        raise LayerscopeError("texts must be a list of strings, not a single string")
    texts = list(texts)
    if any(not isinstance(text, str) for text in texts):
        raise LayerscopeError("texts must all be strings")
    if int(n_views) < 1:
        raise LayerscopeError(f"n_views must be >= 1, got {n_views}")
    pipeline = paper_pipeline()
    # nlpaug draws from NumPy's legacy global generator: it has to be seeded (and restored) as such.
    python_state, numpy_state = random.getstate(), np.random.get_state()  # noqa: NPY002
    try:
        views = []
        for view in range(int(n_views)):
            row = []
            for text in texts:
                if not text.strip():
                    row.append(text)
                    continue
                draw = _draw_seed(seed, view, text)
                random.seed(draw)
                np.random.seed(draw)  # noqa: NPY002
                augmented = pipeline.augment(text)  # nlpaug returns a list with one string
                row.append(augmented[0] if augmented else text)
            views.append(row)
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)  # noqa: NPY002
    return views
