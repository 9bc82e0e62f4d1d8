"""Model loading, bundled aliases and architecture adapters (SPEC section 3, issue 2 points 2-3)."""

from __future__ import annotations

import pytest
import torch

import layerscope as ls
from layerscope.errors import LayerscopeError
from layerscope.models import ADAPTERS, BUNDLED, FAMILIES
from layerscope.models.adapters import TESTED_FAMILIES, adapter_for
from layerscope.models.families import families_under_test
from layerscope.models.tiny import TINY_CONFIGS, tiny_model


@pytest.mark.parametrize("family", sorted(TINY_CONFIGS))
def test_every_family_has_a_verified_adapter(family):
    model = tiny_model(family, num_layers=4)
    assert model.adapter.verified
    assert model.num_layers == 4
    assert model.hidden_size == 32
    assert len(model.blocks) == 4
    if family != "bert":
        assert isinstance(model.final_norm_module, torch.nn.Module)
    else:
        assert model.final_norm_module is None


def test_unknown_family_falls_back_with_a_warning(caplog):
    model = tiny_model("llama")
    model.model.config.model_type = "brand_new_arch"
    try:
        with caplog.at_level("WARNING"):
            adapter = adapter_for(model.model)
    finally:
        model.model.config.model_type = "llama"
    assert not adapter.verified
    assert adapter.blocks == "layers" and adapter.final_norm == "norm"
    assert "Not verified" in caplog.text and "brand_new_arch" in caplog.text


def test_tiny_models_are_deterministic():
    first, second = tiny_model("gpt2", seed=3), tiny_model("gpt2", seed=3)
    other = tiny_model("gpt2", seed=4)
    a, b, c = (next(m.model.parameters()) for m in (first, second, other))
    assert torch.equal(a, b) and not torch.equal(a, c)  # one seeded initialization twice: exact


def test_final_norm_option_is_validated():
    with pytest.raises(LayerscopeError, match="final_norm must be one of"):
        tiny_model("llama", final_norm="last")


def test_unknown_alias_lists_bundled_models():
    with pytest.raises(LayerscopeError) as error:
        ls.load_model("smollm-135m")
    message = str(error.value)
    assert "\n" not in message
    assert "did you mean 'smollm2-135m'" in message
    for alias in BUNDLED:
        assert alias in message


def test_hub_id_without_network_says_so_in_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(LayerscopeError) as error:
        ls.load_model("EleutherAI/pythia-410m", revision="step64000")
    message = str(error.value)
    assert "\n" not in message
    assert "cannot be reached" in message and "EleutherAI/pythia-410m" in message


def test_adapter_table_covers_the_issue_families():
    for model_type in ("llama", "gemma3_text", "gpt_neox", "gpt2", "qwen2", "bert", "mamba"):
        assert model_type in ADAPTERS
    # one family table: the adapters, the tiny models and the tests' families all come from it
    assert set(ADAPTERS) == {family.model_type for family in FAMILIES.values()}
    assert tuple(FAMILIES[name].model_type for name in TINY_CONFIGS) == TESTED_FAMILIES
    assert families_under_test("text") == tuple(name for name in TINY_CONFIGS if FAMILIES[name].modality == "text")
    assert {name: model_type for name, (model_type, _) in TINY_CONFIGS.items()} == \
        {name: family.model_type for name, family in FAMILIES.items() if family.tested}


#: Families whose Hugging Face ``hidden_states`` leave out the embeddings (Mamba: one entry per block, the
#: last final-normed) and whose embedding module is not the whole of layer 0 (GPT-2 adds positions after it).
HF_WITHOUT_EMBEDDINGS = {"mamba"}
POSITIONS_AFTER_EMBEDDINGS = {"gpt2"}


