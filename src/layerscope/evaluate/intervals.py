"""Intervals from bootstrap resamples: the record kept with each score, and what is read from it.

**Stored with the scores.** Each (layer, task) row of the scores frame keeps its resampled main scores
in its ``scores`` JSON under the key ``"bootstrap"`` (next to MTEB's splits; :func:`attach_bootstrap`),
so the results store, :func:`layerscope.analysis.summarize` and the report read them back with no
schema of their own. :func:`layer_intervals` turns them into intervals of the task-averaged score per
layer and of each layer's paired difference from the last layer: percentile intervals of the
resampled values re-centred on the point estimate (resampling with replacement repeats examples,
which shifts some scores by itself, e.g. a clustering's V-measure; the spread is kept, the shift is
not). "Beats the last layer beyond the noise" means the interval of the difference lies above 0.

Reading intervals needs neither MTEB nor the models (numpy and pandas only): the analysis and the
report import this module; :mod:`layerscope.evaluate.uncertainty` makes the resamples.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from layerscope.errors import LayerscopeError

__all__ = [
    "BOOTSTRAP_KEY",
    "BestVersusLast",
    "attach_bootstrap",
    "best_versus_last",
    "has_bootstrap",
    "interval_text",
    "layer_interval_texts",
    "layer_intervals",
    "scores_json",
    "task_intervals",
]

#: Key of the bootstrap record in a scores row's JSON.
BOOTSTRAP_KEY = "bootstrap"


# ------------------------------------------------------------------------------------------ the record


def _check_settings(n_resamples: Any, confidence: Any) -> None:
    """The configurations' own checks (same one-line messages as ``--bootstrap`` and ``--confidence``)."""
    from layerscope.config import _confidence, _positive

    _positive(int(n_resamples) if isinstance(n_resamples, np.integer) else n_resamples, "bootstrap resamples",
              minimum=2)
    _confidence(confidence)


def attach_bootstrap(scores: pd.DataFrame, resampled: dict[tuple[int, str], Sequence[float]], *,
                     units: dict[str, str], n_units: dict[str, int], resample_seed: int,
                     confidence: float) -> pd.DataFrame:
    """A copy of ``scores`` with each row's resampled main scores in its ``scores`` JSON (``"bootstrap"``).

    ``resampled`` maps (layer, task) to the B main scores of that row.
    """
    def entry(row: pd.Series) -> str:
        values = [float(value) for value in resampled[int(row["layer"]), str(row["task"])]]
        data = json.loads(row["scores"]) if isinstance(row["scores"], str) else dict(row["scores"] or {})
        data[BOOTSTRAP_KEY] = {"main_scores": values, "n_resamples": len(values), "unit": units[str(row["task"])],
                               "n_units": n_units[str(row["task"])], "resample_seed": int(resample_seed),
                               "confidence": float(confidence)}
        return scores_json(data)

    out = scores.copy()
    out["scores"] = [entry(row) for _, row in scores.iterrows()]
    out.attrs.update(scores.attrs)
    return out


def scores_json(data: Mapping[str, Any]) -> str:
    """A row's ``scores`` JSON (MTEB's scores, the bootstrap record): keys sorted, numpy values as numbers
    and lists, anything else not JSON as its string."""
    return json.dumps(data, sort_keys=True, default=_plain)


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


# ------------------------------------------------------------------------------------------ intervals


def _bootstrap_entry(value: Any) -> dict[str, Any] | None:
    if isinstance(value, str):
        if BOOTSTRAP_KEY not in value:  # most rows of most runs: skip the parse
            return None
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None
    entry = value.get(BOOTSTRAP_KEY) if isinstance(value, dict) else None
    return entry if isinstance(entry, dict) and entry.get("main_scores") else None


def has_bootstrap(scores: pd.DataFrame | None) -> bool:
    """Whether every row of a scores frame carries bootstrap resamples."""
    if scores is None or scores.empty or "scores" not in scores.columns:
        return False
    return all(_bootstrap_entry(value) is not None for value in scores["scores"])


