"""The single-pass extraction engine: one forward pass per batch gives every layer of every text.

Hooks on the blocks collect the residual stream of every layer (SPEC section 3: layer 0 = input of
the first block, layer l = output of block l), so the raw last block is kept even where Hugging Face
returns it final-normed. Per batch, every layer is pooled into the output array (or the disk cache),
and an optional token hook sees each prompt's real tokens for every layer (what prompt entropy and
curvature consume) without them ever being stored.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from layerscope.errors import LayerscopeError
from layerscope.extract.cache import EmbeddingCache, cache_key, texts_hash
from layerscope.extract.pooling import check_pooling, outlier_tokens, pool
from layerscope.models.loading import LoadedModel

logger = logging.getLogger(__name__)

TokenHook = Callable[..., Any]

# Batch sizing when batch_size="auto": a token budget per batch (padded tokens) and a cap on the
# (layers, batch, tokens, dim) float32 buffer of hidden states.
_TOKEN_BUDGET = {"cpu": 8192, "cuda": 65536}
_BUFFER_BYTES = {"cpu": 1.5 * 2**30, "cuda": 8 * 2**30}
_MAX_BATCH = {"cpu": 64, "cuda": 512}
#: Seconds between checkpoints of the cache (and of the token hook's state) during a long pass.
CHECKPOINT_SECONDS = float(os.environ.get("LAYERSCOPE_CHECKPOINT_SECONDS", 10))


@dataclass
class Extraction:
    """Pooled embeddings of every layer and how they were made.

    Attributes
    ----------
    pooled : np.ndarray, shape (n_layers, n_texts, dim)
        One row per kept text (empty texts are skipped), one slice per layer in ``layers``.
    layers : list of int
        Canonical layer index of each slice (0 = embeddings, L = last block).
    texts : list of str
        The kept texts, in the order of ``pooled``'s rows.
    kept : np.ndarray of int
        Position of each kept text in the input list.
    record : dict
        Model id, revision, pooling, final_norm, max_length, counts of skipped texts, timing...
    from_cache : bool
        True when the embeddings were read from the disk cache (the model did not run).
    """

    pooled: np.ndarray
    layers: list[int]
    texts: list[str]
    kept: np.ndarray
    record: dict[str, Any] = field(default_factory=dict)
    from_cache: bool = False

    @property
    def num_layers(self) -> int:
        """L of the model (the last canonical layer index)."""
        return int(self.record["num_layers"])

    def layer(self, layer: int) -> np.ndarray:
        """Embeddings of one canonical layer, shape (n_texts, dim)."""
        try:
            return self.pooled[self.layers.index(layer)]
        except ValueError:
            raise LayerscopeError(f"layer {layer} was not extracted; available: {self.layers}") from None

    def tensor(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """All layers as one tensor, shape (n_layers, n_texts, dim)."""
        # imported here, so that importing the extraction engine does not import the metrics
        from layerscope.metrics.functional import as_tensor

        return as_tensor(self.pooled, dtype)  # the memory-mapped cache is read-only: copied

    def depth_pct(self) -> list[float]:
        return [100.0 * layer / self.num_layers for layer in self.layers]


def resolve_layers(layers: str | int | Sequence[int], num_layers: int) -> list[int]:
    """Canonical layer indices from ``"all"``, ``"last"``, an int or a list (negatives count from L)."""
    if isinstance(layers, str):
        if layers == "all":
            return list(range(num_layers + 1))
        if layers == "last":
            return [num_layers]
        try:
            layers = [int(part) for part in layers.split(",")]
        except ValueError:
            raise LayerscopeError(f"layers must be 'all', 'last' or a comma list of ints, got '{layers}'") from None
    if isinstance(layers, int):
        layers = [layers]
    resolved = []
    for layer in layers:
        index = layer + num_layers + 1 if layer < 0 else layer
        if not 0 <= index <= num_layers:
            raise LayerscopeError(f"layer {layer} is out of range: this model has layers 0..{num_layers}")
        resolved.append(index)
    return resolved


def _hook_takes_indices(hook: TokenHook) -> bool:
    try:
        parameters = list(inspect.signature(hook).parameters.values())
    except (TypeError, ValueError):
        return True
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 3 or any(p.kind == p.VAR_POSITIONAL for p in parameters)


def _is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, torch.OutOfMemoryError):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


class _StopForward(Exception):
    """Raised by the capture after the last layer wanted: the rest of the forward pass is not needed."""


class _LayerCapture:
    """Forward hooks that pool every canonical layer as the forward pass produces it.

    Each layer's (batch, tokens, dim) output is pooled the moment its block returns, while it is
    fresh, and (when token states are wanted) copied into one (layers, batch, tokens, dim) buffer
    that lives across batches: no stack of all layers is allocated per batch, and the pooling reads
    each layer once without the transposed copy a single einsum over the stack would make.
    """

    def __init__(self, model: LoadedModel, pooling: str, keep_tokens: bool,
                 layers: Sequence[int] | None = None, outlier_factor: float | None = None) -> None:
        from layerscope.models.adapters import block_output

        self.outlier_factor = outlier_factor
        self.layers = list(range(model.num_layers + 1)) if layers is None else sorted(layers)
        self.slot = {layer: position for position, layer in enumerate(self.layers)}
        self.n_layers = len(self.layers)
        # Without token states nothing needs the blocks after the last kept layer: the pass stops there.
        last = self.layers[-1]
        self.stop_after = last if not keep_tokens and last < model.num_layers else None
        self.pooling = pooling
        self.keep_tokens = keep_tokens
        self.final_norm = model.final_norm_module if model.final_norm == "all" else None
        parameters = list(self.final_norm.parameters()) if self.final_norm is not None else []
        self.norm_device = parameters[0].device if parameters else None  # the last device under device_map
        self.active = False
        self.mask: torch.Tensor | None = None
        self.pooled: torch.Tensor | None = None  # (layers, batch, dim) float32
        self.buffer: torch.Tensor | None = None  # (layers, batch, tokens, dim) view of _storage
        self.keep: torch.Tensor | None = None  # (layers, batch, tokens) bool: tokens pooled (outliers dropped)
        self._storage: torch.Tensor | None = None
        self.seen = [False] * self.n_layers
        blocks = model.blocks

        def first_input(_module: Any, args: tuple, kwargs: dict) -> None:
            self._take(0, args[0] if args else kwargs["hidden_states"])

        def make_output_hook(index: int) -> Callable[..., None]:
            def output_hook(_module: Any, _args: Any, output: Any) -> None:
                self._take(index, block_output(output))

            return output_hook

        self.handles = [blocks[0].register_forward_pre_hook(first_input, with_kwargs=True)]
        self.handles += [block.register_forward_hook(make_output_hook(i + 1)) for i, block in enumerate(blocks)]

    def begin(self, mask: torch.Tensor | None) -> None:
        """Set up the batch about to run: its mask (batch, tokens) on the model's device, or None when
        every token is real (images: patches and CLS)."""
        self.end()
        self.active = True
        self.mask = mask
        self.seen = [False] * self.n_layers

    def _take(self, layer: int, hidden: torch.Tensor) -> None:
        if not self.active:  # the model ran outside extract (e.g. a user's own forward)
            return
        index = self.slot.get(layer)
        if index is None:
            return
        if self.final_norm is not None:
            hidden = self.final_norm(hidden if self.norm_device is None else hidden.to(self.norm_device))
        batch, tokens, dim = hidden.shape
        if self.mask is None:
            self.mask = torch.ones(batch, tokens, dtype=torch.long, device=hidden.device)
        if self.pooled is None:
            self.pooled = torch.empty(self.n_layers, batch, dim, dtype=torch.float32, device=hidden.device)
            if self.keep_tokens:
                self.buffer = self._tokens_buffer((self.n_layers, batch, tokens, dim), hidden)
        as_float = hidden if hidden.dtype == torch.float32 else hidden.float()  # pool low precision in fp32
        mask = self.mask
        if self.outlier_factor is not None:
            if self.keep is None:
                self.keep = torch.zeros(self.n_layers, batch, tokens, dtype=torch.bool, device=hidden.device)
            mask = self.mask.to(hidden.device).bool() & ~outlier_tokens(as_float, self.mask, self.outlier_factor)
            self.keep[index] = mask.to(self.keep.device)
        # with device_map="map" blocks live on several devices (pool moves the mask to the layer's):
        # everything is gathered on the first
        self.pooled[index] = pool(as_float.unsqueeze(0), mask, self.pooling)[0].to(self.pooled.device)
        if self.buffer is not None:
            self.buffer[index].copy_(hidden)
        self.seen[index] = True
        if layer == self.stop_after:
            raise _StopForward()

    def _tokens_buffer(self, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """A view of the persistent storage; it only grows (the first, longest batch sets its size)."""
        needed = math.prod(shape)
        storage = self._storage
        if storage is None or storage.numel() < needed or storage.dtype != like.dtype or storage.device != like.device:
            self._storage = None  # free the old one before allocating the new one
            storage = self._storage = torch.empty(needed, dtype=like.dtype, device=like.device)
        return storage[:needed].view(shape)

    def result(self) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Pooled (layers, batch, dim) float32, token states (layers, batch, tokens, dim) if kept, and
        the tokens pooled (layers, batch, tokens) when outliers are dropped."""
        if not all(self.seen):
            missing = [i for i, seen in enumerate(self.seen) if not seen]
            raise RuntimeError(f"layers {missing} were not produced by the forward pass")
        assert self.pooled is not None and self.mask is not None
        pooled, states, mask, keep = self.pooled, self.buffer, self.mask, self.keep
        self.end()
        if states is not None:
            # exact zeros after each prompt's tokens, written only where there is padding
            batch_index, token_index = torch.nonzero(mask == 0, as_tuple=True)
            if len(batch_index):
                states[:, batch_index, token_index] = 0
        return pooled, states, keep

    def end(self) -> None:
        self.active = False
        self.mask = None
        self.pooled = None
        self.buffer = None
        self.keep = None

    def release(self) -> None:
        """Drop every tensor (after an out-of-memory error)."""
        self.end()
        self._storage = None

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


