"""Sub-layer analysis (SPEC section 7.6): entropy and effective rank after each part of every block.

Four points per block ``l`` (1..L), captured with forward hooks in the same forward pass, named as in
TransformerLens (:data:`layerscope.models.adapters.HOOK_POINTS`):

- ``attn_out``: what the attention branch adds to the residual stream;
- ``resid_mid``: the residual stream after that addition;
- ``mlp_out``: what the MLP branch adds;
- ``resid_post``: the block output (= canonical layer ``l``, SPEC section 3);

plus ``resid_pre`` of block 1 (canonical layer 0, the embeddings) as the reference point at depth 0.
Where each point lives in a family's blocks is model knowledge: the model's adapter says it
(:class:`~layerscope.models.adapters.BlockPointCapture`, table in :mod:`layerscope.models.families`).
Names before the move to the adapters: ``embedding`` = ``resid_pre``, ``attention_output`` =
``attn_out``, ``post_attention_residual`` = ``resid_mid``, ``mlp_output`` = ``mlp_out``,
``post_mlp_residual`` = ``resid_post``.

Metrics per point: prompt entropy (matrix entropy of each prompt's tokens, mean over prompts;
the registry's main normalization, ``maxEntropy``, and ``raw``), prompt effective rank (Roy-Vetterli effective rank of each prompt's
normalized tokens, mean over prompts), and on the mean-pooled prompts the dataset entropy and the
effective rank (SPEC section 4).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from layerscope.errors import LayerscopeError
from layerscope.experiments.base import ExperimentResult, Plot, Setup, common_options
from layerscope.experiments.curves import main_normalization, values_at_depths
from layerscope.models.adapters import HOOK_POINTS, BlockPointCapture
from layerscope.models.loading import LoadedModel

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from layerscope.experiments.base import CommonOptions

__all__ = ["REFERENCE_POINT", "SUBLAYER_POINTS", "sublayers"]

logger = logging.getLogger(__name__)

EXPERIMENT = "sublayers"
#: The reference point at depth 0: the input of block 1 (canonical layer 0).
REFERENCE_POINT = HOOK_POINTS[0]
#: The four points of every block, in forward order.
SUBLAYER_POINTS = HOOK_POINTS[1:]
#: The entropies' main normalizations (the registry's), reported beside ``raw``.
PROMPT_MAIN, DATASET_MAIN = main_normalization("prompt_entropy"), main_normalization("dataset_entropy")
#: Reported metrics: (metric, normalization) and the plot title of each.
METRIC_TITLES = {
    ("prompt_entropy", PROMPT_MAIN): f"prompt entropy ({PROMPT_MAIN})",
    ("prompt_effective_rank", "raw"): "prompt effective rank",
    ("dataset_entropy", DATASET_MAIN): f"dataset entropy ({DATASET_MAIN})",
    ("effective_rank", "raw"): "dataset effective rank",
}


def __getattr__(name: str) -> Any:
    if name in ("SublayerCapture", "SublayerStyle", "SUBLAYER_STYLES", "style_for"):
        raise AttributeError(f"layerscope.experiments.sublayers.{name} moved to the model adapters: use "
                             "layerscope.models.adapters.BlockPointCapture (points resid_pre, attn_out, resid_mid, "
                             "mlp_out, resid_post) and Adapter.block_points")
    raise AttributeError(f"module 'layerscope.experiments.sublayers' has no attribute '{name}'")


class _SublayerMetrics:
    """Token hook: per batch, reads the captured points and accumulates per-prompt metrics."""

    def __init__(self, capture: BlockPointCapture, n_texts: int, hidden_size: int, skip_tokens: int = 0) -> None:
        from layerscope.metrics.accumulators import PromptEntropyAccumulator

        self.capture = capture
        self.skip_tokens = skip_tokens
        self.entropy = {name: PromptEntropyAccumulator(n_texts, normalizations=(PROMPT_MAIN, "raw"))
                        for name in HOOK_POINTS}
        # (points, prompts): one reference point, one point per block for the others
        counts = {name: (1 if name == REFERENCE_POINT else capture.num_layers) for name in self.entropy}
        self.rank = {name: np.full((count, n_texts), math.nan) for name, count in counts.items()}
        self.pooled = {name: np.zeros((count, n_texts, hidden_size), dtype=np.float32) for name, count in counts.items()}

    def __call__(self, _states: torch.Tensor, lengths: torch.Tensor, indices: torch.Tensor) -> None:
        from layerscope.metrics import functional as F

        points = self.capture.collect()
        # resid_pre of blocks 2..L is resid_post of the block before: only block 1's input is measured
        points[REFERENCE_POINT] = points[REFERENCE_POINT][:1]
        lengths = (lengths.to(torch.long) - self.skip_tokens).clamp_min(0)
        rows = indices.cpu().numpy()
        for name, tensor in points.items():  # (points, B, T, D)
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


@common_options(batch_size=16, without=("final_norm",))
def sublayers(
    model: str | LoadedModel = "smollm2-135m",
    texts: Sequence[str] | None = None,
    *,
    skip_tokens: int = 0,
    **common: Unpack[CommonOptions],
) -> ExperimentResult:
    """Entropy and effective rank after each transformer sub-layer, from one forward pass per batch.

    Parameters
    ----------
    model : str or LoadedModel
        A model of a family whose block points the adapters know (Llama, Qwen, Mistral, Gemma,
        GPT-NeoX, GPT-2, BERT-style; see :mod:`layerscope.models.families`).
    texts : sequence of str, optional
        The prompts (default: 64 texts of ``dataset``, BBC news articles, truncated to 128 tokens).
    skip_tokens : int, default 0
        Leave the first ``k`` tokens of every prompt out of every metric (1: without the first token's
        massive activation, see :class:`~layerscope.experiments.hooks.SkipFirstTokens`).
    **common
        The options every experiment takes (:class:`~layerscope.experiments.base.CommonOptions`) but
        ``final_norm``: the final norm is never applied here. ``batch_size`` defaults to 16: the hooks
        keep 5 points per block, so batches are smaller than for a plain extraction.

    Returns
    -------
    ExperimentResult
        Table ``sublayers``: ``sublayer, layer, position, depth_pct, metric, normalization, value,
        n_used`` (``sublayer``: ``resid_pre`` at layer 0, then ``attn_out, resid_mid, mlp_out,
        resid_post`` of every block; ``layer`` = block index 1..L; ``position`` = ``l - 1 + k/4`` for
        the k-th point of block l, the order of the forward pass). The summary gives each metric per
        point at 0/25/50/75/100 % depth and the mean change each half of a block makes.
    """
    from layerscope.extract import extract

    if skip_tokens < 0:
        raise LayerscopeError(f"skip_tokens must be >= 0, got {skip_tokens}")
    setup = Setup.from_options(EXPERIMENT, model=model, texts=texts, options={"skip_tokens": skip_tokens}, **common)
    loaded = setup.load(model, final_norm="none")
    if loaded.final_norm != "none":
        logger.warning("sub-layer points are raw states: the model's final_norm='%s' is not applied to them",
                       loaded.final_norm)
    capture = BlockPointCapture(loaded.model, loaded.adapter)  # raises for families without known points
    prompts = setup.load_texts().texts
    hook_metrics = _SublayerMetrics(capture, len(prompts), loaded.hidden_size, int(skip_tokens))
    with capture:
        extraction = extract(loaded, prompts, layers="last", batch_size=setup.extraction.batch_size,
                             max_length=setup.extraction.max_length, token_hook=hook_metrics, progress=setup.progress)
    table = _table(hook_metrics, extraction.kept, capture.num_layers)
    summary: dict[str, Any] = {"model": str(loaded.model_id), "style": capture.points.name,
                               "n_prompts": len(extraction.kept), "dataset": setup.texts.source,
                               "skip_tokens": skip_tokens}
    for (metric, normalization) in METRIC_TITLES:
        part = table[(table["metric"] == metric) & (table["normalization"] == normalization)]
        if not part.empty:
            summary[f"{metric}:{normalization}"] = values_at_depths(
                part[part["sublayer"] != REFERENCE_POINT], group="sublayer")
    summary["prompt_entropy_change"] = _changes(table)
    setup.write(details={"style": capture.points.name}, model=loaded,
                experiment_values=setup.rows(table, "sublayer", ["metric", "normalization"]))
    return setup.finish({"sublayers": table}, summary, _plots)


def _table(hook_metrics: _SublayerMetrics, kept: np.ndarray, num_layers: int) -> pd.DataFrame:
    """The long table of every metric at every point (see :func:`sublayers`)."""
    from layerscope.metrics import functional as F

    rows: list[dict[str, Any]] = []
    offsets = {name: (k + 1) / 4 for k, name in enumerate(SUBLAYER_POINTS)}
    for name in HOOK_POINTS:
        blocks = [0] if name == REFERENCE_POINT else list(range(1, num_layers + 1))
        positions = [0.0] if name == REFERENCE_POINT else [block - 1 + offsets[name] for block in blocks]
        values = hook_metrics.entropy[name].compute()
        ranks = hook_metrics.rank[name][:, kept]
        pooled = torch.from_numpy(hook_metrics.pooled[name][:, kept]).to(torch.float64)  # (points, n, d)
        dataset_entropy = F.dataset_entropy(pooled, normalization=DATASET_MAIN) if len(kept) >= 2 else None
        dataset_rank = F.effective_rank(pooled) if len(kept) >= 2 else None
        for i, (block, position) in enumerate(zip(blocks, positions, strict=True)):
            base = {"sublayer": name, "layer": block, "position": position, "depth_pct": 100.0 * block / num_layers}
            for normalization in (PROMPT_MAIN, "raw"):
                rows.append({**base, "metric": "prompt_entropy", "normalization": normalization,
                             "value": float(values.mean[normalization][i]), "n_used": int(values.n_used[i])})
            finite = np.isfinite(ranks[i])
            rows.append({**base, "metric": "prompt_effective_rank", "normalization": "raw",
                         "value": float(ranks[i][finite].mean()) if finite.any() else math.nan,
                         "n_used": int(finite.sum())})
            if dataset_entropy is not None and dataset_rank is not None:
                rows.append({**base, "metric": "dataset_entropy", "normalization": DATASET_MAIN,
                             "value": float(dataset_entropy[i]), "n_used": len(kept)})
                rows.append({**base, "metric": "effective_rank", "normalization": "raw",
                             "value": float(dataset_rank[i]), "n_used": len(kept)})
    return pd.DataFrame(rows).sort_values(["metric", "normalization", "position"], kind="stable").reset_index(drop=True)


def _changes(table: pd.DataFrame) -> dict[str, float | None]:
    """Mean over blocks of the prompt entropy (main normalization) change made by each half of the block.

    ``attention``: ``resid_mid`` minus the block input (the previous block's output);
    ``mlp``: ``resid_post`` minus ``resid_mid``.
    """
    part = table[(table["metric"] == "prompt_entropy") & (table["normalization"] == PROMPT_MAIN)]
    by_point = {name: rows.set_index("layer")["value"] for name, rows in part.groupby("sublayer")}
    if "resid_post" not in by_point or "resid_mid" not in by_point:
        return {}
    block_input = pd.concat([by_point[REFERENCE_POINT], by_point["resid_post"]]).sort_index()
    residual, output = by_point["resid_mid"], by_point["resid_post"]
    layers = residual.index
    attention_change = residual.to_numpy() - block_input.loc[layers - 1].to_numpy()
    mlp_change = output.loc[layers].to_numpy() - residual.to_numpy()
    return {"attention": round(float(np.nanmean(attention_change)), 6), "mlp": round(float(np.nanmean(mlp_change)), 6)}


def _plots(result: ExperimentResult) -> list[Plot]:
    from layerscope.report import plots

    table = result["sublayers"]
    frames = []
    for (metric, normalization), title in METRIC_TITLES.items():
        part = table[(table["metric"] == metric) & (table["normalization"] == normalization)]
        frames.append(part.assign(panel=title))
    data = pd.concat(frames, ignore_index=True).drop(columns="metric").rename(columns={"panel": "metric"})
    # the residual stream starts at the embeddings (canonical layer 0): draw them as its first point
    data["sublayer"] = data["sublayer"].replace(REFERENCE_POINT, "resid_post")
    return [Plot(None, plots.plot_lines_by_condition, data, "depth_pct", "value", "sublayer", facet="metric",
                 hue_order=list(SUBLAYER_POINTS), ordered=False, ylabel="value", hue_label="point in the block",
                 n_columns=2, title=f"After each sub-layer ({result.summary['style']} blocks): {result.summary['model']}")]
