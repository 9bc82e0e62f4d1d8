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

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from layerscope.errors import LayerscopeError
from layerscope.experiments.base import (
    ExperimentResult,
    Plot,
    Setup,
    common_options,
    int_list,
    log2_ticks,
    model_label,
    progress_bar,
    split_list,
)
from layerscope.experiments.curves import layer_frame, prompt_frame, rounded, spread_stats, values_at_depths
from layerscope.experiments.hooks import token_hook
from layerscope.models.loading import LoadedModel

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from layerscope.experiments.base import CommonOptions

__all__ = ["compare_finetune"]

EXPERIMENT = "compare_finetune"
DEFAULT_PREFIX_LENGTHS = (4, 8, 16, 32, 64, 128)  # t = 2 is always 0: two centered tokens are rank one
#: Depths (percent) of the prefix-entropy panels.
PREFIX_DEPTHS = (25.0, 50.0, 75.0, 100.0)


@common_options(without=("revision",))
def compare_finetune(
    base: str | LoadedModel,
    finetuned: str | LoadedModel,
    texts: Sequence[str] | None = None,
    *,
    labels: Sequence[str] | str | None = None,
    prefix_lengths: Sequence[int] | str = DEFAULT_PREFIX_LENGTHS,
    normalization: str = "maxEntropy",
    skip_tokens: int = 0,
    base_revision: str | None = None,
    finetuned_revision: str | None = None,
    **common: Unpack[CommonOptions],
) -> ExperimentResult:
    """Prompt entropy per layer and prefix entropy per token position of a base and a finetuned model.

    Parameters
    ----------
    base, finetuned : str or LoadedModel
        The two models (aliases, hub ids, paths, or loaded models). A name is loaded only when its
        turn comes, so two large models are never in memory at once.
    texts : sequence of str, optional
        The prompts (default: 64 texts of ``dataset``, BBC news articles, truncated to 128 tokens).
    labels : two str, optional
        Legend names (default: ``"base: <name>"`` and ``"finetuned: <name>"``).
    prefix_lengths : sequence of int or comma string
        Token positions ``t`` of the prefix entropy (entropy of the first ``t`` tokens).
    normalization : str, default "maxEntropy"
        Normalization of the plotted values (``raw`` is always computed too).
    skip_tokens : int, default 0
        Leave the first ``k`` tokens of every prompt out of the entropies (see
        :class:`~layerscope.experiments.hooks.SkipFirstTokens`).
    base_revision, finetuned_revision : str, optional
        Hub revisions of the two models.
    **common
        The options every experiment takes (:class:`~layerscope.experiments.base.CommonOptions`) but
        ``revision`` (see ``base_revision`` and ``finetuned_revision``).

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
    if skip_tokens < 0:
        raise LayerscopeError(f"skip_tokens must be >= 0, got {skip_tokens}")
    setup = Setup.from_options(
        EXPERIMENT, model=[base, finetuned], texts=texts, options={"labels": names, "prefix_lengths": prefixes,
                                                                   "normalization": normalization,
                                                                   "skip_tokens": skip_tokens}, **common)
    prompts = setup.load_texts().texts
    normalizations = tuple(dict.fromkeys((normalization, "raw")))

    entropy_frames, prompt_frames, prefix_frames, depth_counts, described = [], [], [], [], {}
    roles = (("base", base, base_revision), ("finetuned", finetuned, finetuned_revision))
    for position, (role, spec, revision) in enumerate(progress_bar(roles, setup.progress, EXPERIMENT, total=2)):
        loaded = setup.load(spec, revision)
        label = names[position] if names else f"{role}: {model_label(loaded)}"
        values = _token_values(setup, loaded, prompts, normalizations, prefixes)
        entropy, prompt, prefix = _role_tables(values, loaded.num_layers, normalizations, prefixes)
        entropy_frames.append(entropy.assign(model=label, role=role))
        prompt_frames.append(prompt.assign(model=label, role=role))
        prefix_frames.append(prefix.assign(model=label, role=role))
        depth_counts.append(loaded.num_layers)
        described[role] = str(loaded.model_id)
        setup.write(details={"role": role, "label": label}, model=loaded,
                    experiment_values=_store_rows(setup, entropy_frames[-1], prefix_frames[-1]),
                    metrics=layer_frame(values["prompt_entropy"], loaded.num_layers).assign(dataset=setup.texts.source))
        del loaded  # a model loaded here is freed before the next one is loaded

    entropy_table = _first(pd.concat(entropy_frames, ignore_index=True), ["model", "role"])
    per_prompt = pd.concat(prompt_frames, ignore_index=True)
    per_prompt = per_prompt[["model", "role", "layer", "depth_pct", "prompt_index", "normalization", "value"]]
    prefix_table = _first(pd.concat(prefix_frames, ignore_index=True), ["model", "role"])
    difference = pd.DataFrame(columns=["layer", "depth_pct", "normalization", "difference"])
    if depth_counts[0] == depth_counts[1]:
        pivot = entropy_table.pivot_table(index=["layer", "depth_pct", "normalization"], columns="role",
                                          values="mean").reset_index()
        difference = pivot.assign(difference=pivot["finetuned"] - pivot["base"])[
            ["layer", "depth_pct", "normalization", "difference"]]
    tables = {"prompt_entropy": entropy_table, "per_prompt": per_prompt, "prefix_entropy": prefix_table,
              "difference": difference}
    summary = _summary(entropy_table, prefix_table, normalization)
    summary.update(models=described, n_prompts=len(prompts), dataset=setup.texts.source, skip_tokens=skip_tokens)
    return setup.finish(tables, summary, _plots)


def _first(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """``frame`` with ``columns`` moved to the front."""
    return frame[[*columns, *(column for column in frame.columns if column not in columns)]]


def _token_values(setup: Setup, loaded: LoadedModel, prompts: list[str], normalizations: tuple[str, ...],
                  prefixes: list[int]) -> dict[str, Any]:
    """Prompt and prefix entropy of every prompt at every layer of one model, from one pass."""
    from layerscope.extract import extract

    hook = token_hook(len(prompts), normalizations=normalizations, prefix_lengths=prefixes,
                      skip_tokens=int(setup.config.options["skip_tokens"]))
    extract(loaded, prompts, max_length=setup.extraction.max_length, batch_size=setup.extraction.batch_size,
            token_hook=hook, progress=setup.progress)
    return hook.compute()


def _role_tables(values: dict[str, Any], num_layers: int, normalizations: tuple[str, ...],
                 prefixes: list[int]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """One model's prompt entropy spread per layer, its per-prompt values and its prefix entropy spread."""
    layers = np.arange(num_layers + 1)
    entropy_frames, prompt_frames, prefix_frames = [], [], []
    for name in normalizations:
        per_prompt = values["prompt_entropy"].per_prompt[name]  # (layers, n)
        entropy_frames.append(pd.DataFrame({"layer": layers, "depth_pct": 100.0 * layers / num_layers,
                                            "normalization": name, **spread_stats(per_prompt)}))
        prompt_frames.append(prompt_frame(per_prompt, num_layers, "prompt_entropy", name))
        stats = spread_stats(values["prefix_entropy"].per_prompt[name])  # over (prefixes, layers, n)
        grid_t, grid_layer = np.meshgrid(prefixes, layers, indexing="ij")
        prefix_frames.append(pd.DataFrame({
            "prefix_length": grid_t.ravel(), "layer": grid_layer.ravel(),
            "depth_pct": 100.0 * grid_layer.ravel() / num_layers, "normalization": name,
            **{key: array.ravel() for key, array in stats.items()},
        }))
    return (pd.concat(entropy_frames, ignore_index=True), pd.concat(prompt_frames, ignore_index=True),
            pd.concat(prefix_frames, ignore_index=True))


