"""Tiny random-initialised models of every supported family, built from configs with no download.

They exercise exactly the code paths of the real hub models (Pythia, Mamba, Qwen, ViT...) that cannot
be downloaded here, in milliseconds. ``tiny_model("gpt_neox")`` works offline and is deterministic.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from layerscope.errors import unknown
from layerscope.models.families import FAMILIES
from layerscope.models.loading import LoadedModel, wrap_model

#: family -> (config model_type, config kwargs) of every tested family; vocabulary size and layer
#: count are filled in. Read from the family table (:mod:`layerscope.models.families`).
TINY_CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    name: (family.model_type, dict(family.tiny)) for name, family in FAMILIES.items() if family.tiny is not None
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
    extra: dict[str, Any] = {}
    if FAMILIES[family].modality == "text":
        tokenizer = tiny_tokenizer()
        extra = dict(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                     bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    # every config class maps num_hidden_layers to its own name (GPT-2's n_layer)
    return AutoConfig.for_model(model_type, **kwargs, **extra, num_hidden_layers=num_layers)


def tiny_model(family: str = "llama", num_layers: int = 3, seed: int = 0, final_norm: str = "none") -> LoadedModel:
    """A tiny random-init :class:`LoadedModel` of ``family`` (see ``TINY_CONFIGS``), deterministic in ``seed``."""
    from transformers import AutoModel

    config = tiny_config(family, num_layers)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = AutoModel.from_config(config)
    tokenizer = tiny_tokenizer() if FAMILIES[family].modality == "text" else None
    return wrap_model(model, tokenizer, f"tiny-{family}", revision=f"seed{seed}", final_norm=final_norm,
                      source=f"random init from {config.model_type} config")
