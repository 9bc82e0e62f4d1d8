"""Distributions of a per-prompt metric at every layer (bimodality, SPEC section 7.7)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from layerscope.errors import LayerscopeError
from layerscope.metrics.registry import metric_label
from layerscope.report.plots.style import (
    CHOSEN_COLOR,
    OKABE_ITO,
    new_figure,
    plot_style,
    require,
    save_figure,
    wrap_title,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.colors import Colormap
    from matplotlib.figure import Figure

__all__ = ["plot_prompt_histogram", "prompt_histogram_figure"]


def histogram_layers(layers: Sequence[int], count: int) -> list[int]:
    """About ``count`` layers spread evenly over the depth (first and last included)."""
    layers = sorted(layers)
    if len(layers) <= count:
        return list(layers)
    picks = np.linspace(0, len(layers) - 1, count)
    return sorted({layers[int(round(position))] for position in picks})


def share_colormap() -> Colormap:
    """Light (few prompts) to dark blue (many); empty bins are masked and stay blank.

    The pale end is cut off so that a bin holding one prompt is still visibly coloured, and apart
    from the blank of an empty bin.
    """
    import matplotlib
    from matplotlib.colors import ListedColormap

    colors = matplotlib.colormaps["Blues"](np.linspace(0.22, 1.0, 256))
    return ListedColormap(colors, name="layerscope_share").with_extremes(bad=(1.0, 1.0, 1.0, 0.0))


def prompt_histogram_figure(
    prompt_values: pd.DataFrame,
    *,
    metric: str = "prompt_entropy",
    layers: Sequence[int] | None = None,
    n_small: int = 5,
    bins: int = 40,
    last_layer: int | None = None,
    title: str | None = None,
) -> Figure:
    """Distribution of a per-prompt metric at every layer (bimodality, SPEC section 7.7).

    Top: a heat map with depth % on the x-axis and the metric's value on the y-axis; each layer's
    column shows the share of prompts in each bin (light = few, dark = many; empty bins are masked
    and left blank), with the mean over prompts drawn on top. Bottom: histograms of a few layers side
    by side (small multiples sharing the value axis).

    Parameters
    ----------
    prompt_values : pandas.DataFrame
        ``layer, prompt_index, metric, value`` (one run). Non-finite values (skipped prompts) are
        left out and counted in the title.
    metric : str, default "prompt_entropy"
        Metric to draw.
    layers : sequence of int, optional
        Layers of the small multiples (default: ``n_small`` spread evenly over depth).
    n_small : int, default 5
        Number of small multiples when ``layers`` is not given.
    bins : int, default 40
        Number of value bins.
    last_layer : int, optional
        The model's last layer L (default: the largest layer present).
    title : str, optional
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
        Axes: the heat map first, then one axes per small multiple (plus a colour bar axes).
    """
    require(prompt_values, ("layer", "metric", "value"), "per-prompt values")
    rows = prompt_values[prompt_values["metric"] == metric]
    if rows.empty:
        present = sorted(prompt_values["metric"].astype(str).unique())
        raise LayerscopeError(f"per-prompt values: no '{metric}' rows (present: {', '.join(present)})")
    values = rows["value"].to_numpy(dtype=float)
    finite = np.isfinite(values)
    n_dropped = int((~finite).sum())
    rows = rows[finite]
    if rows.empty:
        raise LayerscopeError(f"per-prompt values: every '{metric}' value is NaN or infinite")
    all_layers = sorted(int(layer) for layer in rows["layer"].unique())
    last = last_layer if last_layer is not None else max(all_layers)
    depth = {layer: (100.0 * layer / last if last > 0 else 0.0) for layer in all_layers}
    low, high = float(rows["value"].min()), float(rows["value"].max())
    if high <= low:
        low, high = low - 0.5, high + 0.5
    edges = np.linspace(low, high, bins + 1)
    shares = np.zeros((bins, len(all_layers)))
    means = np.zeros(len(all_layers))
    grouped = {int(layer): group["value"].to_numpy(dtype=float) for layer, group in rows.groupby("layer")}
    for column, layer in enumerate(all_layers):
        counts, _ = np.histogram(grouped[layer], bins=edges)
        shares[:, column] = counts / max(1, counts.sum())
        means[column] = grouped[layer].mean()
    centers = np.array([depth[layer] for layer in all_layers])
    if len(centers) > 1:
        middle = (centers[1:] + centers[:-1]) / 2
        x_edges = np.concatenate([[centers[0] - (middle[0] - centers[0])], middle,
                                  [centers[-1] + (centers[-1] - middle[-1])]])
    else:
        x_edges = np.array([centers[0] - 2.0, centers[0] + 2.0])
    small = [layer for layer in (layers if layers is not None else histogram_layers(all_layers, n_small))
             if layer in grouped]
    n_prompts = int(rows["prompt_index"].nunique()) if "prompt_index" in rows.columns else int(len(rows) / len(all_layers))
    with plot_style():
        figure = new_figure(max(7.5, 2.3 * max(1, len(small))), 6.6)
        spec = figure.add_gridspec(2, max(1, len(small)), height_ratios=[1.35, 1.0])
        heat = figure.add_subplot(spec[0, :])
        _share_map(figure, heat, x_edges, edges, shares)
        heat.plot(centers, means, color=CHOSEN_COLOR, linewidth=1.4, marker="o", markersize=2.5,
                  label="mean over prompts")
        heat.set_ylabel(metric_label(metric))
        heat.set_xlabel("Depth (% of layers)")
        heat.set_xticks([0, 25, 50, 75, 100])
        heat.set_xlim(x_edges[0], x_edges[-1])
        heat.set_title(f"{metric_label(metric)} of each prompt, by layer ({n_prompts} prompts"
                       + (f", {n_dropped} skipped values" if n_dropped else "") + "); line: mean over prompts")
        first: Axes | None = None
        for column, layer in enumerate(small):
            axis = figure.add_subplot(spec[1, column], sharey=first)
            first = first or axis
            axis.hist(grouped[layer], bins=edges, color=OKABE_ITO[0], alpha=0.85)
            axis.set_title(f"layer {layer} ({depth[layer]:.0f}%)", fontsize=9.5)
            axis.set_xlabel(metric_label(metric), fontsize=8.5)
            if column == 0:
                axis.set_ylabel("prompts")
            else:
                axis.tick_params(labelleft=False)
        if title:
            figure.suptitle(wrap_title(title, figure.get_figwidth()))
    return figure


def _share_map(figure: Figure, heat: Axes, x_edges: np.ndarray, edges: np.ndarray, shares: np.ndarray) -> None:
    """The heat map of shares: empty bins masked (blank), occupied ones light (few) to dark (many)."""
    mesh = heat.pcolormesh(x_edges, edges, np.ma.masked_equal(shares, 0.0), cmap=share_colormap(),
                           vmin=0.0, vmax=max(float(shares.max()), 1e-12), shading="flat")
    heat.set_facecolor("white")
    heat.grid(False)
    colorbar = figure.colorbar(mesh, ax=heat, pad=0.01)
    colorbar.set_label("share of prompts (blank: none)")


def plot_prompt_histogram(prompt_values: pd.DataFrame, out: str | os.PathLike[str], **options: Any) -> Path:
    """Write :func:`prompt_histogram_figure` to ``out`` (PNG) and return the path."""
    return save_figure(prompt_histogram_figure(prompt_values, **options), out)
