"""Text views (nlpaug pipeline of the paper) and token perturbations (SPEC section 7.4)."""

from __future__ import annotations

import difflib
import random

import numpy as np
import pytest
import torch

from layerscope.augment import random_tokens, repeat_tokens, text_views
from layerscope.errors import LayerscopeError

TEXTS = [
    "The committee approved the new budget after a long debate on Tuesday evening.",
    "Researchers found that intermediate layers often give better sentence embeddings.",
    "She walked to the station, bought a ticket and waited for the late train.",
]


@pytest.fixture(scope="module")
def views():
    pytest.importorskip("nlpaug")
    return text_views(TEXTS, 4, seed=0)


def test_views_shape_and_type(views):
    assert len(views) == 4 and all(len(row) == len(TEXTS) for row in views)
    assert all(isinstance(text, str) for row in views for text in row)
    assert not any(text.startswith("[") for row in views for text in row)  # the string, not str(list)


def test_views_differ_from_the_originals_and_from_each_other(views):
    for row in views:
        for view, original in zip(row, TEXTS, strict=True):
            assert view != original
            # character noise: the view stays closer to its own text than to the others
            similarity = difflib.SequenceMatcher(None, view, original).ratio()
            assert similarity > 0.5
            assert all(difflib.SequenceMatcher(None, view, other).ratio() < similarity for other in TEXTS if other != original)
    for i in range(len(TEXTS)):
        assert len({row[i] for row in views}) == len(views)  # independent draws per view


def test_same_seed_same_views_and_different_seed_different_views(views):
    assert text_views(TEXTS, 4, seed=0) == views
    other = text_views(TEXTS, 4, seed=1)
    assert all(a != b for row_a, row_b in zip(other, views, strict=True) for a, b in zip(row_a, row_b, strict=True))


def test_a_texts_views_do_not_depend_on_the_others_or_on_n_views(views):
    assert text_views(TEXTS, 2, seed=0) == views[:2]
    alone = text_views(TEXTS[:1], 4, seed=0)
    assert [row[0] for row in alone] == [row[0] for row in views]
    # nor on its position: a reordered list gives each text the same views
    reordered = text_views(TEXTS[::-1], 4, seed=0)
    assert [row[::-1] for row in reordered] == views


def test_global_random_states_are_restored():
    pytest.importorskip("nlpaug")
    random.seed(123)
    np.random.seed(123)  # noqa: NPY002
    expected = (random.random(), np.random.random())  # noqa: NPY002
    random.seed(123)
    np.random.seed(123)  # noqa: NPY002
    text_views(TEXTS[:1], 2, seed=5)
    assert (random.random(), np.random.random()) == expected  # noqa: NPY002


def test_empty_and_blank_texts_and_bad_input():
    pytest.importorskip("nlpaug")
    out = text_views(["", "   ", "one"], 2)
    assert [row[:2] for row in out] == [["", "   "], ["", "   "]]
    with pytest.raises(LayerscopeError, match="list of strings"):
        text_views("a single string", 2)
    with pytest.raises(LayerscopeError, match="n_views"):
        text_views(TEXTS, 0)


# ---------------------------------------------------------------------------------------------
# token perturbations

IDS = torch.arange(1000, 1060).reshape(3, 20)  # distinct tokens, each prompt its own range
MASK = torch.ones(3, 20, dtype=torch.long)
MASK[1, 15:] = 0  # right padding
MASK[2, :4] = 0  # left padding


@pytest.mark.parametrize("perturb", [
    lambda ids, mask, p, seed: repeat_tokens(ids, mask, p, seed),
    lambda ids, mask, p, seed: random_tokens(ids, mask, p, vocab_size=50, seed=seed),
], ids=["repeat", "random"])
def test_common_properties(perturb):
    for p in (0.0, 0.25, 1.0):
        out = perturb(IDS, MASK, p, 0)
        assert out.shape == IDS.shape and out.dtype == IDS.dtype
        assert torch.equal(out[MASK == 0], IDS[MASK == 0])  # padding untouched (token ids: integers, exact)
    assert torch.equal(perturb(IDS, MASK, 0.0, 0), IDS)
    assert torch.equal(perturb(IDS, MASK, 0.5, 7), perturb(IDS, MASK, 0.5, 7))
    assert not torch.equal(perturb(IDS, MASK, 0.5, 7), perturb(IDS, MASK, 0.5, 8))
    assert torch.equal(perturb(IDS[0], None, 0.5, 7), perturb(IDS[:1], None, 0.5, 7)[0])  # 1-D input
    big = torch.arange(200_000).reshape(100, 2000)
    changed = (perturb(big, None, 0.3, 1) != big).float().mean().item()
    assert 0.27 < changed < 0.31  # replaced with probability p (a few land on the same token)
    with pytest.raises(LayerscopeError, match="probability"):
        perturb(IDS, MASK, 1.5, 0)


def test_repeat_draws_only_from_the_same_prompt():
    out = repeat_tokens(IDS, MASK, 1.0, seed=3)
    for b in range(3):
        real = MASK[b].bool()
        assert set(out[b, real].tolist()) <= set(IDS[b, real].tolist())
    # at p = 1 every position is a fresh uniform draw: with 20 distinct tokens few stay in place
    assert (out[0] == IDS[0]).float().mean() < 0.3
    # draws are uniform over the prompt's tokens
    long = torch.arange(10).repeat(1, 1)
    counts = torch.bincount(repeat_tokens(long.repeat(2000, 1), None, 1.0, seed=0).flatten(), minlength=10)
    assert counts.min() > 1700 and counts.max() < 2300


def test_random_at_p1_replaces_every_position():
    other = IDS + 5000
    # Every real position is resampled, so the output no longer depends on the input tokens.
    assert torch.equal(random_tokens(IDS, MASK, 1.0, 50, seed=2)[MASK.bool()], random_tokens(other, MASK, 1.0, 50, seed=2)[MASK.bool()])
    out = random_tokens(IDS, MASK, 1.0, 50, seed=2)
    assert bool((out[MASK.bool()] < 50).all())
    with pytest.raises(LayerscopeError, match="vocab_size"):
        random_tokens(IDS, MASK, 0.5, 0)
