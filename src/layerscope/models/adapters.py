"""Per-architecture adapters: where the blocks, the embeddings and the final norm live.

Canonical layer indexing (SPEC section 3): layer 0 is the input of the first block (the embedding
output, after any scaling or position embeddings the model adds), layer ``l`` is the output of block
``l`` and layer ``L`` the output of the last block, before the final norm. Extraction hooks these
modules directly, so the raw last block is available even though Hugging Face's ``hidden_states``
returns ``final_norm(block L)`` in its place.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Adapter:
    """Where one architecture family keeps its parts, as dotted attribute paths on the base model.

    Parameters
    ----------
    family : str
        Family name (``llama``, ``gpt_neox``, ...).
    blocks : str
        Path of the ``nn.ModuleList`` of blocks.
    final_norm : str or None
        Path of the final norm applied after the last block, or None (BERT).
    embeddings : str
        Path of the embedding module (for reference and sub-layer experiments).
    verified : bool
        True for families covered by the test suite; False for the generic fallback.
    modality : str
        ``text`` or ``vision``.
    """

    family: str
    blocks: str
    final_norm: str | None
    embeddings: str
    verified: bool = True
    modality: str = "text"


_DECODER = dict(blocks="layers", final_norm="norm", embeddings="embed_tokens")

# model_type (config) -> adapter. Paths are relative to the base model (AutoModel), not the LM head.
ADAPTERS: dict[str, Adapter] = {
    "llama": Adapter("llama", **_DECODER),
    "qwen2": Adapter("qwen2", **_DECODER),
    "qwen3": Adapter("qwen3", **_DECODER),
    "mistral": Adapter("mistral", **_DECODER),
    "gemma": Adapter("gemma", **_DECODER),
    "gemma2": Adapter("gemma2", **_DECODER),
    "gemma3_text": Adapter("gemma3", **_DECODER),
    "gpt_neox": Adapter("gpt_neox", blocks="layers", final_norm="final_layer_norm", embeddings="embed_in"),
    "gpt2": Adapter("gpt2", blocks="h", final_norm="ln_f", embeddings="wte"),
    "bert": Adapter("bert", blocks="encoder.layer", final_norm=None, embeddings="embeddings"),
    "roberta": Adapter("roberta", blocks="encoder.layer", final_norm=None, embeddings="embeddings"),
    "mamba": Adapter("mamba", blocks="layers", final_norm="norm_f", embeddings="embeddings"),
    "vit": Adapter("vit", blocks="layers", final_norm="layernorm", embeddings="embeddings", modality="vision"),
}

# Families with a test on a random-init model built from a config (tests/test_models.py).
TESTED_FAMILIES = ("llama", "qwen2", "gemma3_text", "gpt_neox", "gpt2", "bert", "mamba", "vit")


def get_module(root: nn.Module, path: str) -> nn.Module:
    """Follow a dotted attribute path from ``root``."""
    module = root
    for part in path.split("."):
        module = getattr(module, part)
    return module


def _has_path(root: nn.Module, path: str) -> bool:
    try:
        get_module(root, path)
    except AttributeError:
        return False
    return True


def adapter_for(model: nn.Module) -> Adapter:
    """Return the adapter of ``model`` (a base model such as ``LlamaModel``).

    Unknown families fall back to a generic adapter that finds the block list by its length
    (``config.num_hidden_layers``) and a final norm by name; a warning names what is unverified.
    """
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    adapter = ADAPTERS.get(model_type or "")
    if adapter is not None:
        # ViT moved its block list between transformers versions (encoder.layer -> layers).
        if not _has_path(model, adapter.blocks) and _has_path(model, "encoder.layer"):
            adapter = Adapter(**{**adapter.__dict__, "blocks": "encoder.layer"})
        if _has_path(model, adapter.blocks):
            return adapter
    return _generic_adapter(model, model_type)


def _generic_adapter(model: nn.Module, model_type: str | None) -> Adapter:
    n_layers = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    candidates = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList) and len(module) > 0 and (n_layers is None or len(module) == n_layers)
    ]
    if not candidates:
        from layerscope.errors import LayerscopeError

        raise LayerscopeError(
            f"cannot find the block list of model type '{model_type}': no nn.ModuleList of "
            f"{n_layers} blocks; supported families: {', '.join(sorted(ADAPTERS))}"
        )
    blocks_name = min(candidates, key=lambda item: item[0].count("."))[0]
    norm_name = next(
        (
            name
            for name in ("norm", "final_layer_norm", "ln_f", "norm_f", "final_layernorm", "layernorm")
            if isinstance(getattr(model, name, None), nn.Module)
        ),
        None,
    )
    logger.warning(
        "model type '%s' has no layerscope adapter: using blocks '%s' and final norm '%s' found by "
        "name; layer 0 = input of the first block. Not verified: that these blocks form the residual "
        "stream in order, and that '%s' is the final norm.",
        model_type,
        blocks_name,
        norm_name,
        norm_name,
    )
    return Adapter(
        family=model_type or "unknown", blocks=blocks_name, final_norm=norm_name, embeddings="", verified=False
    )


def block_output(output: object) -> torch.Tensor:
    """The hidden-state tensor of a block's forward output (a tensor or a tuple starting with one)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    hidden = getattr(output, "hidden_states", None)
    if isinstance(hidden, torch.Tensor):
        return hidden
    raise TypeError(f"cannot find the hidden states in a block output of type {type(output).__name__}")
