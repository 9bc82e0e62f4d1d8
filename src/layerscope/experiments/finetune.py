"""Base versus finetuned model on the same prompts (SPEC section 7.5; the paper's chain-of-thought study).

Both models read the same texts. Reported per model: prompt entropy per layer (mean and spread
over prompts) and the prefix entropy against token position (entropy of the first ``t`` tokens of
each prompt, mean and spread over prompts) at a few depths. When both models have the same number
of layers the per-layer difference (finetuned minus base) is reported too; otherwise curves are
compared on depth %.

The real use is a base model and its finetune through hub ids, e.g. ``Qwen/Qwen2.5-1.5B`` against
``Qwen/Qwen2.5-Math-1.5B`` (the paper's chain-of-thought comparison) or ``EleutherAI/pythia-410m``
against an instruction-tuned derivative. The two bundled offline models (SmolLM2-135M-Instruct and
Gemma-3-270M base) are not such a pair: different families, tokenizers and training data. The
paper reports that the finetuned (chain-of-thought) model keeps a higher prompt entropy in its
intermediate layers, i.e. compresses its context less.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from layerscope.errors import LayerscopeError
from layerscope.experiments.common import (
    ExperimentResult,
    as_model,
    experiment_rows,
    int_list,
    layer_frame,
    log2_ticks,
    model_label,
    output_dir,
    plot_file,
    progress_bar,
    prompt_frame,
    resolve_texts,
    safe_plot,
    split_list,
    spread_stats,
    texts_digest,
    token_hook,
    values_at_depths,
    write_store,
)
from layerscope.models.loading import LoadedModel

__all__ = ["compare_finetune"]

logger = logging.getLogger(__name__)

EXPERIMENT = "compare_finetune"
DEFAULT_PREFIX_LENGTHS = (4, 8, 16, 32, 64, 128)  # t = 2 is always 0: two centered tokens are rank one
#: Depths (percent) of the prefix-entropy panels.
PREFIX_DEPTHS = (25.0, 50.0, 75.0, 100.0)


def compare_finetune(
    base: str | LoadedModel,
    finetuned: str | LoadedModel,
    texts: Sequence[str] | None = None,
    *,
    labels: Sequence[str] | str | None = None,
    dataset: str | None = None,
    limit: int | None = 64,
    seed: int = 0,
    max_length: int = 128,
    prefix_lengths: Sequence[int] | str = DEFAULT_PREFIX_LENGTHS,
    normalization: str = "maxEntropy",
    skip_tokens: int = 0,
    batch_size: int | str = "auto",
    out: str | Path | None = None,
    progress: bool = True,
    base_revision: str | None = None,
    finetuned_revision: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    final_norm: str = "none",
) -> ExperimentResult:
    """Prompt entropy per layer and prefix entropy per token position of a base and a finetuned model.

    Parameters
    ----------
    base, finetuned : str or LoadedModel
        The two models (aliases, hub ids, paths, or loaded models). A name is loaded only when its
        turn comes, so two large models are never in memory at once.
    texts, dataset, limit, seed, max_length
        The prompts (default: 64 BBC news articles truncated to 128 tokens).
    labels : two str, optional
        Legend names (default: ``"base: <name>"`` and ``"finetuned: <name>"``).
    prefix_lengths : sequence of int or comma string
        Token positions ``t`` of the prefix entropy (entropy of the first ``t`` tokens).
    normalization : str, default "maxEntropy"
        Normalization of the plotted values (``raw`` is always computed too).
    skip_tokens : int, default 0
        Leave the first ``k`` tokens of every prompt out of the entropies (see
        :class:`~layerscope.experiments.common.SkipFirstTokens`).
    batch_size, out, progress, device, dtype, final_norm
        As in the other experiments; ``base_revision`` / ``finetuned_revision`` pick hub revisions.

    Returns
    -------
    ExperimentResult
        Tables ``prompt_entropy`` (``model, role, layer, depth_pct, normalization, mean, std, q25,
        median, q75, n_used``), ``per_prompt`` (``model, role, layer, depth_pct, prompt_index,
        normalization, value``), ``prefix_entropy`` (``model, role, prefix_length, layer, depth_pct,
        normalization, mean, std, q25, median, q75, n_used``) and ``difference`` (``layer, depth_pct,
        normalization, difference``: finetuned minus base; empty when the depths differ).
    """
    prefixes = sorted({t for t in int_list(prefix_lengths, "prefix_lengths") if t >= 2})
    if not prefixes:
        raise LayerscopeError("prefix_lengths needs at least one length >= 2")
    names = split_list(labels) if labels is not None else []
    if names and len(names) != 2:
        raise LayerscopeError(f"labels must name the two models, got {names}")
    prompts, source = resolve_texts(texts, dataset, limit, seed)
    normalizations = tuple(dict.fromkeys((normalization, "raw")))

    entropy_frames, prompt_frames, prefix_frames = [], [], []
    described: dict[str, Any] = {}
    run_inputs = []
    depth_counts = []
    roles = (("base", base, base_revision), ("finetuned", finetuned, finetuned_revision))
    for position, (role, spec, revision) in enumerate(progress_bar(roles, progress, EXPERIMENT, total=2)):
        loaded = as_model(spec, revision, device, dtype, final_norm)
        label = names[position] if names else f"{role}: {model_label(loaded)}"
        hook = token_hook(len(prompts), normalizations=normalizations, prefix_lengths=prefixes,
                          skip_tokens=skip_tokens)
        from layerscope.extract import extract

        extract(loaded, prompts, max_length=max_length, batch_size=batch_size, token_hook=hook, progress=progress)
        values = hook.compute()
        num_layers = loaded.num_layers
        depth_counts.append(num_layers)
        entropy = values["prompt_entropy"]
        for name in normalizations:
            stats = spread_stats(entropy.per_prompt[name])  # over prompts, per layer
            layers = np.arange(num_layers + 1)
            entropy_frames.append(pd.DataFrame({"model": label, "role": role, "layer": layers,
                                                "depth_pct": 100.0 * layers / num_layers, "normalization": name,
                                                **stats}))
            prompt_frames.append(prompt_frame(entropy.per_prompt[name], num_layers, "prompt_entropy", name)
                                 .assign(model=label, role=role))
            prefix = values["prefix_entropy"].per_prompt[name]  # (prefixes, layers, n)
            stats = spread_stats(prefix)
            grid_t, grid_layer = np.meshgrid(prefixes, layers, indexing="ij")
            prefix_frames.append(pd.DataFrame({
                "model": label, "role": role, "prefix_length": grid_t.ravel(), "layer": grid_layer.ravel(),
                "depth_pct": 100.0 * grid_layer.ravel() / num_layers, "normalization": name,
                **{key: array.ravel() for key, array in stats.items()},
            }))
        described[role] = loaded.describe()
        run_inputs.append((role, layer_frame(entropy, num_layers)))
        del loaded  # a model loaded here is freed before the next one is loaded

    entropy_table = pd.concat(entropy_frames, ignore_index=True)
    per_prompt = pd.concat(prompt_frames, ignore_index=True)
    per_prompt = per_prompt[["model", "role", "layer", "depth_pct", "prompt_index", "normalization", "value"]]
    prefix_table = pd.concat(prefix_frames, ignore_index=True)
    difference = pd.DataFrame(columns=["layer", "depth_pct", "normalization", "difference"])
    if depth_counts[0] == depth_counts[1]:
        pivot = entropy_table.pivot_table(index=["layer", "depth_pct", "normalization"], columns="role",
                                          values="mean").reset_index()
        difference = pivot.assign(difference=pivot["finetuned"] - pivot["base"])[
            ["layer", "depth_pct", "normalization", "difference"]]
    tables = {"prompt_entropy": entropy_table, "per_prompt": per_prompt, "prefix_entropy": prefix_table,
              "difference": difference}
    summary = _summary(entropy_table, prefix_table, normalization)
    summary.update(models={role: info["model_id"] for role, info in described.items()}, n_prompts=len(prompts),
                   dataset=source, skip_tokens=skip_tokens)

    directory = output_dir(out)
    result = ExperimentResult(EXPERIMENT, tables, summary, directory)
    if directory is not None:
        config = {"experiment": EXPERIMENT, "base": described["base"]["model_id"],
                  "finetuned": described["finetuned"]["model_id"], "data": source, "n_prompts": len(prompts),
                  "max_length": max_length, "prefix_lengths": prefixes, "seed": seed, "skip_tokens": skip_tokens}
        for role, metrics in run_inputs:
            entropy_rows = entropy_table[entropy_table["role"] == role].assign(metric="prompt_entropy")
            prefix_rows = prefix_table[prefix_table["role"] == role].assign(metric="prefix_entropy")
            rows = pd.concat([
                experiment_rows(entropy_rows.assign(key=entropy_rows["metric"] + ":" + entropy_rows["normalization"]
                                                    + ":" + stat), EXPERIMENT, "model", "key", value=stat)
                for stat in ("mean", "std")
            ] + [
                experiment_rows(prefix_rows.assign(key=prefix_rows["metric"] + ":" + prefix_rows["normalization"]
                                                   + ":" + stat), EXPERIMENT, ["model", "prefix_length"], "key",
                                value=stat)
                for stat in ("mean", "std")
            ], ignore_index=True)
            info = described[role]
            run_id = write_store(directory, {**config, "role": role, "model": info}, model_id=str(info["model_id"]),
                                 revision=info["revision"], data_source=source,
                                 data_hash=texts_digest(prompts), experiment_values=rows,
                                 metrics=metrics.assign(dataset=source))
            result.run_ids.append(str(run_id))
        _plots(result, per_prompt, prefix_table, normalization)
    return result


def _summary(entropy: pd.DataFrame, prefix: pd.DataFrame, normalization: str) -> dict[str, Any]:
    main = entropy[entropy["normalization"] == normalization]
    summary: dict[str, Any] = {
        "normalization": normalization,
        "prompt_entropy_mean": values_at_depths(main, "mean", group="model"),
        "prompt_entropy_std": values_at_depths(main, "std", group="model"),
        "middle_layers_mean": {
            str(model): round(float(rows.loc[(rows["depth_pct"] > 25) & (rows["depth_pct"] < 75), "mean"].mean()), 4)
            for model, rows in main.groupby("model", sort=False)
        },
    }
    part = prefix[prefix["normalization"] == normalization]
    summary["prefix_entropy_at_half_depth"] = {}
    for model, rows in part.groupby("model", sort=False):
        depths = rows["depth_pct"].unique()
        nearest = depths[np.argmin(np.abs(depths - 50.0))]
        chosen = rows[rows["depth_pct"] == nearest]
        summary["prefix_entropy_at_half_depth"][str(model)] = {
            f"t={int(t)}": None if not np.isfinite(v) else round(float(v), 4)
            for t, v in zip(chosen["prefix_length"], chosen["mean"], strict=True)
        }
    return summary


def _plots(result: ExperimentResult, per_prompt: pd.DataFrame, prefix: pd.DataFrame, normalization: str) -> None:
    from layerscope.report import plots

    directory = result.out
    order = list(dict.fromkeys(per_prompt["model"]))
    part = per_prompt[per_prompt["normalization"] == normalization]
    safe_plot(result.plots, plot_file(directory, EXPERIMENT, "prompt_entropy"), plots.plot_lines_by_condition,
              part, "depth_pct", "value", "model", hue_order=order, ordered=False, spread="std",
              ylabel=f"prompt entropy ({normalization})", hue_label="model",
              title="Prompt entropy per layer (mean +/- std over prompts)")
    rows = prefix[prefix["normalization"] == normalization]
    picked = []
    for _model, model_rows in rows.groupby("model", sort=False):
        depths = np.sort(model_rows["depth_pct"].unique())
        for target in PREFIX_DEPTHS:
            nearest = depths[np.argmin(np.abs(depths - target))]
            picked.append(model_rows[model_rows["depth_pct"] == nearest].assign(depth=int(target)))
    data = pd.concat(picked, ignore_index=True)
    safe_plot(result.plots, plot_file(directory, EXPERIMENT, "prefix_entropy"), _prefix_plot, data, order,
              normalization)


def _prefix_plot(data: pd.DataFrame, order: list[str], normalization: str, out: Path) -> Path:
    """Prefix entropy against token position, one panel per depth, mean line and interquartile band."""
    from layerscope.report import plots

    figure = plots.lines_by_condition_figure(
        data, "prefix_length", "mean", "model", facet="depth", hue_order=order, ordered=False, logx=True,
        xlabel="token position t (first t tokens)", ylabel=f"prefix entropy ({normalization})", hue_label="model",
        title="Prefix entropy against token position (band: 25-75% of prompts)", n_columns=2,
    )
    log2_ticks(figure, data["prefix_length"].unique())
    colors = {}
    for axis in figure.axes:
        for line in plots.data_lines(axis):
            colors[line.get_label()] = line.get_color()
    for axis in figure.axes:
        title = axis.get_title()
        if not title.startswith("depth = "):
            continue
        depth = int(title.removeprefix("depth = "))
        axis.set_title(f"{depth}% depth")
        for model in order:
            rows = data[(data["depth"] == depth) & (data["model"] == model)].sort_values("prefix_length")
            if rows.empty:
                continue
            axis.fill_between(rows["prefix_length"], rows["q25"], rows["q75"], color=colors.get(model), alpha=0.18,
                              linewidth=0)
    return plots.save_figure(figure, out)
