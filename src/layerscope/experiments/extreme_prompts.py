"""Extreme prompts (SPEC section 7.4): repetition, randomness and length against prompt entropy.

(a) **Repetition**: each token of a prompt is replaced with probability ``p`` by a token drawn
uniformly from the same prompt (:func:`layerscope.augment.tokens.repeat_tokens`); at ``p = 1`` the
prompt is a bag of its own tokens resampled, i.e. highly repetitive.
(b) **Randomness**: each token is replaced with probability ``p`` by a uniform token of the vocabulary
(:func:`layerscope.augment.tokens.random_tokens`).
(c) **Length**: entropy of the first ``t`` tokens of each prompt as ``t`` grows (prefix entropy; for a
causal model this equals the prompt entropy of the prompt truncated to ``t`` tokens), raw and
normalized, plus the prompts' own entropy grouped by their natural length.

Perturbations act on token ids, so the token count of every prompt is kept exactly; special tokens
the tokenizer adds (BOS, CLS/SEP) are left in place. The same seed is used for every ``p``, so the
positions replaced at a smaller ``p`` are a subset of those replaced at a larger one (common random
numbers: the curves differ by ``p``, not by the draw). ``p = 0`` is the identity, checked at run time,
and is measured once for both perturbations.

What the paper reports (Skean et al. 2025, section on extreme prompts): more repetition lowers the
prompt entropy of intermediate layers (the model compresses repeated patterns), more randomness
raises it, most in the early layers, and raw prompt entropy grows with prompt length.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from layerscope.errors import LayerscopeError, unknown
from layerscope.experiments.base import (
    ExperimentResult,
    Plot,
    Setup,
    common_options,
    float_list,
    int_list,
    log2_ticks,
    progress_bar,
    split_list,
)
from layerscope.experiments.curves import layer_frame, main_normalization, values_at_depths
from layerscope.experiments.hooks import token_hook
from layerscope.models.loading import LoadedModel

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from layerscope.experiments.base import CommonOptions

__all__ = ["DEFAULT_PROBABILITIES", "PERTURBATIONS", "extreme_prompts", "perturb_token_ids", "tokenize_prompts"]

logger = logging.getLogger(__name__)

EXPERIMENT = "extreme_prompts"
PERTURBATIONS = ("repetition", "randomness")
DEFAULT_PROBABILITIES = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)
#: The normalization of prompt entropy that summaries and plots show (the registry's main one).
MAIN = main_normalization("prompt_entropy")
#: Depth bands (percent, inclusive) of the summary: early, middle and late layers.
BANDS = {"early": (0.0, 25.0), "middle": (25.0, 75.0), "late": (75.0, 100.0)}


def tokenize_prompts(model: LoadedModel, texts: Sequence[str], max_length: int) -> tuple[list[list[int]], list[list[bool]]]:
    """Token ids of each text as :func:`layerscope.extract` makes them, and which ids may be perturbed.

    Returns
    -------
    token_ids : list of list of int
        Special tokens added, truncated to ``max_length`` (identical to the ordinary extraction).
    perturbable : list of list of bool
        False at the special tokens the tokenizer added (BOS, CLS, SEP), True elsewhere.
    """
    encoded = model.tokenizer(list(texts), truncation=True, max_length=max_length, add_special_tokens=True,
                              return_special_tokens_mask=True)
    token_ids = [list(ids) for ids in encoded["input_ids"]]
    special = encoded.get("special_tokens_mask")
    if special is None:
        perturbable = [[True] * len(ids) for ids in token_ids]
    else:
        perturbable = [[not bool(flag) for flag in flags] for flags in special]
    return token_ids, perturbable


def perturb_token_ids(
    token_ids: Sequence[Sequence[int]],
    perturbable: Sequence[Sequence[bool]] | None,
    kind: str,
    p: float,
    vocab_size: int,
    seed: int = 0,
) -> list[list[int]]:
    """Apply one perturbation to a list of prompts (each keeps its length).

    Parameters
    ----------
    token_ids : list of list of int
        The prompts.
    perturbable : list of list of bool, optional
        Positions that may be replaced (and, for repetition, drawn from); default all.
    kind : {"repetition", "randomness"}
        :func:`~layerscope.augment.tokens.repeat_tokens` or :func:`~layerscope.augment.tokens.random_tokens`.
    p : float in [0, 1]
        Replacement probability.
    vocab_size : int
        Random tokens are drawn from ``[0, vocab_size)``.
    seed : int
        Seed of the draws.

    Returns
    -------
    list of list of int
        The perturbed prompts, same lengths.
    """
    from layerscope.augment.tokens import random_tokens, repeat_tokens

    if kind not in PERTURBATIONS:
        raise unknown("perturbation", kind, PERTURBATIONS)
    lengths = [len(ids) for ids in token_ids]
    width = max(lengths) if lengths else 0
    ids = torch.zeros((len(token_ids), width), dtype=torch.long)
    mask = torch.zeros((len(token_ids), width), dtype=torch.bool)
    for row, prompt in enumerate(token_ids):
        ids[row, : len(prompt)] = torch.as_tensor(list(prompt), dtype=torch.long)
        allowed = [True] * len(prompt) if perturbable is None else list(perturbable[row])
        mask[row, : len(prompt)] = torch.as_tensor(allowed, dtype=torch.bool)
    if kind == "repetition":
        out = repeat_tokens(ids, mask, p, seed=seed)
    else:
        out = random_tokens(ids, mask, p, vocab_size, seed=seed)
    return [out[row, :length].tolist() for row, length in enumerate(lengths)]


def _auto_prefix_lengths(lengths: Sequence[int]) -> list[int]:
    """4, 8, 16, ... up to the longest prompt (counted in measured tokens)."""
    longest = max(lengths)
    candidates = [t for t in (4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048) if t <= longest]
    return candidates or ([longest] if longest >= 2 else [])


def _band_means(frame: pd.DataFrame) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for band, (low, high) in BANDS.items():
        part = frame[(frame["depth_pct"] >= low) & (frame["depth_pct"] <= high)]
        out[band] = None if part.empty else round(float(part["value"].mean()), 4)
    return out


@common_options()
def extreme_prompts(
    model: str | LoadedModel = "smollm2-135m",
    texts: Sequence[str] | None = None,
    *,
    probabilities: Sequence[float] | str = DEFAULT_PROBABILITIES,
    perturbations: Sequence[str] | str = PERTURBATIONS,
    prefix_lengths: Sequence[int] | str | None = "auto",
    length_buckets: int = 4,
    skip_tokens: int = 0,
    **common: Unpack[CommonOptions],
) -> ExperimentResult:
    """Prompt entropy per layer under token repetition and randomness, and against prompt length.

    Parameters
    ----------
    model : str or LoadedModel
        Alias, hub id or path, or a loaded model.
    texts : sequence of str, optional
        Prompts; default a seeded subset of ``dataset`` (64 BBC news articles, truncated to 128 tokens).
    probabilities : sequence of float or comma string, default (0, 0.1, 0.25, 0.5, 0.75, 1)
        Replacement probabilities ``p``.
    perturbations : sequence of str or comma string, default ("repetition", "randomness")
        Which perturbations to run.
    prefix_lengths : sequence of int, comma string, "auto" or None
        Prefix lengths ``t`` of the length sweep (``"auto"``: 4, 8, 16, ... up to the longest prompt;
        None or empty: no length sweep).
    length_buckets : int, default 4
        Quantile groups of the prompts' natural lengths (no table when all lengths are equal).
    skip_tokens : int, default 0
        Leave the first ``k`` tokens of every prompt out of the entropies (they still run through the
        model and may be perturbed): 1 removes the first token's massive activation (see
        :class:`~layerscope.experiments.hooks.SkipFirstTokens`). Prefix lengths then count from
        token ``k``.
    **common
        The options every experiment takes (:class:`~layerscope.experiments.base.CommonOptions`);
        ``seed`` seeds the perturbations too.

    Returns
    -------
    ExperimentResult
        Tables ``prompt_entropy`` (``perturbation, p, layer, depth_pct, metric, normalization, value,
        n_used, n_skipped``), ``length`` (``prefix_length, layer, depth_pct, normalization, value,
        n_used``), ``length_buckets`` (``bucket, mean_length, layer, depth_pct, normalization, value,
        n_prompts``) and ``token_counts`` (``prompt_index, n_tokens``). The summary has prompt entropy
        (maxEntropy) per condition at 0/25/50/75/100 % depth and averaged over early (0-25 %),
        middle (25-75 %) and late (75-100 %) layers.
    """
    kinds = split_list(perturbations)
    for kind in kinds:
        if kind not in PERTURBATIONS:
            raise unknown("perturbation", kind, PERTURBATIONS)
    chances = sorted(set(float_list(probabilities, "probabilities")))
    if any(not 0.0 <= p <= 1.0 for p in chances):
        raise LayerscopeError(f"probabilities must lie in [0, 1], got {chances}")
    if 0.0 not in chances:
        chances = [0.0, *chances]  # the unperturbed reference
    if skip_tokens < 0:
        raise LayerscopeError(f"skip_tokens must be >= 0, got {skip_tokens}")
    automatic = isinstance(prefix_lengths, str) and prefix_lengths == "auto"
    requested = [] if automatic else sorted({t for t in int_list(prefix_lengths or [], "prefix_lengths") if t >= 2})
    setup = Setup.from_options(
        EXPERIMENT, model=model, texts=texts, options={"probabilities": chances, "perturbations": kinds,
                                                       "skip_tokens": skip_tokens,
                                                       "prefix_lengths": "auto" if automatic else requested,
                                                       "length_buckets": length_buckets},
        **common)
    loaded = setup.load(model)
    token_ids, perturbable = tokenize_prompts(loaded, setup.load_texts().texts, setup.extraction.max_length)
    keep = [i for i, ids in enumerate(token_ids) if len(ids) > 0]
    if len(keep) < len(token_ids):
        logger.warning("skipped %d prompt(s) with no tokens", len(token_ids) - len(keep))
        token_ids, perturbable = [token_ids[i] for i in keep], [perturbable[i] for i in keep]
    if not token_ids:
        raise LayerscopeError("no prompt has any token")
    lengths = [len(ids) for ids in token_ids]
    prefixes = _auto_prefix_lengths([length - skip_tokens for length in lengths]) if automatic else requested

    original, entropy = _measure_conditions(setup, loaded, token_ids, perturbable, kinds, chances, prefixes)
    num_layers = loaded.num_layers
    length = _length_table(original.get("prefix_entropy"), num_layers)
    counted = np.maximum(np.asarray(lengths) - skip_tokens, 0)
    buckets = _bucket_table(original["prompt_entropy"].per_prompt, counted, num_layers, length_buckets)
    token_counts = pd.DataFrame({"prompt_index": np.arange(len(token_ids)), "n_tokens": lengths})
    tables = {"prompt_entropy": entropy, "length": length, "length_buckets": buckets, "token_counts": token_counts}
    summary = _summary(entropy, length, kinds)
    summary.update(model=str(loaded.model_id), n_prompts=len(token_ids), mean_tokens=round(float(np.mean(lengths)), 1),
                   tokens_kept=True, dataset=setup.texts.source, skip_tokens=skip_tokens)

    rows = [setup.rows(entropy, ["perturbation", "p"], ["metric", "normalization"])]
    if not length.empty:
        rows.append(setup.rows(length.assign(metric="prefix_entropy"), "prefix_length", ["metric", "normalization"]))
    if not buckets.empty:
        rows.append(setup.rows(buckets.assign(metric="prompt_entropy_by_length"), "bucket", ["metric", "normalization"]))
    setup.write(details={"prefix_lengths": prefixes, "n_prompts": len(token_ids)}, model=loaded,
                experiment_values=pd.concat(rows, ignore_index=True),
                metrics=layer_frame(original["prompt_entropy"], num_layers).assign(dataset=setup.texts.source))
    return setup.finish(tables, summary, _plots)


def _measure_conditions(setup: Setup, loaded: LoadedModel, token_ids: list[list[int]], perturbable: list[list[bool]],
                        kinds: list[str], chances: list[float], prefixes: list[int]) -> tuple[dict[str, Any], pd.DataFrame]:
    """Prompt entropy of every (perturbation, p) condition, one pass each; p = 0 is measured once, with the
    prefix entropies of the length sweep in the same pass.

    Returns
    -------
    original : dict
        The token metrics of the unperturbed prompts (``prompt_entropy``, ``prefix_entropy``).
    entropy : pandas.DataFrame
        ``perturbation, p, layer, depth_pct, metric, normalization, value, n_used, n_skipped``.
    """
    from layerscope.extract import extract_token_ids

    seed, skip_tokens = setup.config.seed, int(setup.config.options["skip_tokens"])
    vocab_size = min(len(loaded.tokenizer), int(getattr(loaded.model.config, "vocab_size", len(loaded.tokenizer))))
    lengths = [len(ids) for ids in token_ids]
    common = {"batch_size": setup.extraction.batch_size, "progress": False}
    conditions = [(kind, p) for kind in kinds for p in chances if p > 0]
    bar = progress_bar(None, setup.progress, f"{EXPERIMENT} {loaded.model_id}", total=1 + len(conditions))
    hook = token_hook(len(token_ids), prefix_lengths=prefixes or None, skip_tokens=skip_tokens)
    extract_token_ids(loaded, token_ids, token_hook=hook, **common)
    bar.update(1)
    original = hook.compute()
    unperturbed = layer_frame(original["prompt_entropy"], loaded.num_layers)
    frames = []
    for kind in kinds:
        if perturb_token_ids(token_ids, perturbable, kind, 0.0, vocab_size, seed) != token_ids:
            raise LayerscopeError(f"{kind} with p = 0 changed the prompts")  # the perturbations' contract
        frames.append(unperturbed.assign(perturbation=kind, p=0.0))
    for kind, p in conditions:
        perturbed = perturb_token_ids(token_ids, perturbable, kind, p, vocab_size, seed)
        if [len(ids) for ids in perturbed] != lengths:
            raise LayerscopeError(f"{kind} with p = {p} changed the token count of a prompt")
        hook = token_hook(len(token_ids), skip_tokens=skip_tokens)
        extract_token_ids(loaded, perturbed, token_hook=hook, **common)
        frames.append(layer_frame(hook.compute()["prompt_entropy"], loaded.num_layers).assign(perturbation=kind, p=p))
        bar.update(1)
    bar.close()
    entropy = pd.concat(frames, ignore_index=True)
    return original, entropy[["perturbation", "p", "layer", "depth_pct", "metric", "normalization", "value", "n_used",
                              "n_skipped"]]


def _length_table(prefix: Any, num_layers: int) -> pd.DataFrame:
    columns = ["prefix_length", "layer", "depth_pct", "normalization", "value", "n_used"]
    if prefix is None:
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame(prefix.records())
    frame["depth_pct"] = 100.0 * frame["layer"] / num_layers
    return frame[columns]


def _bucket_table(per_prompt: dict[str, np.ndarray], lengths: np.ndarray, num_layers: int, n_buckets: int) -> pd.DataFrame:
    """Mean prompt entropy of prompts grouped by their natural length (quantile groups)."""
    columns = ["bucket", "mean_length", "layer", "depth_pct", "normalization", "value", "n_prompts"]
    if n_buckets < 2 or len(np.unique(lengths)) < 2:
        return pd.DataFrame(columns=columns)
    edges = np.unique(np.quantile(lengths, np.linspace(0, 1, n_buckets + 1)))
    group = np.clip(np.searchsorted(edges, lengths, side="right") - 1, 0, len(edges) - 2)
    rows = []
    for index in np.unique(group):
        members = group == index
        label = f"{int(lengths[members].min())}-{int(lengths[members].max())} tokens"
        for normalization, values in per_prompt.items():  # (layers, n)
            chosen = values[:, members]
            count = np.isfinite(chosen).sum(axis=1)
            means = np.where(count > 0, np.nansum(chosen, axis=1) / np.maximum(count, 1), np.nan)
            for layer in range(values.shape[0]):
                rows.append({"bucket": label, "mean_length": float(lengths[members].mean()), "layer": layer,
                             "depth_pct": 100.0 * layer / num_layers, "normalization": normalization,
                             "value": float(means[layer]), "n_prompts": int(count[layer])})
    return pd.DataFrame(rows, columns=columns)


def _summary(entropy: pd.DataFrame, length: pd.DataFrame, kinds: list[str]) -> dict[str, Any]:
    main = entropy[entropy["normalization"] == MAIN]
    at_depths, bands = f"prompt_entropy_{MAIN}", f"bands_{MAIN}"
    summary: dict[str, Any] = {at_depths: {}, bands: {}}
    for kind in kinds:
        part = main[main["perturbation"] == kind]
        summary[at_depths][kind] = {f"p={p:g}": values_at_depths(rows) for p, rows in part.groupby("p")}
        summary[bands][kind] = {f"p={p:g}": _band_means(rows) for p, rows in part.groupby("p")}
    if not length.empty:
        summary["prefix_entropy"] = {
            normalization: {f"t={t}": values_at_depths(rows) for t, rows in part.groupby("prefix_length")}
            for normalization, part in length.groupby("normalization")
        }
    return summary


def _plots(result: ExperimentResult) -> list[Plot]:
    from layerscope.report import plots

    entropy, length, model = result["prompt_entropy"], result["length"], result.summary["model"]
    drawn = [Plot("perturbations", plots.plot_lines_by_condition, entropy[entropy["normalization"] == MAIN],
                  "depth_pct", "value", "p", facet="perturbation", ordered=True,
                  ylabel=f"prompt entropy ({MAIN})", hue_label="p (replaced)",
                  title=f"Prompt entropy under token perturbations: {model}")]
    if length.empty:
        return drawn
    num_layers = int(entropy["layer"].max())
    layers = sorted(set(np.linspace(0, num_layers, 5).round().astype(int).tolist()))
    part = length[length["layer"].isin(layers)].copy()
    part["layer_label"] = [f"layer {layer} ({100 * layer / num_layers:.0f}%)" for layer in part["layer"]]
    order = [f"layer {layer} ({100 * layer / num_layers:.0f}%)" for layer in layers]
    return [*drawn, Plot("length", _length_plot, part, order, f"Prompt entropy against prompt length: {model}")]


def _length_plot(data: pd.DataFrame, order: list[str], title: str, out: Path) -> Path:
    from layerscope.report import plots

    figure = plots.lines_by_condition_figure(
        data, "prefix_length", "value", "layer_label", facet="normalization", hue_order=order, ordered=True,
        logx=True, xlabel="prompt length t (first t tokens)", ylabel="prefix entropy", hue_label="layer", title=title)
    log2_ticks(figure, data["prefix_length"].unique())
    return plots.save_figure(figure, out)
