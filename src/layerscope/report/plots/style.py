"""What every plot shares: palette, rc style, figures, saving, the depth axis and the layer markers.

Figures are built on :class:`~matplotlib.figure.Figure` objects, never through ``pyplot``, and
rendered with the Agg backend, so plotting works headless, keeps no global state and can run in
threads. matplotlib is imported only when a figure is drawn.

Legends never sit on data: figure legends go outside the axes (``loc="outside ..."``) and legends
of single axes are anchored beside them, where constrained layout makes room.
"""

from __future__ import annotations

import contextlib
import math
import os
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np
import pandas as pd

from layerscope.analysis.selection import metric_directions
from layerscope.analysis.tables import infer_last_layer
from layerscope.atomic import atomic_path
from layerscope.errors import LayerscopeError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["DPI", "OKABE_ITO", "AxisTexts", "LayerMarks", "data_lines", "save_figure"]

DPI = 120

#: Okabe & Ito (2008) colour-blind-safe palette, yellow last (weak on white).
OKABE_ITO: tuple[str, ...] = (
    "#0072B2",  # blue
    "#E69F00",  # orange
    "#009E73",  # bluish green
    "#D55E00",  # vermillion
    "#CC79A7",  # reddish purple
    "#56B4E9",  # sky blue
    "#000000",  # black
    "#F0E442",  # yellow
)
SEQUENTIAL_MAP = "cividis"
BEST_COLOR = "#000000"
CHOSEN_COLOR = "#D55E00"
LAST_COLOR = "#7f7f7f"
#: x range of depth axes: a little beyond 0-100% so lines at the first and last layer stay clear of the frame.
DEPTH_LIMITS = (-4.0, 104.0)

STYLE = {
    "font.size": 10,
    "axes.titlesize": 11,
    # room above each panel for the layer markers' triangles, which sit just over the plotting area
    "axes.titlepad": 15.0,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "figure.titlesize": 13,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "lines.linewidth": 1.8,
    "savefig.facecolor": "white",
    "figure.facecolor": "white",
    # names from the data (models, tasks, files) are shown as they are: "$" is no mathtext switch
    "text.parse_math": False,
}


def new_figure(width: float, height: float) -> Figure:
    """A fresh figure, not registered with pyplot (no global state, nothing to close)."""
    try:
        from matplotlib.figure import Figure
    except ImportError as error:  # matplotlib is a core dependency; this guards broken installs
        raise LayerscopeError("plots need matplotlib: pip install matplotlib") from error
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


@contextlib.contextmanager
def plot_style() -> Iterator[None]:
    """The rc settings of every layerscope figure, for the time of a block."""
    import matplotlib

    with matplotlib.rc_context(STYLE):
        yield


