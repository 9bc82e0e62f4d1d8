"""Per-layer curves of the experiments: long tables, spreads over prompts, values at depths, valleys.

Pure functions of tables and arrays (no model): what the experiments quote in their summaries and
draw in their plots. The main normalization of each metric comes from the metric registry.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["SUMMARY_DEPTHS", "entropy_valleys", "layer_frame", "main_normalization", "main_rows", "prompt_frame",
           "spread_stats", "valley", "values_at_depths"]

#: Depths (percent) at which summaries quote per-layer values.
SUMMARY_DEPTHS = (0.0, 25.0, 50.0, 75.0, 100.0)


def main_normalization(metric: str) -> str:
    """The value plots and summaries show for ``metric``: the registry's main one (``raw`` if unregistered)."""
    from layerscope.metrics.registry import find

    spec = find(metric)
    return spec.main if spec is not None else "raw"


def main_rows(frame: pd.DataFrame, label: str | None = None) -> pd.DataFrame:
    """Rows of a long metric table in each metric's main normalization (see :func:`main_normalization`).

    With ``label``, the column of that name holds ``"metric (normalization)"``, the name a plot's panel shows.
    """
    main = frame["metric"].map(lambda name: main_normalization(str(name)))
    rows = frame[frame["normalization"] == main].reset_index(drop=True)
    return rows if label is None else rows.assign(**{label: rows["metric"] + " (" + rows["normalization"] + ")"})


def layer_frame(values: Any, num_layers: int) -> pd.DataFrame:
    """Per-layer means of a :class:`~layerscope.metrics.accumulators.TokenMetricValues`, long format.

    Returns
    -------
    pandas.DataFrame
        ``layer, depth_pct, metric, normalization, value, n_used, n_skipped``.
    """
    frame = pd.DataFrame(values.records())
    frame.insert(1, "depth_pct", 100.0 * frame["layer"] / num_layers)
    return frame


def prompt_frame(per_prompt: np.ndarray, num_layers: int, metric: str, normalization: str) -> pd.DataFrame:
    """Per-prompt values ``(layers, n_texts)`` as a long table (NaN entries, skipped prompts, dropped).

    Returns
    -------
    pandas.DataFrame
        ``layer, depth_pct, prompt_index, metric, normalization, value``.
    """
    layer, prompt = np.nonzero(np.isfinite(per_prompt))
    return pd.DataFrame({
        "layer": layer.astype(int), "depth_pct": 100.0 * layer / num_layers, "prompt_index": prompt.astype(int),
        "metric": metric, "normalization": normalization, "value": per_prompt[layer, prompt],
    })


def spread_stats(values: np.ndarray, axis: int = -1) -> dict[str, np.ndarray]:
    """Mean, standard deviation, quartiles and count over ``axis``, ignoring NaN (skipped prompts)."""
    count = np.isfinite(values).sum(axis=axis)
    with warnings.catch_warnings():  # a layer where every prompt was skipped is NaN, not a warning
        warnings.simplefilter("ignore", RuntimeWarning)
        return {
            "mean": np.nanmean(values, axis=axis),
            "std": np.nanstd(values, axis=axis),
            "q25": np.nanquantile(values, 0.25, axis=axis),
            "median": np.nanmedian(values, axis=axis),
            "q75": np.nanquantile(values, 0.75, axis=axis),
            "n_used": count,
        }


def values_at_depths(
    frame: pd.DataFrame, value: str = "value", depths: Sequence[float] = SUMMARY_DEPTHS, group: str | None = None
) -> dict[str, Any]:
    """Values of the layers nearest to each depth %, e.g. ``{"0%": 0.91, "50%": 0.42, ...}``.

    With ``group`` the result is nested: ``{group value: {depth: value}}``.
    """
    if group is not None:
        return {str(key): values_at_depths(part, value, depths) for key, part in frame.groupby(group, sort=False)}
    by_depth = frame.groupby("depth_pct")[value].mean()
    out: dict[str, Any] = {}
    for depth in depths:
        nearest = by_depth.index[np.argmin(np.abs(by_depth.index.to_numpy(dtype=float) - depth))]
        out[f"{depth:g}%"] = rounded(float(by_depth.loc[nearest]))
    return out


def entropy_valleys(
    frame: pd.DataFrame, group: str, labels: Sequence[str]
) -> tuple[pd.DataFrame, dict[str, np.ndarray], dict[str, dict[str, Any]]]:
    """The prompt-entropy valley of each curve of a multi-model (or multi-checkpoint) metric table.

    Parameters
    ----------
    frame : pandas.DataFrame
        Long metrics (``group, layer, metric, normalization, value``) of several curves.
    group : str
        The column that names the curve (``"model"``, ``"checkpoint"``).
    labels : sequence of str
        The curves, in the order wanted.

    Returns
    -------
    tuple
        The prompt-entropy rows in the main normalization, each label's curve (values by layer) and
        each label's :func:`valley`.
    """
    main = main_normalization("prompt_entropy")
    entropy = frame[(frame["metric"] == "prompt_entropy") & (frame["normalization"] == main)]
    curves = {label: entropy[entropy[group] == label].sort_values("layer")["value"].to_numpy(float)
              for label in labels}
    return entropy, curves, {label: valley(curve) for label, curve in curves.items()}


def rounded(value: float, digits: int = 4) -> float | None:
    """``value`` rounded for a JSON summary; None where it is not finite (JSON has no NaN)."""
    return None if not math.isfinite(value) else round(value, digits)


def valley(values: Sequence[float]) -> dict[str, Any]:
    """Shape of a mid-depth valley in a per-layer curve (index = layer 0..L).

    The valley depth is how far the lowest intermediate layer (0 < l < L) lies below the lower of
    the two ends (layer 0 = embeddings, layer L = last block): positive only for a real valley, and
    negative for a curve whose intermediate layers all lie above an end. The relative depth divides
    it by that end's value. A valley is *present* when the depth is positive.

    Returns
    -------
    dict
        ``min_layer, min_depth_pct, min_value, ends_min, valley_depth, relative_depth, present``.
    """
    curve = np.asarray(values, dtype=float)
    last = len(curve) - 1
    if last < 2 or not np.isfinite(curve).all():
        return {"min_layer": None, "min_depth_pct": None, "min_value": None, "ends_min": None,
                "valley_depth": None, "relative_depth": None, "present": False}
    min_layer = int(np.argmin(curve[1:last])) + 1
    ends = float(min(curve[0], curve[last]))
    depth = ends - float(curve[min_layer])
    return {
        "min_layer": min_layer,
        "min_depth_pct": round(100.0 * min_layer / last, 2),
        "min_value": rounded(float(curve[min_layer])),
        "ends_min": rounded(ends),
        "valley_depth": rounded(depth),
        "relative_depth": rounded(depth / ends) if ends else None,
        "present": bool(depth > 0),
    }
