"""The plots read at a glance: every line named, markers visible at the last layer, empty bins blank,
no legend over data, correlations with their n (issue 15, point 7)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba

from layerscope.analysis import correlate, per_layer_table
from layerscope.analysis.correlation import correlation_uncertainty
from layerscope.report import plots
from test_report import TASKS, synthetic_frames


def drawn(figure):
    """``figure`` laid out and drawn (window extents are final)."""
    FigureCanvasAgg(figure).draw()
    return figure


def legend_texts(legend) -> list[str]:
    return [text.get_text() for text in legend.get_texts()]


def several_sets(metrics: pd.DataFrame) -> pd.DataFrame:
    """The metrics on all texts ("all") and on two task sets with other values."""
    return pd.concat([metrics.assign(dataset="all"),
                      metrics.assign(dataset="bbc-news", value=metrics["value"] + 0.05),
                      metrics.assign(dataset="lee-sts", value=metrics["value"] - 0.05)], ignore_index=True)


def test_task_scores_name_every_task_beside_its_panel() -> None:
    scores = synthetic_frames()["scores"]
    figure = drawn(plots.task_scores_figure(scores, best_layer=7))
    by_type: dict[str, list[str]] = {}
    for task, task_type in TASKS.items():
        by_type.setdefault(task_type, []).append(task)
    for axis in figure.axes:
        legend = axis.get_legend()
        assert legend is not None, axis.get_title()
        task_type = axis.get_title().split(" (")[0]
        if task_type == "All tasks":  # each type's mean, named with its best layer (the dot on its line)
            means = scores.groupby(["task_type", "layer"])["main_score"].mean()
            best = {kind: int(means[kind].idxmax()) for kind in sorted(by_type)}
            assert legend_texts(legend) == [f"{kind} (best: layer {best[kind]})" for kind in best] + ["average"]
            continue
        tasks = sorted(by_type[task_type])
        expected = tasks + ([f"mean of {len(tasks)} tasks"] if len(tasks) > 1 else [])
        assert legend_texts(legend) == expected  # one entry per task, named
        # the entries are the panel's lines, each its own colour or dash
        styles = {(line.get_color(), line.get_linestyle()) for line in plots.data_lines(axis)}
        assert len(styles) == len(plots.data_lines(axis))
        # the legend sits beside the panel, not on it
        assert legend.get_window_extent().x0 >= axis.get_window_extent().x1


def test_markers_stay_visible_at_the_last_layer() -> None:
    frames = synthetic_frames()
    for figure in (plots.metric_curves_figure(frames["metrics"], best_layer=12, chosen_layer=12,
                                              chosen_label="min DiME on all texts", last_layer=12),
                   plots.task_scores_figure(frames["scores"], best_layer=12, chosen_layer=12,
                                            chosen_label="min DiME on all texts", last_layer=12)):
        drawn(figure)
        for axis in figure.axes:
            assert axis.get_xlim()[1] > 100  # a line at 100% is not drawn on the frame
            lines = [line for line in axis.get_lines() if line.get_gid() == "marker"]
            assert [line.get_xdata()[0] for line in lines] == [pytest.approx(100.0)] * 2
            symbols = [line for line in axis.get_lines() if line.get_gid() == "layer-symbol"]
            assert len(symbols) == 3  # best, chosen, last
            assert all(line.get_xdata()[0] == pytest.approx(100.0) and not line.get_clip_on() for line in symbols)
            centers = [line.get_window_extent(None).x0 for line in symbols]
            # side by side: no triangle hides another though all three are at the last layer
            assert min(np.diff(sorted(centers))) > 4.0
            assert {line.get_color() for line in symbols} == {"#000000", "#D55E00", "#7f7f7f"}
        labels = legend_texts(figure.legends[-1])
        assert {"best layer with labels (12)", "min DiME on all texts (12)", "last layer (12)"} <= set(labels)


def test_histogram_empty_bins_are_blank() -> None:
    values = synthetic_frames()["prompt_values"]
    figure = plots.prompt_histogram_figure(values, bins=30)
    heat = figure.axes[0]
    mesh = heat.collections[0]
    finite = values[np.isfinite(values["value"])]
    edges = np.linspace(finite["value"].min(), finite["value"].max(), 31)
    counts = np.stack([np.histogram(group["value"], bins=edges)[0] for _, group in finite.groupby("layer")], axis=1)
    mask = np.ma.getmaskarray(mesh.get_array()).reshape(counts.shape)
    assert (counts == 0).any() and (counts > 0).any()
    np.testing.assert_array_equal(mask, counts == 0)  # exactly the empty bins are masked
    colormap = mesh.get_cmap()
    assert colormap.get_bad()[3] == 0.0 and to_rgba(heat.get_facecolor()) == to_rgba("white")  # masked = blank
    luminance = [0.299 * r + 0.587 * g + 0.114 * b for r, g, b, _ in colormap(np.linspace(0, 1, 5))]
    assert luminance == sorted(luminance, reverse=True)  # more prompts, darker: few is the lightest colour
    assert luminance[0] < 0.95  # but still a colour: a bin of one prompt is not mistaken for an empty one


def test_metric_curves_name_every_text_set() -> None:
    metrics = synthetic_frames()["metrics"]
    figure = drawn(plots.metric_curves_figure(several_sets(metrics), metric_names=["dime", "curvature"]))
    for axis in figure.axes:
        lines = plots.data_lines(axis)
        assert [line.get_label() for line in lines] == ["bbc-news", "lee-sts", "all texts"]
        thick = lines[-1]
        expected = metrics[(metrics["metric"] == "curvature")].sort_values("layer")["value"]
        if axis.get_title().startswith("Curvature"):
            np.testing.assert_allclose(thick.get_ydata(), expected)  # the all-texts set itself, not a mean
    assert legend_texts(figure.legends[0])[:3] == ["bbc-news", "lee-sts", "all texts"]


def overlapping_legends(figure) -> list[str]:
    """Legends whose box overlaps a panel that holds data (colour bars excepted)."""
    drawn(figure)
    panels = [axis for axis in figure.axes if axis.get_label() != "<colorbar>"]
    legends = [*figure.legends, *(axis.get_legend() for axis in panels if axis.get_legend() is not None)]
    return [f"{legend_texts(legend)[:2]} over {axis.get_title()!r}" for legend in legends for axis in panels
            if legend.get_window_extent().overlaps(axis.get_window_extent())]


def test_no_legend_covers_data() -> None:
    frames = synthetic_frames()
    correlations = correlate(frames["metrics"], frames["scores"], ["spearman", "kendall"])
    rows = pd.DataFrame([{"layer": layer, "p": p, "entropy": layer * p} for layer in range(6) for p in (0.0, 0.5, 1.0)])
    small = per_layer_table(frames["metrics"], frames["scores"])
    figures = {
        "metric curves": plots.metric_curves_figure(several_sets(frames["metrics"]), best_layer=7, chosen_layer=6),
        "task scores": plots.task_scores_figure(frames["scores"], best_layer=7, chosen_layer=6),
        "correlations": plots.correlation_figure(correlations),
        "histogram": plots.prompt_histogram_figure(frames["prompt_values"]),
        "overlay": plots.run_overlay_figure({"a": small, "b": small}),
        "lines": plots.lines_by_condition_figure(rows, "layer", "entropy", "p"),
    }
    for name, figure in figures.items():
        assert overlapping_legends(figure) == [], name


def test_correlation_figure_states_n_and_draws_intervals() -> None:
    frames = synthetic_frames()
    correlations = correlate(frames["metrics"], frames["scores"], ["spearman", "kendall"])
    with_uncertainty = correlation_uncertainty(correlations, frames["metrics"], frames["scores"])
    figure = plots.correlation_figure(with_uncertainty)
    per_task, curve = figure.axes
    assert "5 tasks" in per_task.get_title() and "13 layers" in per_task.get_title()
    assert "13 layers" in curve.get_title()
    intervals = [collection for collection in per_task.collections if collection.get_gid() == "interval"]
    n_metrics = correlations["metric"].nunique()
    assert sum(len(collection.get_segments()) for collection in intervals) == 2 * n_metrics
    # each whisker spans the interval of its bar
    spearman = with_uncertainty[(with_uncertainty["scope"] == "per_task") & (with_uncertainty["method"] == "spearman")]
    spans = sorted((segment[0][1], segment[1][1]) for segment in intervals[0].get_segments())
    assert spans == sorted(zip(spearman["ci_low"], spearman["ci_high"], strict=True))
    assert not [c for c in curve.collections if c.get_gid() == "interval"]  # one curve: no interval over tasks
