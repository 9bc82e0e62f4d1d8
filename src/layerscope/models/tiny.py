"""Tiny random-initialised models of every supported family, built from configs with no download.

They exercise exactly the code paths of the real hub models (Pythia, Mamba, Qwen, ViT...) that cannot
be downloaded here, in milliseconds. ``tiny_model("gpt_neox")`` works offline and is deterministic.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from layerscope.errors import unknown
from layerscope.models.loading import LoadedModel, wrap_model

_WIDTH = dict(hidden_size=32, intermediate_size=64, num_attention_heads=4)
_DECODER = dict(**_WIDTH, num_key_value_heads=2, max_position_embeddings=256)

# family -> (config model_type, config kwargs); vocab size and layer count are filled in.
TINY_CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "llama": ("llama", _DECODER),
    "qwen2": ("qwen2", _DECODER),
    "gemma3": ("gemma3_text", {**_DECODER, "head_dim": 8, "sliding_window": 8}),
    "gpt_neox": ("gpt_neox", {**_WIDTH, "max_position_embeddings": 256}),
    "gpt2": ("gpt2", {"n_embd": 32, "n_head": 4, "n_positions": 256}),
    "bert": ("bert", {**_WIDTH, "max_position_embeddings": 256}),
    "mamba": ("mamba", {"hidden_size": 32, "state_size": 8, "expand": 2, "conv_kernel": 4}),
    "vit": ("vit", {**_WIDTH, "image_size": 28, "patch_size": 7, "num_channels": 1}),
}

_CORPUS = (
    "The quick brown fox jumps over the lazy dog. Layer by layer, hidden representations change. "
    "Intermediate layers of language models often make better embeddings than the last layer. "
    "Matrix entropy, curvature and augmentation invariance explain this without labels. 0123456789"
)


@functools.lru_cache(maxsize=1)
def tiny_tokenizer() -> Any:
    """A byte-level BPE tokenizer trained in memory (any text is tokenizable, nothing downloaded)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<s>", "</s>"]
    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    core.post_processor = processors.ByteLevel(trim_offsets=False)
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>",
        cls_token="<s>", sep_token="</s>",
    )


def tiny_config(family: str, num_layers: int = 3) -> Any:
    """The transformers config of a tiny ``family`` model with ``num_layers`` blocks."""
    from transformers import AutoConfig

    if family not in TINY_CONFIGS:
        raise unknown("tiny model family", family, TINY_CONFIGS)
    model_type, kwargs = TINY_CONFIGS[family]
    tokenizer = tiny_tokenizer()
    extra: dict[str, Any] = {}
    if family != "vit":
        extra = dict(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                     bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    layers_key = "n_layer" if family == "gpt2" else "num_hidden_layers"
    return AutoConfig.for_model(model_type, **kwargs, **extra, **{layers_key: num_layers})


def tiny_model(family: str = "llama", num_layers: int = 3, seed: int = 0, final_norm: str = "none") -> LoadedModel:
    """A tiny random-init :class:`LoadedModel` of ``family`` (see ``TINY_CONFIGS``), deterministic in ``seed``."""
    from transformers import AutoModel

    config = tiny_config(family, num_layers)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = AutoModel.from_config(config)
    tokenizer = None if family == "vit" else tiny_tokenizer()
    return wrap_model(model, tokenizer, f"tiny-{family}", revision=f"seed{seed}", final_norm=final_norm,
                      source=f"random init from {config.model_type} config")
