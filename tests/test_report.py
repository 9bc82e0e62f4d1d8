"""Plots and HTML report: built from small synthetic result stores (no model needed)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from layerscope.analysis import per_layer_table
from layerscope.errors import LayerscopeError
from layerscope.report import build_report, compare_runs, load_run, plots, summarize_run, write_examples
from layerscope.store import ResultsStore

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SCRIPT = "<script>alert(1)</script>"
TASKS = {
    "bbc-news": "Classification",
    "rotten-tomatoes": "Classification",
    "twenty-newsgroups": "Clustering",
    "lee-sts": "STS",
    "rt-rerank": "Reranking",
}


# ---------------------------------------------------------------------------------------- synthetic runs


def synthetic_frames(n_layers: int = 12, seed: int = 0, shift: float = 0.0) -> dict[str, pd.DataFrame]:
    """Per-layer tables shaped like an analyze run of a model with ``n_layers`` blocks.

    Prompt entropy has a mid-depth valley, task scores peak at about 60% depth (as in the paper).
    """
    rng = np.random.default_rng(seed)
    layers = np.arange(n_layers + 1)
    depth = 100.0 * layers / n_layers
    x = layers / n_layers
    profiles = {
        "prompt_entropy": 0.75 - 0.35 * np.sin(np.pi * x) + shift,
        "dataset_entropy": 0.55 + 0.25 * (x - 0.6) ** 2 + shift,
        "dime": 0.40 + 0.30 * (x - 0.55) ** 2 + 0.01 * rng.standard_normal(len(x)),
        "curvature": 1.9 - 0.6 * x,
    }
    metric_rows = []
    for metric, values in profiles.items():
        norms = ("maxEntropy", "raw") if metric != "curvature" else ("raw",)
        for norm in norms:
            scale = 1.0 if norm == "maxEntropy" or metric == "curvature" else 6.2
            for layer, value in zip(layers, values, strict=True):
                metric_rows.append({
                    "layer": int(layer), "depth_pct": depth[layer], "metric": metric, "normalization": norm,
                    "value": float(value * scale), "n_used": 40, "n_skipped": 2 if metric == "curvature" else 0,
                    "dataset": "rotten-tomatoes",
                })
    score_rows = []
    for index, (task, task_type) in enumerate(TASKS.items()):
        curve = 0.45 + 0.2 * np.exp(-((x - 0.6) ** 2) / 0.08) + 0.03 * index + 0.01 * rng.standard_normal(len(x))
        for layer, value in zip(layers, curve, strict=True):
            score_rows.append({
                "layer": int(layer), "depth_pct": depth[layer], "task": task, "task_type": task_type,
                "main_score": float(value), "scores": {"main_score": float(value)},
            })
    prompt_rows = []
    for layer in layers:
        center = profiles["prompt_entropy"][layer]
        split = 0.12 * np.sin(np.pi * x[layer])  # two modes in the middle layers
        modes = np.where(np.arange(40) % 2 == 0, center - split, center + split)
        values = modes + 0.02 * rng.standard_normal(40)
        values[3] = np.nan  # a skipped prompt
        for index, value in enumerate(values):
            prompt_rows.append({"layer": int(layer), "prompt_index": index, "metric": "prompt_entropy",
                                "value": float(value)})
    return {
        "metrics": pd.DataFrame(metric_rows),
        "scores": pd.DataFrame(score_rows),
        "prompt_values": pd.DataFrame(prompt_rows),
    }


def write_synthetic_run(
    directory: Path,
    *,
    model: str = "HuggingFaceTB/SmolLM2-135M",
    revision: str = "main",
    metrics: bool = True,
    scores: bool = True,
    prompt_values: bool = True,
    n_layers: int = 12,
    seed: int = 0,
    shift: float = 0.0,
    config_extra: dict | None = None,
    experiment_values: pd.DataFrame | None = None,
) -> str:
    frames = synthetic_frames(n_layers, seed, shift)
    config = {
        "model": model, "revision": revision, "dataset": "rotten-tomatoes", "pooling": "mean",
        "final_norm": "none", "max_length": 512, "metrics": ["prompt_entropy", "dataset_entropy", "dime", "curvature"],
        "tasks": list(TASKS), "seed": 0, "n_texts": 40, "timings": {"extract": 12.5, "metrics": 3.25},
        **(config_extra or {}),
    }
    with ResultsStore.in_directory(directory) as store:
        return store.write_run(
            config,
            metrics=frames["metrics"] if metrics else None,
            scores=frames["scores"] if scores else None,
            prompt_values=frames["prompt_values"] if prompt_values else None,
            experiment_values=experiment_values,
            model_id=model,
            revision=revision,
            data_source="rotten-tomatoes",
            data_hash="abc123",
            skipped={"empty_texts": 1},
        )


class TableParser(HTMLParser):
    """Rows (lists of cell texts and the row's class) of every table inside ``<section id=...>``."""

    def __init__(self, section: str) -> None:
        super().__init__()
        self.section = section
        self.depth = 0  # > 0 while inside the wanted section
        self.rows: list[tuple[str, list[str]]] = []
        self.headers: list[str] = []
        self._row: list[str] | None = None
        self._class = ""
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "section":
            if self.depth:
                self.depth += 1
            elif attributes.get("id") == self.section:
                self.depth = 1
        if not self.depth:
            return
        if tag == "tr":
            self._row, self._class = [], attributes.get("class") or ""
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if not self.depth:
            return
        if tag == "section":
            self.depth -= 1
        elif tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            if tag == "th":
                self.headers.append(self._row[-1])
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows.append((self._class, self._row))
            self._row = None

    def handle_data(self, data: str) -> None:
        if self.depth and self._cell is not None:
            self._cell.append(data)


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "run"
    write_synthetic_run(directory)
    return directory


# ---------------------------------------------------------------------------------------- plots


def assert_png(path: Path) -> None:
    assert path.is_file()
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 5_000  # a drawn figure, not an empty canvas


def test_metric_curves_one_panel_per_metric_with_markers(tmp_path: Path) -> None:
    metrics = synthetic_frames()["metrics"]
    figure = plots.metric_curves_figure(metrics, best_layer=7, chosen_layer=6, chosen_label="min DiME")
    assert len(figure.axes) == 4
    titles = [axis.get_title() for axis in figure.axes]
    assert any("DiME (maxEntropy)" in title for title in titles)
    assert any("lower is better" in title for title in titles)
    for axis in figure.axes:
        assert len(plots.data_lines(axis)) == 1  # one text source: one line
        markers = [line for line in axis.get_lines() if line.get_gid() == "marker"]
        assert len(markers) == 2
        assert markers[0].get_xdata()[0] == pytest.approx(100 * 7 / 12)
        assert axis.get_xlabel() == "Depth (% of layers)"
    # the default normalization is drawn: maxEntropy values stay in [0, 1]
    entropy_axis = figure.axes[[i for i, t in enumerate(titles) if t.startswith("Prompt entropy")][0]]
    assert max(plots.data_lines(entropy_axis)[0].get_ydata()) <= 1.0
    out = plots.plot_metric_curves(metrics, tmp_path / "curves.png", best_layer=7)
    assert out == tmp_path / "curves.png"
    assert_png(out)
    assert not list(tmp_path.glob(".*tmp*"))  # atomic write leaves no temporary file


def test_metric_curves_several_text_sources_and_subset() -> None:
    metrics = synthetic_frames()["metrics"]
    other = metrics.assign(dataset="bbc-news", value=metrics["value"] + 0.05)
    figure = plots.metric_curves_figure(pd.concat([metrics, other]), metric_names=["dime", "prompt_entropy"])
    assert len(figure.axes) == 2
    for axis in figure.axes:
        assert len(plots.data_lines(axis)) == 3  # two sources + their mean
    with pytest.raises(LayerscopeError):
        plots.metric_curves_figure(metrics, metric_names=["no_such_metric"])


def test_titles_from_data_are_shown_as_text(tmp_path: Path) -> None:
    metrics = synthetic_frames()["metrics"]
    title = "org/model-with-a-$weird$-name " + "x" * 150 + " $$ done"
    figure = plots.metric_curves_figure(metrics, title=title)
    shown = figure.get_suptitle()
    assert "\n" in shown and "".join(shown.split()) == "".join(title.split())  # wrapped, nothing dropped
    assert_png(plots.save_figure(figure, tmp_path / "dollars.png"))  # no mathtext parse error


def test_layer_marks_are_keywords_of_the_per_layer_figures() -> None:
    frames = synthetic_frames()
    # the marks are one TypedDict (LayerMarks) for both figures: a misspelt one is still Python's TypeError
    for function, frame in ((plots.metric_curves_figure, frames["metrics"]), (plots.task_scores_figure, frames["scores"])):
        with pytest.raises(TypeError, match=rf"^{function.__name__}\(\) got an unexpected keyword argument 'best_layr'$"):
            function(frame, best_layr=7)
    figure = plots.task_scores_figure(frames["scores"], best_layer=7, chosen_layer=3, last_layer=12)
    markers = [line for line in figure.axes[0].get_lines() if line.get_gid() == "marker"]
    assert [line.get_xdata()[0] for line in markers] == pytest.approx([100 * 7 / 12, 100 * 3 / 12])


def test_task_scores_panels_per_type_plus_average(tmp_path: Path) -> None:
    scores = synthetic_frames()["scores"]
    figure = plots.task_scores_figure(scores, best_layer=7)
    n_types = len(set(TASKS.values()))
    assert len(figure.axes) == n_types + 1
    by_title = {axis.get_title(): axis for axis in figure.axes}
    classification = by_title["Classification (2 tasks)"]
    assert len(plots.data_lines(classification)) == 2 + 1  # two tasks + the type mean
    overall = by_title[f"All tasks ({len(TASKS)})"]
    assert len(plots.data_lines(overall)) == n_types + 1  # each type's mean + the average
    average_line = plots.data_lines(overall)[-1]
    expected = 100 * scores.groupby("layer")["main_score"].mean().to_numpy()
    np.testing.assert_allclose(average_line.get_ydata(), expected)
    assert_png(plots.plot_task_scores(scores, tmp_path / "scores.png"))


def test_correlation_chart_bars_per_method(tmp_path: Path) -> None:
    from layerscope.analysis import correlate

    frames = synthetic_frames()
    correlations = correlate(frames["metrics"], frames["scores"], ["spearman", "kendall"])
    figure = plots.correlation_figure(correlations)
    assert len(figure.axes) == 2  # per task, average curve
    n_metrics = correlations["metric"].nunique()
    for axis in figure.axes:
        assert len(axis.containers) == 2
        assert all(len(container) == n_metrics for container in axis.containers)
    # the bar heights are the correlation values
    spearman = correlations[(correlations["scope"] == "average_curve") & (correlations["method"] == "spearman")]
    heights = sorted(bar.get_height() for bar in figure.axes[1].containers[0])
    np.testing.assert_allclose(heights, sorted(spearman["value"]))
    assert_png(plots.plot_correlations(correlations, tmp_path / "correlations.png"))


def test_prompt_histogram_heat_map_and_small_multiples(tmp_path: Path) -> None:
    values = synthetic_frames()["prompt_values"]
    figure = plots.prompt_histogram_figure(values, n_small=4, bins=20)
    heat, *small = [axis for axis in figure.axes if axis.get_label() != "<colorbar>"]
    assert len(small) == 4
    assert [axis.get_title().split()[1] for axis in small] == ["0", "4", "8", "12"]
    mesh = heat.collections[0]
    shares = np.ma.filled(mesh.get_array(), 0.0).reshape(20, 13)
    np.testing.assert_allclose(shares.sum(axis=0), 1.0)  # each layer's column: shares of its prompts
    assert "1 skipped" not in heat.get_title() and "13 skipped values" in heat.get_title()
    assert_png(plots.plot_prompt_histogram(values, tmp_path / "hist.png"))
    with pytest.raises(LayerscopeError, match="no 'curvature' rows"):
        plots.prompt_histogram_figure(values, metric="curvature")


def test_lines_by_condition_facets_hues_and_spread(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = [
        {"layer": layer, "p": p, "kind": kind, "prompt": prompt, "entropy": layer * p + rng.normal()}
        for layer in range(6) for p in (0.0, 0.25, 1.0) for kind in ("repetition", "random") for prompt in range(3)
    ]
    frame = pd.DataFrame(rows)
    figure = plots.lines_by_condition_figure(frame, "layer", "entropy", "p", facet="kind", spread="std")
    assert len(figure.axes) == 2
    for axis in figure.axes:
        lines = plots.data_lines(axis)
        assert [line.get_label() for line in lines] == ["0.0", "0.25", "1.0"]  # numeric order
        assert len(axis.collections) == 3  # one band per line
        np.testing.assert_allclose(lines[1].get_xdata(), np.arange(6))
    titles = sorted(axis.get_title() for axis in figure.axes)
    assert titles == ["kind = random", "kind = repetition"]
    out = plots.plot_lines_by_condition(frame, "layer", "entropy", "p", tmp_path / "lines.png", facet="kind")
    assert_png(out)
    with pytest.raises(LayerscopeError, match="missing column"):
        plots.lines_by_condition_figure(frame, "layer", "nope", "p")


def test_heatmap_labels_and_annotations(tmp_path: Path) -> None:
    matrix = pd.DataFrame(np.arange(12.0).reshape(4, 3), index=[0, 4, 8, 12], columns=["step1", "step1000", "step143000"])
    figure = plots.heatmap_figure(matrix, title="entropy", xlabel="checkpoint", ylabel="layer")
    axis = figure.axes[0]
    assert [label.get_text() for label in axis.get_xticklabels()] == ["step1", "step1000", "step143000"]
    assert [label.get_text() for label in axis.get_yticklabels()] == ["0", "4", "8", "12"]
    assert len(axis.texts) == 12
    out = plots.plot_heatmap(matrix.to_numpy(), ["a", "b", "c", "d"], ["x", "y", "z"], tmp_path / "heat.png",
                             center=5.0)
    assert_png(out)
    with pytest.raises(LayerscopeError, match="labels do not match"):
        plots.heatmap_figure(matrix.to_numpy(), ["a"], ["x", "y", "z"])


def test_axis_texts_are_keywords_of_the_generic_plots() -> None:
    frame = pd.DataFrame({"layer": [0, 1, 2] * 2, "p": [0.0] * 3 + [1.0] * 3, "entropy": [1.0, 2.0, 3.0, 2.0, 1.0, 0.5]})
    matrix = np.arange(6.0).reshape(2, 3)
    texts = {"title": "entropy", "xlabel": "checkpoint", "ylabel": "layer"}
    lines = plots.lines_by_condition_figure(frame, "layer", "entropy", "p", **texts)
    heat = plots.heatmap_figure(matrix, **texts)
    assert (lines.get_suptitle(), lines.axes[0].get_xlabel(), lines.axes[0].get_ylabel()) == tuple(texts.values())
    assert (heat.axes[0].get_title(), heat.axes[0].get_xlabel(), heat.axes[0].get_ylabel()) == tuple(texts.values())
    default = plots.lines_by_condition_figure(frame, "layer", "entropy", "p")  # labels default to the columns
    assert (default.get_suptitle(), default.axes[0].get_xlabel(), default.axes[0].get_ylabel()) == ("", "layer", "entropy")
    # the texts are one TypedDict (AxisTexts) for both plots: a misspelt one is still Python's TypeError
    with pytest.raises(TypeError, match=r"^lines_by_condition_figure\(\) got an unexpected keyword argument 'x_label'$"):
        plots.lines_by_condition_figure(frame, "layer", "entropy", "p", x_label="layer")
    with pytest.raises(TypeError, match=r"^heatmap_figure\(\) got an unexpected keyword argument 'titel'$"):
        plots.heatmap_figure(matrix, titel="entropy")


def test_run_overlay_one_line_per_run() -> None:
    small = per_layer_table(synthetic_frames(12)["metrics"], synthetic_frames(12)["scores"])
    deep = per_layer_table(synthetic_frames(24, shift=0.1)["metrics"], synthetic_frames(24)["scores"])
    figure = plots.run_overlay_figure({"small": small, "deep": deep})
    assert len(figure.axes) == 5  # 4 metrics + average score
    for axis in figure.axes:
        lines = plots.data_lines(axis)
        assert [line.get_label() for line in lines] == ["small", "deep"]
        assert lines[0].get_xdata()[-1] == pytest.approx(100.0)
        assert lines[1].get_xdata()[-1] == pytest.approx(100.0)  # depth %, whatever the model's depth


def test_plotting_is_lazy_about_matplotlib() -> None:
    code = "import sys, layerscope.report; print('matplotlib' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


# ---------------------------------------------------------------------------------------- report


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def test_report_holds_the_per_layer_table_of_the_store(run_dir: Path) -> None:
    path = build_report(run_dir)
    assert path == run_dir / "report.html"
    page = read(path)
    with ResultsStore.in_directory(run_dir, read_only=True) as store:
        run_id = store.latest_run_id()
        table = per_layer_table(store.metrics(run_id), store.scores(run_id))
    parser = TableParser("layers")
    parser.feed(page)
    body = [(css, cells) for css, cells in parser.rows if cells and cells[0].isdigit()]
    assert [int(cells[0]) for _, cells in body] == table["layer"].tolist()
    headers = parser.headers
    assert any(header.startswith("DiME") and header.endswith("maxEntropy") for header in headers)
    for metric, label in (("dime", "DiME"), ("curvature", "Curvature"), ("prompt_entropy", "Prompt entropy")):
        column = [i for i, header in enumerate(headers) if header.startswith(label)][0]
        shown = [cells[column] for _, cells in body]
        assert shown == [f"{value:.3f}" for value in table[metric]]
    score_column = [i for i, header in enumerate(headers) if header.startswith("avg score")][0]
    assert [cells[score_column] for _, cells in body] == [f"{value:.1f}" for value in table["avg_score"]]
    # the best layer with labels and the label-free choice (the default rule, the run recording none)
    # are the highlighted rows
    from layerscope.analysis.choice import default_rule
    from layerscope.analysis.rules import FixedDepth, LastLayer

    best = int(table.loc[table["avg_score"].idxmax(), "layer"])
    rule = default_rule()
    if isinstance(rule, FixedDepth):  # the layer floor(fraction * L + 0.5), every layer being scored
        chosen, named = int(np.floor(rule.fraction * int(table["layer"].max()) + 0.5)), rule.name
    elif isinstance(rule, LastLayer):  # the record found no label-free rule that beat the last layer held out
        chosen, named = int(table["layer"].max()), "Without labels, layerscope keeps the last layer"
    else:  # no record: the paper's min DiME on all texts
        chosen, named = int(table.loc[table["dime"].idxmin(), "layer"]), "min DiME"
    assert [int(cells[0]) for css, cells in body if "best" in css.split()] == [best]
    assert [int(cells[0]) for css, cells in body if "chosen" in css.split()] == [chosen]
    assert "best with labels" in page and named in page


def test_report_sections_plots_and_config(run_dir: Path) -> None:
    page = read(build_report(run_dir))
    for anchor in ("summary", "layers", "plots", "selection", "correlations", "examples", "configuration"):
        assert f'id="{anchor}"' in page
    assert page.count('src="data:image/png;base64,') == 4  # curves, scores, correlations, histogram
    for name in ("metric_curves", "task_scores", "correlations", "histogram_prompt_entropy"):
        assert_png(run_dir / "plots" / f"{name}.png")
    # configuration facts from the store
    for fact in ("HuggingFaceTB/SmolLM2-135M", "rotten-tomatoes", "mean", "abc123", "empty_texts: 1", "0.1.0",
                 "extract: 12.5 s"):
        assert fact in page
    # the selection table has the depth baselines and the metric rules
    parser = TableParser("selection")
    parser.feed(page)
    rules = [cells[0] for _, cells in parser.rows if cells]
    for rule in ("best layer (labels)", "last layer", "depth 50%", "depth 70%", "min dime", "min prompt_entropy"):
        assert rule in rules


def test_report_escapes_every_text(tmp_path: Path) -> None:
    directory = tmp_path / "evil"
    frames = synthetic_frames()
    scores = frames["scores"].replace({"task": {"lee-sts": SCRIPT}, "task_type": {"STS": f"STS {SCRIPT}"}})
    with ResultsStore.in_directory(directory) as store:
        store.write_run(
            {"model": f"evil/{SCRIPT}", "dataset": SCRIPT, "notes": SCRIPT},
            metrics=frames["metrics"],
            scores=scores,
            model_id=f"evil/{SCRIPT}",
            revision=SCRIPT,
            skipped={SCRIPT: 1},
        )
    write_examples(directory, [f"A review with {SCRIPT} inside & more", "plain text"])
    page = read(build_report(directory))
    assert SCRIPT not in page
    assert re.search(r"<script", page, flags=re.IGNORECASE) is None
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "A review with &lt;script&gt;alert(1)&lt;/script&gt; inside &amp; more" in page
    # the example passed directly is escaped too
    page = read(build_report(directory, examples=['"><img src=x onerror=alert(1)>']))
    assert "<img src=x" not in page
    assert "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in page


def test_report_is_self_contained(run_dir: Path) -> None:
    page = read(build_report(run_dir))
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//)""", page, flags=re.IGNORECASE)
    assert "<link" not in page.lower()
    assert "@import" not in page
    assert "url(" not in page
    for source in re.findall(r'<img[^>]*\ssrc="([^"]*)"', page):
        assert source.startswith("data:image/png;base64,")
    assert "Content-Security-Policy" in page


def test_report_of_a_metrics_only_run(tmp_path: Path) -> None:
    directory = tmp_path / "metrics-only"
    write_synthetic_run(directory, scores=False)
    page = read(build_report(directory))
    assert "no task scores" in page
    assert "Needs task scores" in page
    assert "Correlations needs both metrics and task scores" in page
    assert (directory / "plots" / "metric_curves.png").is_file()
    assert not (directory / "plots" / "task_scores.png").exists()
    parser = TableParser("layers")
    parser.feed(page)
    assert not any(header.startswith("avg score") for header in parser.headers)
    assert len([cells for _, cells in parser.rows if cells and cells[0].isdigit()]) == 13
    assert [int(cells[0]) for css, cells in parser.rows if "chosen" in css.split()]  # still a label-free choice


def test_report_of_a_scores_only_run(tmp_path: Path) -> None:
    directory = tmp_path / "scores-only"
    write_synthetic_run(directory, metrics=False, prompt_values=False)
    page = read(build_report(directory))
    assert "no representation metrics" in page
    parser = TableParser("selection")
    parser.feed(page)
    rules = [cells[0] for _, cells in parser.rows if cells]
    assert "depth 70%" in rules and not any(rule.startswith("min ") for rule in rules)
    assert page.count('src="data:image/png;base64,') == 1


def test_a_depth_headline_is_one_row_of_table_2(tmp_path: Path) -> None:
    directory = tmp_path / "depth"
    write_synthetic_run(directory, config_extra={"select_by": "depth:0.7"})  # the same rule as a baseline
    page = read(build_report(directory))
    summary = summarize_run(load_run(directory))
    parser = TableParser("selection")
    parser.feed(page)
    rows = [cells for _, cells in parser.rows if cells]
    depth_rows = [i for i, cells in enumerate(rows) if cells[0] == "depth 70%"]
    assert len(depth_rows) == 1 and rows[depth_rows[0]][1] == str(int(np.floor(0.7 * summary.last_layer + 0.5)))
    group = [cells[0] for cells in rows[: depth_rows[0]] if len(cells) == 1][-1]
    assert "the summary's choice" in group  # shown once, as the choice
    assert "depth 50%" in {cells[0] for cells in rows}


@pytest.mark.parametrize("rule", ["last", "depth:0.75"])
def test_the_default_rule_is_shown_with_its_held_out_record(tmp_path: Path, monkeypatch, rule: str) -> None:
    import layerscope.analysis.choice as choice

    per_model = {"mean_regret": 4.371, "wins": 0 if rule == "last" else 5, "n_models": 13, "per_model": []}
    record = {"rule": rule, "name": choice.parse_rule(rule).name, "held_out": {"model": per_model},
              "trained_on": {"n_models": 13, "authors": 6, "runs": 7, "models": []}, "last_layer_regret": 3.447,
              "unseen": {"n_models": 0}, "command": "python benchmarks/bench_selection.py runs/a --write-record x"}
    monkeypatch.setattr(choice, "held_out_record", lambda: record)
    directory = tmp_path / "run"
    write_synthetic_run(directory)  # the run records no rule: the default (auto) decides
    page = read(build_report(directory))
    summary = summarize_run(load_run(directory))
    last = summary.last_layer
    counts = "6 from the paper authors&#x27; stored results, 7 layerscope runs"
    held = "the procedure lost 4.4 points to the best layer on average, the last layer 3.4, and beat the last layer on"
    if rule == "last":
        assert summary.chosen_layer == last
        assert f"Without labels, layerscope keeps the last layer ({last}): no label-free rule beat it" in page
        assert f"No label-free rule held up against the last layer on models it was not chosen on (13 models: {counts})" in page
        assert f"{held} 0 of 13 models" in page
    else:
        assert summary.chosen_layer == int(np.floor(0.75 * last + 0.5))
        assert ("The label-free rule (depth 75%) is layerscope&#x27;s default: the held-out protocol picked it on "
                f"13 models ({counts})") in page
        assert f"{held} 5 of 13 models" in page and "keeps the last layer" not in page
        # the last layer asked for by name is not presented as the default's verdict
        explicit = tmp_path / "explicit"
        write_synthetic_run(explicit, config_extra={"select_by": "last"})
        page = read(build_report(explicit))
        assert "Without labels, the rule last layer picks layer" in page and "keeps the last layer" not in page


def test_report_picks_a_run_and_reports_bad_input(tmp_path: Path, run_dir: Path) -> None:
    other = write_synthetic_run(run_dir, model="EleutherAI/pythia-160m", config_extra={"select_by": "prompt_entropy"})
    page = read(build_report(run_dir))  # latest run by default
    assert "EleutherAI/pythia-160m" in page and "min Prompt entropy" in page
    with ResultsStore.in_directory(run_dir, read_only=True) as store:
        first = store.runs()["run_id"].iloc[0]
    out = build_report(run_dir, first, out=tmp_path / "first.html")
    assert "SmolLM2-135M" in read(out) and other not in read(out)
    with pytest.raises(LayerscopeError, match="unknown run"):
        build_report(run_dir, "nope")
    with pytest.raises(LayerscopeError, match="no results database"):
        build_report(tmp_path / "missing")
    with pytest.raises(LayerscopeError, match="no such metric"):
        build_report(run_dir, select_by="lidar")


def test_report_examples_show_per_prompt_entropy(run_dir: Path) -> None:
    path = write_examples(run_dir, ["first text", "second text", "third"], indices=[0, 1, 2], max_examples=2)
    assert json.loads(path.read_text()) == [{"index": 0, "text": "first text"}, {"index": 1, "text": "second text"}]
    page = read(build_report(run_dir))
    assert "first text" in page and "second text" in page and ">third<" not in page
    summary = summarize_run(load_run(run_dir))
    values = synthetic_frames()["prompt_values"]
    expected = values[(values["layer"] == summary.chosen_layer) & (values["prompt_index"] == 0)]["value"].iloc[0]
    assert f"prompt entropy {expected:.3f} at layer {summary.chosen_layer} ({summary.chosen_label}" in page


def test_report_lists_experiments_with_their_plots(tmp_path: Path) -> None:
    directory = tmp_path / "exp"
    experiment = pd.DataFrame([
        {"experiment": "extreme-prompts", "condition": f"p={p}", "layer": layer, "key": "prompt_entropy",
         "value": 0.5 + p * layer / 12}
        for p in (0.0, 0.5, 1.0) for layer in range(13)
    ])
    write_synthetic_run(directory, experiment_values=experiment)
    page = read(build_report(directory))
    assert 'id="experiments"' in page and "extreme-prompts" in page
    generated = directory / "plots" / "experiment_extremeprompts.png"
    assert_png(generated)  # no PNG of its own: a generic plot is drawn
    # PNGs written by the experiment itself are embedded instead, wherever they are in the directory
    plots.plot_heatmap(np.eye(3), None, None, directory / "extreme_prompts" / "repetition.png")
    plots.plot_heatmap(np.eye(2), None, None, directory / "plots" / "extreme-prompts-length.png")
    page = read(build_report(directory))
    assert "repetition.png" in page and "extreme-prompts-length.png" in page
    assert "experiment_extremeprompts.png" not in page
    assert page.count('src="data:image/png;base64,') == 6


def test_compare_two_stores(tmp_path: Path) -> None:
    first, second = tmp_path / "small", tmp_path / "deep"
    write_synthetic_run(first, model="EleutherAI/pythia-160m")
    write_synthetic_run(second, model="EleutherAI/pythia-410m", n_layers=24, shift=0.1, seed=1)
    path = compare_runs([first, second], tmp_path / "cmp")
    assert path == tmp_path / "cmp" / "compare.html"
    page = read(path)
    assert "pythia-160m" in page and "pythia-410m" in page
    assert page.count('src="data:image/png;base64,') == 1
    assert_png(tmp_path / "cmp" / "plots" / "compare_overlay.png")
    parser = TableParser("selection")
    parser.feed(page)
    assert parser.headers[:3] == ["rule", "pythia-160m", "pythia-410m"]
    parser = TableParser("runs")
    parser.feed(page)
    column = parser.headers.index("layers")
    layer_counts = [cells[column] for _, cells in parser.rows if cells and cells[0].startswith("pythia")]
    assert layer_counts == ["13", "25"]
    # same model at two revisions: labels tell them apart; an .html target is honoured
    write_synthetic_run(tmp_path / "rev", model="EleutherAI/pythia-160m", revision="step1000", seed=2)
    out = compare_runs([first, tmp_path / "rev"], tmp_path / "revisions.html")
    assert out == tmp_path / "revisions.html"
    assert "pythia-160m @ step1000" in read(out)
    with pytest.raises(LayerscopeError):
        compare_runs([], tmp_path / "none")
    # a directory holding several runs (a sweep's merged store): every run with all_runs=True
    write_synthetic_run(first, model="EleutherAI/pythia-70m", n_layers=6, seed=3)
    page = read(compare_runs([first], tmp_path / "all", all_runs=True))
    assert "pythia-70m" in page and "pythia-160m" in page
    page = read(compare_runs([first], tmp_path / "latest"))
    assert "pythia-70m" in page and "pythia-160m" not in page
