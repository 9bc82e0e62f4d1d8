"""Bimodality of per-prompt entropy (SPEC section 7.7): histograms and a bimodality coefficient per layer.

The paper observed that in some intermediate layers the prompt entropies of individual prompts split
into two groups (a bimodal histogram) and could not trace it to prompt length or difficulty. This
experiment draws the per-prompt distribution of every layer and flags the bimodal layers with
Sarle's bimodality coefficient

    b = (G1^2 + 1) / (G2 + 3 (n - 1)^2 / ((n - 2)(n - 3)))

with the sample-size-corrected skewness G1 and excess kurtosis G2 of the n per-prompt values (the
SAS definitions, equal to ``scipy.stats.skew(bias=False)`` and ``kurtosis(bias=False)``). A
uniform distribution has b = 5/9. b is only a screening statistic: one outlier prompt far from the
rest makes a distribution very skewed and heavy-tailed, and b then exceeds 5/9 although there is a
single mode. So the values are also split in two at the best 1-D 2-means cut (the split minimizing
the within-group sum of squares) and a layer is flagged **bimodal** only when

- b > 5/9 (``threshold``), and
- the smaller group holds at least ``min_share`` of the prompts (default 10 %: a mode, not outliers), and
- Ashman's D = sqrt(2) |m1 - m2| / sqrt(s1^2 + s2^2) of the two groups exceeds 2 (clean separation
  for a mixture of two normals).

Every statistic is reported, so a layer with b > 5/9 that is not flagged can be examined. When prompt
lengths vary, the Spearman correlation between each prompt's value and its token count is reported
per layer, so a split caused by length is visible.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from layerscope.errors import LayerscopeError
from layerscope.experiments.base import ExperimentResult, Plot, Setup, common_options
from layerscope.experiments.curves import rounded
from layerscope.models.loading import LoadedModel

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from layerscope.experiments.base import CommonOptions

__all__ = ["BIMODAL_THRESHOLD", "bimodality", "bimodality_coefficient", "sample_moments", "two_group_split"]

EXPERIMENT = "bimodality"
#: Sarle's coefficient of a uniform distribution; larger values suggest bimodality.
BIMODAL_THRESHOLD = 5.0 / 9.0
_METRICS = ("prompt_entropy", "curvature")


def sample_moments(values: np.ndarray, axis: int = -1) -> dict[str, np.ndarray]:
    """Count, mean, standard deviation, corrected skewness G1 and excess kurtosis G2, ignoring NaN.

    Parameters
    ----------
    values : numpy.ndarray
        Samples along ``axis`` (NaN = missing).
    axis : int
        Sample axis.

    Returns
    -------
    dict of str to numpy.ndarray
        ``n, mean, std`` (ddof = 1), ``skewness`` (G1, needs n >= 3) and ``excess_kurtosis`` (G2, needs
        n >= 4); NaN where undefined or the values are constant.
    """
    x = np.moveaxis(np.asarray(values, dtype=np.float64), axis, -1)
    finite = np.isfinite(x)
    n = finite.sum(axis=-1).astype(np.float64)
    safe_n = np.maximum(n, 1.0)
    mean = np.where(finite, x, 0.0).sum(axis=-1) / safe_n
    centered = np.where(finite, x - mean[..., None], 0.0)
    m2 = (centered**2).sum(axis=-1) / safe_n
    m3 = (centered**3).sum(axis=-1) / safe_n
    m4 = (centered**4).sum(axis=-1) / safe_n
    with np.errstate(divide="ignore", invalid="ignore"):
        # a variance at rounding level (identical values) has no defined shape
        spread = m2 > (1e-12 * np.maximum(np.abs(mean), 1.0)) ** 2
        g1 = np.where(spread, m3 / np.where(spread, m2, 1.0) ** 1.5, np.nan)
        g2 = np.where(spread, m4 / np.where(spread, m2, 1.0) ** 2 - 3.0, np.nan)
        skewness = np.where(n >= 3, g1 * np.sqrt(n * (n - 1)) / (n - 2), np.nan)
        kurtosis = np.where(n >= 4, ((n + 1) * g2 + 6.0) * (n - 1) / ((n - 2) * (n - 3)), np.nan)
        std = np.where(n >= 2, np.sqrt(m2 * n / np.maximum(n - 1, 1)), np.nan)
    return {"n": n.astype(np.int64), "mean": np.where(n > 0, mean, np.nan), "std": std, "skewness": skewness,
            "excess_kurtosis": kurtosis}


def bimodality_coefficient(values: np.ndarray, axis: int = -1) -> np.ndarray:
    """Sarle's bimodality coefficient of the samples along ``axis`` (NaN ignored).

    Returns
    -------
    numpy.ndarray
        ``b`` in (0, 1]; NaN where fewer than 4 finite values or constant values. ``b > 5/9``
        (:data:`BIMODAL_THRESHOLD`) suggests a bimodal distribution.
    """
    moments = sample_moments(values, axis)
    n = moments["n"].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        correction = np.where(n >= 4, 3.0 * (n - 1) ** 2 / ((n - 2) * (n - 3)), np.nan)
        return (moments["skewness"] ** 2 + 1.0) / (moments["excess_kurtosis"] + correction)


def two_group_split(values: np.ndarray) -> dict[str, float]:
    """Best split of 1-D values into two groups (minimum within-group sum of squares), ignoring NaN.

    Returns
    -------
    dict
        ``cut`` (a value between the groups), ``minor_share`` (share of the values in the smaller
        group) and ``ashman_d`` (separation of the groups' means in units of their pooled spread;
        infinite when both groups are constant). NaN entries when fewer than 2 finite values.
    """
    x = np.sort(np.asarray(values, dtype=np.float64)[np.isfinite(values)])
    n = len(x)
    if n < 2 or x[-1] == x[0]:
        return {"cut": float("nan"), "minor_share": float("nan"), "ashman_d": float("nan")}
    sums, squares = np.cumsum(x), np.cumsum(x**2)
    k = np.arange(1, n)  # left group = x[:k]
    left_mean = sums[:-1] / k
    right_mean = (sums[-1] - sums[:-1]) / (n - k)
    within = (squares[:-1] - k * left_mean**2) + ((squares[-1] - squares[:-1]) - (n - k) * right_mean**2)
    best = int(np.argmin(within))
    size = best + 1
    left, right = x[:size], x[size:]
    spread = np.sqrt(left.var() + right.var())
    gap = abs(right.mean() - left.mean())
    return {"cut": float((x[best] + x[best + 1]) / 2), "minor_share": float(min(size, n - size) / n),
            "ashman_d": float(np.sqrt(2.0) * gap / spread) if spread > 0 else float("inf")}


@common_options(limit=128)
def bimodality(
    model: str | LoadedModel = "smollm2-135m",
    texts: Sequence[str] | None = None,
    *,
    metric: str = "prompt_entropy",
    normalization: str = "maxEntropy",
    threshold: float = BIMODAL_THRESHOLD,
    min_share: float = 0.1,
    bins: int = 20,
    **common: Unpack[CommonOptions],
) -> ExperimentResult:
    """Per-prompt metric histograms per layer and the layers whose distribution looks bimodal.

    Parameters
    ----------
    model : str or LoadedModel
        Alias, hub id or path, or a loaded model.
    texts : sequence of str, optional
        The prompts (default: 128 texts of ``dataset``, BBC news articles, truncated to 128 tokens).
    metric : {"prompt_entropy", "curvature"}
        Token-level metric whose per-prompt values are examined.
    normalization : str, default "maxEntropy"
        Normalization of prompt entropy (curvature has only ``raw``).
    threshold : float, default 5/9
        Bimodality coefficient above which a layer may be bimodal.
    min_share : float, default 0.1
        Share of prompts the smaller of the two groups must hold for a layer to be flagged (see the
        module docstring); a lone outlier prompt is not a second mode.
    bins : int, default 20
        Histogram bins per layer (table ``histograms``).
    **common
        The options every experiment takes (:class:`~layerscope.experiments.base.CommonOptions`); here
        ``limit`` defaults to 128.

    Returns
    -------
    ExperimentResult
        Tables ``coefficients`` (``layer, depth_pct, n, mean, std, skewness, excess_kurtosis,
        bimodality_coefficient, minor_share, ashman_d, above_threshold, bimodal, length_spearman``), ``per_prompt`` (``layer, depth_pct,
        prompt_index, n_tokens, value``), ``histograms`` (``layer, depth_pct, bin_left, bin_right,
        count``) and ``metrics`` (the metric's per-layer means in every normalization, as stored in
        ``layer_metrics``). The summary lists the bimodal layers and the largest coefficient.
    """
    from layerscope.metrics.compute import measure

    if metric not in _METRICS:
        raise LayerscopeError(f"bimodality needs a per-prompt metric: one of {', '.join(_METRICS)}, got '{metric}'")
    if metric == "curvature":
        normalization = "raw"
    setup = Setup.from_options(
        EXPERIMENT, model=model, texts=texts, options={"metric": metric, "normalization": normalization,
                                                       "threshold": threshold, "min_share": min_share, "bins": bins},
        **common)
    loaded = setup.load(model)
    prompts, source, _ = setup.load_texts()
    measured = measure(loaded, prompts, metrics=[metric], extraction=setup.extraction, seed=setup.config.seed,
                       progress=setup.progress)
    values_long = measured.prompt_values
    values_long = values_long[values_long["normalization"] == normalization]
    if values_long.empty:
        raise LayerscopeError(f"no per-prompt '{metric}' values with normalization '{normalization}'")
    num_layers = loaded.num_layers
    matrix = np.full((num_layers + 1, len(prompts)), np.nan)  # (layers, prompts); skipped prompts stay NaN
    matrix[values_long["layer"].to_numpy(int), values_long["prompt_index"].to_numpy(int)] = values_long["value"]
    token_counts = np.array([len(ids) for ids in loaded.tokenizer(
        [text if text.strip() else " " for text in prompts], truncation=True,
        max_length=setup.extraction.max_length)["input_ids"]])

    coefficients = _coefficients(matrix, token_counts, threshold, min_share)
    per_prompt = pd.DataFrame({
        "layer": values_long["layer"].to_numpy(int), "prompt_index": values_long["prompt_index"].to_numpy(int),
        "value": values_long["value"].to_numpy(float),
    })
    per_prompt.insert(1, "depth_pct", 100.0 * per_prompt["layer"] / num_layers)
    per_prompt.insert(3, "n_tokens", token_counts[per_prompt["prompt_index"].to_numpy()])
    metrics_frame = measured.metrics.assign(dataset=source)
    tables = {"coefficients": coefficients, "per_prompt": per_prompt, "histograms": _histograms(matrix, num_layers, bins),
              "metrics": metrics_frame}
    summary = {"model": str(loaded.model_id), "metric": metric, "normalization": normalization, "dataset": source,
               **_summary(coefficients, threshold, min_share, token_counts)}

    stored = coefficients.assign(bimodal=coefficients["bimodal"].astype(float),
                                 above_threshold=coefficients["above_threshold"].astype(float))
    rows = pd.concat(
        [setup.rows(stored.assign(key=key), None, "key", value=key)
         for key in ("bimodality_coefficient", "bimodal", "above_threshold", "minor_share", "ashman_d",
                     "skewness", "excess_kurtosis", "mean", "std", "length_spearman")],
        ignore_index=True,
    ).assign(condition=f"{metric}:{normalization}")
    # the store keeps each metric's per-prompt values in one normalization: the one examined here
    prompt_values = values_long.drop(columns="normalization").assign(dataset=source)
    setup.write(model=loaded, experiment_values=rows, metrics=metrics_frame, prompt_values=prompt_values)
    return setup.finish(tables, summary, _plots)


def _coefficients(matrix: np.ndarray, token_counts: np.ndarray, threshold: float, min_share: float) -> pd.DataFrame:
    """Per layer: moments, Sarle's coefficient, the best two-group split and the flags (see the module docstring)."""
    moments = sample_moments(matrix)
    coefficient = bimodality_coefficient(matrix)
    splits = pd.DataFrame([two_group_split(row) for row in matrix])
    above = np.nan_to_num(coefficient, nan=0.0) > threshold
    separated = (splits["minor_share"].fillna(0.0).to_numpy() >= min_share) & (
        splits["ashman_d"].fillna(0.0).to_numpy() > 2.0)
    layers = np.arange(matrix.shape[0])
    return pd.DataFrame({
        "layer": layers, "depth_pct": 100.0 * layers / (matrix.shape[0] - 1), "n": moments["n"],
        "mean": moments["mean"], "std": moments["std"], "skewness": moments["skewness"],
        "excess_kurtosis": moments["excess_kurtosis"], "bimodality_coefficient": coefficient,
        "minor_share": splits["minor_share"].to_numpy(), "ashman_d": splits["ashman_d"].to_numpy(),
        "above_threshold": above, "bimodal": above & separated,
        "length_spearman": _length_correlation(matrix, token_counts),
    })


