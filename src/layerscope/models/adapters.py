"""Per-architecture adapters: where the blocks, the embeddings, the final norm and the points inside a block live.

Canonical layer indexing (SPEC section 3): layer 0 is the input of the first block (the embedding
output, after any scaling or position embeddings the model adds), layer ``l`` is the output of block
``l`` and layer ``L`` the output of the last block, before the final norm. Extraction hooks these
modules directly, so the raw last block is available even though Hugging Face's ``hidden_states``
returns ``final_norm(block L)`` in its place.

Inside a block the points have TransformerLens-style names (:data:`HOOK_POINTS`): ``resid_pre``
(block input), ``attn_out`` (what attention adds), ``resid_mid`` (the residual after it), ``mlp_out``
(what the MLP adds) and ``resid_post`` (block output). :class:`BlockPointCapture` keeps them during a
forward pass; each family's :class:`~layerscope.models.families.BlockPoints` says where they are.
The adapters are built from the one family table, :data:`layerscope.models.families.FAMILIES`.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from layerscope.errors import LayerscopeError
from layerscope.models.families import (
    FAMILIES,
    HOOK_POINTS,
    BlockPoints,
    Family,
    HookSite,
    families_under_test,
)

__all__ = ["ADAPTERS", "HOOK_POINTS", "TESTED_FAMILIES", "Adapter", "BlockPointCapture", "BlockPoints", "HookSite",
           "adapter_for", "block_output", "get_module"]

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
        Path of the embedding module.
    verified : bool
        True for families of the table; False for the generic fallback.
    modality : str
        ``text`` or ``vision``.
    points : BlockPoints or None
        Where the points inside a block are (None: unknown for this family).
    """

    family: str
    blocks: str
    final_norm: str | None
    embeddings: str
    verified: bool = True
    modality: str = "text"
    points: BlockPoints | None = None

    @classmethod
    def of(cls, family: Family) -> Adapter:
        """The adapter of a row of the family table."""
        return cls(family.name, family.blocks, family.final_norm, family.embeddings, modality=family.modality,
                   points=family.points)

    def block_points(self, config: Any = None) -> BlockPoints:
        """Where the points of this family's blocks are, for a model with ``config``.

        A parallel-residual block (GPT-NeoX with ``use_parallel_residual``) feeds its input to both
        branches, so its ``resid_mid`` is not a state it computes: it comes back as None (defined as
        ``resid_pre + attn_out``); a sequential one reads it where the table says.

        Raises
        ------
        LayerscopeError
            For a family whose block structure is not known.
        """
        points = self.points
        if points is None:
            known = sorted(name for name, family in FAMILIES.items() if family.points is not None)
            raise LayerscopeError(f"layerscope does not know the block structure of '{self.family}' models (no "
                                  f"sub-layer hook points); families with them: {', '.join(known)}")
        if points.parallel_flag is None:
            return points
        if getattr(config, points.parallel_flag, True):
            return dataclasses.replace(points, resid_mid=None, parallel_flag=None)
        return dataclasses.replace(points, name=f"{points.name}_sequential", parallel_flag=None)


# model_type (config) -> adapter. Paths are relative to the base model (AutoModel), not the LM head.
ADAPTERS: dict[str, Adapter] = {family.model_type: Adapter.of(family) for family in FAMILIES.values()}

# Families with a test on a random-init model built from a config (tests/test_models.py), by model_type.
TESTED_FAMILIES = tuple(FAMILIES[name].model_type for name in families_under_test())


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
            adapter = dataclasses.replace(adapter, blocks="encoder.layer")
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


def _first_input(args: tuple, kwargs: dict) -> torch.Tensor:
    if args and isinstance(args[0], torch.Tensor):
        return args[0]
    for key in ("hidden_states", "input", "x"):
        if isinstance(kwargs.get(key), torch.Tensor):
            return kwargs[key]
    raise RuntimeError("cannot find the input tensor of a hooked module")


class BlockPointCapture:
    """Forward hooks that keep the points (:data:`HOOK_POINTS`) of every block during forward passes.

    Use as a context manager around forward passes; after each pass :meth:`collect` returns that
    pass's points and forgets them. Every hook is removed on exit.

    Parameters
    ----------
    model : nn.Module
        A base model (``LoadedModel.model``) of a family whose block points are known.
    adapter : Adapter, optional
        Its adapter (default :func:`adapter_for` of ``model``).

    Examples
    --------
    >>> with BlockPointCapture(loaded.model) as capture:               # doctest: +SKIP
    ...     loaded.model(input_ids=ids, attention_mask=mask)
    ...     points = capture.collect()   # {"resid_pre": (L, B, T, D), "attn_out": (L, B, T, D), ...}
    """

    def __init__(self, model: nn.Module, adapter: Adapter | None = None) -> None:
        adapter = adapter or adapter_for(model)
        self.points = adapter.block_points(getattr(model, "config", None))
        self.blocks = get_module(model, adapter.blocks)
        self.num_layers = len(self.blocks)
        self.handles: list[Any] = []
        self._kept: dict[str, list[torch.Tensor | None]] = {}
        self._reset()

    def _reset(self) -> None:
        self._kept = {name: [None] * self.num_layers for name in HOOK_POINTS}

    def _hook(self, module: nn.Module, side: str, name: str, index: int) -> Any:
        def output_hook(_module: Any, _args: Any, result: Any) -> None:
            self._kept[name][index] = block_output(result)

        def input_hook(_module: Any, args: tuple, kwargs: dict) -> None:
            self._kept[name][index] = _first_input(args, kwargs)

        if side == "input":
            return module.register_forward_pre_hook(input_hook, with_kwargs=True)
        return module.register_forward_hook(output_hook)

    def __enter__(self) -> BlockPointCapture:
        sites = {"attn_out": self.points.attn_out, "mlp_out": self.points.mlp_out, "resid_mid": self.points.resid_mid}
        for index, block in enumerate(self.blocks):
            self.handles.append(self._hook(block, "input", "resid_pre", index))
            self.handles.append(self._hook(block, "output", "resid_post", index))
            for name, site in sites.items():
                if site is not None:
                    self.handles.append(self._hook(get_module(block, site.module), site.side, name, index))
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove every hook (idempotent)."""
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def collect(self) -> dict[str, torch.Tensor]:
        """The points of the last forward pass by name, each ``(L, B, T, D)`` (block index first).

        The references are dropped, so memory is freed once the caller is done with the result.
        """
        computed = [name for name in HOOK_POINTS if not (name == "resid_mid" and self.points.resid_mid is None)]
        for name in computed:
            missing = [i for i, tensor in enumerate(self._kept[name]) if tensor is None]
            if missing:
                raise RuntimeError(f"block point '{name}' was not produced for blocks {missing}")
        points = {name: torch.stack(self._kept[name]) for name in computed}  # type: ignore[arg-type]
        if self.points.resid_mid is None:  # parallel residual: defined as x + attention(x)
            points["resid_mid"] = points["resid_pre"] + points["attn_out"]
        self._reset()
        return {name: points[name] for name in HOOK_POINTS}