def save_figure(figure: Figure, out: str | os.PathLike[str], *, dpi: int = DPI) -> Path:
    """Render ``figure`` to a PNG file atomically (Agg) and return the path.

    Parameters
    ----------
    figure : matplotlib.figure.Figure
        The figure to render.
    out : str or os.PathLike
        Target file; parent folders are created.
    dpi : int, default 120
        Resolution.

    Returns
    -------
    pathlib.Path
        ``out``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)  # attaches itself as the figure's canvas: rendering never needs a GUI
    with plot_style(), atomic_path(out) as temporary:
        figure.savefig(temporary, format="png", dpi=dpi)
    return Path(out)


class AxisTexts(TypedDict, total=False):
    """A figure's title and axis labels, taken as keyword arguments (``**texts``) by the generic plots.

    Attributes
    ----------
    title : str or None
        Figure title (wrapped to the figure's width).
    xlabel, ylabel : str or None
        Axis labels (each plot says its defaults).
    """

    title: str | None
    xlabel: str | None
    ylabel: str | None


def wrap_title(title: str, width_inches: float) -> str:
    """``title`` wrapped to a width in inches, so that long model or file names are not cut."""
    return "\n".join(textwrap.wrap(title, max(30, int(width_inches * 9.5)))) or title


def finish(figure: Figure, title: str | None = None, handles: Sequence[Any] = (), labels: Sequence[str] = (),
           *, ncols: int | None = None, legend_title: str | None = None) -> Figure:
    """Add the figure legend (below the panels, outside them) and the title; return the figure.

    ``ncols`` defaults to as many columns (at most 4) as the longest label lets fit the figure's width.
    """
    if handles:
        if ncols is None:  # as many columns as fit the figure's width (about 5.5 points per character)
            widest = max(len(label) for label in labels) * 5.5 * STYLE["legend.fontsize"] / 10 + 40
            ncols = max(1, min(4, len(handles), int(figure.get_figwidth() * 72 // widest)))
        figure.legend(list(handles), list(labels), loc="outside lower center", frameon=False, ncols=ncols,
                      title=legend_title)
    if title:
        figure.suptitle(wrap_title(title, figure.get_figwidth()))
    return figure


def legend_beside(axis: Axes, handles: Sequence[Any], labels: Sequence[str], *, title: str | None = None) -> None:
    """A legend of ``axis`` to its right, outside the plotting area (constrained layout makes room)."""
    axis.legend(list(handles), list(labels), loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False,
                fontsize=8.5, title=title, title_fontsize=9, borderaxespad=0.0)


def auto_columns(n_panels: int, n_columns: int | None) -> int:
    """Panels per row: 2 for 2 or 4 panels (a square grid reads better), else 3."""
    if n_columns is not None:
        return n_columns
    return 2 if n_panels in (2, 4) else 3


def categorical_colors(n: int) -> list[str | tuple[float, ...]]:
    """``n`` distinguishable colours: Okabe-Ito up to 8, then evenly spaced cividis."""
    if n <= len(OKABE_ITO):
        return list(OKABE_ITO[:n])
    return sequential_colors(n)


def sequential_colors(n: int) -> list[str | tuple[float, ...]]:
    """``n`` colours along cividis for ordered conditions (its pale end avoided)."""
    import matplotlib

    colormap = matplotlib.colormaps[SEQUENTIAL_MAP]
    return [tuple(colormap(value)) for value in np.linspace(0.0, 0.85, max(n, 1))][:n]


def line_styles(n: int) -> list[tuple[str, str]]:
    """``n`` (colour, line style) pairs that stay apart beside a black line: six colours, then dashes.

    Black is the mean's, yellow is weak on white, and vermillion (the label-free marker's) comes last.
    """
    colors = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00"]
    dashes = ("-", "--", "-.", ":")
    return [(colors[index % len(colors)], dashes[(index // len(colors)) % len(dashes)]) for index in range(n)]


def grid_axes(figure: Figure, n_panels: int, n_columns: int, *, sharex: bool = True) -> list[Axes]:
    """``n_panels`` axes laid out in rows of ``n_columns`` (no empty axes are created)."""
    n_columns = max(1, min(n_columns, n_panels))
    n_rows = math.ceil(n_panels / n_columns)
    spec = figure.add_gridspec(n_rows, n_columns)
    axes: list[Axes] = []
    for index in range(n_panels):
        share = axes[0] if (sharex and axes) else None
        axes.append(figure.add_subplot(spec[index // n_columns, index % n_columns], sharex=share))
    return axes


def panel_figure(n_panels: int, n_columns: int, panel_size: tuple[float, float]) -> tuple[Figure, list[Axes]]:
    """A figure of ``n_panels`` axes of about ``panel_size`` inches each, ``n_columns`` per row."""
    columns = max(1, min(n_columns, n_panels))
    rows = math.ceil(n_panels / columns)
    figure = new_figure(panel_size[0] * columns, panel_size[1] * rows + 0.6)
    return figure, grid_axes(figure, n_panels, columns)


def depth_axis(axis: Axes, label: bool = True) -> None:
    """The paper's depth axis: 0-100 % of layers."""
    axis.set_xlim(*DEPTH_LIMITS)
    axis.set_xticks([0, 25, 50, 75, 100])
    if label:
        axis.set_xlabel("Depth (% of layers)")


def with_depth(frame: pd.DataFrame, last_layer: int | None) -> pd.DataFrame:
    """``frame`` with a complete ``depth_pct`` column (100 * layer / L where missing)."""
    last = last_layer if last_layer is not None else infer_last_layer(frame)
    computed = 100.0 * frame["layer"].astype(float) / last if last > 0 else frame["layer"].astype(float) * 0.0
    if "depth_pct" in frame.columns and last_layer is None:
        depth = pd.to_numeric(frame["depth_pct"], errors="coerce").astype(float)
        depth = depth.where(depth.notna(), computed)
    else:
        depth = computed
    return frame.assign(depth_pct=depth.to_numpy(dtype=float))


