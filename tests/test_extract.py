"""The single-pass extraction engine (SPEC section 3, issue 2 points 4, 7, 8)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import layerscope as ls
from layerscope.errors import LayerscopeError
from layerscope.extract import engine, pool
from layerscope.models.tiny import tiny_model

TOL = 1e-5  # float32 states of O(1) after a few layers, in other batch shapes or paddings: a few ulps (1.2e-7)


def reference_token_states(model, text: str) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Hugging Face's own hidden states for one unpadded text, mapped to canonical layers 0..L-1.

    HF returns final_norm(block L) as its last entry (so layer L is compared separately), and Mamba
    has no embedding entry: its layer 0 comes from the embedding module.
    """
    ids = model.tokenizer([text], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        output = model.model(input_ids=ids, output_hidden_states=True)
    hidden = [h[0] for h in output.hidden_states]
    if model.adapter.family == "mamba":
        with torch.no_grad():
            hidden = [model.model.embeddings(ids)[0], *hidden]
    return hidden[: model.num_layers], output.last_hidden_state[0]


def token_states(model, texts, **kwargs) -> dict[int, torch.Tensor]:
    """Per-prompt token matrices (layers, T, D) as the token hook sees them, keyed by text index."""
    seen: dict[int, torch.Tensor] = {}

    def hook(states, lengths, indices):
        for b, index in enumerate(indices.tolist()):
            assert torch.all(states[:, b, lengths[b] :] == 0), "padding positions must be exact zeros"
            seen[index] = states[:, b, : lengths[b]].clone()

    ls.extract(model, texts, token_hook=hook, progress=False, **kwargs)
    return seen


def test_layer_count_and_shape(family_model, texts):
    result = ls.extract(family_model, texts, progress=False)
    assert result.pooled.shape == (family_model.num_layers + 1, len(texts), family_model.hidden_size)
    assert result.layers == list(range(family_model.num_layers + 1))
    assert result.pooled.dtype == np.float32
    assert result.record["model_id"] == family_model.model_id
    assert result.record["pooling"] == "mean" and result.record["final_norm"] == "none"


@pytest.mark.numeric
def test_layers_match_hugging_face_hidden_states(family_model, texts):
    """Layer 0 = embedding output, 1..L-1 = block outputs, L = raw last block (norm(L) = HF's last)."""
    seen = token_states(family_model, texts)
    norm = family_model.final_norm_module
    for index, text in enumerate(texts):
        reference, last_hidden = reference_token_states(family_model, text)
        ours = seen[index]
        assert ours.shape[0] == family_model.num_layers + 1
        for layer, expected in enumerate(reference):
            torch.testing.assert_close(ours[layer], expected, atol=TOL, rtol=TOL)
        normed_last = ours[-1] if norm is None else norm(ours[-1])
        torch.testing.assert_close(normed_last, last_hidden, atol=TOL, rtol=TOL)


@pytest.mark.numeric
def test_final_norm_all_gives_last_hidden_state_at_layer_l(texts):
    for family in ("llama", "gpt_neox", "mamba", "gemma3"):
        normed = tiny_model(family, final_norm="all")
        raw = tiny_model(family)
        seen = token_states(normed, texts[:2])
        seen_raw = token_states(raw, texts[:2])
        for index, text in enumerate(texts[:2]):
            _, last_hidden = reference_token_states(normed, text)
            torch.testing.assert_close(seen[index][-1], last_hidden, atol=TOL, rtol=TOL)
            # every layer gets the norm, not only the last
            expected_mid = normed.final_norm_module(seen_raw[index][1])
            torch.testing.assert_close(seen[index][1], expected_mid, atol=TOL, rtol=TOL)
        pooled = ls.extract(normed, texts[:2], progress=False)
        assert pooled.record["final_norm"] == "all"


@pytest.mark.numeric
@pytest.mark.parametrize("pooling", ["mean", "last", "first"])
@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_embedding_does_not_depend_on_batch_or_padding_side(family_model, texts, pooling, padding_side):
    tokenizer = family_model.tokenizer
    original = tokenizer.padding_side
    tokenizer.padding_side = padding_side
    try:
        together = ls.extract(family_model, texts, pooling=pooling, batch_size=len(texts), progress=False)
        alone = [ls.extract(family_model, [t], pooling=pooling, progress=False).pooled[:, 0] for t in texts]
    finally:
        tokenizer.padding_side = original
    np.testing.assert_allclose(together.pooled, np.stack(alone, axis=1), atol=TOL, rtol=TOL)


@pytest.mark.numeric
def test_pooled_equals_pooling_of_hugging_face_states(texts):
    model = tiny_model("gpt2")
    result = {p: ls.extract(model, texts, pooling=p, progress=False).pooled for p in ("mean", "last", "first")}
    for index, text in enumerate(texts):
        reference, _ = reference_token_states(model, text)
        layer1 = reference[1]  # (tokens, dim)
        np.testing.assert_allclose(result["mean"][1, index], layer1.mean(0).numpy(), atol=TOL)
        np.testing.assert_allclose(result["last"][1, index], layer1[-1].numpy(), atol=TOL)
        np.testing.assert_allclose(result["first"][1, index], layer1[0].numpy(), atol=TOL)


@pytest.mark.numeric
@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_pool_uses_the_mask_under_both_padding_sides(padding_side):
    lengths = torch.tensor([3, 5, 1])
    tokens = 5
    positions = torch.arange(tokens)
    if padding_side == "right":
        mask = (positions[None] < lengths[:, None]).long()
    else:
        mask = (positions[None] >= tokens - lengths[:, None]).long()
    # each token's features are its position and a constant, in 2 layers
    states = torch.stack([positions.float(), torch.ones(tokens)], dim=-1).expand(2, 3, tokens, 2).clone()
    states[1] *= 10
    real = [positions[mask[b].bool()].float() for b in range(3)]
    last = pool(states, mask, "last")
    first = pool(states, mask, "first")
    mean = pool(states, mask, "mean")
    for b in range(3):
        assert last[0, b, 0] == real[b][-1] and last[1, b, 0] == 10 * real[b][-1]
        assert first[0, b, 0] == real[b][0]
        assert torch.isclose(mean[0, b, 0], real[b].mean())
        assert mean[0, b, 1] == 1.0  # a mean of ones: exact in any order


@pytest.mark.numeric
def test_token_hook_sees_exactly_each_prompts_real_tokens(tiny_llama, texts):
    seen = token_states(tiny_llama, texts, batch_size=4)
    assert sorted(seen) == list(range(len(texts)))
    for index, text in enumerate(texts):
        n_tokens = len(tiny_llama.tokenizer(text)["input_ids"])
        assert seen[index].shape == (tiny_llama.num_layers + 1, n_tokens, tiny_llama.hidden_size)
        alone = token_states(tiny_llama, [text])[0]
        torch.testing.assert_close(seen[index], alone, atol=TOL, rtol=TOL)


def test_two_argument_token_hook_is_supported(tiny_llama, texts):
    calls = []
    ls.extract(tiny_llama, texts, token_hook=lambda states, lengths: calls.append(len(lengths)), progress=False)
    assert sum(calls) == len(texts)


def test_cache_returns_identical_arrays_without_running_the_model(tiny_llama, texts, tmp_path):
    calls = []
    handle = tiny_llama.model.register_forward_pre_hook(lambda *args: calls.append(1))
    try:
        first = ls.extract(tiny_llama, texts, cache_dir=str(tmp_path), progress=False)
        n_forward = len(calls)
        assert n_forward >= 1 and not first.from_cache
        second = ls.extract(tiny_llama, texts, cache_dir=str(tmp_path), progress=False)
        assert len(calls) == n_forward, "the cache must be read instead of the model"
        assert second.from_cache
        np.testing.assert_array_equal(first.pooled, second.pooled)  # the cache read back: exact
        # another pooling is another cache entry
        ls.extract(tiny_llama, texts, cache_dir=str(tmp_path), pooling="last", progress=False)
        assert len(calls) > n_forward
    finally:
        handle.remove()


@pytest.mark.numeric
def test_interrupted_run_resumes_from_the_cache(tiny_llama, texts, tmp_path, monkeypatch):
    full = ls.extract(tiny_llama, texts, batch_size=2, progress=False)
    original = engine._BatchRunner.__call__
    calls = {"n": 0}

    def interrupt_after_one_batch(self, input_ids, mask):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self, input_ids, mask)

    monkeypatch.setattr(engine._BatchRunner, "__call__", interrupt_after_one_batch)
    with pytest.raises(KeyboardInterrupt):
        ls.extract(tiny_llama, texts, batch_size=2, cache_dir=str(tmp_path), progress=False)
    calls["n"] = -100  # no more interruptions; count the batches the resumed run needs
    resumed = ls.extract(tiny_llama, texts, batch_size=2, cache_dir=str(tmp_path), progress=False)
    assert calls["n"] + 100 == 2, "only the two unfinished batches of three run again"
    np.testing.assert_allclose(resumed.pooled, full.pooled, atol=TOL)