def _store_rows(setup: Setup, entropy: pd.DataFrame, prefix: pd.DataFrame) -> pd.DataFrame:
    """``experiment_values`` rows of one model: mean and spread of prompt and prefix entropy."""
    frames = []
    for metric, table, condition in (("prompt_entropy", entropy, "model"),
                                     ("prefix_entropy", prefix, ["model", "prefix_length"])):
        for stat in ("mean", "std"):
            keyed = table.assign(key=metric + ":" + table["normalization"] + ":" + stat)
            frames.append(setup.rows(keyed, condition, "key", value=stat))
    return pd.concat(frames, ignore_index=True)


def _summary(entropy: pd.DataFrame, prefix: pd.DataFrame, normalization: str) -> dict[str, Any]:
    main = entropy[entropy["normalization"] == normalization]
    summary: dict[str, Any] = {
        "normalization": normalization,
        "prompt_entropy_mean": values_at_depths(main, "mean", group="model"),
        "prompt_entropy_std": values_at_depths(main, "std", group="model"),
        "middle_layers_mean": {
            str(model): rounded(float(rows.loc[(rows["depth_pct"] > 25) & (rows["depth_pct"] < 75), "mean"].mean()))
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
            f"t={int(t)}": rounded(float(v))
            for t, v in zip(chosen["prefix_length"], chosen["mean"], strict=True)
        }
    return summary


def _plots(result: ExperimentResult) -> list[Plot]:
    from layerscope.report import plots

    normalization = result.summary["normalization"]
    per_prompt = result["per_prompt"]
    order = list(dict.fromkeys(per_prompt["model"]))
    rows = result["prefix_entropy"]
    rows = rows[rows["normalization"] == normalization]
    picked = []
    for _model, model_rows in rows.groupby("model", sort=False):
        depths = np.sort(model_rows["depth_pct"].unique())
        for target in PREFIX_DEPTHS:
            nearest = depths[np.argmin(np.abs(depths - target))]
            picked.append(model_rows[model_rows["depth_pct"] == nearest].assign(depth=int(target)))
    return [
        Plot("prompt_entropy", plots.plot_lines_by_condition, per_prompt[per_prompt["normalization"] == normalization],
             "depth_pct", "value", "model", hue_order=order, ordered=False, spread="std",
             ylabel=f"prompt entropy ({normalization})", hue_label="model",
             title="Prompt entropy per layer (mean +/- std over prompts)"),
        Plot("prefix_entropy", _prefix_plot, pd.concat(picked, ignore_index=True), order, normalization),
    ]


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
