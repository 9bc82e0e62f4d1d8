"""Token-level perturbations for the extreme-prompt experiments (SPEC section 7.4).

Both functions act on a batch of token ids ``(B, T)`` (or one prompt ``(T,)``), keep the length and
the padding, and replace each real token independently with probability ``p``:

- :func:`repeat_tokens` by a token drawn uniformly from the real tokens of the same prompt (the
  draw is from the original prompt, so at ``p = 1`` every position holds a uniform draw of it);
- :func:`random_tokens` by a token drawn uniformly from the vocabulary ``[0, vocab_size)``.

``p = 0`` returns an identical copy. Draws come from a ``torch.Generator`` seeded with ``seed`` (on
the CPU, so results do not depend on the device) and are fully vectorised. Special tokens (BOS) are
positions like any other: leave them out of ``attention_mask`` to protect them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from layerscope.errors import LayerscopeError

__all__ = ["random_tokens", "repeat_tokens"]


def _prepare(input_ids: Tensor, attention_mask: Tensor | None, p: float) -> tuple[Tensor, Tensor, bool]:
    if not 0.0 <= float(p) <= 1.0:
        raise LayerscopeError(f"replacement probability p must lie in [0, 1], got {p}")
    input_ids = torch.as_tensor(input_ids)
    if input_ids.is_floating_point() or input_ids.ndim not in (1, 2):
        raise LayerscopeError(f"input_ids must be integer token ids of shape (B, T) or (T,), got {tuple(input_ids.shape)}")
    single = input_ids.ndim == 1
    ids = input_ids.unsqueeze(0) if single else input_ids
    if attention_mask is None:
        mask = torch.ones_like(ids, dtype=torch.bool)
    else:
        mask = torch.as_tensor(attention_mask, device=ids.device).reshape(ids.shape).bool()
    return ids, mask, single


def _replace_where(ids: Tensor, mask: Tensor, p: float, generator: torch.Generator) -> Tensor:
    """(B, T) bool: real positions chosen for replacement with probability p."""
    draws = torch.rand(ids.shape, generator=generator).to(ids.device)
    return mask & (draws < p)


def repeat_tokens(input_ids: Tensor, attention_mask: Tensor | None, p: float, seed: int = 0) -> Tensor:
    """Replace each real token with probability ``p`` by a uniform draw from the same prompt's tokens.

    Parameters
    ----------
    input_ids : Tensor of int, shape (B, T) or (T,)
    attention_mask : Tensor, shape like ``input_ids``, or None
        1 for real tokens (any padding side); None = every position is real.
    p : float in [0, 1]
    seed : int, default 0

    Returns
    -------
    Tensor, same shape and dtype as ``input_ids``
        Padding untouched; a prompt with no real token is returned as is.
    """
    ids, mask, single = _prepare(input_ids, attention_mask, p)
    generator = torch.Generator().manual_seed(int(seed))
    replace = _replace_where(ids, mask, p, generator)
    n_real = mask.sum(dim=-1, keepdim=True)  # (B, 1)
    # Real positions of each row first, in order (stable sort on "is padding"), then a uniform rank.
    real_positions = torch.sort((~mask).to(torch.int8), dim=-1, stable=True).indices  # (B, T)
    ranks = (torch.rand(ids.shape, generator=generator).to(ids.device) * n_real).long()
    ranks = ranks.clamp(max=(n_real - 1).clamp_min(0))
    sources = real_positions.gather(-1, ranks)  # (B, T) positions of the drawn tokens
    out = torch.where(replace, ids.gather(-1, sources), ids)
    return out.squeeze(0) if single else out


def random_tokens(
    input_ids: Tensor, attention_mask: Tensor | None, p: float, vocab_size: int, seed: int = 0
) -> Tensor:
    """Replace each real token with probability ``p`` by a uniform token of ``[0, vocab_size)``.

    Parameters
    ----------
    input_ids : Tensor of int, shape (B, T) or (T,)
    attention_mask : Tensor, shape like ``input_ids``, or None
    p : float in [0, 1]
    vocab_size : int
    seed : int, default 0

    Returns
    -------
    Tensor, same shape and dtype as ``input_ids``
    """
    if int(vocab_size) < 1:
        raise LayerscopeError(f"vocab_size must be >= 1, got {vocab_size}")
    ids, mask, single = _prepare(input_ids, attention_mask, p)
    generator = torch.Generator().manual_seed(int(seed))
    replace = _replace_where(ids, mask, p, generator)
    vocabulary = torch.randint(int(vocab_size), ids.shape, generator=generator).to(ids.device, ids.dtype)
    out = torch.where(replace, vocabulary, ids)
    return out.squeeze(0) if single else out