@pytest.mark.numeric
@pytest.mark.parametrize("family", families_under_test("text"))
def test_adapter_paths_give_hugging_face_states(family):
    """The adapter's block list, final norm and embeddings give the states Hugging Face itself reports."""
    from layerscope.models.adapters import get_module

    model = tiny_model(family, num_layers=3)
    adapter, L = model.adapter, model.num_layers
    ids = torch.tensor([[5, 9, 17, 33, 8, 21], [7, 7, 40, 12, 3, 3]])
    seen: dict[str, object] = {"blocks": [None] * L}
    hooks = [model.blocks[0].register_forward_pre_hook(
        lambda _m, args, kwargs: seen.update(layer0=args[0] if args else kwargs["hidden_states"]), with_kwargs=True),
        get_module(model.model, adapter.embeddings).register_forward_hook(lambda _m, _a, out: seen.update(embedded=out))]
    for index, block in enumerate(model.blocks):
        hooks.append(block.register_forward_hook(
            lambda _m, _a, out, index=index: seen["blocks"].__setitem__(index, out[0] if isinstance(out, tuple) else out)))
    try:
        with torch.no_grad():
            hf = model.model(input_ids=ids, attention_mask=torch.ones_like(ids), output_hidden_states=True)
    finally:
        for hook in hooks:
            hook.remove()
    hidden, blocks = hf.hidden_states, seen["blocks"]
    assert len(hidden) == L + 1
    offset = 1 if family in HF_WITHOUT_EMBEDDINGS else 0
    if not offset:  # layer 0 = the input of block 1 = HF's first hidden state
        torch.testing.assert_close(seen["layer0"], hidden[0])
    for layer in range(1, L):  # block l's output = HF's hidden_states[l]
        torch.testing.assert_close(blocks[layer - 1], hidden[layer - offset])
    # the last entry is final_norm(block L), or block L itself for encoders without a final norm
    with torch.no_grad():
        final = blocks[L - 1] if adapter.final_norm is None else model.final_norm_module(blocks[L - 1])
    torch.testing.assert_close(final, hf.last_hidden_state)
    torch.testing.assert_close(hf.last_hidden_state, hidden[L])
    if adapter.final_norm is not None:
        assert not torch.allclose(blocks[L - 1], hidden[L])  # the raw last block is not what HF reports
    if family in POSITIONS_AFTER_EMBEDDINGS:
        with torch.no_grad():
            positions = model.model.wpe(torch.arange(ids.shape[1]))
        torch.testing.assert_close(seen["embedded"] + positions, seen["layer0"])
    else:
        torch.testing.assert_close(seen["embedded"], seen["layer0"])


POINT_FAMILIES = [name for name in TINY_CONFIGS if FAMILIES[name].points is not None]


def _inputs(model) -> dict[str, torch.Tensor]:
    if model.modality == "vision":
        return {"pixel_values": torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))}
    ids = torch.tensor([[5, 9, 17, 33, 8, 21], [7, 7, 40, 12, 3, 3]])
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


@pytest.mark.numeric
@pytest.mark.parametrize("family", POINT_FAMILIES)
def test_block_points_match_the_block_structure(family):
    """The adapter's sub-layer points (TransformerLens names) are the states of the block's own arithmetic."""
    from layerscope.models.adapters import HOOK_POINTS, BlockPointCapture

    model = tiny_model(family, num_layers=2)
    inputs = _inputs(model)

    def hook_count() -> int:
        return sum(len(module._forward_hooks) + len(module._forward_pre_hooks) for module in model.model.modules())

    before = hook_count()
    with BlockPointCapture(model.model) as capture, torch.inference_mode():
        model.model(**inputs)
        points = capture.collect()
    assert hook_count() == before  # every hook is removed on exit
    assert capture.points.name == FAMILIES[family].points.name
    with torch.inference_mode():
        hidden = model.model(**inputs, output_hidden_states=True).hidden_states
    L = model.num_layers
    tokens = hidden[0].shape[1]
    assert list(points) == list(HOOK_POINTS)
    for name in HOOK_POINTS:
        assert points[name].shape == (L, 2, tokens, model.hidden_size)
    # resid_pre / resid_post are the canonical layers (hidden_states[l] for l < L; HF final-norms the last)
    torch.testing.assert_close(points["resid_pre"][0], hidden[0])
    torch.testing.assert_close(points["resid_pre"][1:], points["resid_post"][:-1])
    for layer in range(1, L):
        torch.testing.assert_close(points["resid_post"][layer - 1], hidden[layer])
    if family != "bert":  # pre-LN: the block output is the post-attention residual plus the MLP output
        torch.testing.assert_close(points["resid_post"], points["resid_mid"] + points["mlp_out"])
        # ... and the post-attention residual is the block input plus what attention adds (gemma: the
        # sandwich norm's output is what is added)
        torch.testing.assert_close(points["resid_mid"], points["resid_pre"] + points["attn_out"])
    else:  # post-LN: resid_mid = LayerNorm(resid_pre + attention), not the plain sum
        with torch.inference_mode():
            normed = model.blocks[0].attention.output.LayerNorm(points["resid_pre"][0] + points["attn_out"][0])
        torch.testing.assert_close(points["resid_mid"][0], normed)


