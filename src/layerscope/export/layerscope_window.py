"""A mean over a window of layers (a layerscope recipe's ``mean:A-B``, ``zmean:A-B``), as a
sentence-transformers module.

This file is copied into every model folder that ``layerscope export --recipe`` writes for a window
recipe, and sentence-transformers imports it from there when the folder is loaded with
``SentenceTransformer(folder, trust_remote_code=True)``: it needs torch, safetensors and
sentence-transformers, never layerscope.

The module sits after the ``Transformer`` module, whose model configuration sets
``output_hidden_states`` so that every layer's token states reach it (``all_layer_embeddings``). For
each layer of the window it pools the token states over the attention mask as layerscope does (mean,
last or first real token), L2-normalizes the layers the recipe takes as the model ships them, maps each
layer by its fitted affine z-scores (``zmean``; the identity for ``mean``), and writes the mean over the
window as the sentence embedding. Everything after pooling is computed in float64, as layerscope does.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from safetensors.torch import save_file

try:  # sentence-transformers >= 6
    from sentence_transformers.base.modules import Module
except ImportError:  # sentence-transformers 5
    from sentence_transformers.models import Module

__all__ = ["LayerWindowMean"]

POOLINGS = ("mean", "last", "first")


class LayerWindowMean(Module):
    """Pool each layer of a window, map it, and average: a recipe's mean over layers.

    Parameters
    ----------
    hidden_state_indices : list of int
        Entries of the model's ``hidden_states`` holding the window's layers, in order.
    pooling : {"mean", "last", "first"}
        Pooling of each layer's token states over the attention mask.
    normalized : list of int
        Positions in the window L2-normalized after pooling, before the map (the last layer of a
        model that ships normalized, as it ships).
    dimension : int
        Width of the hidden states (and of the output).
    scale, shift : Tensor, shape (window, dimension), optional
        The per-layer map ``x * scale + shift`` (default: the identity).
    """

    config_keys = ["hidden_state_indices", "pooling", "normalized", "dimension"]
    config_file_name = "layer_window.json"

    def __init__(self, hidden_state_indices: list[int], pooling: str = "mean", normalized: list[int] | None = None,
                 dimension: int = 0, scale: Any = None, shift: Any = None) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.hidden_state_indices = [int(index) for index in hidden_state_indices]
        self.pooling = pooling
        self.normalized = [int(position) for position in normalized or []]
        self.dimension = int(dimension)
        shape = (len(self.hidden_state_indices), self.dimension)
        self.register_buffer("scale", torch.ones(shape, dtype=torch.float64) if scale is None
                             else torch.as_tensor(scale, dtype=torch.float64).reshape(shape).clone())
        self.register_buffer("shift", torch.zeros(shape, dtype=torch.float64) if shift is None
                             else torch.as_tensor(shift, dtype=torch.float64).reshape(shape).clone())

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        states = features.get("all_layer_embeddings")
        if states is None:
            raise ValueError("LayerWindowMean needs every layer's token states: load the model with "
                             "output_hidden_states set in its config.json, as exported")
        mask = features["attention_mask"]
        pooled = torch.stack([_pool(states[index], mask, self.pooling)
                              for index in self.hidden_state_indices]).to(torch.float64)  # (window, batch, d)
        if self.normalized:
            index = torch.as_tensor(self.normalized, device=pooled.device)
            chosen = pooled.index_select(0, index)
            norms = torch.linalg.vector_norm(chosen, dim=-1, keepdim=True).clamp_min(1e-300)
            pooled = pooled.index_copy(0, index, chosen / norms)
        mapped = pooled * self.scale.to(pooled.device).unsqueeze(1) + self.shift.to(pooled.device).unsqueeze(1)
        features["sentence_embedding"] = mapped.mean(dim=0).to(states[-1].dtype)  # (batch, d)
        return features

    def get_sentence_embedding_dimension(self) -> int:
        return self.dimension

    def save(self, output_path: str, *args: Any, safe_serialization: bool = True, **kwargs: Any) -> None:
        self.save_config(output_path)
        save_file({"scale": self.scale.contiguous(), "shift": self.shift.contiguous()},
                  os.path.join(output_path, "model.safetensors"))

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", token: bool | str | None = None,
             cache_folder: str | None = None, revision: str | None = None, local_files_only: bool = False,
             **kwargs: Any) -> LayerWindowMean:
        hub = {"subfolder": subfolder, "token": token, "cache_folder": cache_folder, "revision": revision,
               "local_files_only": local_files_only}
        config = cls.load_config(model_name_or_path, **hub)
        weights = cls.load_torch_weights(model_name_or_path, **hub)
        return cls(**{key: config[key] for key in cls.config_keys}, scale=weights["scale"], shift=weights["shift"])


def _pool(states: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """``(batch, tokens, d)`` token states -> ``(batch, d)``, as layerscope's pooling computes it."""
    mask = mask.to(states.device)
    if pooling == "mean":
        weights = mask.to(states.dtype)  # (batch, tokens)
        summed = torch.matmul(weights[:, None, :], states).squeeze(-2)  # (batch, d)
        return summed / weights.sum(1).clamp_min(1.0)[:, None]
    positions = torch.arange(mask.shape[1], device=mask.device)
    real = mask.bool()
    if pooling == "last":  # the last real token, whatever the padding side
        index = torch.where(real, positions, -1).amax(1).clamp_min(0)
    else:
        index = torch.where(real, positions, mask.shape[1]).amin(1).clamp_max(mask.shape[1] - 1)
    return states[torch.arange(mask.shape[0], device=mask.device), index]
