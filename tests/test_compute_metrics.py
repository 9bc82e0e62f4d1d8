"""compute_metrics: metrics wired into the single-pass extraction (issue 3 point 4)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import layerscope as ls
from layerscope.config import ViewConfig
from layerscope.errors import LayerscopeError
from layerscope.extract import engine

TEXTS = [
    "Intermediate layers often make better embeddings than the last layer.",
    "The quick brown fox jumps over the lazy dog.",
    "",
    "x",
    "Matrix entropy of the token Gram matrix measures compression.",
    "Curvature measures how straight the token trajectory is.",
]


def numpy_entropy(Z: np.ndarray) -> float:
    """Shannon matrix entropy of normalize(Z), straight from SPEC section 4, float64."""
    Z = Z - Z.mean(0, keepdims=True)
    Z = Z / np.linalg.norm(Z, axis=1, keepdims=True)
    eigenvalues = np.linalg.eigvalsh(Z @ Z.T)
    eigenvalues = eigenvalues[eigenvalues > 1e-12 * eigenvalues.max()]
    p = eigenvalues / eigenvalues.sum()
    return float(-(p * np.log(p)).sum())


@pytest.fixture(scope="module")
def table(tiny_llama):
    return ls.compute_metrics(tiny_llama, TEXTS, n_views=4, progress=False)


@pytest.fixture(scope="module")
def measured(tiny_llama):
    return ls.measure(tiny_llama, TEXTS, views=ViewConfig(n_views=4), progress=False)


def test_compute_metrics_is_the_measurement_table_and_a_plain_frame(table, measured):
    # exact (check_exact): compute_metrics calls measure with these very settings, in this process
    pd.testing.assert_frame_equal(table, measured.metrics[table.columns], check_exact=True)
    assert set(measured.metrics["dataset"]) == {"texts"}
    assert table.attrs == {}
    # two results concatenate and merge like any frames (attrs holding frames once broke both)
    both = pd.concat([table, table], ignore_index=True)
    assert len(both) == 2 * len(table)
    merged = table.merge(table, on=["layer", "metric", "normalization"], suffixes=("", "_again"))
    np.testing.assert_array_equal(merged["value"].to_numpy(), merged["value_again"].to_numpy())  # one table: exact


def value(frame, metric, normalization, layer):
    row = frame[(frame.metric == metric) & (frame.normalization == normalization) & (frame.layer == layer)]
    assert len(row) == 1
    return float(row.value.iloc[0])


def test_long_table_shape_and_counts(table, tiny_llama):
    assert list(table.columns) == ["layer", "depth_pct", "metric", "normalization", "value", "n_used", "n_skipped"]
    assert set(table.metric) == set(ls.metrics.registry.names())
    assert set(table.layer) == set(range(tiny_llama.num_layers + 1))
    assert np.isfinite(table.value).all()
    np.testing.assert_allclose(table.depth_pct, 100 * table.layer / tiny_llama.num_layers)
    entropy = table[table.metric == "prompt_entropy"]
    assert (entropy.n_used == 4).all() and (entropy.n_skipped == 2).all()  # "" skipped, "x" has 1 token
    dataset = table[table.metric == "dataset_entropy"]
    assert (dataset.n_used == 5).all() and (dataset.n_skipped == 1).all()


@pytest.mark.numeric
def test_prompt_entropy_from_the_hook_equals_the_formula_on_each_prompts_tokens(measured, tiny_llama):
    per_prompt = measured.prompt_values
    for index in (0, 1, 4, 5):
        ids = tiny_llama.tokenizer([TEXTS[index]], return_tensors="pt")["input_ids"]
        with torch.no_grad():
            hidden = tiny_llama.model(input_ids=ids, output_hidden_states=True).hidden_states
        for layer in range(tiny_llama.num_layers):  # HF's last entry is final-normed; layer L checked below
            expected = numpy_entropy(hidden[layer][0].double().numpy())
            got = per_prompt[(per_prompt.layer == layer) & (per_prompt.prompt_index == index)
                             & (per_prompt.normalization == "raw")].value
            assert got.iloc[0] == pytest.approx(expected, abs=1e-6)
    assert set(per_prompt.prompt_index) == {0, 1, 4, 5}


@pytest.mark.numeric
def test_dataset_entropy_equals_the_formula_on_pooled_embeddings(table, tiny_llama):
    pooled = ls.extract(tiny_llama, TEXTS, progress=False).pooled.astype(np.float64)
    for layer in range(tiny_llama.num_layers + 1):
        expected = numpy_entropy(pooled[layer])
        assert value(table, "dataset_entropy", "raw", layer) == pytest.approx(expected, abs=1e-6)
        assert value(table, "dataset_entropy", "maxEntropy", layer) == pytest.approx(expected / np.log(5), abs=1e-6)


@pytest.mark.numeric
def test_two_view_metrics_use_the_first_two_of_the_lidar_views(tiny_llama, table):
    only_pairs = ls.compute_metrics(tiny_llama, TEXTS, metrics=["dime", "infonce"], progress=False)
    for metric in ("dime", "infonce"):
        a = only_pairs[only_pairs.metric == metric].value.to_numpy()
        b = table[table.metric == metric].value.to_numpy()
        np.testing.assert_allclose(a, b, atol=1e-10)


def test_one_extraction_for_texts_and_one_for_all_views(tiny_llama, monkeypatch):
    calls = []
    original = engine.extract

    def counting(model, texts, **kwargs):
        calls.append(len(texts))
        return original(model, texts, **kwargs)

    monkeypatch.setattr("layerscope.metrics.compute.extract", counting)
    monkeypatch.setattr("layerscope.metrics.views.extract", counting)
    measured = ls.measure(tiny_llama, TEXTS, metrics="all", views=ViewConfig(n_views=4), progress=False)
    assert calls == [len(TEXTS), 4 * 5]  # texts (with the token hook), then 4 views of the 5 kept texts
    assert measured.record["n_forward_texts"] == 5 + 20


def test_seeded_and_deterministic(tiny_llama, table):
    again = ls.compute_metrics(tiny_llama, TEXTS, n_views=4, progress=False)
    np.testing.assert_array_equal(again.value.to_numpy(), table.value.to_numpy())  # a rerun in this process: exact
    other = ls.compute_metrics(tiny_llama, TEXTS, metrics="dime", n_views=4, seed=1, progress=False)
    assert not np.allclose(other.value.to_numpy(), table[table.metric == "dime"].value.to_numpy())


def test_bad_metric_names_and_options(tiny_llama):
    with pytest.raises(LayerscopeError, match="did you mean 'dime'"):
        ls.compute_metrics(tiny_llama, TEXTS, metrics="dimee", progress=False)
    with pytest.raises(LayerscopeError, match="unknown option"):
        ls.compute_metrics(tiny_llama, TEXTS, metrics="dime", options={"dime": {"perms": 3}}, progress=False)
    with pytest.raises(LayerscopeError, match="n_views"):
        ls.compute_metrics(tiny_llama, TEXTS, metrics="lidar", n_views=1, progress=False)


def test_run_seed_reaches_dime_permutations_unless_overridden(tiny_llama):
    base = ls.compute_metrics(tiny_llama, TEXTS, metrics="dime", progress=False, seed=0)
    pinned = ls.compute_metrics(tiny_llama, TEXTS, metrics="dime", progress=False, seed=0,
                                options={"dime": {"seed": 0}})
    moved = ls.compute_metrics(tiny_llama, TEXTS, metrics="dime", progress=False, seed=0,
                               options={"dime": {"seed": 7}})
    np.testing.assert_array_equal(base.value.to_numpy(), pinned.value.to_numpy())  # one computation: exact
    assert not np.allclose(base.value.to_numpy(), moved.value.to_numpy())  # same views, other permutations
    # the size-free form reaches F.dime: one block of every text is the same computation, two blocks another value
    whole = ls.compute_metrics(tiny_llama, TEXTS, metrics="dime", progress=False, seed=0,
                               options={"dime": {"block_size": len(TEXTS)}})
    halves = ls.compute_metrics(tiny_llama, TEXTS, metrics="dime", progress=False, seed=0,
                                options={"dime": {"block_size": 2}})  # 5 texts: blocks of 3 and 2
    np.testing.assert_array_equal(base.value.to_numpy(), whole.value.to_numpy())
    assert not np.allclose(base.value.to_numpy(), halves.value.to_numpy())
