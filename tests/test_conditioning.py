"""Label-free conditioning of embeddings and outlier tokens (issue 13 points 3, 4 and 5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import layerscope as ls
from layerscope.config import ExtractConfig, ViewConfig
from layerscope.errors import LayerscopeError
from layerscope.extract.conditioning import fit_conditioner
from layerscope.models.tiny import tiny_model


def reference_map(fit: np.ndarray, spec: str) -> tuple[np.ndarray, np.ndarray]:
    """The affine map (A, c) of one layer, written from the definitions with NumPy in float64."""
    name, _, count = spec.partition(":")
    mean = fit.mean(0)
    centered = fit - mean
    if name == "standardize":
        std = centered.std(0)
        a = np.diag(np.where(std > 1e-10 * std.max(), 1 / np.where(std > 0, std, 1), 1.0))
    else:
        variances, vectors = np.linalg.eigh(centered.T @ centered / len(fit))
        variances, vectors = variances[::-1], vectors[:, ::-1]
        if name == "whiten":
            rank = min(int(count) if count else fit.shape[1], len(fit) - 1, fit.shape[1])
            a = vectors[:, :rank] / np.sqrt(np.maximum(variances[:rank], 1e-10 * variances[0]))
        else:
            top = vectors[:, : int(count) if count else 1]
            a = np.eye(fit.shape[1]) - top @ top.T
    return a, -mean @ a


@pytest.mark.numeric
@pytest.mark.parametrize("spec", ["standardize", "whiten", "whiten:3", "remove-top", "remove-top:2"])
def test_fitted_on_a_applied_to_b_equals_the_formula(spec):
    rng = np.random.default_rng(0)
    scales = np.logspace(2, -1, 6)
    fit = rng.normal(size=(2, 40, 6)) * scales + 3.0  # (layers, n, d), anisotropic, off-centre
    other = rng.normal(size=(2, 7, 6)) * scales
    conditioner = fit_conditioner(torch.from_numpy(fit), spec)
    out = conditioner.apply(torch.from_numpy(other)).numpy()
    for layer in range(2):
        a, c = reference_map(fit[layer], spec)
        expected = other[layer] @ a + c
        if spec.startswith("whiten"):  # eigenvectors are defined up to sign: compare inner products
            np.testing.assert_allclose(out[layer] @ out[layer].T, expected @ expected.T, rtol=1e-8, atol=1e-8)
        else:
            np.testing.assert_allclose(out[layer], expected, rtol=1e-9, atol=1e-9)
    # on the fitting texts: standardized -> unit variance; whitened -> identity covariance; remove-top ->
    # no variance left along the top principal direction
    fitted = conditioner.apply(torch.from_numpy(fit)).numpy()
    np.testing.assert_allclose(fitted.mean(1), 0, atol=1e-9)
    covariance = np.einsum("lni,lnj->lij", fitted, fitted) / fit.shape[1]
    if spec == "standardize":
        np.testing.assert_allclose(np.diagonal(covariance, axis1=1, axis2=2), 1, rtol=1e-9)
    elif spec.startswith("whiten"):
        np.testing.assert_allclose(covariance, np.broadcast_to(np.eye(conditioner.dim), covariance.shape), atol=1e-8)
    else:
        assert np.linalg.eigvalsh(covariance)[:, -1].max() < np.linalg.eigvalsh(
            np.einsum("lni,lnj->lij", fit - fit.mean(1, keepdims=True), fit - fit.mean(1, keepdims=True)) / 40
        )[:, -1].min()


@pytest.mark.numeric
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fitting_on_a_read_only_cache_neither_warns_nor_differs(dtype):
    """The embedding cache is memory-mapped read-only: fitting on it is silent and equals fitting on a copy."""
    import warnings

    cached = np.random.default_rng(1).normal(size=(2, 30, 5)).astype(dtype)
    cached.setflags(write=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns once per process about non-writable arrays
        conditioner = fit_conditioner(cached, "remove-top:1")
        applied = conditioner.apply(cached)  # applied to the read-only cache as well
    reference = fit_conditioner(torch.from_numpy(cached.astype(np.float64)), "remove-top:1")
    np.testing.assert_allclose(applied.numpy(), reference.apply(torch.from_numpy(cached.astype(np.float64))).numpy(),
                               rtol=1e-12, atol=1e-12)


def test_condition_specs_and_bad_input():
    assert fit_conditioner(np.zeros((1, 3, 2)), "none") is None
    for spec, message in [("whitening", "did you mean 'whiten'"), ("whiten:0", "positive integer"),
                          ("standardize:3", "positive integer")]:
        with pytest.raises(LayerscopeError, match=message):
            ExtractConfig(condition=spec)
    with pytest.raises(LayerscopeError, match="NaN"):
        fit_conditioner(np.full((1, 3, 2), np.nan), "whiten")
    with pytest.raises(LayerscopeError, match="factor > 1"):
        ExtractConfig(outlier_tokens=0.5)


@pytest.fixture(scope="module")
def planted():
    """A tiny model whose block 1 gives the first token a massive activation (x 1000), as attention
    sinks do in SmolLM2 from block 12 on."""
    model = tiny_model("llama", num_layers=3)

    def plant(module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        hidden[:, 0] = hidden[:, 0] * 1000.0
        return output

    model.blocks[1].register_forward_hook(plant)
    return model


TEXTS = ["The first token of every prompt carries a massive activation here.",
         "Attention sinks dominate the geometry of the middle layers.",
         "Dropping them from the pooling restores the other tokens' signal."]


@pytest.mark.numeric
def test_outlier_tokens_are_dropped_from_pooling_and_counted(planted):
    plain = ls.extract(planted, TEXTS, progress=False)
    dropped = ls.extract(planted, TEXTS, outlier_tokens=10.0, progress=False)
    assert dropped.record["outlier_tokens_dropped"] == {0: 0, 1: 0, 2: 3, 3: 3}  # one token per prompt from layer 2
    for index, text in enumerate(TEXTS):
        ids = planted.tokenizer([text], return_tensors="pt")
        with torch.no_grad():
            hidden = planted.model(**ids, output_hidden_states=True).hidden_states
        for layer in (0, 1):  # nothing dropped: the plain mean
            np.testing.assert_allclose(dropped.pooled[layer, index], hidden[layer][0].mean(0).numpy(), rtol=1e-5, atol=1e-6)
        # layer 2 (block 2's output, still raw in hidden_states): the mean of the other tokens
        np.testing.assert_allclose(dropped.pooled[2, index], hidden[2][0, 1:].mean(0).numpy(), rtol=1e-5, atol=1e-6)
        assert not np.allclose(plain.pooled[2, index], dropped.pooled[2, index])


@pytest.mark.numeric
def test_token_metrics_leave_the_outlier_tokens_out_too(planted):
    def numpy_entropy(z: np.ndarray) -> float:
        z = z - z.mean(0)
        z = z / np.linalg.norm(z, axis=1, keepdims=True)
        values = np.linalg.eigvalsh(z @ z.T)
        values = values[values > 1e-12 * values.max()]
        p = values / values.sum()
        return float(-(p * np.log(p)).sum())

    measured = ls.measure(planted, TEXTS, metrics="prompt_entropy,curvature",
                          extraction=ExtractConfig(outlier_tokens=10.0), progress=False)
    values = measured.prompt_values
    for index, text in enumerate(TEXTS):
        ids = planted.tokenizer([text], return_tensors="pt")
        with torch.no_grad():
            hidden = planted.model(**ids, output_hidden_states=True).hidden_states
        tokens = hidden[2][0, 1:].double().numpy()  # layer 2 without its outlier (the first token)
        at = (values["layer"] == 2) & (values["prompt_index"] == index)
        got = values[at & (values["metric"] == "prompt_entropy") & (values["normalization"] == "raw")]["value"].iloc[0]
        assert got == pytest.approx(numpy_entropy(tokens), abs=1e-6)
        steps = np.diff(tokens, axis=0)
        cos = (steps[1:] * steps[:-1]).sum(1) / np.linalg.norm(steps[1:], axis=1) / np.linalg.norm(steps[:-1], axis=1)
        curvature = values[at & (values["metric"] == "curvature")]["value"].iloc[0]
        assert curvature == pytest.approx(float(np.arccos(np.clip(cos, -1, 1)).mean()), abs=1e-6)
    # the normalization uses the tokens kept: logN = raw / log(T - 1) at layer 2
    raw = values.query("metric == 'prompt_entropy' and normalization == 'raw' and layer == 2")
    normalized = values.query("metric == 'prompt_entropy' and normalization == 'logN' and layer == 2")
    lengths = np.array([planted.tokenizer([text], return_tensors="pt")["input_ids"].shape[1] - 1 for text in TEXTS])
    np.testing.assert_allclose(normalized["value"].to_numpy(), raw["value"].to_numpy() / np.log(lengths), rtol=1e-9)


@pytest.mark.numeric
def test_metrics_on_conditioned_embeddings_equal_the_metrics_of_the_transformed_vectors(tiny_llama):
    from layerscope.metrics import functional as F

    texts = [f"sentence {i} about layers and {'entropy ' * (i % 4)}metrics" for i in range(12)]
    measured = ls.measure(tiny_llama, texts, metrics="dataset_entropy,dime", views=ViewConfig(n_views=2),
                          extraction=ExtractConfig(condition="whiten:8"), progress=False)
    assert measured.conditioner is not None and measured.conditioner.dim == 8
    assert measured.record["conditioning"] == {"condition": "whiten:8", "n_fit": 12, "dim": 8, "normalize": False}
    conditioned = measured.conditioner.apply(measured.extraction.pooled)
    expected = F.dataset_entropy(conditioned)
    got = measured.metrics.query("metric == 'dataset_entropy' and normalization == 'maxEntropy'").sort_values("layer")
    np.testing.assert_allclose(got["value"].to_numpy(), expected.numpy(), rtol=1e-9)
    np.testing.assert_allclose(measured.embeddings.pooled, conditioned.numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.numeric
def test_normalize_comes_last_and_reaches_the_embeddings_the_evaluation_sees(tiny_llama):
    texts = [f"text {i} on {'normalization ' * (i % 3)}of embeddings" for i in range(8)]
    plain = ls.measure(tiny_llama, texts, metrics="dataset_entropy,rankme", progress=False)
    normed = ls.measure(tiny_llama, texts, metrics="dataset_entropy,rankme", progress=False,
                        extraction=ExtractConfig(normalize=True))
    pooled = plain.extraction.pooled.astype(np.float64)
    unit = pooled / np.linalg.norm(pooled, axis=-1, keepdims=True)
    np.testing.assert_allclose(normed.embeddings.pooled, unit, rtol=1e-6)
    # the metrics are those of the unit rows (RankMe reads the rows as they are)
    from layerscope.metrics import functional as F

    got = normed.metrics.query("metric == 'rankme'").sort_values("layer")["value"].to_numpy()
    np.testing.assert_allclose(got, F.effective_rank(torch.from_numpy(unit), normalize_rows=False).numpy(), rtol=1e-6)
    assert not np.allclose(got, plain.metrics.query("metric == 'rankme'").sort_values("layer")["value"], rtol=1e-3)
