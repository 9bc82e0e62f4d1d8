"""Pooling of token states into one vector per text, through the attention mask only."""

from __future__ import annotations

import torch

from layerscope.errors import LayerscopeError

POOLING_MODES = ("mean", "last", "first")


def check_pooling(pooling: str) -> str:
    if pooling not in POOLING_MODES:
        from layerscope.errors import suggest

        raise LayerscopeError(
            f"unknown pooling '{pooling}'{suggest(pooling, POOLING_MODES)}; use one of {', '.join(POOLING_MODES)}"
        )
    return pooling


def pool(states: torch.Tensor, mask: torch.Tensor, pooling: str = "mean") -> torch.Tensor:
    """Pool token states of every layer.

    Parameters
    ----------
    states : Tensor, shape (layers, batch, tokens, dim)
    mask : Tensor, shape (batch, tokens)
        1 for real tokens, 0 for padding; left or right padding both work.
    pooling : {"mean", "last", "first"}
        ``mean``: mask-weighted mean; ``last``: last real token; ``first``: first real token (CLS).

    Returns
    -------
    Tensor, shape (layers, batch, dim)
    """
    check_pooling(pooling)
    mask = mask.to(states.device)
    if pooling == "mean":
        weights = mask.to(states.dtype)  # (batch, tokens)
        # a broadcast batched matmul reads the states in place (an einsum would copy them transposed)
        summed = torch.matmul(weights[:, None, :], states).squeeze(-2)  # (layers, batch, dim)
        return summed / weights.sum(1).clamp_min(1.0)[None, :, None]
    positions = torch.arange(mask.shape[1], device=mask.device)
    real = mask.bool()
    if pooling == "last":  # index of the last real token, whatever the padding side
        index = torch.where(real, positions, -1).amax(1).clamp_min(0)
    else:
        index = torch.where(real, positions, mask.shape[1]).amin(1).clamp_max(mask.shape[1] - 1)
    batch = torch.arange(mask.shape[0], device=mask.device)
    return states[:, batch, index]


def outlier_tokens(states: torch.Tensor, mask: torch.Tensor, factor: float) -> torch.Tensor:
    """Tokens whose norm exceeds ``factor`` times the median token norm of their prompt (attention sinks).

    Parameters
    ----------
    states : Tensor, shape (..., batch, tokens, dim)
    mask : Tensor, shape (batch, tokens)
        Real tokens (padding is never an outlier and does not count in the median).
    factor : float
        How many times the prompt's median norm a token must exceed (> 1).

    Returns
    -------
    Tensor of bool, shape (..., batch, tokens)
    """
    norms = torch.linalg.vector_norm(states.float(), dim=-1)  # (..., batch, tokens)
    real = mask.to(norms.device).bool().expand_as(norms)
    median = torch.where(real, norms, torch.nan).nanmedian(dim=-1, keepdim=True).values
    return real & (norms > factor * median)


def pooled_summary(pooled: object, num_layers: int) -> list[dict[str, float]]:
    """Per-layer mean norm and anisotropy (mean cosine between different texts) of pooled embeddings.

    Parameters
    ----------
    pooled : array-like, shape (layers, n, dim)
        Pooled embeddings of every layer (a tensor or an array; computed in float64).
    num_layers : int
        The model's number of blocks ``L``: ``depth_pct`` is ``100 * layer / L``.

    Returns
    -------
    list of dict
        One ``{"layer", "depth_pct", "mean_norm", "anisotropy"}`` per layer. The anisotropy is the
        mean of ``cos(x_i, x_j)`` over ordered pairs ``i != j``, from the sum of unit vectors
        (``(|sum u|^2 - n) / (n (n - 1))``): no ``n x n`` matrix.
    """
    import numpy as np

    stack = torch.from_numpy(np.array(pooled, dtype=np.float64))  # (layers, n, d)
    norms = stack.norm(dim=-1)
    unit = stack / norms.clamp_min(1e-12)[..., None]
    n = stack.shape[1]
    summed = unit.sum(1)
    mean_cos = ((summed * summed).sum(-1) - n) / max(n * (n - 1), 1)
    return [
        {"layer": layer, "depth_pct": 100.0 * layer / num_layers, "mean_norm": float(norms[layer].mean()),
         "anisotropy": float(mean_cos[layer])}
        for layer in range(stack.shape[0])
    ]
