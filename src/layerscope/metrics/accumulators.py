"""Streaming accumulators for token-level metrics, fed by the extraction engine's token hook.

Contract with the extraction engine: once per batch it calls ``hook(states, lengths, indices)`` with

- ``states``: Tensor (layers, B, T, D) in the model's dtype, right-padded; for prompt b the first
  ``lengths[b]`` positions are real tokens and the rest are zero;
- ``lengths``: int64 Tensor (B,);
- ``indices``: int64 Tensor (B,), the position of each prompt in the user's list of ``n_texts`` texts.

Each call does batched float64 math over blocks of layers x prompts (sized by ``max_chunk_bytes`` so
that the float64 working set stays in cache; no Python loop over single prompts, tokens or layers
unless one of them alone fills a block), on the device of ``states``, and keeps only per-prompt
scalars: token states are never stored. ``compute()`` returns per-layer means over the
used prompts plus the per-prompt values (NaN for prompts never seen or skipped) and the counts.

A prompt is *skipped* at a layer when the metric is undefined there (prompt entropy: fewer than
2 tokens; curvature: fewer than 3 tokens or no pair of non-zero steps; prefix entropy: fewer than
t tokens) or when its states at that layer contain NaN/inf (also counted in ``n_nonfinite``).
Seeing a prompt index twice overwrites its earlier values.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from layerscope.errors import LayerscopeError
from layerscope.metrics import functional as F

__all__ = [
    "CurvatureAccumulator",
    "PrefixEntropyAccumulator",
    "PerPromptAccumulator",
    "PrefixEntropyValues",
    "PromptEntropyAccumulator",
    "TokenMetricValues",
    "TokenMetrics",
]

DEFAULT_CHUNK_BYTES = 8 * 2**20
#: On a GPU, a block of layers x prompts may take this fraction of the memory still available on the
#: device: there every operation costs a launch, and small blocks multiply them (with 8 MB blocks
#: prompt entropy took 60x the forward pass on an H200, curvature 14x longer than with 1 GB blocks).
GPU_CHUNK_FRACTION = 0.25


@dataclass
class TokenMetricValues:
    """Result of a token-level accumulator.

    Attributes
    ----------
    metric : str
        Registry name (``"prompt_entropy"``, ``"curvature"``).
    mean : dict of str to ndarray (layers,)
        Per normalization, the mean over used prompts (NaN where none was used).
    per_prompt : dict of str to ndarray (layers, n_texts)
        Per normalization, each prompt's value; NaN where never seen or skipped.
    n_used, n_skipped, n_nonfinite : ndarray of int64 (layers,)
        Prompts in the mean; prompts seen but skipped; of those, skipped for NaN/inf states.
    """

    metric: str
    mean: dict[str, np.ndarray]
    per_prompt: dict[str, np.ndarray]
    n_used: np.ndarray
    n_skipped: np.ndarray
    n_nonfinite: np.ndarray

    def records(self) -> list[dict[str, Any]]:
        """Long-format rows ``{layer, metric, normalization, value, n_used, n_skipped}``."""
        return [
            {
                "layer": layer,
                "metric": self.metric,
                "normalization": normalization,
                "value": float(values[layer]),
                "n_used": int(self.n_used[layer]),
                "n_skipped": int(self.n_skipped[layer]),
            }
            for normalization, values in self.mean.items()
            for layer in range(len(values))
        ]


@dataclass
class PrefixEntropyValues:
    """Result of :class:`PrefixEntropyAccumulator`: entropy of the first t tokens.

    Attributes
    ----------
    prefix_lengths : tuple of int
    mean : dict of str to ndarray (n_prefixes, layers)
    per_prompt : dict of str to ndarray (n_prefixes, layers, n_texts)
        NaN where the prompt was not seen, has fewer than t tokens, or had NaN/inf states.
    n_used, n_skipped : ndarray of int64 (n_prefixes, layers)
    metric : str
    """

    prefix_lengths: tuple[int, ...]
    mean: dict[str, np.ndarray]
    per_prompt: dict[str, np.ndarray]
    n_used: np.ndarray
    n_skipped: np.ndarray
    metric: str = "prefix_entropy"

    def records(self) -> list[dict[str, Any]]:
        """Long-format rows ``{prefix_length, layer, metric, normalization, value, n_used, n_skipped}``."""
        return [
            {
                "prefix_length": t,
                "layer": layer,
                "metric": self.metric,
                "normalization": normalization,
                "value": float(values[i, layer]),
                "n_used": int(self.n_used[i, layer]),
                "n_skipped": int(self.n_skipped[i, layer]),
            }
            for normalization, values in self.mean.items()
            for i, t in enumerate(self.prefix_lengths)
            for layer in range(values.shape[1])
        ]


def _summarize(values: Tensor, seen: Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(..., n_texts) per-prompt values -> mean (...,), n_used, n_skipped as numpy."""
    summary = F.summarize_prompts(values, seen)
    return summary.mean.numpy(), summary.n_used.numpy(), summary.n_skipped.numpy()