def layer_depth(layer: int | None, last_layer: int) -> float | None:
    """Depth % of ``layer`` (None stays None)."""
    if layer is None:
        return None
    return 100.0 * float(layer) / last_layer if last_layer > 0 else 0.0


class LayerMarks(TypedDict, total=False):
    """The layers a per-layer figure marks on every panel, taken as keyword arguments (``**marks``).

    The report draws the metric curves and the task scores of a run with the same marks
    (:func:`~layerscope.report.write_plots`).

    Attributes
    ----------
    best_layer, chosen_layer : int or None
        The best layer with labels (dashed black) and the label-free choice (dotted vermillion); the
        last layer gets a grey triangle beside them.
    chosen_label : str or None
        Legend text of the label-free choice, e.g. ``"min DiME on all texts"``.
    last_layer : int or None
        The model's last layer L (default: inferred from the table's ``depth_pct``).
    """

    best_layer: int | None
    chosen_layer: int | None
    chosen_label: str | None
    last_layer: int | None


def layer_markers(axes: Sequence[Axes], last_layer: int, marks: LayerMarks) -> tuple[list[Any], list[str]]:
    """Mark the best layer (labels), the label-free choice and the last layer on every panel.

    Best and chosen get vertical lines (gid ``"marker"``: dashed black, dotted vermillion). All three
    get a triangle above the plotting area (gid ``"layer-symbol"``, not clipped); triangles at the
    same layer are set side by side, so the marks stay visible when they share a layer, the last one
    included. Returns the legend's handles and labels.
    """
    from matplotlib.lines import Line2D
    from matplotlib.transforms import offset_copy

    best_layer, chosen_layer = marks.get("best_layer"), marks.get("chosen_layer")
    chosen_label = marks.get("chosen_label")
    drawn = [(best_layer, BEST_COLOR, "--", 1.2, f"best layer with labels ({best_layer})"),
             (chosen_layer, CHOSEN_COLOR, ":", 1.8, f"{chosen_label or 'label-free choice'} ({chosen_layer})"),
             (last_layer, LAST_COLOR, "", 0.0, f"last layer ({last_layer})")]
    if best_layer is None and chosen_layer is None:
        return [], []  # the last layer alone is not worth a legend: it is the axis' right end
    drawn = [mark for mark in drawn if mark[0] is not None]
    handles, labels = [], []
    shared: dict[int, int] = {}
    for layer, *_ in drawn:
        shared[layer] = shared.get(layer, 0) + 1
    seen: dict[int, int] = {}
    for layer, color, style, width, label in drawn:
        depth = layer_depth(layer, last_layer)
        slot = seen.get(layer, 0)
        seen[layer] = slot + 1
        shift = 7.0 * (slot - (shared[layer] - 1) / 2)  # points: side by side around the layer
        for axis in axes:
            if style:
                axis.axvline(depth, color=color, linestyle=style, linewidth=width, gid="marker")
            # lifted by half a marker: the triangle's tip touches the frame, never a data point at the top
            place = offset_copy(axis.get_xaxis_transform(), fig=axis.figure, x=shift, y=4.0, units="points")
            axis.plot([depth], [1.0], marker="v", markersize=7, color=color, linestyle="", clip_on=False,
                      transform=place, gid="layer-symbol", zorder=5)
        handles.append(Line2D([], [], color=color, linestyle=style or "", linewidth=width, marker="v", markersize=7))
        labels.append(label)
    return handles, labels


def data_lines(axis: Axes) -> list[Any]:
    """Lines of ``axis`` that carry data (layer markers and reference lines excluded)."""
    return [line for line in axis.get_lines() if line.get_gid() not in ("marker", "layer-symbol", "reference")]


def require(frame: pd.DataFrame | None, columns: Sequence[str], what: str) -> pd.DataFrame:
    """``frame`` if it is a non-empty DataFrame with ``columns``, else a one-line error."""
    if frame is None or not isinstance(frame, pd.DataFrame):
        raise LayerscopeError(f"{what}: expected a pandas DataFrame")
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise LayerscopeError(f"{what}: missing column(s) {', '.join(missing)}")
    if frame.empty:
        raise LayerscopeError(f"{what}: nothing to plot (the table is empty)")
    return frame


def direction_note(metric: str) -> str:
    """``"higher is better"`` / ``"lower is better"`` for a registered metric, else ``""``."""
    found = metric_directions([metric], strict=False)
    if metric not in found:
        return ""
    return "higher is better" if found[metric] else "lower is better"