def test_out_of_memory_halves_the_batch_and_goes_on(tiny_llama, texts, monkeypatch):
    full = ls.extract(tiny_llama, texts, batch_size=len(texts), progress=False)
    original = engine._BatchRunner.__call__
    sizes = []

    def fail_on_big_batches(self, input_ids, mask):
        sizes.append(len(input_ids))
        if len(input_ids) > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(self, input_ids, mask)

    monkeypatch.setattr(engine._BatchRunner, "__call__", fail_on_big_batches)
    result = ls.extract(tiny_llama, texts, batch_size=len(texts), progress=False)
    assert sizes[0] == len(texts) and max(sizes[1:]) <= 3 and min(sizes) <= 2
    np.testing.assert_allclose(result.pooled, full.pooled, atol=TOL)


def test_empty_strings_are_skipped_and_counted(tiny_llama, caplog):
    texts = ["first text", "", "   ", "second text"]
    with caplog.at_level("WARNING"):
        result = ls.extract(tiny_llama, texts, progress=False)
    assert result.pooled.shape[1] == 2
    assert result.record["n_skipped_empty"] == 2 and result.record["n_texts"] == 4
    assert result.kept.tolist() == [0, 3] and result.texts == ["first text", "second text"]
    assert "skipped 2 empty" in caplog.text


