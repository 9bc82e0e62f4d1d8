"""The model families layerscope knows, in one table: adapters, hook points, tiny models and tests read it.

A :class:`Family` row says where a family keeps its parts on the Hugging Face base model (the block
list, the final norm, the embeddings), where the points inside one block are (TransformerLens-style
names, :data:`HOOK_POINTS`), its modality, and the config of a tiny random-initialised model when the
test suite covers it. Adding a family is one row here: :mod:`layerscope.models.adapters` builds its
adapter from the row, :func:`layerscope.models.tiny.tiny_model` its tiny model, and every tested
family goes through the same tests (``tests/conftest.py`` reads :func:`families_under_test`).

Where the points inside a block are, per block style (module names of Hugging Face transformers 5;
``resid_pre`` and ``resid_post`` are the block's input and output in every style):

========== ============================== ===================================== ===============================
style      attn_out                       resid_mid                             mlp_out
========== ============================== ===================================== ===============================
llama      ``self_attn`` output           input of ``post_attention_layernorm`` ``mlp`` output
gemma      ``post_attention_layernorm``   input of ``pre_feedforward_layernorm`` ``post_feedforward_layernorm``
           output (sandwich norm: the     (= x + normed attention)              output (normed MLP, what is
           normed attention is added)                                           added)
gpt_neox   ``attention`` output           parallel residual (Pythia): defined   ``mlp`` output
                                          as ``x + attention(x)``; sequential:
                                          input of ``post_attention_layernorm``
gpt2       ``attn`` output                input of ``ln_2``                     ``mlp`` output
bert       ``attention.output.dense``     ``attention`` output, which is        ``output.dense`` output
           output (before the residual    post-LN: LayerNorm(x + attention)     (before residual and LayerNorm)
           and LayerNorm)
vit        ``attention`` output           input of ``layernorm_after``          ``mlp`` output
========== ============================== ===================================== ===============================

Llama style covers Llama, Qwen2/3, Mistral and Gemma 1; gemma style covers Gemma 2 and 3. In a
GPT-NeoX block with ``use_parallel_residual`` the MLP reads ``x``, not ``x + attention(x)``, so
``resid_mid`` is not a state the block computes: it is the sum defined here. In the pre-LN styles
``resid_post = resid_mid + mlp_out`` exactly (tested); BERT normalizes after each addition, so the
identity does not hold there.

Importing this module is cheap (no torch, no transformers).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

__all__ = ["FAMILIES", "HOOK_POINTS", "BlockPoints", "Family", "HookSite", "families_under_test"]

#: Points of every block, in forward order (TransformerLens names): the block input, what attention
#: adds, the residual stream after that addition, what the MLP adds, and the block output.
HOOK_POINTS = ("resid_pre", "attn_out", "resid_mid", "mlp_out", "resid_post")


@dataclass(frozen=True)
class HookSite:
    """A tensor inside a block: the output (first tensor of a tuple) or the first input of a module.

    Attributes
    ----------
    module : str
        Dotted path relative to the block, e.g. ``"self_attn"`` or ``"attention.output.dense"``.
    side : {"output", "input"}
    """

    module: str
    side: Literal["output", "input"] = "output"


@dataclass(frozen=True)
class BlockPoints:
    """Where ``attn_out``, ``resid_mid`` and ``mlp_out`` live in one block style.

    ``resid_pre`` and ``resid_post`` are the block's own input and output, the same in every family.

    Attributes
    ----------
    name : str
        Style name (``llama``, ``gemma``, ...), reported by the sub-layer experiment.
    attn_out, mlp_out : HookSite
        What the attention and the MLP branch add to the residual stream.
    resid_mid : HookSite or None
        The post-attention residual. None: the block never computes it (a parallel-residual block
        feeds its input to both branches), and it is defined as ``resid_pre + attn_out``.
    parallel_flag : str, optional
        Config attribute that, when true (or absent), makes the block parallel-residual: then
        ``resid_mid`` is defined as ``resid_pre + attn_out`` instead of read at ``resid_mid``
        (GPT-NeoX's ``use_parallel_residual``).
    """

    name: str
    attn_out: HookSite
    mlp_out: HookSite
    resid_mid: HookSite | None
    parallel_flag: str | None = None


@dataclass(frozen=True)
class Family:
    """One architecture family.

    Attributes
    ----------
    name : str
        Family name (``gemma3``): the adapter's ``family`` and the name of its tiny model.
    model_type : str
        ``config.model_type`` of its Hugging Face models (``gemma3_text``).
    blocks : str
        Path of the ``nn.ModuleList`` of blocks on the base model.
    final_norm : str or None
        Path of the norm applied after the last block, or None (BERT).
    embeddings : str
        Path of the embedding module.
    points : BlockPoints or None
        Where the sub-layer points of its blocks are (None: not known, e.g. Mamba's SSM blocks).
    modality : {"text", "vision"}
    tiny : mapping, optional
        Config options of a tiny random-init model (vocabulary and layer count are filled in); a
        family with one is covered by the test suite.
    """

    name: str
    model_type: str
    blocks: str
    final_norm: str | None
    embeddings: str
    points: BlockPoints | None = None
    modality: Literal["text", "vision"] = "text"
    tiny: Mapping[str, Any] | None = field(default=None)

    def __post_init__(self) -> None:
        if self.tiny is not None:
            object.__setattr__(self, "tiny", MappingProxyType(dict(self.tiny)))

    @property
    def tested(self) -> bool:
        """Whether the test suite runs a tiny model of this family."""
        return self.tiny is not None


# Block styles (see the module docstring).
LLAMA = BlockPoints("llama", HookSite("self_attn"), HookSite("mlp"), HookSite("post_attention_layernorm", "input"))
GEMMA = BlockPoints("gemma", HookSite("post_attention_layernorm"), HookSite("post_feedforward_layernorm"),
                    HookSite("pre_feedforward_layernorm", "input"))
GPT_NEOX = BlockPoints("gpt_neox", HookSite("attention"), HookSite("mlp"), HookSite("post_attention_layernorm", "input"),
                       parallel_flag="use_parallel_residual")
GPT2 = BlockPoints("gpt2", HookSite("attn"), HookSite("mlp"), HookSite("ln_2", "input"))
BERT = BlockPoints("bert", HookSite("attention.output.dense"), HookSite("output.dense"), HookSite("attention"))
VIT = BlockPoints("vit", HookSite("attention"), HookSite("mlp"), HookSite("layernorm_after", "input"))

_WIDTH = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4}
_TINY_DECODER = {**_WIDTH, "num_key_value_heads": 2, "max_position_embeddings": 256}
_DECODER = {"blocks": "layers", "final_norm": "norm", "embeddings": "embed_tokens"}
_ENCODER = {"blocks": "encoder.layer", "final_norm": None, "embeddings": "embeddings", "points": BERT}

#: family name -> :class:`Family`, in the order listings and tests show them.
FAMILIES: dict[str, Family] = {family.name: family for family in (
    Family("llama", "llama", **_DECODER, points=LLAMA, tiny=_TINY_DECODER),
    Family("qwen2", "qwen2", **_DECODER, points=LLAMA, tiny=_TINY_DECODER),
    Family("qwen3", "qwen3", **_DECODER, points=LLAMA),
    Family("mistral", "mistral", **_DECODER, points=LLAMA),
    Family("gemma", "gemma", **_DECODER, points=LLAMA),
    Family("gemma2", "gemma2", **_DECODER, points=GEMMA),
    Family("gemma3", "gemma3_text", **_DECODER, points=GEMMA,
           tiny={**_TINY_DECODER, "head_dim": 8, "sliding_window": 8}),
    Family("gpt_neox", "gpt_neox", "layers", "final_layer_norm", "embed_in", points=GPT_NEOX,
           tiny={**_WIDTH, "max_position_embeddings": 256}),
    Family("gpt2", "gpt2", "h", "ln_f", "wte", points=GPT2, tiny={"n_embd": 32, "n_head": 4, "n_positions": 256}),
    Family("bert", "bert", **_ENCODER, tiny={**_WIDTH, "max_position_embeddings": 256}),
    Family("roberta", "roberta", **_ENCODER),
    Family("mamba", "mamba", "layers", "norm_f", "embeddings",
           tiny={"hidden_size": 32, "state_size": 8, "expand": 2, "conv_kernel": 4}),
    Family("vit", "vit", "layers", "layernorm", "embeddings", points=VIT, modality="vision",
           tiny={**_WIDTH, "image_size": 28, "patch_size": 7, "num_channels": 1}),
)}


def families_under_test(modality: str | None = None) -> tuple[str, ...]:
    """Names of the families the test suite covers (with a tiny model), optionally of one modality."""
    return tuple(name for name, family in FAMILIES.items()
                 if family.tested and (modality is None or family.modality == modality))
