"""A new metric is one function + one registry entry: it then reaches every stage (issue 11 point 2).

Two toy metrics are registered here, one on pooled embeddings and one on each prompt's tokens (streamed
by the generic accumulator), and followed through compute_metrics, analyze, the CLI table, the plots,
the report and label-free selection, with no other edit anywhere.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import layerscope as ls
from layerscope.metrics import MetricSpec, register, unregister
from layerscope.metrics import functional as F


def mean_row_norm(pooled: torch.Tensor) -> torch.Tensor:
    """Mean L2 norm of the pooled rows, per leading index: (..., n, d) -> (...,)."""
    return torch.linalg.vector_norm(F._as_float64(pooled, "pooled"), dim=-1).mean(dim=-1)


def token_spread(tokens: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Per prompt, the mean distance of its real tokens to their mean: (..., b, t, d) -> (..., b)."""
    tokens = F._as_float64(tokens, "tokens", 3)
    mask = (torch.arange(tokens.shape[-2]) < torch.as_tensor(lengths)[:, None]).to(torch.float64)  # (b, t)
    count = mask.sum(-1).clamp_min(1.0)
    mean = (tokens * mask[..., None]).sum(-2) / count[..., None]
    distance = torch.linalg.vector_norm(tokens - mean.unsqueeze(-2), dim=-1) * mask
    return torch.where(mask.sum(-1) >= 2, distance.sum(-1) / count, float("nan"))


POOLED = MetricSpec("toy_norm", mean_row_norm, "pooled", True, "Toy row norm", "toy N",
                    "mean L2 norm of the pooled embeddings (a toy)")
TOKENS = MetricSpec("toy_spread", token_spread, "tokens", False, "Toy token spread", "toy S",
                    "mean distance of a prompt's tokens to their mean (a toy)")

TEXTS = ["Intermediate layers often make better embeddings than the last layer.",
         "The quick brown fox jumps over the lazy dog.", "", "x",
         "Matrix entropy of the token Gram matrix measures compression.",
         "Curvature measures how straight the token trajectory is through the layers of a model."]


@pytest.fixture(scope="module")
def toys():
    for spec in (POOLED, TOKENS):
        register(spec)
    yield
    for spec in (POOLED, TOKENS):
        unregister(spec.name)


@pytest.mark.numeric
def test_registered_metrics_are_computed_from_their_function(toys, tiny_llama):
    frame = ls.compute_metrics(tiny_llama, TEXTS, metrics="toy_norm,toy_spread", progress=False)
    pooled = ls.extract(tiny_llama, TEXTS, progress=False).pooled.astype(np.float64)  # (layers, 5, d)
    norm = frame.query("metric == 'toy_norm'").sort_values("layer")
    np.testing.assert_allclose(norm["value"], np.linalg.norm(pooled, axis=-1).mean(-1), rtol=1e-6)
    # the token metric, streamed by the generic accumulator, equals the formula on each prompt's tokens
    spread = frame.query("metric == 'toy_spread'").sort_values("layer")
    expected = np.zeros(tiny_llama.num_layers + 1)
    used = [0, 1, 4, 5]  # "" is skipped, "x" has one token
    for index in used:
        ids = tiny_llama.tokenizer([TEXTS[index]], return_tensors="pt")["input_ids"]
        states = []
        ls.extract(tiny_llama, [TEXTS[index]], progress=False, token_hook=lambda s, lengths, *, kept=states: kept.append(s.clone()))
        tokens = states[0][:, 0, : ids.shape[1]].double().numpy()  # (layers, t, d)
        expected += np.linalg.norm(tokens - tokens.mean(1, keepdims=True), axis=-1).mean(-1) / len(used)
    np.testing.assert_allclose(spread["value"], expected, rtol=1e-6)
    assert (spread["n_used"] == 4).all() and (spread["n_skipped"] == 2).all()


@pytest.fixture(scope="module")
def analysis(toys, tiny_llama, tmp_path_factory):
    from layerscope.pipeline import analyze

    out = tmp_path_factory.mktemp("toy-analysis")
    return analyze(loaded_model=tiny_llama, tasks=["LeeDocumentSTS"], metrics="toy_norm,toy_spread,dime",
                   select_by="toy_norm", out=out, n_views=4, max_length=64, progress=False)


def test_analyze_selection_and_report_know_the_new_metrics(analysis):
    from layerscope.analysis import select_layer

    result = analysis
    assert {"toy_norm", "toy_spread"} <= set(result.metrics["metric"])
    assert {"toy_norm", "toy_spread"} <= set(result.layer_table.columns)
    rules = set(result.selection["rule"])
    assert {"max toy_norm", "min toy_spread"} <= rules  # directions from the registry entries
    on_all = result.metrics[result.metrics["dataset"] == "all"]
    assert result.chosen_layer == select_layer(on_all, by="toy_norm") and result.chosen_by == "toy_norm"
    assert result.summary.chosen_label == "max Toy row norm"
    page = result.report.read_text()
    assert "Toy row norm" in page and "Toy token spread" in page


def test_plots_draw_a_panel_per_new_metric(analysis):
    from layerscope.report import plots

    figure = plots.metric_curves_figure(analysis.metrics[analysis.metrics["dataset"] == "all"])
    titles = [axis.get_title() for axis in figure.axes]
    assert any(title.startswith("Toy row norm") for title in titles)
    assert any(title.startswith("Toy token spread") for title in titles)


def test_cli_table_and_metric_list_use_the_registry_names(toys, tiny_llama, tmp_path):
    from layerscope.cli import app

    tiny_llama.model.save_pretrained(str(tmp_path / "model"))
    tiny_llama.tokenizer.save_pretrained(str(tmp_path / "model"))
    (tmp_path / "texts.txt").write_text("\n".join(text for text in TEXTS if text))
    runner = CliRunner()
    listed = runner.invoke(app, ["metrics", "--list"])
    assert listed.exit_code == 0 and "toy_spread" in listed.output and "toy S" in listed.output
    result = runner.invoke(app, ["metrics", "--model", str(tmp_path / "model"), "--dataset", str(tmp_path / "texts.txt"),
                                 "--metrics", "toy_norm,toy_spread", "--no-cache", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "toy N" in result.output and "toy S" in result.output