@pytest.mark.numeric
def test_sequential_gpt_neox_reads_the_post_attention_residual():
    """A GPT-NeoX block without parallel residual computes resid_mid; the adapter reads it there."""
    from transformers import AutoModel

    from layerscope.models import wrap_model
    from layerscope.models.adapters import BlockPointCapture
    from layerscope.models.tiny import tiny_config, tiny_tokenizer

    config = tiny_config("gpt_neox", num_layers=2)
    config.use_parallel_residual = False
    torch.manual_seed(0)
    model = wrap_model(AutoModel.from_config(config), tiny_tokenizer(), "tiny-sequential-neox")
    with BlockPointCapture(model.model) as capture, torch.inference_mode():
        model.model(**_inputs(model))
        points = capture.collect()
    assert capture.points.name == "gpt_neox_sequential" and capture.points.resid_mid is not None
    torch.testing.assert_close(points["resid_mid"], points["resid_pre"] + points["attn_out"])
    torch.testing.assert_close(points["resid_post"], points["resid_mid"] + points["mlp_out"])
    parallel = tiny_model("gpt_neox", num_layers=2)
    assert parallel.adapter.block_points(parallel.model.config).resid_mid is None  # defined as the sum there


def test_families_without_block_points_say_so():
    model = tiny_model("mamba", num_layers=2)
    with pytest.raises(LayerscopeError, match="does not know the block structure of 'mamba'") as error:
        model.adapter.block_points(model.model.config)
    assert "\n" not in str(error.value) and "llama" in str(error.value)


@pytest.mark.slow
def test_bundled_models_load_offline_and_cache_the_dequantized_weights():
    import time

    model = ls.load_model("smollm2-135m")
    assert (model.num_layers, model.hidden_size, model.adapter.family) == (30, 576, "llama")
    assert model.tokenizer.pad_token is not None
    start = time.perf_counter()
    again = ls.load_model("smollm2-135m")
    assert time.perf_counter() - start < 15  # the safetensors cache, not a second dequantization
    assert torch.equal(next(model.model.parameters()), next(again.model.parameters()))  # read back: exact
    minilm = ls.load_model("minilm-l6")
    assert (minilm.num_layers, minilm.hidden_size, minilm.adapter.family) == (6, 384, "bert")


@pytest.mark.numeric
def test_device_map_loads_a_big_model_in_place(tmp_path, monkeypatch):
    """``device="map"`` asks accelerate for device_map="auto" (here all on the CPU) and extracts alike."""
    import numpy as np
    from transformers import AutoModel

    model = tiny_model("gpt_neox", num_layers=2)
    model.model.save_pretrained(str(tmp_path))
    model.tokenizer.save_pretrained(str(tmp_path))
    seen = []
    original = AutoModel.from_pretrained

    def spy(*args, **kwargs):
        seen.append(kwargs.get("device_map"))
        return original(*args, **kwargs)

    monkeypatch.setattr(AutoModel, "from_pretrained", spy)
    mapped = ls.load_model(str(tmp_path), device="map")
    plain = ls.load_model(str(tmp_path), device="cpu")
    assert seen == ["auto", None]
    texts = ["a first text to embed", "and a second one"]
    np.testing.assert_allclose(ls.extract(mapped, texts, progress=False).pooled,
                               ls.extract(plain, texts, progress=False).pooled, atol=1e-6)