@pytest.mark.parametrize(
    ("texts", "message"),
    [([], "empty"), (["", " "], "all 2 texts are empty"), ("one string", "not one string")],
)
def test_bad_text_input_gives_one_line_errors(tiny_llama, texts, message):
    with pytest.raises(LayerscopeError, match=message):
        ls.extract(tiny_llama, texts, progress=False)


def test_bad_options_give_one_line_errors(tiny_llama, texts):
    with pytest.raises(LayerscopeError, match="did you mean 'mean'"):
        ls.extract(tiny_llama, texts, pooling="meen", progress=False)
    with pytest.raises(LayerscopeError, match="out of range"):
        ls.extract(tiny_llama, texts, layers=[7], progress=False)


def test_layer_selection_and_negative_indices(tiny_llama, texts):
    full = ls.extract(tiny_llama, texts, progress=False)
    some = ls.extract(tiny_llama, texts, layers=[0, -1], progress=False)
    assert some.layers == [0, tiny_llama.num_layers]
    # exact: the same batches through the same blocks, and each layer is pooled on its own
    np.testing.assert_array_equal(some.pooled, full.pooled[[0, -1]])
    np.testing.assert_array_equal(some.layer(tiny_llama.num_layers), full.pooled[-1])


def test_truncation_to_max_length(tiny_llama):
    long_text = " ".join(["word"] * 200)
    seen = token_states(tiny_llama, [long_text, "short one"], max_length=16)
    assert seen[0].shape[1] == 16