@dataclass
class _Resamples:
    """Point scores (layers, tasks) and resampled scores (layers, tasks, B), x 100."""

    layers: list[int]
    depth_pct: list[float]
    tasks: list[str]
    point: np.ndarray
    resampled: np.ndarray
    confidence: float
    resample_seed: int
    units: dict[str, str]


def _resamples(scores: pd.DataFrame) -> _Resamples:
    if not has_bootstrap(scores):
        raise LayerscopeError("these scores carry no bootstrap resamples: score with --bootstrap N (N >= 2)")
    entries = [_bootstrap_entry(value) for value in scores["scores"]]
    counts = {entry["n_resamples"] for entry in entries if entry}
    if len(counts) != 1:
        raise LayerscopeError(f"the scores' rows hold different numbers of resamples ({sorted(counts)}); rerun the bootstrap")
    frame = scores.assign(_entry=entries)
    layers = sorted(int(layer) for layer in frame["layer"].unique())
    tasks = sorted(str(task) for task in frame["task"].unique())
    if frame.duplicated(["layer", "task"]).any() or len(frame) != len(layers) * len(tasks):
        raise LayerscopeError("bootstrap intervals need one score per (layer, task), for every task at every layer")
    frame = frame.sort_values(["layer", "task"])
    n_resamples = counts.pop()
    point = frame["main_score"].to_numpy(dtype=float).reshape(len(layers), len(tasks)) * 100
    resampled = np.array([entry["main_scores"] for entry in frame["_entry"]], dtype=float)
    resampled = resampled.reshape(len(layers), len(tasks), n_resamples) * 100
    first = entries[0] or {}
    depth = (frame.groupby("layer")["depth_pct"].first().to_list() if "depth_pct" in frame.columns
             else [float("nan")] * len(layers))
    units = {str(task): str((entry or {}).get("unit", "")) for task, entry in zip(frame["task"], frame["_entry"], strict=True)}
    return _Resamples(layers, depth, tasks, point, resampled, float(first.get("confidence", 0.95)),
                      int(first.get("resample_seed", 0)), units)


def _defined(data: _Resamples) -> tuple[np.ndarray, list[str]]:
    """Resamples where every (layer, task) score is defined, and the tasks whose scores were not.

    A resample can leave a score undefined (NaN), e.g. an STS resample whose gold scores are all equal
    has no Spearman correlation. Averages and paired differences need every task at every layer on
    the same resample, so such resamples are left out of them, counted, and named.
    """
    finite = np.isfinite(data.resampled)  # (layers, tasks, B)
    keep = finite.all(axis=(0, 1))
    undefined = [task for task, ok in zip(data.tasks, finite.all(axis=(0, 2)), strict=True) if not ok]
    if keep.sum() < 2:
        raise LayerscopeError(f"fewer than 2 of {keep.size} bootstrap resamples give every task a defined score "
                              f"(undefined on {', '.join(undefined)}): use more evaluation examples or leave "
                              "the task out")
    return keep, undefined


