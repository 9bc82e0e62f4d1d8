"""Augmented views for the invariance metrics: which texts get them (a pure plan) and their encoding.

The views are extra forward passes of augmented, usually longer, texts, so they are planned under
one budget for the whole run: ``view_texts`` texts get 2 views (InfoNCE, DiME) and ``lidar_texts`` of
them get ``n_views`` views (LiDAR), whose first 2 serve InfoNCE and DiME too (a text's views do not
depend on how many are drawn, so that is the same as drawing 2). With several text sets (``analyze``:
one per task) the budget is spread over them in proportion to their sizes, at least 2 texts each
(:func:`shares`), so the cost does not grow with the number of tasks; each set is a seeded subset of
one list of texts (the rows of one extraction), and the union of the sets' view texts is encoded once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from layerscope.extract import extract

__all__ = ["MIN_SET_TEXTS", "SetViews", "ViewPlan", "encode_planned", "encode_views", "plan_for", "plan_views",
           "set_rows", "shares"]

logger = logging.getLogger(__name__)

#: Texts given views in every set of 2 texts or more, whatever its share of the budget: the fewest
#: an invariance metric is defined on.
MIN_SET_TEXTS = 2


@dataclass(frozen=True)
class SetViews:
    """The rows of one text set and those of its texts that get views.

    Attributes
    ----------
    rows : ndarray of int
        The set's rows (positions in the extraction), ascending.
    pair_rows : ndarray of int
        Rows given (at least) 2 views, ascending.
    lidar_rows : ndarray of int
        Rows given all the views, ascending; a subset of ``pair_rows``.
    """

    rows: np.ndarray
    pair_rows: np.ndarray
    lidar_rows: np.ndarray


@dataclass(frozen=True)
class ViewPlan:
    """Which rows get views, for every text set.

    Attributes
    ----------
    sets : dict of str to SetViews
    lidar_rows : ndarray of int
        Every row encoded with ``n_views`` views (the union over the sets), ascending.
    pair_only_rows : ndarray of int
        Every other row encoded with 2 views, ascending.
    n_views : int
        Views per LiDAR row.
    """

    sets: dict[str, SetViews]
    lidar_rows: np.ndarray
    pair_only_rows: np.ndarray
    n_views: int
    _pair_position: dict[int, int] = field(init=False, repr=False, compare=False)
    _lidar_position: dict[int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_pair_position", {int(row): i for i, row in enumerate(self.pair_order)})
        object.__setattr__(self, "_lidar_position", {int(row): i for i, row in enumerate(self.lidar_rows)})

    @property
    def pair_order(self) -> np.ndarray:
        """Rows in the order of the stacked 2-view tensor: the LiDAR rows' first 2 views, then the others'."""
        return np.concatenate([self.lidar_rows, self.pair_only_rows]).astype(np.int64)

    @property
    def n_encoded(self) -> int:
        """Forward passes the views cost."""
        return self.n_views * len(self.lidar_rows) + 2 * len(self.pair_only_rows)

    def pair_positions(self, name: str) -> list[int]:
        """Positions of set ``name``'s 2-view rows in :attr:`pair_order`."""
        return [self._pair_position[int(row)] for row in self.sets[name].pair_rows]

    def lidar_positions(self, name: str) -> list[int]:
        """Positions of set ``name``'s LiDAR rows in :attr:`lidar_rows`."""
        return [self._lidar_position[int(row)] for row in self.sets[name].lidar_rows]


def _subset(rows: np.ndarray, order: np.ndarray, cap: int | None) -> np.ndarray:
    return np.sort(rows[order[:cap]]) if cap is not None else rows


