"""Model loading, bundled aliases and architecture adapters (SPEC section 3, issue 2 points 2-3)."""

from __future__ import annotations

import pytest
import torch

import layerscope as ls
from layerscope.errors import LayerscopeError
from layerscope.models import ADAPTERS, BUNDLED
from layerscope.models.adapters import adapter_for
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
    assert torch.equal(a, b) and not torch.equal(a, c)


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


@pytest.mark.slow
def test_bundled_models_load_offline_and_cache_the_dequantized_weights():
    import time

    model = ls.load_model("smollm2-135m")
    assert (model.num_layers, model.hidden_size, model.adapter.family) == (30, 576, "llama")
    assert model.tokenizer.pad_token is not None
    start = time.perf_counter()
    again = ls.load_model("smollm2-135m")
    assert time.perf_counter() - start < 15  # the safetensors cache, not a second dequantization
    assert torch.equal(next(model.model.parameters()), next(again.model.parameters()))
    minilm = ls.load_model("minilm-l6")
    assert (minilm.num_layers, minilm.hidden_size, minilm.adapter.family) == (6, 384, "bert")


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