@dataclass
class _Batch:
    """One validated batch, shared by every accumulator of a :class:`TokenMetrics`."""

    lengths: Tensor  # (B,) on the states' device
    mask: Tensor  # (B, T) bool
    indices: Tensor  # (B,) on CPU
    n_layers: int
    hidden_size: int


@dataclass
class _Chunk:
    """A block of layers x prompts of a batch, in float64, with non-finite prompts zeroed."""

    states: Tensor  # (c, b, T, D) float64
    layers: slice
    prompts: slice
    mask: Tensor  # (b, T) bool, or (c, b, T) when outlier tokens were dropped per layer
    indices: Tensor  # (b,) CPU


class _TokenAccumulator:
    """Shared state handling: lazily allocated (layers, n_texts) arrays, validation, chunking."""

    metric = ""

    def __init__(self, n_texts: int, max_chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> None:
        if int(n_texts) < 1:
            raise LayerscopeError(f"n_texts must be >= 1, got {n_texts}")
        self.n_texts = int(n_texts)
        self.max_chunk_bytes = int(max_chunk_bytes)
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated."""
        self.n_layers_: int | None = None
        self.hidden_size_: int | None = None
        self.seen_ = torch.zeros(self.n_texts, dtype=torch.bool)
        self.lengths_ = torch.zeros(1, self.n_texts, dtype=torch.int64)  # (layers, n_texts) once started
        self.nonfinite_: Tensor | None = None  # (layers, n_texts) bool

    def __call__(self, states: Tensor, lengths: Tensor, indices: Tensor) -> None:
        """Consume one batch (see the module docstring for the contract)."""
        TokenMetrics([self], max_chunk_bytes=self.max_chunk_bytes)(states, lengths, indices)

    # -- used by TokenMetrics ------------------------------------------------------------------

    def _start(self, batch: _Batch) -> None:
        if self.n_layers_ is None:
            self.n_layers_, self.hidden_size_ = batch.n_layers, batch.hidden_size
            self.nonfinite_ = torch.zeros(batch.n_layers, self.n_texts, dtype=torch.bool)
            self.lengths_ = torch.zeros(batch.n_layers, self.n_texts, dtype=torch.int64)
            self._allocate(batch.n_layers)
        elif (self.n_layers_, self.hidden_size_) != (batch.n_layers, batch.hidden_size):
            raise LayerscopeError(
                f"{self.metric} accumulator got states with {batch.n_layers} layers x {batch.hidden_size} "
                f"features after {self.n_layers_} x {self.hidden_size_}"
            )
        if int(batch.indices.max()) >= self.n_texts:
            raise LayerscopeError(f"prompt index {int(batch.indices.max())} out of range for n_texts={self.n_texts}")
        self.seen_[batch.indices] = True
        self.lengths_[:, batch.indices] = batch.lengths.cpu()
        assert self.nonfinite_ is not None
        self.nonfinite_[:, batch.indices] = False

    def _allocate(self, n_layers: int) -> None:
        raise NotImplementedError

    def _arrays(self) -> dict[str, Tensor]:
        """The per-prompt arrays (last axis: ``n_texts``) that hold what was accumulated."""
        raise NotImplementedError

    def options(self) -> dict[str, Any]:
        """The options that decide the values (for the key of persisted state); not the chunk size."""
        skip = {"n_texts", "max_chunk_bytes", "spec"}
        options = {key: value for key, value in vars(self).items()
                   if not key.endswith("_") and key not in skip
                   and isinstance(value, (bool, int, float, str, tuple, list, dict, type(None)))}
        return {"class": type(self).__name__, "metric": self.metric, **options}

    def state(self, positions: np.ndarray) -> dict[str, np.ndarray]:
        """What was accumulated for the prompts at ``positions`` (last axis in that order), for a checkpoint."""
        self._check_computable()
        assert self.nonfinite_ is not None
        arrays = {f"array.{name}": value for name, value in self._arrays().items()}
        arrays.update(seen=self.seen_, lengths=self.lengths_, nonfinite=self.nonfinite_)
        out = {name: value[..., torch.as_tensor(positions)].numpy() for name, value in arrays.items()}
        out["shape"] = np.array([self.n_layers_, self.hidden_size_])
        return out

    def load_state(self, state: dict[str, np.ndarray], positions: np.ndarray) -> None:
        """Restore :meth:`state` (taken at other positions of the same prompts) at ``positions``."""
        n_layers, hidden_size = (int(value) for value in state["shape"])
        self.reset()
        self.n_layers_, self.hidden_size_ = n_layers, hidden_size
        self.nonfinite_ = torch.zeros(n_layers, self.n_texts, dtype=torch.bool)
        self.lengths_ = torch.zeros(n_layers, self.n_texts, dtype=torch.int64)
        self._allocate(n_layers)
        index = torch.as_tensor(positions)
        for name, target in self._arrays().items():
            target[..., index] = torch.from_numpy(state[f"array.{name}"])
        self.seen_[index] = torch.from_numpy(state["seen"])
        self.lengths_[:, index] = torch.from_numpy(state["lengths"])
        self.nonfinite_[:, index] = torch.from_numpy(state["nonfinite"])

    def _mark_nonfinite(self, chunk: _Chunk, nonfinite: Tensor) -> None:
        """Record (c, b) prompts of the chunk whose states had NaN/inf."""
        assert self.nonfinite_ is not None
        self.nonfinite_[chunk.layers, chunk.indices] = self.nonfinite_[chunk.layers, chunk.indices] | nonfinite

    def compute(self) -> Any:
        """Per-layer means, per-prompt values and counts."""
        raise NotImplementedError

    def _update(self, chunk: _Chunk) -> None:
        """Compute the chunk's per-prompt values and store them at (chunk.layers, chunk.indices)."""
        raise NotImplementedError

    def _bytes_per_prompt(self, n_tokens: int, hidden_size: int) -> int:
        """Peak float64 bytes of ``_update`` per (layer, prompt), for chunking."""
        return 8 * 4 * n_tokens * hidden_size

    @staticmethod
    def _nan_array(n_layers: int, n_texts: int) -> Tensor:
        return torch.full((n_layers, n_texts), math.nan, dtype=torch.float64)

    def _mask_nonfinite(self, values: Tensor) -> Tensor:
        """NaN out (..., layers, n_texts) values whose states were non-finite."""
        assert self.nonfinite_ is not None
        return values.masked_fill(self.nonfinite_, math.nan)

    def _check_computable(self) -> None:
        if self.n_layers_ is None:
            raise LayerscopeError(f"{self.metric}: no batch was accumulated")

    def _summaries(self, per_prompt: dict[str, Tensor]) -> tuple[dict[str, np.ndarray], Any, Any]:
        """Means of each normalization's per-prompt values, and the (shared) counts of used and skipped prompts."""
        means, n_used, n_skipped = {}, None, None
        for name, values in per_prompt.items():
            means[name], n_used, n_skipped = _summarize(values, self.seen_)
        return means, n_used, n_skipped

    def _values(self, per_prompt: dict[str, Tensor]) -> TokenMetricValues:
        """The :class:`TokenMetricValues` of per-prompt values (normalization -> (layers, n_texts))."""
        means, n_used, n_skipped = self._summaries(per_prompt)
        assert self.nonfinite_ is not None
        return TokenMetricValues(
            self.metric, means, {k: v.numpy() for k, v in per_prompt.items()}, n_used, n_skipped,
            (self.nonfinite_ & self.seen_).sum(dim=-1).numpy(),
        )


class _EntropyAccumulator(_TokenAccumulator):
    """Shared options and memory estimate of the matrix-entropy accumulators."""

    def __init__(self, n_texts: int, alpha: float, normalizations: Sequence[str], tol: float, clamp_gram: bool,
                 max_chunk_bytes: int) -> None:
        self.alpha = F._check_alpha(alpha)
        self.normalizations = tuple(F._check_normalization(name) for name in normalizations)
        self.tol = tol
        self.clamp_gram = clamp_gram
        super().__init__(n_texts, max_chunk_bytes)

    def _arrays(self) -> dict[str, Tensor]:
        return {"entropy": self.entropy_}

    def _bytes_per_prompt(self, n_tokens: int, hidden_size: int) -> int:
        side = min(n_tokens, hidden_size)
        return 8 * (3 * n_tokens * hidden_size + 3 * side * side)

    def _normalized(self, lengths: Tensor) -> dict[str, Tensor]:
        """The accumulated raw entropies (non-finite states NaN) in every normalization, prompt lengths ``lengths``."""
        raw = self._mask_nonfinite(self.entropy_)
        return {name: F.normalize_entropy(raw, name, lengths, int(self.hidden_size_ or 0)) for name in self.normalizations}


class PromptEntropyAccumulator(_EntropyAccumulator):
    """Prompt entropy per layer and prompt, accumulated batch by batch.

    Parameters
    ----------
    n_texts : int
        Number of texts the indices refer to.
    alpha : float, default 1
        Entropy order.
    normalizations : sequence of str, default all of :data:`~layerscope.metrics.functional.NORMALIZATIONS`
        Normalizations to report; each prompt is normalized with its own length ``T``
        (``maxEntropy`` = S / log(min(T, D))) before averaging.
    tol : float
        Relative eigenvalue threshold.
    clamp_gram : bool, default False
        The authors' clamp of negative Gram entries.
    max_chunk_bytes : int
        Target float64 working set of one block of layers x prompts.
    """

    metric = "prompt_entropy"

    def __init__(
        self,
        n_texts: int,
        alpha: float = 1.0,
        normalizations: Sequence[str] = F.NORMALIZATIONS,
        *,
        tol: float = F.DEFAULT_TOL,
        clamp_gram: bool = False,
        max_chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    ) -> None:
        super().__init__(n_texts, alpha, normalizations, tol, clamp_gram, max_chunk_bytes)

    def _allocate(self, n_layers: int) -> None:
        self.entropy_ = self._nan_array(n_layers, self.n_texts)  # raw entropies (layers, n_texts)

    def _update(self, chunk: _Chunk) -> None:
        raw = F._prompt_entropies(chunk.states, chunk.mask, self.alpha, self.tol, self.clamp_gram)  # (c, b)
        self.entropy_[chunk.layers, chunk.indices] = raw.cpu()

    def compute(self) -> TokenMetricValues:
        """Per-layer means and per-prompt values for every requested normalization."""
        self._check_computable()
        return self._values(self._normalized(self.lengths_))


class CurvatureAccumulator(_TokenAccumulator):
    """Curvature (radians) per layer and prompt, accumulated batch by batch.

    Parameters
    ----------
    n_texts : int
    abs_cos : bool, default False
        The authors' ``|cos|`` (angles folded into [0, pi/2]).
    max_chunk_bytes : int
    """

    metric = "curvature"

    def __init__(self, n_texts: int, abs_cos: bool = False, *, max_chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> None:
        self.abs_cos = abs_cos
        super().__init__(n_texts, max_chunk_bytes)

    def _allocate(self, n_layers: int) -> None:
        self.curvature_ = self._nan_array(n_layers, self.n_texts)

    def _arrays(self) -> dict[str, Tensor]:
        return {"curvature": self.curvature_}

    def _update(self, chunk: _Chunk) -> None:
        self.curvature_[chunk.layers, chunk.indices] = F._curvatures(chunk.states, chunk.mask, self.abs_cos).cpu()

    def compute(self) -> TokenMetricValues:
        """Per-layer means and per-prompt values (normalization ``raw``)."""
        self._check_computable()
        return self._values({"raw": self._mask_nonfinite(self.curvature_)})


class PrefixEntropyAccumulator(_EntropyAccumulator):
    """Entropy of the first ``t`` tokens of each prompt, for each ``t`` in ``prefix_lengths`` (SPEC 7.5).

    A prompt shorter than ``t`` is skipped at ``t``, so each point of the curve is an entropy over
    exactly ``t`` tokens. Normalizations use ``T = t``.

    Parameters
    ----------
    n_texts : int
    prefix_lengths : sequence of int (>= 2)
    alpha : float, default 1
    normalizations : sequence of str, default ("raw", "maxEntropy")
    tol, clamp_gram, max_chunk_bytes
        As in :class:`PromptEntropyAccumulator`.
    """

    metric = "prefix_entropy"

    def __init__(
        self,
        n_texts: int,
        prefix_lengths: Sequence[int],
        alpha: float = 1.0,
        normalizations: Sequence[str] = ("raw", "maxEntropy"),
        *,
        tol: float = F.DEFAULT_TOL,
        clamp_gram: bool = False,
        max_chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    ) -> None:
        self.prefix_lengths = tuple(int(t) for t in prefix_lengths)
        if not self.prefix_lengths or min(self.prefix_lengths) < 2:
            raise LayerscopeError(f"prefix lengths must be a non-empty list of integers >= 2, got {prefix_lengths}")
        super().__init__(n_texts, alpha, normalizations, tol, clamp_gram, max_chunk_bytes)

    def _allocate(self, n_layers: int) -> None:
        self.entropy_ = torch.full((len(self.prefix_lengths), n_layers, self.n_texts), math.nan, dtype=torch.float64)

    def _update(self, chunk: _Chunk) -> None:
        n_real = chunk.mask.sum(dim=-1)
        for i, t in enumerate(self.prefix_lengths):
            width = min(t, chunk.states.shape[-2])
            raw = F._prompt_entropies(
                chunk.states[..., :width, :], chunk.mask[..., :width], self.alpha, self.tol, self.clamp_gram
            )
            self.entropy_[i, chunk.layers, chunk.indices] = torch.where(n_real >= t, raw, math.nan).cpu()

    def compute(self) -> PrefixEntropyValues:
        """Means (n_prefixes, layers) and per-prompt values (n_prefixes, layers, n_texts)."""
        self._check_computable()
        per_prompt = self._normalized(torch.tensor(self.prefix_lengths, dtype=torch.float64)[:, None, None])
        means, n_used, n_skipped = self._summaries(per_prompt)
        return PrefixEntropyValues(
            self.prefix_lengths, means, {k: v.numpy() for k, v in per_prompt.items()}, n_used, n_skipped
        )


def _compact(block: Tensor, keep: Tensor) -> tuple[Tensor, Tensor]:
    """Move each (layer, prompt)'s kept tokens to the front, in order, and zero the rest.

    ``block`` (c, b, T, D), ``keep`` (c, b, T) bool -> the compacted block and its mask (c, b, T).
    """
    order = torch.argsort((~keep).to(torch.int8), dim=-1, stable=True)  # kept first, original order
    compact = torch.gather(block, -2, order.unsqueeze(-1).expand_as(block))
    mask = torch.arange(keep.shape[-1], device=keep.device) < keep.sum(dim=-1, keepdim=True)
    return compact * mask.unsqueeze(-1), mask


@dataclass
class TokenMetrics:
    """Several token accumulators fed by one hook: states are validated and cast to float64 once.

    Parameters
    ----------
    accumulators : iterable of accumulators
        E.g. ``[PromptEntropyAccumulator(n), CurvatureAccumulator(n)]``.
    max_chunk_bytes : int, optional
        Target float64 working set of one block of layers x prompts (the largest member's need
        counts). Default: :data:`DEFAULT_CHUNK_BYTES` on the CPU (blocks stay in cache), and
        :data:`GPU_CHUNK_FRACTION` of the device's available memory on a GPU. The values do not
        depend on it.

    Examples
    --------
    >>> hook = TokenMetrics([PromptEntropyAccumulator(len(texts)), CurvatureAccumulator(len(texts))])
    >>> # the extraction engine calls hook(states, lengths, indices) once per batch
    >>> results = hook.compute()  # {"prompt_entropy": TokenMetricValues, "curvature": ...}
    """

    accumulators: Iterable[_TokenAccumulator]
    max_chunk_bytes: int | None = None
    _members: list[_TokenAccumulator] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._members = list(self.accumulators)
        names = [member.metric for member in self._members]
        if len(set(names)) != len(names):
            raise LayerscopeError(f"duplicate token metrics: {names}")

    def __call__(self, states: Tensor, lengths: Tensor, indices: Tensor, keep: Tensor | None = None) -> None:
        """Consume one batch: ``states`` (layers, B, T, D), ``lengths`` (B,), ``indices`` (B,).

        ``keep`` (layers, B, T) bool, optional: the tokens to measure at each layer (the extraction's
        pooled tokens when it drops outlier tokens); the others are left out, the kept ones keep their
        order (curvature steps from one kept token to the next).
        """
        if not self._members:
            return
        if not isinstance(states, Tensor) or states.ndim != 4:
            shape = tuple(states.shape) if isinstance(states, Tensor) else type(states).__name__
            raise LayerscopeError(f"token states must be a tensor (layers, batch, tokens, features), got {shape}")
        n_layers, n_prompts, n_tokens, hidden_size = states.shape
        lengths = torch.as_tensor(lengths, device=states.device).long()
        indices = torch.as_tensor(indices).long().cpu()
        if lengths.shape != (n_prompts,) or indices.shape != (n_prompts,):
            raise LayerscopeError(f"lengths and indices must have shape ({n_prompts},)")
        if n_prompts == 0:
            return
        if bool(((lengths < 0) | (lengths > n_tokens)).any()) or bool((indices < 0).any()):
            raise LayerscopeError("lengths must lie in [0, tokens] and indices be >= 0")
        mask = torch.arange(n_tokens, device=states.device) < lengths.unsqueeze(-1)  # (B, T)
        batch = _Batch(lengths, mask, indices, n_layers, hidden_size)
        for member in self._members:
            member._start(batch)
        # On the CPU small blocks of (layers x prompts) keep the float64 working set in cache: the
        # elementwise passes are memory-bound, and one huge float64 copy of the batch is several
        # times slower. On a GPU blocks are as large as memory allows (see GPU_CHUNK_FRACTION).
        budget = _chunk_bytes(states.device) if self.max_chunk_bytes is None else int(self.max_chunk_bytes)
        per_prompt = max(member._bytes_per_prompt(n_tokens, hidden_size) for member in self._members)
        prompt_step = max(1, min(n_prompts, budget // max(1, per_prompt)))
        layer_step = max(1, budget // max(1, per_prompt * prompt_step))
        for layer_start in range(0, n_layers, layer_step):
            layers = slice(layer_start, min(layer_start + layer_step, n_layers))
            for prompt_start in range(0, n_prompts, prompt_step):
                prompts = slice(prompt_start, min(prompt_start + prompt_step, n_prompts))
                block = states[layers, prompts].to(torch.float64)  # (c, b, T, D)
                # A float64 sum of model-dtype values cannot overflow: it is non-finite iff an entry is.
                nonfinite = ~torch.isfinite(block.sum(dim=(-2, -1)))  # (c, b)
                any_nonfinite = bool(nonfinite.any())
                if any_nonfinite:  # zero them so the batched math stays finite; their values are NaN-ed
                    block = torch.nan_to_num(block, nan=0.0, posinf=0.0, neginf=0.0)
                chunk_mask = mask[prompts]
                if keep is not None:
                    block, chunk_mask = _compact(block, keep[layers, prompts].to(block.device) & chunk_mask)
                chunk = _Chunk(block, layers, prompts, chunk_mask, indices[prompts])
                for member in self._members:
                    if keep is not None:
                        member.lengths_[layers, chunk.indices] = chunk_mask.sum(dim=-1).cpu()
                    member._update(chunk)
                    if any_nonfinite:
                        member._mark_nonfinite(chunk, nonfinite.cpu())

    def key(self) -> str:
        """A hash of the members and their options: what persisted state must match to be reused."""
        import hashlib
        import json

        payload = json.dumps([member.options() for member in self._members], sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def state(self, positions: np.ndarray) -> dict[str, np.ndarray]:
        """Every member's state at ``positions`` (see :meth:`_TokenAccumulator.state`), one flat dict."""
        return {f"{index}.{name}": value for index, member in enumerate(self._members)
                for name, value in member.state(positions).items()}

    def load_state(self, state: dict[str, np.ndarray], positions: np.ndarray) -> None:
        """Restore :meth:`state` at ``positions``."""
        for index, member in enumerate(self._members):
            prefix = f"{index}."
            member.load_state({name[len(prefix):]: value for name, value in state.items() if name.startswith(prefix)},
                              positions)

    def compute(self) -> dict[str, Any]:
        """``{metric name: values}`` for every member (see each accumulator's ``compute``)."""
        return {member.metric: member.compute() for member in self._members}

    def reset(self) -> None:
        """Reset every member."""
        for member in self._members:
            member.reset()


class PerPromptAccumulator(_TokenAccumulator):
    """Any registered token metric, streamed: its function's per-prompt values, block by block.

    The registry builds one for a token metric that declares no accumulator of its own, so a new
    token metric needs only its per-prompt function (``(..., prompts, tokens, d), lengths ->
    (..., prompts)``) and a registry entry.

    Parameters
    ----------
    n_texts : int
    spec : MetricSpec
        The metric (its :meth:`~layerscope.metrics.registry.MetricSpec.call` and ``normalize``).
    options : mapping
        Its resolved options.
    max_chunk_bytes : int
    """

    def __init__(self, n_texts: int, spec: Any, options: dict[str, Any], *,
                 max_chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> None:
        self.spec = spec
        self.metric = spec.name
        self.metric_options = dict(options)
        super().__init__(n_texts, max_chunk_bytes)

    def _allocate(self, n_layers: int) -> None:
        self.values_ = {label: self._nan_array(n_layers, self.n_texts) for label in self.spec.outputs}

    def _arrays(self) -> dict[str, Tensor]:
        return dict(self.values_)

    def options(self) -> dict[str, Any]:
        return {**super().options(), "function": f"{self.spec.function.__module__}.{self.spec.function.__qualname__}"}

    def _update(self, chunk: _Chunk) -> None:
        values = self.spec.call(chunk.states, chunk.mask.sum(dim=-1), **self.metric_options)  # label -> (c, b)
        for label, value in values.items():
            self.values_[label][chunk.layers, chunk.indices] = value.to(torch.float64).cpu()

    def compute(self) -> TokenMetricValues:
        """Per-layer means and per-prompt values of every reported label."""
        self._check_computable()
        raw = {label: self._mask_nonfinite(values) for label, values in self.values_.items()}
        return self._values(self.spec.normalize(raw, self.metric_options.get("normalizations", ()), self.lengths_,
                                                int(self.hidden_size_ or 0)))


def _chunk_bytes(device: torch.device) -> int:
    """Default block budget: cache-sized on the CPU, a fraction of the available memory on a GPU
    (free on the device plus what PyTorch's allocator holds unused)."""
    if device.type != "cuda":
        return DEFAULT_CHUNK_BYTES
    free, _ = torch.cuda.mem_get_info(device)
    cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return max(DEFAULT_CHUNK_BYTES, int(GPU_CHUNK_FRACTION * (free + cached)))
