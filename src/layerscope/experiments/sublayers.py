"""Sub-layer analysis (SPEC section 7.6): entropy and effective rank after each part of every block.

Four points per block ``l`` (1..L), captured with forward hooks in the same forward pass:

- ``attention_output``: what the attention branch adds to the residual stream;
- ``post_attention_residual``: the residual stream after that addition;
- ``mlp_output``: what the MLP branch adds;
- ``post_mlp_residual``: the block output (= canonical layer ``l``, SPEC section 3);

plus ``embedding`` (canonical layer 0, the input of block 1) as the reference point at depth 0.

Where the points are, per block style (module names of Hugging Face transformers 5):

========== ============================== ===================================== ===============================
style      attention_output               post_attention_residual               mlp_output
========== ============================== ===================================== ===============================
llama      ``self_attn`` output           input of ``post_attention_layernorm`` ``mlp`` output
gemma      ``post_attention_layernorm``   input of ``pre_feedforward_layernorm`` ``post_feedforward_layernorm``
           output (sandwich norm: the     (= x + normed attention)              output (normed MLP, what is
           normed attention is added)                                           added)
gpt_neox   ``attention`` output           parallel residual (Pythia): defined   ``mlp`` output
                                          as ``x + attention(x)``, computed
                                          from the block input; sequential:
                                          input of ``post_attention_layernorm``
gpt2       ``attn`` output                input of ``ln_2``                     ``mlp`` output
bert       ``attention.output.dense``     ``attention`` output, which is        ``output.dense`` output
           output (before the residual    post-LN: LayerNorm(x + attention)     (before residual and LayerNorm)
           and LayerNorm)
========== ============================== ===================================== ===============================

Llama style covers Llama, Qwen2/3, Mistral and Gemma 1; gemma style covers Gemma 2 and 3. In a
GPT-NeoX block with ``use_parallel_residual`` the MLP reads ``x``, not ``x + attention(x)``, so the
post-attention residual is not a state the block computes: it is the sum we define here. In the
pre-LN styles ``post_mlp_residual = post_attention_residual + mlp_output`` exactly (tested); BERT
normalizes after each addition, so the identity does not hold there.

Metrics per point: prompt entropy (matrix entropy of each prompt's tokens, mean over prompts;
``maxEntropy`` and ``raw``), prompt effective rank (Roy-Vetterli effective rank of each prompt's
normalized tokens, mean over prompts), and on the mean-pooled prompts the dataset entropy and the
effective rank (SPEC section 4).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from layerscope.errors import LayerscopeError
from layerscope.experiments.common import (
    ExperimentResult,
    as_model,
    experiment_rows,
    output_dir,
    plot_file,
    resolve_texts,
    safe_plot,
    texts_digest,
    values_at_depths,
    write_store,
)
from layerscope.models.adapters import block_output, get_module
from layerscope.models.loading import LoadedModel

__all__ = ["SUBLAYER_POINTS", "SUBLAYER_STYLES", "SublayerCapture", "SublayerStyle", "sublayers", "style_for"]

logger = logging.getLogger(__name__)

EXPERIMENT = "sublayers"
#: The four points of every block, in forward order.
SUBLAYER_POINTS = ("attention_output", "post_attention_residual", "mlp_output", "post_mlp_residual")
#: Reported metrics: (metric, normalization) and the plot title of each.
METRIC_TITLES = {
    ("prompt_entropy", "maxEntropy"): "prompt entropy (maxEntropy)",
    ("prompt_effective_rank", "raw"): "prompt effective rank",
    ("dataset_entropy", "maxEntropy"): "dataset entropy (maxEntropy)",
    ("effective_rank", "raw"): "dataset effective rank",
}


@dataclass(frozen=True)
class SublayerStyle:
    """Where the sub-layer points of one block style are (paths relative to a block).

    Attributes
    ----------
    name : str
        Style name.
    attention : str
        Module whose output is the attention output (a tuple output gives its first element).
    mlp : str
        Module whose output is the MLP output.
    residual : str or None
        Module giving the post-attention residual; None: ``block input + attention output``.
    residual_from : {"input", "output"}
        Whether the post-attention residual is that module's input or its output.
    """

    name: str
    attention: str
    mlp: str
    residual: str | None
    residual_from: str = "input"


SUBLAYER_STYLES: dict[str, SublayerStyle] = {
    "llama": SublayerStyle("llama", "self_attn", "mlp", "post_attention_layernorm"),
    "gemma": SublayerStyle("gemma", "post_attention_layernorm", "post_feedforward_layernorm",
                           "pre_feedforward_layernorm"),
    "gpt_neox": SublayerStyle("gpt_neox", "attention", "mlp", None),
    "gpt_neox_sequential": SublayerStyle("gpt_neox_sequential", "attention", "mlp", "post_attention_layernorm"),
    "gpt2": SublayerStyle("gpt2", "attn", "mlp", "ln_2"),
    "bert": SublayerStyle("bert", "attention.output.dense", "output.dense", "attention", "output"),
}

# adapter family -> style
_FAMILY_STYLES = {
    "llama": "llama", "qwen2": "llama", "qwen3": "llama", "mistral": "llama", "gemma": "llama",
    "gemma2": "gemma", "gemma3": "gemma", "gpt_neox": "gpt_neox", "gpt2": "gpt2", "bert": "bert", "roberta": "bert",
}


def style_for(model: LoadedModel) -> SublayerStyle:
    """The sub-layer style of ``model``'s blocks (raises for families without one)."""
    family = model.adapter.family
    name = _FAMILY_STYLES.get(family)
    if name is None:
        raise LayerscopeError(
            f"sub-layer analysis does not know the block structure of '{family}' models; supported families: "
            f"{', '.join(sorted(_FAMILY_STYLES))}"
        )
    if name == "gpt_neox" and not getattr(model.model.config, "use_parallel_residual", True):
        name = "gpt_neox_sequential"
    return SUBLAYER_STYLES[name]


