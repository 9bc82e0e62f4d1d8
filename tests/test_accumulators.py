"""Streaming token-level accumulators: padded batches give the values of each prompt computed alone."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from layerscope.errors import LayerscopeError
from layerscope.metrics import functional as F
from layerscope.metrics.accumulators import (
    CurvatureAccumulator,
    PrefixEntropyAccumulator,
    PromptEntropyAccumulator,
    TokenMetrics,
)

LAYERS, DIM = 3, 10


def make_prompts(lengths: list[int], seed: int = 0) -> list[torch.Tensor]:
    """One (layers, T_i, D) float32 token matrix per prompt, with a large common offset like LLM states."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(LAYERS, t, DIM, generator=generator).cumsum(dim=1) + 20.0 for t in lengths]


def engine_batch(prompts: list[torch.Tensor], dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """What the extraction engine passes: right-padded (layers, B, T, D) with exact zeros, and lengths."""
    t_max = max(p.shape[1] for p in prompts)
    states = torch.zeros(LAYERS, len(prompts), t_max, DIM, dtype=dtype)
    for b, p in enumerate(prompts):
        states[:, b, : p.shape[1]] = p.to(dtype)
    return states, torch.tensor([p.shape[1] for p in prompts], dtype=torch.long)


def alone(function, prompt: torch.Tensor, **options) -> torch.Tensor:
    """(layers,) value of one prompt computed on its own, unpadded."""
    return function(prompt.unsqueeze(1), **options).per_prompt[:, 0]


LENGTHS = [5, 12, 1, 8, 2, 3, 30, 9]
SKIPPED_ENTROPY = {2}  # one token
SKIPPED_CURVATURE = {2, 4}  # fewer than three tokens


def feed(hook, prompts, order=(range(0, 3), range(3, 8)), dtype=torch.float32):
    """Feed the prompts in batches (each batch sorted by length, as the engine does)."""
    for batch in order:
        batch = sorted(batch, key=lambda i: LENGTHS[i])
        states, lengths = engine_batch([prompts[i] for i in batch], dtype)
        hook(states, lengths, torch.tensor(batch))


@pytest.mark.numeric
def test_prompt_entropy_batches_equal_each_prompt_alone():
    prompts = make_prompts(LENGTHS)
    accumulator = PromptEntropyAccumulator(n_texts=10)
    feed(accumulator, prompts)
    result = accumulator.compute()
    assert set(result.mean) == set(F.NORMALIZATIONS)
    for normalization in F.NORMALIZATIONS:
        per_prompt = result.per_prompt[normalization]
        assert per_prompt.shape == (LAYERS, 10)
        for i, prompt in enumerate(prompts):
            if i in SKIPPED_ENTROPY:
                assert np.isnan(per_prompt[:, i]).all()
                continue
            expected = alone(F.prompt_entropy, prompt, normalization=normalization)
            np.testing.assert_allclose(per_prompt[:, i], expected.numpy(), rtol=1e-9, atol=1e-12)
        assert np.isnan(per_prompt[:, 8:]).all()  # never seen
        np.testing.assert_allclose(result.mean[normalization], np.nanmean(per_prompt, axis=1), rtol=1e-12)
    assert result.n_used.tolist() == [7] * LAYERS  # unseen prompts 8, 9 count neither way
    assert result.n_skipped.tolist() == [1] * LAYERS
    assert result.n_nonfinite.tolist() == [0] * LAYERS


@pytest.mark.numeric
def test_centering_uses_only_real_tokens():
    # A padded prompt must not be centered with the zero rows: compare with a naive padded computation.
    prompts = make_prompts([4, 9])
    accumulator = PromptEntropyAccumulator(2, normalizations=("raw",))
    states, lengths = engine_batch(prompts)
    accumulator(states, lengths, torch.tensor([0, 1]))
    got = accumulator.compute().per_prompt["raw"][:, 0]
    naive = F.matrix_entropy(states[:, 0], normalization="raw")  # 9 rows incl. 5 zero rows
    np.testing.assert_allclose(got, alone(F.prompt_entropy, prompts[0], normalization="raw").numpy(), rtol=1e-9)
    assert not np.allclose(got, naive.numpy(), rtol=1e-3)


@pytest.mark.numeric
def test_curvature_batches_equal_each_prompt_alone():
    prompts = make_prompts(LENGTHS, seed=1)
    accumulator = CurvatureAccumulator(n_texts=8)
    feed(accumulator, prompts)
    result = accumulator.compute()
    for i, prompt in enumerate(prompts):
        if i in SKIPPED_CURVATURE:
            assert np.isnan(result.per_prompt["raw"][:, i]).all()
        else:
            np.testing.assert_allclose(result.per_prompt["raw"][:, i], alone(F.curvature, prompt).numpy(), rtol=1e-9)
    assert result.n_used.tolist() == [6] * LAYERS and result.n_skipped.tolist() == [2] * LAYERS


@pytest.mark.numeric
def test_abs_cos_option_reaches_the_computation():
    prompts = make_prompts([6, 7], seed=2)
    states, lengths = engine_batch(prompts)
    plain, folded = CurvatureAccumulator(2), CurvatureAccumulator(2, abs_cos=True)
    for accumulator in (plain, folded):
        accumulator(states, lengths, torch.tensor([0, 1]))
    np.testing.assert_allclose(
        folded.compute().per_prompt["raw"][:, 1], alone(F.curvature, prompts[1], abs_cos=True).numpy(), rtol=1e-9
    )
    assert (folded.compute().mean["raw"] <= plain.compute().mean["raw"]).all()


@pytest.mark.numeric
def test_composite_equals_separate_accumulators_and_chunking_changes_nothing():
    prompts = make_prompts(LENGTHS, seed=3)
    separate = [PromptEntropyAccumulator(8), CurvatureAccumulator(8)]
    for accumulator in separate:
        feed(accumulator, prompts)
    composite = TokenMetrics([PromptEntropyAccumulator(8), CurvatureAccumulator(8)], max_chunk_bytes=1)  # layer by layer
    feed(composite, prompts)
    results = composite.compute()
    assert set(results) == {"prompt_entropy", "curvature"}
    for accumulator in separate:
        expected = accumulator.compute()
        got = results[accumulator.metric]
        for key in expected.per_prompt:
            np.testing.assert_allclose(got.per_prompt[key], expected.per_prompt[key], rtol=1e-12)
        assert (got.n_used == expected.n_used).all()


@pytest.mark.numeric
def test_batch_composition_does_not_matter():
    prompts = make_prompts(LENGTHS, seed=4)
    one_batch, singles = PromptEntropyAccumulator(8), PromptEntropyAccumulator(8)
    feed(one_batch, prompts, order=(range(8),))
    feed(singles, prompts, order=[[i] for i in range(8)])
    np.testing.assert_allclose(
        one_batch.compute().per_prompt["maxEntropy"], singles.compute().per_prompt["maxEntropy"], rtol=1e-9
    )


@pytest.mark.numeric
def test_low_precision_states_are_accumulated_in_float64():
    prompts = make_prompts([6, 9], seed=5)
    accumulator = PromptEntropyAccumulator(2, normalizations=("raw",))
    states, lengths = engine_batch(prompts, torch.bfloat16)
    accumulator(states, lengths, torch.tensor([0, 1]))
    expected = alone(F.prompt_entropy, prompts[1].to(torch.bfloat16), normalization="raw")
    np.testing.assert_allclose(accumulator.compute().per_prompt["raw"][:, 1], expected.numpy(), rtol=1e-9)


@pytest.mark.numeric
def test_nonfinite_states_skip_only_that_layer_and_prompt():
    prompts = make_prompts([6, 7, 5], seed=6)
    states, lengths = engine_batch(prompts)
    states[1, 2, 3, 4] = math.inf  # layer 1 of prompt 2
    states[2, 0, 0, 0] = math.nan  # layer 2 of prompt 0
    hook = TokenMetrics([PromptEntropyAccumulator(3), CurvatureAccumulator(3)])
    hook(states, lengths, torch.tensor([0, 1, 2]))
    for name, result in hook.compute().items():
        values = next(iter(result.per_prompt.values()))
        assert np.isnan(values[1, 2]) and np.isnan(values[2, 0]), name
        assert not np.isnan(values[0]).any() and not np.isnan(values[1, :2]).any()
        assert result.n_nonfinite.tolist() == [0, 1, 1] and result.n_skipped.tolist() == [0, 1, 1]
        assert result.n_used.tolist() == [3, 2, 2] and np.isfinite(result.mean["raw" if name == "curvature" else "maxEntropy"]).all()
    # the other prompts are unaffected by the zeroed entries
    np.testing.assert_allclose(
        hook.compute()["prompt_entropy"].per_prompt["raw"][:, 1], alone(F.prompt_entropy, prompts[1], normalization="raw").numpy(), rtol=1e-9
    )


@pytest.mark.numeric
def test_prefix_entropy_equals_entropy_of_the_first_tokens():
    prompts = make_prompts(LENGTHS, seed=7)
    accumulator = PrefixEntropyAccumulator(8, prefix_lengths=(2, 4, 9, 40), normalizations=("raw", "maxEntropy"))
    feed(accumulator, prompts)
    result = accumulator.compute()
    assert result.per_prompt["raw"].shape == (4, LAYERS, 8) and result.mean["raw"].shape == (4, LAYERS)
    for p_index, t in enumerate(result.prefix_lengths):
        for i, prompt in enumerate(prompts):
            got = result.per_prompt["maxEntropy"][p_index, :, i]
            if prompt.shape[1] < t:
                assert np.isnan(got).all()
            else:
                expected = alone(F.prompt_entropy, prompt[:, :t], normalization="maxEntropy")
                np.testing.assert_allclose(got, expected.numpy(), rtol=1e-9, atol=1e-12)
    n_long_enough = [sum(length >= t for length in LENGTHS) for t in (2, 4, 9, 40)]
    assert result.n_used[:, 0].tolist() == n_long_enough
    assert (result.n_used + result.n_skipped == 8).all()
    rows = result.records()
    assert len(rows) == 2 * 4 * LAYERS and {"prefix_length", "layer", "value"} <= set(rows[0])


def test_records_and_counts_are_long_format_rows():
    prompts = make_prompts([4, 6], seed=8)
    accumulator = PromptEntropyAccumulator(2, normalizations=("raw", "maxEntropy"))
    states, lengths = engine_batch(prompts)
    accumulator(states, lengths, torch.tensor([1, 0]))
    rows = accumulator.compute().records()
    assert len(rows) == 2 * LAYERS
    assert rows[0] == {
        "layer": 0,
        "metric": "prompt_entropy",
        "normalization": "raw",
        "value": pytest.approx(accumulator.compute().mean["raw"][0]),
        "n_used": 2,
        "n_skipped": 0,
    }


@pytest.mark.numeric
def test_seeing_a_prompt_again_overwrites_it():
    prompts = make_prompts([5, 6], seed=9)
    accumulator = CurvatureAccumulator(1)
    for prompt in prompts:
        states, lengths = engine_batch([prompt])
        accumulator(states, lengths, torch.tensor([0]))
    result = accumulator.compute()
    np.testing.assert_allclose(result.per_prompt["raw"][:, 0], alone(F.curvature, prompts[1]).numpy(), rtol=1e-9)
    assert result.n_used.tolist() == [1] * LAYERS


def test_bad_batches_and_options_raise():
    accumulator = PromptEntropyAccumulator(2)
    with pytest.raises(LayerscopeError, match="no batch"):
        accumulator.compute()
    states, lengths = engine_batch(make_prompts([3, 4]))
    with pytest.raises(LayerscopeError, match="out of range"):
        accumulator(states, lengths, torch.tensor([0, 2]))
    with pytest.raises(LayerscopeError, match=r"\(layers, batch, tokens, features\)"):
        accumulator(states[0], lengths, torch.tensor([0, 1]))
    with pytest.raises(LayerscopeError, match="lengths"):
        accumulator(states, torch.tensor([3, 9]), torch.tensor([0, 1]))
    accumulator(states, lengths, torch.tensor([0, 1]))
    with pytest.raises(LayerscopeError, match="layers"):
        accumulator(states[:2], lengths, torch.tensor([0, 1]))
    with pytest.raises(LayerscopeError, match="did you mean 'logN'"):
        PromptEntropyAccumulator(2, normalizations=("logn",))
    with pytest.raises(LayerscopeError, match="prefix lengths"):
        PrefixEntropyAccumulator(2, prefix_lengths=(1, 4))
    from layerscope.metrics import get

    with pytest.raises(LayerscopeError, match="did you mean 'curvature'"):
        get("curvatur").make_accumulator(3)
    built = get("curvature").make_accumulator(3, abs_cos=True)
    assert isinstance(built, CurvatureAccumulator) and built.abs_cos is True
    with pytest.raises(LayerscopeError, match="not a token metric"):
        get("dime").make_accumulator(3)


def test_states_are_not_modified():
    prompts = make_prompts([4, 7], seed=10)
    states, lengths = engine_batch(prompts, torch.float64)
    pristine = states.clone()
    TokenMetrics([PromptEntropyAccumulator(2), CurvatureAccumulator(2), PrefixEntropyAccumulator(2, (3,))])(
        states, lengths, torch.tensor([0, 1])
    )
    assert torch.equal(states, pristine)  # untouched: the very same bits, not a recomputation


def _token_results(max_chunk_bytes, prompts, clamp_gram=False, device="cpu"):
    hook = TokenMetrics(
        [PromptEntropyAccumulator(8, clamp_gram=clamp_gram), CurvatureAccumulator(8),
         PrefixEntropyAccumulator(8, (2, 5, 9), clamp_gram=clamp_gram)],
        max_chunk_bytes=max_chunk_bytes,
    )
    for batch in (range(0, 3), range(3, 8)):
        batch = sorted(batch, key=lambda i: LENGTHS[i])
        states, lengths = engine_batch([prompts[i] for i in batch])
        hook(states.to(device), lengths.to(device), torch.tensor(batch))
    return hook.compute()


@pytest.mark.numeric
@pytest.mark.parametrize("clamp_gram", [False, True])
def test_values_do_not_depend_on_the_block_size(clamp_gram):
    prompts = make_prompts(LENGTHS, seed=11)  # lengths 1 to 30 around DIM = 10: both Gram sides
    reference = _token_results(None, prompts, clamp_gram)  # the default: cache-sized on the CPU
    for max_chunk_bytes in (1, 3_000, 40_000, 2**30):  # layer by layer and prompt by prompt, ..., all at once
        results = _token_results(max_chunk_bytes, prompts, clamp_gram)
        for name, expected in reference.items():
            for key, values in expected.per_prompt.items():
                # Blocks of other sizes batch other shapes into BLAS/LAPACK, whose kernels and reduction
                # orders depend on the CPU and thread count: values of order 1 differ by a few ulps (3 of
                # 72 by 4.4e-16 on an AMD EPYC, issue 21); one token too few in a block moves them by >= 2.5e-4.
                np.testing.assert_allclose(results[name].per_prompt[key], values, rtol=1e-12, atol=1e-14,
                                           err_msg=f"{name} {key} at {max_chunk_bytes} bytes")
            np.testing.assert_array_equal(results[name].n_used, expected.n_used)  # counts: exact


def test_default_block_size_is_cache_sized_on_the_cpu():
    from layerscope.metrics import accumulators

    assert TokenMetrics([]).max_chunk_bytes is None
    assert accumulators._chunk_bytes(torch.device("cpu")) == accumulators.DEFAULT_CHUNK_BYTES


@pytest.mark.numeric
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_blocks_on_a_gpu_are_sized_from_its_memory_and_give_the_cpu_values():
    from layerscope.metrics import accumulators

    assert accumulators._chunk_bytes(torch.device("cuda")) > accumulators.DEFAULT_CHUNK_BYTES
    prompts = make_prompts(LENGTHS, seed=12)
    on_cpu = _token_results(None, prompts)
    on_gpu = _token_results(None, prompts, device="cuda")
    for name, expected in on_cpu.items():
        for key, values in expected.per_prompt.items():
            np.testing.assert_allclose(on_gpu[name].per_prompt[key], values, rtol=1e-10, atol=1e-10)