def _interval(values: np.ndarray, point: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over the last axis of ``values``, re-centred so the resamples' median is ``point``."""
    alpha = 1 - confidence
    centred = _centred(values, point)
    quantile = np.nanquantile if np.isnan(centred).any() else np.quantile  # undefined resamples left out
    low, high = quantile(centred, [alpha / 2, 1 - alpha / 2], axis=-1)
    return low, high


def _centred(values: np.ndarray, point: np.ndarray) -> np.ndarray:
    """The resampled values shifted so that their median is the point estimate.

    Drawing with replacement repeats examples, which moves some scores by itself: texts drawn twice
    always share a cluster, so a resampled clustering scores a higher V-measure than the data ever
    would. That shift is an artifact of the resampling, not noise of the estimate: the spread is kept,
    the location is the estimate's.
    """
    median = np.nanmedian if np.isnan(values).any() else np.median  # nan-aware only where needed (5x slower)
    return values - median(values, axis=-1, keepdims=True) + np.asarray(point)[..., None]


def layer_intervals(scores: pd.DataFrame, confidence: float | None = None) -> pd.DataFrame:
    """Per layer: the task-averaged score with its interval, and its paired difference from the last layer.

    Parameters
    ----------
    scores : pandas.DataFrame
        Scores whose rows carry bootstrap resamples (:func:`bootstrap_layers`), every task at every layer.
    confidence : float, optional
        Confidence level (default: the one recorded with the resamples).

    Returns
    -------
    pandas.DataFrame
        ``layer, depth_pct, score, low, high`` (task average x 100 and its interval), then ``vs_last,
        vs_last_low, vs_last_high`` (the layer minus the last layer, on the same resamples) and
        ``not_above_last`` (share of resamples where the layer does not beat the last). Intervals are
        percentile intervals of the resampled values re-centred on the point estimate (their median
        shifted onto it; see :func:`_centred`), and so is the share. ``attrs``:
        ``confidence``, ``n_resamples``, ``n_tasks``, ``resample_seed``, ``units`` (task -> what was resampled).
    """
    data = _resamples(scores)
    level = data.confidence if confidence is None else float(confidence)
    _check_settings(data.resampled.shape[-1], level)
    keep, undefined = _defined(data)
    average = data.resampled[..., keep].mean(axis=1)  # (layers, B'): resample b of the task average
    point = data.point.mean(axis=1)
    low, high = _interval(average, point, level)
    difference = average - average[-1]  # (layers, B), paired with the last layer
    point_difference = point - point[-1]
    difference_low, difference_high = _interval(difference, point_difference, level)
    frame = pd.DataFrame({
        "layer": data.layers, "depth_pct": data.depth_pct, "score": point, "low": low, "high": high,
        "vs_last": point_difference, "vs_last_low": difference_low, "vs_last_high": difference_high,
        "not_above_last": (_centred(difference, point_difference) <= 0).mean(axis=1),
    })
    frame.attrs.update(confidence=level, n_resamples=int(data.resampled.shape[-1]), n_tasks=len(data.tasks),
                       resample_seed=data.resample_seed, units=data.units, n_undefined=int((~keep).sum()),
                       undefined_tasks=undefined)
    return frame


def task_intervals(scores: pd.DataFrame, confidence: float | None = None) -> pd.DataFrame:
    """Per (layer, task): the score x 100 and its percentile interval (``layer, task, score, low, high``).

    ``n_undefined`` counts the resamples of that (layer, task) whose score is undefined (NaN); they are
    left out of its interval.
    """
    data = _resamples(scores)
    level = data.confidence if confidence is None else float(confidence)
    _check_settings(data.resampled.shape[-1], level)
    with warnings.catch_warnings():  # a (layer, task) with no defined resample gets NaN bounds, counted below
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = _interval(data.resampled, data.point, level)
    layer_grid, task_grid = np.meshgrid(data.layers, data.tasks, indexing="ij")
    frame = pd.DataFrame({"layer": layer_grid.ravel(), "task": task_grid.ravel(), "score": data.point.ravel(),
                          "low": low.ravel(), "high": high.ravel(),
                          "n_undefined": (~np.isfinite(data.resampled)).sum(axis=-1).ravel()})
    frame.attrs.update(confidence=level, n_resamples=int(data.resampled.shape[-1]))
    return frame


@dataclass(frozen=True)
class BestVersusLast:
    """Whether the best layer beats the last one beyond the noise (paired bootstrap).

    Attributes
    ----------
    best_layer, last_layer : int
        The layer with the best task-averaged score, and the model's last scored layer.
    best_score, best_low, best_high, last_score, last_low, last_high : float
        Their scores (x 100) and intervals.
    difference, low, high : float
        Best minus last and the percentile interval of that difference over the paired resamples.
    not_above : float
        Share of resamples where the best layer does not beat the last (best <= last).
    beyond_noise : bool
        The interval of the difference lies above 0 (the rule used; ``not_above`` is reported beside it).
    confidence : float
        Level of the intervals.
    n_resamples : int
        Resamples B.
    n_undefined : int
        Resamples left out because a task's score was undefined on them (see ``undefined_tasks``).
    undefined_tasks : tuple of str
        The tasks with an undefined score on some resample.
    best_name : str, optional
        The best's name when it is a candidate beside the layers (a recipe; ``best_layer`` is then its
        negative id, see :class:`~layerscope.evaluate.select.Candidates`).
    """

    best_layer: int
    last_layer: int
    best_score: float
    best_low: float
    best_high: float
    last_score: float
    last_low: float
    last_high: float
    difference: float
    low: float
    high: float
    not_above: float
    beyond_noise: bool
    confidence: float
    n_resamples: int
    n_undefined: int = 0
    undefined_tasks: tuple[str, ...] = ()
    best_name: str | None = None

    def describe(self) -> str:
        """One sentence: the verdict, the difference and its interval, and the share of resamples."""
        level = f"{100 * self.confidence:g}%"
        left_out = (f" ({self.n_undefined} of {self.n_resamples} resamples left out: a score of "
                    f"{', '.join(self.undefined_tasks)} is undefined on them)" if self.n_undefined else "")
        if self.best_layer == self.last_layer:
            return (f"the last layer {self.last_layer} is the best layer ({self.last_score:.1f}, {level} interval "
                    f"{interval_text(self.last_low, self.last_high)}){left_out}")
        verdict = "beats the last layer beyond the noise" if self.beyond_noise else "is within the noise of the last layer"
        rule = "excludes 0" if self.beyond_noise else "includes 0"
        best = f"best layer {self.best_layer}" if self.best_name is None else f"best: {self.best_name}"
        return (f"{best} ({self.best_score:.1f}) {verdict} {self.last_layer} "
                f"({self.last_score:.1f}): {self.difference:+.1f} points, {level} interval of the paired difference "
                f"{interval_text(self.low, self.high, signed=True)} {rule}; best <= last in "
                f"{100 * self.not_above:.0f}% of {self.n_resamples - self.n_undefined} resamples{left_out}")

    def to_dict(self) -> dict[str, Any]:
        """Plain values, JSON-ready."""
        return {key: (value.item() if isinstance(value, np.generic) else value) for key, value in self.__dict__.items()}


def best_versus_last(intervals: pd.DataFrame) -> BestVersusLast:
    """The verdict on the best layer (first maximum of the point score) against the last, from :func:`layer_intervals`."""
    best = intervals.loc[intervals["score"].idxmax()]
    last = intervals.iloc[-1]
    return BestVersusLast(
        best_layer=int(best["layer"]), last_layer=int(last["layer"]),
        best_score=float(best["score"]), best_low=float(best["low"]), best_high=float(best["high"]),
        last_score=float(last["score"]), last_low=float(last["low"]), last_high=float(last["high"]),
        difference=float(best["vs_last"]), low=float(best["vs_last_low"]), high=float(best["vs_last_high"]),
        not_above=float(best["not_above_last"]), beyond_noise=bool(best["vs_last_low"] > 0),
        confidence=float(intervals.attrs.get("confidence", 0.95)),
        n_resamples=int(intervals.attrs.get("n_resamples", 0)),
        n_undefined=int(intervals.attrs.get("n_undefined", 0)),
        undefined_tasks=tuple(intervals.attrs.get("undefined_tasks", ())),
    )


def interval_text(low: float, high: float, *, signed: bool = False, digits: int = 1) -> str:
    """``[50.2, 54.1]`` (``signed``: ``[-0.4, +2.1]``)."""
    sign = "+" if signed else ""
    return f"[{low:{sign}.{digits}f}, {high:{sign}.{digits}f}]"


def layer_interval_texts(intervals: pd.DataFrame, layers: Sequence[int]) -> list[str | None]:
    """Each layer's interval from :func:`layer_intervals` as text, None for a layer it does not hold."""
    bounds = intervals.set_index("layer")
    return [interval_text(bounds.loc[layer, "low"], bounds.loc[layer, "high"]) if layer in bounds.index else None
            for layer in layers]