def _first_tensor(args: tuple, kwargs: dict) -> torch.Tensor:
    if args and isinstance(args[0], torch.Tensor):
        return args[0]
    for key in ("hidden_states", "input", "x"):
        if isinstance(kwargs.get(key), torch.Tensor):
            return kwargs[key]
    raise RuntimeError("cannot find the input tensor of a hooked module")


class SublayerCapture:
    """Forward hooks that keep the sub-layer points of every block during one forward pass.

    Use as a context manager around forward passes; after each pass :meth:`collect` returns the
    points of that pass.

    Parameters
    ----------
    model : LoadedModel
        A model whose family has a :class:`SublayerStyle`.

    Examples
    --------
    >>> with SublayerCapture(model) as capture:                       # doctest: +SKIP
    ...     model.model(input_ids=ids, attention_mask=mask)
    ...     points = capture.collect()   # {"embedding": (1, B, T, D), "attention_output": (L, B, T, D), ...}
    """

    def __init__(self, model: LoadedModel) -> None:
        self.style = style_for(model)
        self.blocks = model.blocks
        self.num_layers = len(self.blocks)
        self.handles: list[Any] = []
        self._store: dict[str, list[torch.Tensor | None]] = {}
        self._reset()

    def _reset(self) -> None:
        names = ("block_input", "attention_output", "residual", "mlp_output", "block_output")
        self._store = {name: [None] * self.num_layers for name in names}

    def _keep(self, name: str, index: int, output: bool = True) -> Any:
        def output_hook(_module: Any, _args: Any, result: Any) -> None:
            self._store[name][index] = block_output(result)

        def input_hook(_module: Any, args: tuple, kwargs: dict) -> None:
            self._store[name][index] = _first_tensor(args, kwargs)

        return output_hook if output else input_hook

    def __enter__(self) -> SublayerCapture:
        style = self.style
        for index, block in enumerate(self.blocks):
            self.handles.append(block.register_forward_pre_hook(self._keep("block_input", index, False), with_kwargs=True))
            self.handles.append(block.register_forward_hook(self._keep("block_output", index)))
            self.handles.append(get_module(block, style.attention).register_forward_hook(
                self._keep("attention_output", index)))
            self.handles.append(get_module(block, style.mlp).register_forward_hook(self._keep("mlp_output", index)))
            if style.residual is not None:
                module = get_module(block, style.residual)
                if style.residual_from == "output":
                    self.handles.append(module.register_forward_hook(self._keep("residual", index)))
                else:
                    self.handles.append(module.register_forward_pre_hook(self._keep("residual", index, False),
                                                                         with_kwargs=True))
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove every hook (idempotent)."""
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def collect(self) -> dict[str, torch.Tensor]:
        """The points of the last forward pass, each ``(L, B, T, D)`` (``embedding``: ``(1, B, T, D)``).

        The references are dropped, so memory is freed once the caller is done with the result.
        """
        store = self._store
        for name in ("block_input", "attention_output", "mlp_output", "block_output"):
            missing = [i for i, tensor in enumerate(store[name]) if tensor is None]
            if missing:
                raise RuntimeError(f"sub-layer point '{name}' was not produced for blocks {missing}")
        attention = torch.stack(store["attention_output"])  # (L, B, T, D)
        if self.style.residual is None:
            residual = torch.stack(store["block_input"]) + attention  # parallel residual: defined as x + attn(x)
        else:
            residual = torch.stack(store["residual"])  # type: ignore[arg-type]
        points = {
            "embedding": store["block_input"][0].unsqueeze(0),  # type: ignore[union-attr]
            "attention_output": attention,
            "post_attention_residual": residual,
            "mlp_output": torch.stack(store["mlp_output"]),  # type: ignore[arg-type]
            "post_mlp_residual": torch.stack(store["block_output"]),  # type: ignore[arg-type]
        }
        self._reset()
        return points


class _SublayerMetrics:
    """Token hook: per batch, reads the captured points and accumulates per-prompt metrics."""

    def __init__(self, capture: SublayerCapture, n_texts: int, hidden_size: int, skip_tokens: int = 0) -> None:
        from layerscope.metrics.accumulators import PromptEntropyAccumulator

        self.capture = capture
        self.skip_tokens = skip_tokens
        self.entropy = {name: PromptEntropyAccumulator(n_texts, normalizations=("maxEntropy", "raw"))
                        for name in ("embedding", *SUBLAYER_POINTS)}
        counts = {name: (1 if name == "embedding" else capture.num_layers) for name in self.entropy}
        self.rank = {name: np.full((count, n_texts), math.nan) for name, count in counts.items()}
        self.pooled = {name: np.zeros((count, n_texts, hidden_size), dtype=np.float32) for name, count in counts.items()}

    def __call__(self, _states: torch.Tensor, lengths: torch.Tensor, indices: torch.Tensor) -> None:
        from layerscope.metrics import functional as F

        points = self.capture.collect()
        lengths = (lengths.to(torch.long) - self.skip_tokens).clamp_min(0)
        rows = indices.cpu().numpy()
        for name, tensor in points.items():
            if self.skip_tokens:  # right padding: the real tokens stay first
                width = tensor.shape[2]
                tensor = tensor[:, :, self.skip_tokens:] if width > self.skip_tokens else tensor[:, :, :1] * 0
            mask = (torch.arange(tensor.shape[2], device=tensor.device) < lengths.to(tensor.device)[:, None])
            masked = tensor * mask[None, :, :, None].to(tensor.dtype)  # exact zeros after each prompt
            self.entropy[name](masked, lengths, indices)
            weights = mask.to(torch.float32)
            pooled = torch.einsum("lbtd,bt->lbd", masked.float(), weights) / weights.sum(1).clamp_min(1.0)[None, :, None]
            self.pooled[name][:, rows] = pooled.cpu().numpy()
            for b, length in enumerate(lengths.tolist()):
                if length < 2:
                    continue
                tokens = masked[:, b, :length].to(torch.float64)
                if not torch.isfinite(tokens).all():
                    continue
                self.rank[name][:, rows[b]] = F.effective_rank(tokens).cpu().numpy()


def sublayers(
    model: str | LoadedModel = "smollm2-135m",
    texts: Sequence[str] | None = None,
    *,
    dataset: str | None = None,
    limit: int | None = 64,
    seed: int = 0,
    max_length: int = 128,
    skip_tokens: int = 0,
    batch_size: int | str = 16,
    out: str | Path | None = None,
    progress: bool = True,
    revision: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
) -> ExperimentResult:
    """Entropy and effective rank after each transformer sub-layer, from one forward pass per batch.

    Parameters
    ----------
    model : str or LoadedModel
        A Llama-, Gemma-, GPT-NeoX-, GPT-2- or BERT-style model (see the module docstring).
    texts, dataset, limit, seed, max_length
        The prompts (as in :func:`layerscope.experiments.extreme_prompts.extreme_prompts`).
    skip_tokens : int, default 0
        Leave the first ``k`` tokens of every prompt out of every metric (1: without the first token's
        massive activation, see :class:`~layerscope.experiments.common.SkipFirstTokens`).
    batch_size : int or "auto", default 16
        Texts per forward pass; the hooks keep 4 points per block, so batches are smaller than for a
        plain extraction.
    out : str or Path, optional
        Output directory (``results.duckdb``, ``sublayers.png``).
    progress : bool
        Progress bar of the forward passes.
    revision, device, dtype
        Passed to :func:`layerscope.load_model`. The final norm is never applied here.

    Returns
    -------
    ExperimentResult
        Table ``sublayers``: ``sublayer, layer, position, depth_pct, metric, normalization, value,
        n_used`` (``layer`` = block index 1..L, 0 for ``embedding``; ``position`` = ``l - 1 + k/4`` for
        the k-th point of block l, the order of the forward pass). The summary gives each metric per
        sub-layer point at 0/25/50/75/100 % depth and the mean change each sub-layer makes.
    """
    from layerscope.extract import extract
    from layerscope.metrics import functional as F

    loaded = as_model(model, revision, device, dtype, "none")
    if loaded.final_norm != "none":
        logger.warning("sub-layer points are raw states: the model's final_norm='%s' is not applied to them",
                       loaded.final_norm)
    prompts, source = resolve_texts(texts, dataset, limit, seed)
    capture = SublayerCapture(loaded)
    num_layers = capture.num_layers
    if skip_tokens < 0:
        raise LayerscopeError(f"skip_tokens must be >= 0, got {skip_tokens}")
    hook_metrics = _SublayerMetrics(capture, len(prompts), loaded.hidden_size, int(skip_tokens))
    with capture:
        extraction = extract(loaded, prompts, layers="last", batch_size=batch_size, max_length=max_length,
                             token_hook=hook_metrics, progress=progress)
    kept = extraction.kept
    rows: list[dict[str, Any]] = []
    offsets = {name: (k + 1) / 4 for k, name in enumerate(SUBLAYER_POINTS)}
    for name in ("embedding", *SUBLAYER_POINTS):
        blocks = [0] if name == "embedding" else list(range(1, num_layers + 1))
        positions = [0.0] if name == "embedding" else [block - 1 + offsets[name] for block in blocks]
        values = hook_metrics.entropy[name].compute()
        ranks = hook_metrics.rank[name][:, kept]
        pooled = torch.from_numpy(hook_metrics.pooled[name][:, kept]).to(torch.float64)  # (points, n, d)
        dataset_entropy = F.dataset_entropy(pooled, normalization="maxEntropy") if len(kept) >= 2 else None
        dataset_rank = F.effective_rank(pooled) if len(kept) >= 2 else None
        for i, (block, position) in enumerate(zip(blocks, positions, strict=True)):
            base = {"sublayer": name, "layer": block, "position": position, "depth_pct": 100.0 * block / num_layers}
            for normalization in ("maxEntropy", "raw"):
                rows.append({**base, "metric": "prompt_entropy", "normalization": normalization,
                             "value": float(values.mean[normalization][i]), "n_used": int(values.n_used[i])})
            finite = np.isfinite(ranks[i])
            rows.append({**base, "metric": "prompt_effective_rank", "normalization": "raw",
                         "value": float(ranks[i][finite].mean()) if finite.any() else math.nan,
                         "n_used": int(finite.sum())})
            if dataset_entropy is not None and dataset_rank is not None:
                rows.append({**base, "metric": "dataset_entropy", "normalization": "maxEntropy",
                             "value": float(dataset_entropy[i]), "n_used": len(kept)})
                rows.append({**base, "metric": "effective_rank", "normalization": "raw",
                             "value": float(dataset_rank[i]), "n_used": len(kept)})
    table = pd.DataFrame(rows).sort_values(["metric", "normalization", "position"], kind="stable").reset_index(drop=True)

    summary: dict[str, Any] = {"model": str(loaded.model_id), "style": capture.style.name, "n_prompts": len(kept),
                               "dataset": source, "skip_tokens": skip_tokens}
    for (metric, normalization) in METRIC_TITLES:
        part = table[(table["metric"] == metric) & (table["normalization"] == normalization)]
        if part.empty:
            continue
        summary[f"{metric}:{normalization}"] = values_at_depths(
            part[part["sublayer"] != "embedding"], group="sublayer")
    summary["prompt_entropy_change"] = _changes(table)

    directory = output_dir(out)
    result = ExperimentResult(EXPERIMENT, {"sublayers": table}, summary, directory)
    if directory is not None:
        config = {"experiment": EXPERIMENT, "model_id": str(loaded.model_id), "revision": loaded.revision,
                  "data": source, "n_prompts": len(kept), "max_length": max_length, "seed": seed,
                  "style": capture.style.name, "skip_tokens": skip_tokens}
        run_id = write_store(directory, config, model=loaded, data_source=source, data_hash=texts_digest(prompts),
                             experiment_values=experiment_rows(table, EXPERIMENT, "sublayer", ["metric", "normalization"]))
        result.run_ids.append(str(run_id))
        _plot(result, table)
    return result


def _changes(table: pd.DataFrame) -> dict[str, float | None]:
    """Mean over blocks of the prompt entropy (maxEntropy) change made by each half of the block.

    ``attention``: post-attention residual minus the block input (previous block's output);
    ``mlp``: block output minus the post-attention residual.
    """
    part = table[(table["metric"] == "prompt_entropy") & (table["normalization"] == "maxEntropy")]
    by_point = {name: rows.set_index("layer")["value"] for name, rows in part.groupby("sublayer")}
    if "post_mlp_residual" not in by_point or "post_attention_residual" not in by_point:
        return {}
    block_input = pd.concat([by_point["embedding"], by_point["post_mlp_residual"]]).sort_index()
    residual, output = by_point["post_attention_residual"], by_point["post_mlp_residual"]
    layers = residual.index
    attention_change = residual.to_numpy() - block_input.loc[layers - 1].to_numpy()
    mlp_change = output.loc[layers].to_numpy() - residual.to_numpy()
    return {"attention": round(float(np.nanmean(attention_change)), 6), "mlp": round(float(np.nanmean(mlp_change)), 6)}


def _plot(result: ExperimentResult, table: pd.DataFrame) -> None:
    from layerscope.report import plots

    frames = []
    for (metric, normalization), title in METRIC_TITLES.items():
        part = table[(table["metric"] == metric) & (table["normalization"] == normalization)]
        frames.append(part.assign(panel=title))
    data = pd.concat(frames, ignore_index=True).drop(columns="metric").rename(columns={"panel": "metric"})
    # the residual stream starts at the embeddings (canonical layer 0): draw them as its first point
    data["sublayer"] = data["sublayer"].replace("embedding", "post_mlp_residual")
    safe_plot(result.plots, plot_file(result.out, EXPERIMENT), plots.plot_lines_by_condition,
              data, "depth_pct", "value", "sublayer", facet="metric", hue_order=list(SUBLAYER_POINTS),
              ordered=False, ylabel="value", hue_label="point in the block", n_columns=2,
              title=f"After each sub-layer ({result.summary['style']} blocks): {result.summary['model']}")
