"""Token hooks of the experiments: prompt and prefix entropy in the extraction loop, first tokens left out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from layerscope.errors import LayerscopeError

__all__ = ["SkipFirstTokens", "token_hook"]


def token_hook(
    n_texts: int,
    normalizations: Sequence[str] = ("maxEntropy", "raw"),
    prefix_lengths: Sequence[int] | None = None,
    skip_tokens: int = 0,
) -> Any:
    """A :class:`~layerscope.metrics.accumulators.TokenMetrics` hook for prompt (and prefix) entropy.

    The first normalization is the one reported by default (``maxEntropy``, SPEC section 4). With
    ``skip_tokens`` the hook is wrapped in :class:`SkipFirstTokens`.
    """
    from layerscope.metrics.accumulators import (
        PrefixEntropyAccumulator,
        PromptEntropyAccumulator,
        TokenMetrics,
    )

    members: list[Any] = [PromptEntropyAccumulator(n_texts, normalizations=tuple(normalizations))]
    if prefix_lengths:
        members.append(PrefixEntropyAccumulator(n_texts, tuple(prefix_lengths), normalizations=tuple(normalizations)))
    metrics = TokenMetrics(members)
    return SkipFirstTokens(metrics, skip_tokens) if skip_tokens else metrics


class SkipFirstTokens:
    """Token-hook wrapper that leaves the first ``k`` tokens of every prompt out of the token metrics.

    In Llama-family models the first token of a prompt carries a "massive activation" (an attention
    sink) from some middle block on, with a norm up to hundreds of times the others'; after the
    centering of :func:`~layerscope.metrics.functional.normalize` that single row dominates the Gram
    matrix and prompt entropy collapses. ``k = 1`` measures the other tokens only. Relies on the
    extraction's right padding: dropping the first ``k`` positions keeps each prompt's real tokens
    first.

    Parameters
    ----------
    hook : callable
        A ``hook(states, lengths, indices)`` with ``compute()`` (e.g. a ``TokenMetrics``).
    k : int
        Tokens to drop at the start of each prompt (0: the hook is called unchanged).
    """

    def __init__(self, hook: Any, k: int) -> None:
        if int(k) < 0:
            raise LayerscopeError(f"skip_tokens must be >= 0, got {k}")
        self.hook = hook
        self.k = int(k)

    def __call__(self, states: Any, lengths: Any, indices: Any) -> None:
        if self.k == 0:
            self.hook(states, lengths, indices)
            return
        if states.shape[2] > self.k:
            states = states[:, :, self.k:]
        else:  # every prompt is consumed: one zero position, no real token
            states = states[:, :, :1] * 0
        self.hook(states, (lengths - self.k).clamp_min(0), indices)

    def compute(self) -> Any:
        """The wrapped hook's results."""
        return self.hook.compute()