class TokenizedTexts:
    """Token ids of all texts as one flat vector with offsets (batches gather from it, no loops)."""

    def __init__(self, encoded: Sequence[Sequence[int]], pad_id: int) -> None:
        self.lengths = torch.tensor([len(ids) for ids in encoded], dtype=torch.long)
        self.flat = torch.tensor([int(token) for ids in encoded for token in ids], dtype=torch.long)
        self.offsets = torch.cumsum(self.lengths, 0) - self.lengths
        self.pad_id = int(pad_id)

    @classmethod
    def from_texts(cls, model: LoadedModel, texts: Sequence[str], max_length: int) -> TokenizedTexts:
        """Tokenize all texts at once with the model's tokenizer (special tokens added, truncated)."""
        tokenizer = model.tokenizer
        encoded = tokenizer(list(texts), truncation=True, max_length=max_length, add_special_tokens=True)
        return cls(encoded["input_ids"], tokenizer.pad_token_id)

    def batch(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded ``(input_ids, attention_mask)`` of the texts at ``rows``, gathered without loops."""
        lengths = self.lengths[rows]
        positions = torch.arange(int(lengths.max()))[None, :]
        mask = positions < lengths[:, None]
        gather = (self.offsets[rows][:, None] + positions).clamp_max(max(len(self.flat) - 1, 0))
        input_ids = torch.where(mask, self.flat[gather], self.pad_id)
        return input_ids, mask.long()


def plan_batches(
    lengths: torch.Tensor, rows: np.ndarray, batch_size: int | str, model: LoadedModel
) -> list[np.ndarray]:
    """Batches of rows sorted by length (longest first, so memory trouble shows up at once)."""
    order = rows[np.argsort(-lengths[rows].numpy(), kind="stable")]
    if batch_size != "auto":
        size = int(batch_size)
        if size < 1:
            raise LayerscopeError(f"batch_size must be a positive int or 'auto', got {batch_size}")
        return [order[i : i + size] for i in range(0, len(order), size)]
    device = "cuda" if model.device.type == "cuda" else "cpu"
    bytes_per_token = (model.num_layers + 1) * model.hidden_size * 4
    budget = min(_TOKEN_BUDGET[device], int(_BUFFER_BYTES[device] // bytes_per_token))
    batches, start = [], 0
    while start < len(order):
        longest = int(lengths[order[start]])
        size = max(1, min(_MAX_BATCH[device], budget // max(longest, 1)))
        batches.append(order[start : start + size])
        start += size
    return batches


def extract(
    model: LoadedModel,
    texts: Sequence[str],
    pooling: str = "mean",
    layers: str | int | Sequence[int] = "all",
    batch_size: int | str = "auto",
    max_length: int | None = None,
    cache_dir: str | None = None,
    token_hook: TokenHook | None = None,
    progress: bool = True,
    cache_dtype: str = "float32",
    outlier_tokens: float | None = None,
) -> Extraction:
    """Pooled embeddings of every layer, shape (L+1, N, D), from one forward pass per batch.

    Parameters
    ----------
    model : LoadedModel
        From :func:`layerscope.load_model` (its ``final_norm`` option applies).
    texts : sequence of str
        Empty or whitespace-only texts are skipped with a warning and counted in ``record``.
    pooling : {"mean", "last", "first"}
        Mask-weighted mean over real tokens, last real token, or first token (CLS).
    layers : "all", "last", int or list of int
        Layers to return (the cache always holds all of them).
    batch_size : int or "auto"
        ``"auto"`` packs length-sorted texts into batches under a token and memory budget. On out of
        memory a batch is halved and the run goes on.
    max_length : int, optional
        Truncation length in tokens (default: the model's own maximum where it configures one, e.g. a
        sentence-transformers model's ``max_seq_length``, else 512); the record says which.
    cache_dir : str, optional
        Folder of the embedding cache. Same model, revision, texts and options read it instead of the
        model; an interrupted run resumes from what it had written.
    token_hook : callable, optional
        Called once per batch as ``token_hook(states, lengths)`` or, if it takes three positional
        arguments, ``token_hook(states, lengths, indices)``: ``states`` (layers, batch, tokens, dim)
        holds each prompt's real tokens in its first ``lengths[b]`` positions and exact zeros after;
        ``indices`` are the positions of the prompts in ``texts``. A token hook needs token states,
        so the model always runs (the cache is still written). ``states`` lives in a buffer that the
        next batch reuses: use it during the call and copy what must be kept.
    progress : bool or str
        Show a progress bar (a string says what the pass counts, e.g. ``"16 views of 48 texts"``).
    cache_dtype : {"float32", "float16"}
        Storage precision of the pooled embeddings.
    outlier_tokens : float, optional
        Leave out of the pooling, at each layer, the tokens whose norm exceeds this many times the
        median token norm of their prompt (attention sinks carrying massive activations); the token
        hook gets the same selection (``keep=``), and ``record["outlier_tokens_dropped"]`` counts them.
    """
    pooling = check_pooling(pooling)
    if model.modality != "text":
        raise LayerscopeError(f"{model.model_id} is a {model.modality} model: use layerscope.extract.extract_images")
    if isinstance(texts, str):
        raise LayerscopeError("texts must be a list of strings, not one string")
    texts = list(texts)
    if not texts:
        raise LayerscopeError("no texts to extract: the text list is empty")
    kept = np.array([i for i, text in enumerate(texts) if isinstance(text, str) and text.strip()], dtype=np.int64)
    n_skipped = len(texts) - len(kept)
    if len(kept) == 0:
        raise LayerscopeError(f"all {len(texts)} texts are empty: nothing to extract")
    if n_skipped:
        logger.warning("skipped %d empty text(s) of %d", n_skipped, len(texts))
    kept_texts = [texts[i] for i in kept]
    check_cache_dtype(cache_dtype)
    max_length, max_length_source = resolve_max_length(model, max_length)
    selected = resolve_layers(layers, model.num_layers)
    key_fields = {
        "model_id": model.model_id,
        "revision": model.revision,
        "final_norm": model.final_norm,
        "pooling": pooling,
        "max_length": max_length,
        "dtype": str(model.dtype),
        "texts": texts_hash(kept_texts),
        "n_texts": len(kept_texts),
        "cache_dtype": cache_dtype,
    }
    if outlier_tokens is not None:
        if not outlier_tokens > 1:
            raise LayerscopeError(f"outlier_tokens must be a factor > 1 of the median token norm, got {outlier_tokens}")
        key_fields["outlier_tokens"] = float(outlier_tokens)
    key = cache_key(key_fields)
    record: dict[str, Any] = {
        **model.describe(),
        "pooling": pooling,
        "max_length": max_length,
        "max_length_source": max_length_source,
        "batch_size": batch_size,
        "n_texts": len(texts),
        "n_kept": len(kept),
        "n_skipped_empty": n_skipped,
        "texts_sha256": key_fields["texts"],
        "cache_key": key,
        "cache_dtype": cache_dtype,
        "outlier_tokens": outlier_tokens,
    }

    def tokenize() -> TokenizedTexts:
        tokenized = TokenizedTexts.from_texts(model, kept_texts, max_length)
        record["n_at_max_length"] = cut = int((tokenized.lengths >= max_length).sum())
        if cut:
            logger.warning("%d of %d texts reached max_length = %d tokens and were cut there", cut, len(kept_texts),
                           max_length)
        return tokenized

    return cached_or_run(model, tokenize, kept_texts, kept, selected, record, pooling=pooling, batch_size=batch_size,
                         cache_dir=cache_dir, token_hook=token_hook, progress=progress, cache_dtype=cache_dtype,
                         outlier_tokens=outlier_tokens)


def resolve_max_length(model: LoadedModel, max_length: int | None) -> tuple[int, str]:
    """The truncation length and where it came from: given, the model's own, or the default 512."""
    from layerscope.config import DEFAULT_MAX_LENGTH

    if max_length is not None:
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
            raise LayerscopeError(f"max_length must be an integer >= 1, got {max_length!r}")
        return max_length, "given"
    own = getattr(model, "max_length", None)
    return (own, "model") if own else (DEFAULT_MAX_LENGTH, "default")


def check_cache_dtype(cache_dtype: str) -> None:
    if cache_dtype not in ("float32", "float16"):
        raise LayerscopeError(f"cache_dtype must be float32 or float16, got '{cache_dtype}'")


def cached_or_run(
    model: LoadedModel,
    make_inputs: Callable[[], Any],
    names: list[str],
    kept: np.ndarray,
    selected: list[int],
    record: dict[str, Any],
    *,
    pooling: str,
    batch_size: int | str,
    cache_dir: str | None,
    token_hook: TokenHook | None,
    progress: bool,
    cache_dtype: str,
    outlier_tokens: float | None = None,
) -> Extraction:
    """The embeddings from the cache entry ``record["cache_key"]`` when it is complete (and any token
    hook's results were kept with it), else from the model, writing (or resuming) that entry.

    ``make_inputs()`` builds the batched inputs (tokenized texts, prepared images: anything with
    ``lengths`` and ``batch(rows)``) only when the model has to run; it may add to ``record``. Without
    a token hook, a subset of layers is all the model computes (the pass stops after the last one)
    and all the cache stores, in an entry of its own. A cache entry is locked while it is written: a
    second process wanting the same entry waits, then reads it. An entry is verified before use
    (:meth:`EmbeddingCache.read`): a damaged one is reported in one line, removed and recomputed.
    """
    n_layers = model.num_layers + 1
    everything = list(range(n_layers))
    stored = everything if token_hook is not None else selected
    cache = full = None
    if cache_dir:
        cache = full = EmbeddingCache(cache_dir, record["cache_key"])
        if stored != everything:
            cache = EmbeddingCache(cache_dir, cache_key({"entry": record["cache_key"], "layers": stored}))
    hook_key = token_hook.key() if token_hook is not None and hasattr(token_hook, "key") else None
    with cache.lock() if cache is not None else contextlib.nullcontext():
        candidates = [] if full is None else [(full, everything)] + ([(cache, stored)] if cache is not full else [])
        for entry, layers in candidates:
            # the entry of every layer is read under its own lock too: it may be removed if damaged
            with entry.lock() if entry is not cache else contextlib.nullcontext():
                found = entry.read()
            if found is None:
                continue
            if token_hook is not None and not entry.restore_hook(hook_key, token_hook, kept):
                continue
            pooled, saved = found
            saved["from_cache"] = True
            return _selected(Extraction(pooled, layers, names, kept, saved, True), selected)
        inputs = make_inputs()
        output, record = _run(model, inputs, kept, pooling, batch_size, cache, token_hook, progress,
                              np.dtype(cache_dtype), record, layers=stored, hook_key=hook_key,
                              outlier_factor=outlier_tokens)
    return _selected(Extraction(output, stored, names, kept, record, False), selected)


def extract_token_ids(
    model: LoadedModel,
    token_ids: Sequence[Sequence[int]] | torch.Tensor,
    pooling: str = "mean",
    layers: str | int | Sequence[int] = "all",
    batch_size: int | str = "auto",
    token_hook: TokenHook | None = None,
    progress: bool = True,
    lengths: Sequence[int] | torch.Tensor | None = None,
) -> Extraction:
    """Like :func:`extract`, for prompts given as token ids (e.g. perturbed prompts); no disk cache.

    Parameters
    ----------
    token_ids : list of id lists, or a (prompts, tokens) tensor with ``lengths``
        Each prompt's ids, used as they are (no special tokens added, no truncation).
    lengths : sequence of int, optional
        Real length of each row when ``token_ids`` is a padded tensor (right padding).
    """
    pooling = check_pooling(pooling)
    if isinstance(token_ids, torch.Tensor):
        rows = token_ids.tolist()
        if lengths is not None:
            rows = [row[: int(length)] for row, length in zip(rows, torch.as_tensor(lengths).tolist(), strict=True)]
        token_ids = rows
    token_ids = [list(ids) for ids in token_ids]
    if not token_ids:
        raise LayerscopeError("no prompts to extract: the token id list is empty")
    kept = np.array([i for i, ids in enumerate(token_ids) if len(ids) > 0], dtype=np.int64)
    if len(kept) == 0:
        raise LayerscopeError(f"all {len(token_ids)} prompts are empty: nothing to extract")
    selected = resolve_layers(layers, model.num_layers)
    tokenized = TokenizedTexts([token_ids[i] for i in kept], model.tokenizer.pad_token_id)
    record: dict[str, Any] = {**model.describe(), "pooling": pooling, "batch_size": batch_size,
                              "n_texts": len(token_ids), "n_kept": len(kept),
                              "n_skipped_empty": len(token_ids) - len(kept), "input": "token_ids"}
    output, record = _run(model, tokenized, kept, pooling, batch_size, None, token_hook, progress,
                          np.dtype("float32"), record)
    texts = model.tokenizer.batch_decode([token_ids[i] for i in kept])
    return _selected(Extraction(output, list(range(model.num_layers + 1)), texts, kept, record, False), selected)


def _run(
    model: LoadedModel,
    tokenized: TokenizedTexts | Any,  # or ImageInputs: .lengths and .batch(rows)
    kept: np.ndarray,
    pooling: str,
    batch_size: int | str,
    cache: EmbeddingCache | None,
    token_hook: TokenHook | None,
    progress: bool,
    np_dtype: np.dtype,
    record: dict[str, Any],
    layers: Sequence[int] | None = None,
    hook_key: str | None = None,
    outlier_factor: float | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """The batch loop: forward, pool every layer (of ``layers``) into ``output``, feed the token hook,
    checkpoint (the token hook's state with the embeddings, so a resumed run skips what it has seen).

    With ``outlier_factor`` the tokens pooled leave out each layer's outlier tokens (see
    :func:`~layerscope.extract.pooling.outlier_tokens`); the token hook gets the same selection as
    ``keep=`` and the record counts the tokens dropped per layer."""
    start = time.perf_counter()
    n_layers = model.num_layers + 1 if layers is None else len(layers)
    dim = model.hidden_size
    hook = (hook_key, token_hook, kept) if token_hook is not None and hook_key is not None else None
    output, done, dropped = _open_output(cache, (n_layers, len(kept), dim), np_dtype, hook, token_hook is not None,
                                         outlier_factor is not None)
    todo = np.flatnonzero(~done)
    nonfinite = np.zeros(n_layers, dtype=np.int64)
    with_indices = token_hook is not None and _hook_takes_indices(token_hook)
    kept_tensor = torch.from_numpy(kept)
    last_save = time.monotonic()
    runner = _BatchRunner(model, pooling, token_hook is not None, layers, outlier_factor)
    bar = _progress_bar(len(kept), len(kept) - len(todo), progress, str(model.model_id))
    copies = _HostCopies()
    # Batches whose pooled copy to the host may still be in flight: on a GPU the last one is read
    # only after the next batch has been queued, so the host never waits for the device.
    pending: list[tuple[np.ndarray, Callable[[], np.ndarray]]] = []

    def store(rows: np.ndarray, read: Callable[[], np.ndarray]) -> None:
        nonlocal last_save
        pooled_np = read()  # (layers, batch, dim)
        bad = ~np.isfinite(pooled_np).all(axis=2)
        nonfinite[:] += bad.sum(axis=1)
        output[:, rows, :] = pooled_np
        done[rows] = True
        bar.update(len(rows))
        if cache is not None and time.monotonic() - last_save > CHECKPOINT_SECONDS:
            save()
            last_save = time.monotonic()

    def save() -> None:
        assert cache is not None
        if dropped is not None:
            cache.save_extra("dropped", dropped)
        cache.save_progress(output, done, hook)

    try:
        queue = plan_batches(tokenized.lengths, todo, batch_size, model)
        while queue:
            rows = queue.pop(0)
            row_tensor = torch.from_numpy(rows)
            input_ids, mask = tokenized.batch(row_tensor)
            try:
                pooled, states, keep = runner(input_ids, mask)
            except Exception as error:  # out of memory: halve the batch and go on
                if not _is_out_of_memory(error):
                    raise
                if len(rows) == 1:
                    what = "image" if mask is None else f"text of {int(mask.sum())} tokens: lower max_length"
                    raise LayerscopeError(f"out of memory on a single {what}") from None
                logger.warning("out of memory on a batch of %d texts: halving it", len(rows))
                runner.release()
                half = len(rows) // 2
                queue[:0] = [rows[:half], rows[half:]]
                continue
            pending.append((rows, copies.submit(pooled)))
            if dropped is not None and keep is not None:
                real = keep.new_ones(keep.shape[1:]) if mask is None else mask.to(keep.device).bool()
                dropped[rows] = (real & ~keep).sum(dim=-1).T.cpu().numpy()  # (batch, layers)
            if token_hook is not None:
                assert states is not None
                _feed_token_hook(token_hook, states, mask, keep, len(rows),
                                 kept_tensor[row_tensor] if with_indices else None)
            del states
            while len(pending) > copies.lag:
                store(*pending.pop(0))
        while pending:
            store(*pending.pop(0))
    except BaseException as error:
        if cache is not None:  # Ctrl-C or a crash keeps every finished batch for the next run
            with contextlib.suppress(Exception):  # a batch still in flight, unless the device failed
                while pending:
                    store(*pending.pop(0))
            save()
            # what the CLI's one line says: how much a rerun will not redo
            error.layerscope_kept = (int(done.sum()), len(done))  # type: ignore[attr-defined]
        raise
    finally:
        bar.close()
        runner.close()

    _record_run(record, time.perf_counter() - start, int(tokenized.lengths.sum()), layers or range(n_layers),
                nonfinite, dropped)
    if cache is not None:
        output, record = cache.finish(output, record, hook)
    return output, record


def _open_output(cache: EmbeddingCache | None, shape: tuple[int, int, int], np_dtype: np.dtype,
                 hook: tuple[str, TokenHook, np.ndarray] | None, has_token_hook: bool,
                 count_dropped: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Where :func:`_run` writes: the embeddings ``shape`` (layers, texts, dim), which texts are done,
    and the outlier tokens dropped per (text, layer), all resumed from the cache's checkpoint if any."""
    n_layers, n_texts, _ = shape
    if cache is not None:
        output, done = cache.open_partial(shape, np_dtype)
        if has_token_hook:
            # the hook must see every text it has no kept result for
            done &= cache.restore_hook(*hook, partial=True) if hook else False
    else:
        output, done = np.empty(shape, dtype=np_dtype), np.zeros(n_texts, dtype=bool)
    # tokens dropped per text and layer (kept with the checkpoints, so a resumed run counts them all)
    dropped = None
    if count_dropped:
        dropped = cache.load_extra("dropped", (n_texts, n_layers)) if cache is not None else None
        dropped = np.zeros((n_texts, n_layers), dtype=np.int32) if dropped is None else dropped
    return output, done, dropped


def _feed_token_hook(token_hook: TokenHook, states: torch.Tensor, mask: torch.Tensor | None,
                     keep: torch.Tensor | None, n_rows: int, indices: torch.Tensor | None) -> None:
    """One batch's token states to the token hook: lengths from the mask (images: every patch), the
    outlier selection as ``keep=``, and the texts' indices when the hook takes them."""
    lengths = mask.sum(1) if mask is not None else torch.full((n_rows,), states.shape[2])
    extra = {"keep": keep} if keep is not None else {}
    if indices is not None:
        token_hook(states, lengths, indices, **extra)
    else:
        token_hook(states, lengths, **extra)


def _record_run(record: dict[str, Any], seconds: float, tokens: int, layer_ids: Sequence[int],
                nonfinite: np.ndarray, dropped: np.ndarray | None) -> None:
    """What an extraction run adds to its record: time, tokens, layers with non-finite states (warned),
    outlier tokens dropped per layer."""
    record.update(from_cache=False, time_s=round(seconds, 3), tokens=tokens, nonfinite_layers={
        int(layer): int(count) for layer, count in zip(layer_ids, nonfinite, strict=True) if count})
    if dropped is not None:
        record["outlier_tokens_dropped"] = {int(layer): int(count) for layer, count
                                            in zip(layer_ids, dropped.sum(axis=0), strict=True)}
    if record["nonfinite_layers"]:
        logger.warning("non-finite (NaN/inf) hidden states in layers %s (texts affected per layer)",
                       record["nonfinite_layers"])




class _HostCopies:
    """Copies of each batch's pooled states to the host that do not stop the device.

    On a GPU, :meth:`submit` queues the copy into one of two pinned host buffers (``non_blocking``)
    and records an event after it; the returned reader waits for that event only. The engine reads a
    batch after queueing the next one (``lag = 1``), so the device is already busy with the next
    forward pass while the host stores the previous batch, and the buffer a copy goes into was read
    two batches earlier. Elsewhere the reader returns the array at once (``lag = 0``).
    """

    def __init__(self) -> None:
        self.lag = 0
        self._buffers: list[torch.Tensor | None] = [None, None]
        self._turn = 0

    def submit(self, pooled: torch.Tensor) -> Callable[[], np.ndarray]:
        """Queue the copy of ``pooled`` (layers, batch, dim) float32; return its reader."""
        if pooled.device.type != "cuda":
            array = pooled.cpu().numpy()
            return lambda: array
        self.lag = 1
        slot, self._turn = self._turn, 1 - self._turn
        buffer = self._buffers[slot]
        if buffer is None or buffer.numel() < pooled.numel():  # batches differ in size: it only grows
            buffer = self._buffers[slot] = torch.empty(pooled.numel(), dtype=pooled.dtype, pin_memory=True)
        host = buffer[: pooled.numel()].view(pooled.shape)
        host.copy_(pooled, non_blocking=True)
        copied = torch.cuda.Event()
        copied.record(torch.cuda.current_stream(pooled.device))

        def read() -> np.ndarray:
            copied.synchronize()
            return host.numpy()

        return read


def _selected(extraction: Extraction, layers: list[int]) -> Extraction:
    if layers == extraction.layers:
        return extraction
    positions = [extraction.layers.index(layer) for layer in layers]
    extraction.pooled = np.asarray(extraction.pooled[positions])
    extraction.layers = layers
    return extraction


def _progress_bar(total: int, initial: int, progress: bool | str, name: str) -> Any:
    """The bar of a pass; ``progress`` may be the words saying what it counts (e.g. "views")."""
    from tqdm.auto import tqdm

    what = progress if isinstance(progress, str) else "texts"
    return tqdm(total=total, initial=initial, disable=not progress, unit="text", desc=f"{name}: {what}", leave=False)


class _BatchRunner:
    """Runs the model on one batch and returns pooled states of every layer (and the token states).

    The token states handed out live in a buffer reused by the next batch: a token hook must use
    them during its call (the accumulators do) and copy what it wants to keep.
    """

    def __init__(self, model: LoadedModel, pooling: str, keep_tokens: bool,
                 layers: Sequence[int] | None = None, outlier_factor: float | None = None) -> None:
        self.model = model
        self.capture = _LayerCapture(model, pooling, keep_tokens, layers, outlier_factor)
        self.device = model.device
        accepted = inspect.signature(model.model.forward).parameters
        self.extra = {"use_cache": False} if "use_cache" in accepted else {}
        self.vision = model.modality == "vision"

    @torch.inference_mode()
    def __call__(self, input_ids: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        """``input_ids`` (batch, tokens) and their mask, or for a vision model pixel values
        (batch, channels, height, width) and ``mask=None``."""
        # To a GPU, inputs go from pinned memory without waiting: a copy from pageable memory would
        # wait for the device to finish everything queued (the previous batch) first.
        copy = {"non_blocking": True} if self.device.type == "cuda" else {}
        if copy:
            input_ids = input_ids.pin_memory()
            mask = None if mask is None else mask.pin_memory()
        mask = None if mask is None else mask.to(self.device, **copy)
        self.capture.begin(mask)
        try:
            if self.vision:
                pixels = input_ids.to(self.device, **copy).to(self.model.dtype)
                self.model.model(pixel_values=pixels, **self.extra)
            else:
                self.model.model(input_ids=input_ids.to(self.device, **copy), attention_mask=mask, **self.extra)
        except _StopForward:
            pass
        except BaseException:
            self.capture.end()
            raise
        return self.capture.result()  # (layers, batch, dim), (layers, batch, tokens, dim) or None, keep or None

    def release(self) -> None:
        self.capture.release()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def close(self) -> None:
        self.capture.remove()


def iter_batches(seq: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(seq), size):
        yield seq[start : start + size]
