"""The metric registry, and one conformance test run over every registered metric (STYLE.md)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from layerscope import metrics
from layerscope.errors import LayerscopeError
from layerscope.metrics import functional as F

LAYERS, N_PROMPTS, DIM = 3, 12, 6


def make_inputs(spec: metrics.MetricSpec, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Inputs of the kind ``spec`` declares, stacked over LAYERS layers."""
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    if spec.level == "token":
        lengths = torch.tensor([7, 4, 3, 6, 5])
        tokens = randn(LAYERS, 5, 7, DIM).cumsum(dim=2) + 2.0  # token trajectories with a mean offset
        tokens = tokens * (torch.arange(7) < lengths[:, None]).unsqueeze(-1)  # zero padding
        return tokens, lengths
    pooled = randn(LAYERS, N_PROMPTS, DIM) * torch.logspace(0, -1, DIM, dtype=torch.float64) + 1.0
    if spec.n_views == 0:
        return (pooled,)
    if spec.n_views == 2:
        return pooled + 0.3 * randn(LAYERS, N_PROMPTS, DIM), pooled + 0.3 * randn(LAYERS, N_PROMPTS, DIM)
    return (pooled.unsqueeze(2) + 0.3 * randn(LAYERS, N_PROMPTS, spec.n_views, DIM),)


def permute_prompts(spec: metrics.MetricSpec, inputs: tuple[torch.Tensor, ...], perm: torch.Tensor):
    if spec.level == "token":
        tokens, lengths = inputs
        return tokens[:, perm], lengths[perm]
    return tuple(x[:, perm] for x in inputs)


SPECS = metrics.available()
IDS = [spec.name for spec in SPECS]


@pytest.mark.numeric
@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_conformance(spec):
    inputs = make_inputs(spec)
    pristine = [x.clone() for x in inputs]
    out = spec.compute(*inputs)
    assert all(torch.equal(x, y) for x, y in zip(inputs, pristine, strict=True))  # inputs left untouched: same bits

    # shapes, dtype, labels, finiteness
    assert list(out) == list(spec.normalizations)
    for value in out.values():
        assert value.dtype == torch.float64 and value.shape == (LAYERS,)
        assert torch.isfinite(value).all()

    # deterministic: the same call twice gives the same numbers (exact: the same computation in one process)
    again = spec.compute(*inputs)
    assert all(torch.equal(out[k], again[k]) for k in out)

    # stacked layers == per-layer loop (and a 2-D input gives a scalar)
    for layer in range(LAYERS):
        single = spec.compute(*(x[layer] if x.ndim > 1 else x for x in inputs))
        for key, value in single.items():
            assert value.shape == ()
            torch.testing.assert_close(value, out[key][layer], rtol=1e-9, atol=1e-12)

    # invariant to an orthogonal rotation of the features
    q, _ = torch.linalg.qr(torch.randn(DIM, DIM, generator=torch.Generator().manual_seed(7), dtype=torch.float64))
    rotated = spec.compute(*(x @ q if x.is_floating_point() else x for x in inputs))
    for key in out:
        torch.testing.assert_close(rotated[key], out[key], rtol=1e-8, atol=1e-10)

    # invariant to the order of the prompts (random metrics: only in expectation, not checked)
    if not spec.random:
        perm = torch.randperm(inputs[0].shape[1], generator=torch.Generator().manual_seed(3))
        permuted = spec.compute(*permute_prompts(spec, inputs, perm))
        for key in out:
            torch.testing.assert_close(permuted[key], out[key], rtol=1e-9, atol=1e-12)
    else:
        assert "seed" in spec.defaults
        other = spec.compute(*inputs, seed=spec.defaults["seed"] + 1)
        assert not torch.equal(other[spec.normalizations[0]], out[spec.normalizations[0]])

    # bad input: NaN raises a clear error; unknown options too
    broken = tuple(x.clone() for x in inputs)
    broken[0].view(-1)[5] = math.nan
    with pytest.raises(LayerscopeError, match="NaN or inf"):
        spec.compute(*broken)
    with pytest.raises(LayerscopeError, match="unknown option"):
        spec.compute(*inputs, not_an_option=1)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_spec_metadata(spec):
    assert spec.level in ("token", "dataset")
    assert spec.n_views in (0, 2, 16)
    assert (spec.level == "token") <= (spec.n_views == 0)
    assert isinstance(spec.higher_is_better, bool) and isinstance(spec.random, bool)
    assert spec.function.__module__ == F.__name__ and spec.description
    assert spec.normalizations and all(isinstance(label, str) for label in spec.normalizations)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        spec.defaults["alpha"] = 3  # type: ignore[index]


def test_required_metrics_and_directions():
    names = metrics.names()
    for name in ("prompt_entropy", "dataset_entropy", "effective_rank", "entropy_rank", "curvature", "infonce", "lidar", "dime"):
        assert name in names
    # SPEC section 4: these four are selected by their minimum.
    for name in ("prompt_entropy", "dataset_entropy", "dime", "infonce"):
        assert metrics.get(name).higher_is_better is False
    assert metrics.get("dime").random and not metrics.get("infonce").random
    assert metrics.get("lidar").n_views == 16 and metrics.get("dime").n_views == 2
    assert metrics.get("curvature").level == "token" and metrics.get("dime").level == "dataset"
    assert metrics.get("dime").normalizations[0] == "maxEntropy"  # the paper's Table 2 selection
    assert metrics.get("infonce").normalizations[0] == "raw"


def test_unknown_names_suggest_the_nearest():
    with pytest.raises(LayerscopeError, match="did you mean 'dime'"):
        metrics.get("dimee")
    with pytest.raises(LayerscopeError, match="did you mean 'prompt_entropy'"):
        metrics.resolve(["prompt_entropi"])
    assert metrics.get("Prompt-Entropy").name == "prompt_entropy"


def test_resolve():
    assert [s.name for s in metrics.resolve("all")] == metrics.names()
    assert [s.name for s in metrics.resolve("dime, infonce,dime")] == ["dime", "infonce"]
    assert [s.name for s in metrics.resolve(["lidar"])] == ["lidar"]
    with pytest.raises(LayerscopeError, match="no metric"):
        metrics.resolve("")


@pytest.mark.numeric
def test_options_reach_the_function():
    spec = metrics.get("infonce")
    za, zb = make_inputs(spec)
    torch.testing.assert_close(spec.compute(za, zb, tau=0.5)["raw"], F.infonce(za, zb, 0.5).loss)
    spec = metrics.get("prompt_entropy")
    tokens, lengths = make_inputs(spec)
    out = spec.compute(tokens, lengths, alpha=2.0, normalizations=("logN",))
    assert list(out) == ["logN"]
    torch.testing.assert_close(out["logN"], F.prompt_entropy(tokens, lengths, 2.0, "logN").mean)
    lidar = metrics.get("lidar").compute(*make_inputs(metrics.get("lidar")))
    torch.testing.assert_close(lidar["exp"], torch.exp(lidar["raw"]))