def _summary(coefficients: pd.DataFrame, threshold: float, min_share: float, token_counts: np.ndarray) -> dict[str, Any]:
    flagged = coefficients[coefficients["bimodal"]]
    best = coefficients.loc[coefficients["bimodality_coefficient"].fillna(-1).idxmax()]
    return {
        "n_prompts": int(best["n"]), "threshold": round(threshold, 4), "min_share": min_share,
        "bimodal_layers": [int(layer) for layer in flagged["layer"]],
        "bimodal_depths_pct": [round(float(depth), 1) for depth in flagged["depth_pct"]],
        "above_threshold_layers": [int(layer) for layer in coefficients.loc[coefficients["above_threshold"], "layer"]],
        "minor_share_by_layer": [rounded(float(value)) for value in coefficients["minor_share"]],
        "max_coefficient": rounded(float(best["bimodality_coefficient"])),
        "max_coefficient_layer": int(best["layer"]),
        "coefficient_by_layer": [rounded(float(value)) for value in coefficients["bimodality_coefficient"]],
        "prompt_lengths": {"min": int(token_counts.min()), "max": int(token_counts.max())},
    }


def _length_correlation(matrix: np.ndarray, token_counts: np.ndarray) -> np.ndarray:
    """Spearman correlation per layer between prompt values and token counts (NaN if lengths are equal)."""
    from scipy.stats import spearmanr

    out = np.full(matrix.shape[0], np.nan)
    if len(np.unique(token_counts)) < 2:
        return out
    for layer, row in enumerate(matrix):
        finite = np.isfinite(row)
        if finite.sum() >= 3 and np.ptp(row[finite]) > 0:
            out[layer] = float(spearmanr(row[finite], token_counts[finite]).statistic)
    return out