def shares(sizes: Sequence[int], budget: int | None) -> list[int | None]:
    """Split a budget of texts over sets of ``sizes`` texts: in proportion to their sizes, at least
    :data:`MIN_SET_TEXTS` each (or all of a smaller set), never more than a set has.

    The rest after the minimums goes by the largest remainder of the proportional shares (ties to the
    earlier set), so the shares add up to ``min(budget, sum(sizes))`` unless the minimums alone exceed
    the budget (then each set gets its minimum). ``budget`` None: every text (None for every set).
    """
    if budget is None:
        return [None] * len(sizes)
    size = np.asarray(sizes, dtype=np.int64)
    floor = np.minimum(size, MIN_SET_TEXTS)
    room = size - floor
    left = min(int(budget), int(size.sum())) - int(floor.sum())
    if left <= 0 or room.sum() == 0:
        return [int(value) for value in floor]
    ideal = left * room / room.sum()
    extra = np.minimum(np.floor(ideal).astype(np.int64), room)
    order = np.argsort(-(ideal - extra), kind="stable")  # largest remainder first
    for index in order[: left - int(extra.sum())]:
        extra[index] += 1
    return [int(value) for value in floor + np.minimum(extra, room)]


def plan_views(
    sets: Mapping[str, Sequence[int]],
    *,
    n_views: int,
    view_texts: int | None,
    lidar_texts: int | None,
    needs_pairs: bool,
    needs_lidar: bool,
    seed: int,
    union: str | None = None,
) -> ViewPlan:
    """Plan the views of every text set (no model involved).

    Parameters
    ----------
    sets : mapping of str to sequence of int
        Each set's rows.
    n_views : int
        Views per LiDAR text.
    view_texts, lidar_texts : int or None
        How many texts of the whole run get 2 views and how many get ``n_views`` (None: all), spread
        over the sets by :func:`shares`; in each set both are prefixes of one seeded permutation of
        the set, so the LiDAR texts lie inside the 2-view ones.
    needs_pairs, needs_lidar : bool
        Whether any metric needs 2 views / ``n_views`` views (nothing is planned for what is not needed).
    seed : int
        Seed of the subsets (the same permutation seed for every set).
    union : str, optional
        Name of an extra set over the rows of all sets whose view rows are the union of theirs
        (``analyze``'s "all texts" set: its invariance metrics reuse the per-set views).

    Returns
    -------
    ViewPlan
    """
    planned: dict[str, SetViews] = {}
    empty = np.array([], dtype=np.int64)
    members_of = {name: np.unique(np.asarray(members, dtype=np.int64)) for name, members in sets.items()}
    sizes = [len(rows) for rows in members_of.values()]
    lidar_shares, pair_shares = shares(sizes, lidar_texts), shares(sizes, view_texts)
    for (name, rows), lidar_cap, pair_cap in zip(members_of.items(), lidar_shares, pair_shares, strict=True):
        order = np.random.default_rng(seed).permutation(len(rows))
        lidar = _subset(rows, order, lidar_cap) if needs_lidar else empty
        pairs = _subset(rows, order, pair_cap) if needs_pairs else lidar
        planned[name] = SetViews(rows, np.union1d(pairs, lidar), lidar)
    if union is not None:
        parts = list(planned.values())
        planned[union] = SetViews(*(np.unique(np.concatenate([getattr(part, key) for part in parts] + [empty]))
                                    for key in ("rows", "pair_rows", "lidar_rows")))
    lidar_rows = np.unique(np.concatenate([part.lidar_rows for part in planned.values()] + [empty]))
    pair_rows = np.unique(np.concatenate([part.pair_rows for part in planned.values()] + [empty]))
    return ViewPlan(planned, lidar_rows, np.setdiff1d(pair_rows, lidar_rows), n_views)


def set_rows(sets: Mapping[str, Sequence[int]], kept: np.ndarray, n_inputs: int, *,
             warn: bool = True) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Each set's rows in the pass (``kept``: the input of each row) for the sets of at least
    :data:`MIN_SET_TEXTS` kept texts (``warn``: a warning names each other set), and how many of each
    set's inputs were skipped (empty texts never reach the model)."""
    row_of_input = np.full(n_inputs, -1, dtype=np.int64)
    row_of_input[np.asarray(kept, dtype=np.int64)] = np.arange(len(kept))
    usable, missing = {}, {}
    for name, members in sets.items():
        rows = row_of_input[np.unique(np.asarray(list(members), dtype=np.int64))]
        missing[name] = int((rows < 0).sum())
        if (rows >= 0).sum() >= MIN_SET_TEXTS:
            usable[name] = rows[rows >= 0]
        elif warn:
            logger.warning("text set '%s' has fewer than %d texts: no metrics", name, MIN_SET_TEXTS)
    return usable, missing