def test_nonfinite_hidden_states_are_reported_per_layer(tiny_llama, texts, caplog):
    block = tiny_llama.blocks[1]
    handle = block.register_forward_hook(lambda module, args, output: output * float("nan"))
    try:
        with caplog.at_level("WARNING"):
            result = ls.extract(tiny_llama, texts, progress=False)
    finally:
        handle.remove()
    assert result.record["nonfinite_layers"].get(2) == len(texts)
    assert 0 not in result.record["nonfinite_layers"] and 1 not in result.record["nonfinite_layers"]
    assert "non-finite" in caplog.text


@pytest.mark.slow
def test_real_bundled_models_give_every_layer(texts):
    smollm = ls.load_model("smollm2-135m")
    result = ls.extract(smollm, texts, progress=False)
    assert result.pooled.shape == (31, len(texts), 576)
    assert np.isfinite(result.pooled).all()
    minilm = ls.load_model("minilm-l6")
    result = ls.extract(minilm, texts, progress=False)
    assert result.pooled.shape == (7, len(texts), 384)
    # distinct texts give distinct embeddings at every layer
    assert (np.abs(result.pooled[:, 0] - result.pooled[:, 1]).max(axis=1) > 1e-3).all()


@pytest.mark.numeric
def test_extract_token_ids_equals_extract_on_the_same_tokens(tiny_llama, texts):
    from layerscope.extract import extract_token_ids

    ids = [tiny_llama.tokenizer(t)["input_ids"] for t in texts]
    by_text = ls.extract(tiny_llama, texts, progress=False)
    by_ids = extract_token_ids(tiny_llama, ids, progress=False)
    np.testing.assert_allclose(by_ids.pooled, by_text.pooled, atol=TOL)
    padded = torch.full((len(ids), max(map(len, ids))), 0)
    for row, sequence in enumerate(ids):
        padded[row, : len(sequence)] = torch.tensor(sequence)
    from_tensor = extract_token_ids(tiny_llama, padded, lengths=[len(s) for s in ids], progress=False)
    np.testing.assert_allclose(from_tensor.pooled, by_text.pooled, atol=TOL)
    with pytest.raises(LayerscopeError, match="empty"):
        extract_token_ids(tiny_llama, [[], []], progress=False)


@pytest.mark.numeric
def test_pooled_summary_against_the_pairwise_cosines():
    """``layerscope extract``'s table: mean norm and anisotropy = mean cosine over ordered pairs of different
    texts, against the n x n cosine matrix in float64 (the summary uses the sum of unit vectors instead)."""
    from layerscope.extract.pooling import pooled_summary

    rng = np.random.default_rng(0)
    pooled = rng.normal(size=(3, 7, 5)).astype(np.float32) + np.array([0.0, 1.0, 4.0])[:, None, None]  # (layers, n, d)
    rows = pooled_summary(pooled, num_layers=2)
    for layer, row in enumerate(rows):
        x = pooled[layer].astype(np.float64)
        unit = x / np.linalg.norm(x, axis=1, keepdims=True)
        cosines = unit @ unit.T
        off_diagonal = cosines[~np.eye(7, dtype=bool)]
        assert row["layer"] == layer and row["depth_pct"] == 50.0 * layer
        # float64 both ways, summed in another order: a few ulps of values of O(1)
        assert row["mean_norm"] == pytest.approx(np.linalg.norm(x, axis=1).mean(), rel=1e-12)
        assert row["anisotropy"] == pytest.approx(off_diagonal.mean(), rel=1e-10, abs=1e-12)
    assert rows[0]["anisotropy"] < 0.3 < 0.9 < rows[2]["anisotropy"]  # a shared offset makes the texts alike