def _histograms(matrix: np.ndarray, num_layers: int, bins: int) -> pd.DataFrame:
    rows = []
    for layer, row in enumerate(matrix):
        finite = row[np.isfinite(row)]
        if finite.size == 0:
            continue
        counts, edges = np.histogram(finite, bins=bins)
        for index, count in enumerate(counts):
            rows.append({"layer": layer, "depth_pct": 100.0 * layer / num_layers, "bin_left": float(edges[index]),
                         "bin_right": float(edges[index + 1]), "count": int(count)})
    return pd.DataFrame(rows, columns=["layer", "depth_pct", "bin_left", "bin_right", "count"])


def _plots(result: ExperimentResult) -> list[Plot]:
    from layerscope.report import plots

    assert result.config is not None
    coefficients, summary = result["coefficients"], result.summary
    num_layers = int(coefficients["layer"].max())
    spread = np.linspace(0, num_layers, 5).round().astype(int).tolist()
    finite = coefficients.dropna(subset=["bimodality_coefficient"])
    if not finite.empty:
        spread.append(int(finite.loc[finite["bimodality_coefficient"].idxmax(), "layer"]))
    metric = summary["metric"]
    return [
        Plot("histograms", plots.plot_prompt_histogram, result["per_prompt"].assign(metric=metric), metric=metric,
             layers=sorted(set(spread)), last_layer=num_layers,
             title=f"Per-prompt {metric.replace('_', ' ')} ({summary['normalization']}): {summary['model']}"),
        Plot("coefficient", _coefficient_plot, coefficients, result.config.options["threshold"], summary["model"]),
    ]