def plan_for(usable: Mapping[str, np.ndarray], view_counts: Sequence[int], views: Any, seed: int, *,
             union: str | None = None) -> ViewPlan:
    """:func:`plan_views` for metrics needing ``view_counts`` views each (2: a pair; more: LiDAR's) under a
    ``ViewConfig`` budget."""
    return plan_views(usable, n_views=views.n_views, view_texts=views.view_texts, lidar_texts=views.lidar_texts,
                      needs_pairs=any(count == 2 for count in view_counts),
                      needs_lidar=any(count > 2 for count in view_counts), seed=seed, union=union)


def encode_views(model: Any, texts: Sequence[str] | torch.Tensor, n_views: int, seed: int,
                 **extract_options: Any) -> tuple[torch.Tensor, int]:
    """Pooled embeddings of ``n_views`` augmented views of each text, from one extraction call.

    For a vision model ``texts`` are prepared pixel values (N, C, H, W) and the views are random
    resized crops (:func:`layerscope.augment.random_resized_crops`).

    Returns
    -------
    views : Tensor, shape (layers, n_views, n_texts, dim), float64
    n_encoded : int
        Texts that went through the model (the views count in the cost).
    """
    if model.modality == "vision":
        from layerscope.augment import random_resized_crops
        from layerscope.extract.images import extract_images

        crops = random_resized_crops(texts, n_views, seed=seed)  # (views, n, C, H, W)
        n_images = crops.shape[1]
        options = {key: value for key, value in extract_options.items() if key != "max_length"}
        encoded = extract_images(model, crops.reshape(-1, *crops.shape[2:]), prepared=True, **options)
        stacked = encoded.tensor(torch.float64)
        return stacked.reshape(stacked.shape[0], n_views, n_images, -1), n_views * n_images
    from layerscope.augment import text_views

    texts = list(texts)
    views = text_views(texts, n_views, seed=seed)  # (views, n)
    flat = [view if view.strip() else original for row in views for view, original in zip(row, texts, strict=True)]
    with _quiet_about_cut_views():
        encoded = extract(model, flat, **extract_options)
    stacked = encoded.tensor(torch.float64)
    return stacked.reshape(stacked.shape[0], n_views, len(texts), -1), len(flat)


class _CutViews(logging.Filter):
    """Drops the extraction's "texts reached max_length" warning: views are cut by design (the budget's
    ``view_max_length``, said in the budget line before the work)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "reached max_length" not in record.getMessage()


@contextmanager
def _quiet_about_cut_views() -> Iterator[None]:
    engine_logger = logging.getLogger("layerscope.extract.engine")
    quiet = _CutViews()
    engine_logger.addFilter(quiet)
    try:
        yield
    finally:
        engine_logger.removeFilter(quiet)


def encode_planned(model: Any, inputs: Sequence[str] | torch.Tensor, plan: ViewPlan, seed: int,
                   **extract_options: Any) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The views of a plan: (layers, 2, pairs, d) in :attr:`ViewPlan.pair_order` and (layers, J, lidar, d).

    One extraction for the LiDAR rows (``n_views`` views each) and one for the other 2-view rows.
    ``inputs`` are the extraction's texts (or prepared images), indexed by row.
    """
    def pick(rows: np.ndarray) -> Any:
        return inputs[torch.as_tensor(rows)] if isinstance(inputs, torch.Tensor) else [inputs[i] for i in rows]

    def options(n_views: int, n_texts: int) -> dict[str, Any]:  # the bar says what the pass counts
        shown = extract_options.get("progress", True)
        return {**extract_options, "progress": f"{n_views} views of {n_texts} texts" if shown else False}

    lidar_views = pair_views = None
    if len(plan.lidar_rows):
        lidar_views, _ = encode_views(model, pick(plan.lidar_rows), plan.n_views, seed,
                                      **options(plan.n_views, len(plan.lidar_rows)))
    parts = [lidar_views[:, :2]] if lidar_views is not None else []
    if len(plan.pair_only_rows):
        parts.append(encode_views(model, pick(plan.pair_only_rows), 2, seed,
                                  **options(2, len(plan.pair_only_rows)))[0])
    if parts:
        pair_views = torch.cat(parts, dim=2)
    return pair_views, lidar_views