def _coefficient_plot(coefficients: pd.DataFrame, threshold: float, model: str, out: Path) -> Path:
    from layerscope.report import plots

    figure = plots.lines_by_condition_figure(
        coefficients.assign(series="bimodality coefficient"), "depth_pct", "bimodality_coefficient", "series",
        ylabel="Sarle's bimodality coefficient b", title=f"Bimodality by layer: {model}",
    )
    figure.set_size_inches(7.0, 3.8)
    axis = figure.axes[0]
    axis.axhline(threshold, color="#D55E00", linestyle="--", linewidth=1.2, gid="reference",
                 label="5/9 (uniform): above suggests bimodal")
    flagged = coefficients[coefficients["bimodal"]]
    if not flagged.empty:
        axis.scatter(flagged["depth_pct"], flagged["bimodality_coefficient"], color="#D55E00", zorder=3,
                     label="bimodal (two groups, each >= min share)")
    outliers = coefficients[coefficients["above_threshold"] & ~coefficients["bimodal"]]
    if not outliers.empty:
        axis.scatter(outliers["depth_pct"], outliers["bimodality_coefficient"], facecolors="none",
                     edgecolors="#000000", zorder=3, label="above 5/9 from outliers (not flagged)")
    axis.legend(loc="best", frameon=False)
    return plots.save_figure(figure, out)
