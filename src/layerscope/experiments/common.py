"""Shared plumbing of the further experiments: models, texts, token metrics, store rows and plots.

Every experiment returns an :class:`ExperimentResult` (its tables as pandas DataFrames, a summary
of the key numbers, the PNG files and the run ids) and, when given an output directory, writes its
rows into ``<out>/results.duckdb`` (table ``experiment_values``: ``experiment, condition, layer,
key, value``; plus ``layer_metrics`` / ``prompt_values`` where they apply) and its plots into
``<out>/``. PNG names start with the experiment's name so the HTML report finds them.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from layerscope.errors import LayerscopeError
from layerscope.models.loading import LoadedModel

logger = logging.getLogger(__name__)

#: Bundled corpus used when an experiment is given neither texts nor a dataset: news articles, long
#: enough that prompts reach ``max_length`` (prefix sweeps need long prompts).
DEFAULT_DATASET = "bbc"
#: Depths (percent) at which summaries quote per-layer values.
SUMMARY_DEPTHS = (0.0, 25.0, 50.0, 75.0, 100.0)
#: Columns of the store's ``experiment_values`` table.
EXPERIMENT_COLUMNS = ["experiment", "condition", "layer", "key", "value"]


@dataclass
class ExperimentResult:
    """What an experiment returns.

    Attributes
    ----------
    experiment : str
        Registry name (``"extreme_prompts"``, ...).
    tables : dict of str to pandas.DataFrame
        Result tables; each experiment's docstring lists them.
    summary : dict
        Key numbers (JSON-serialisable), e.g. prompt entropy per condition at a few depths.
    out : pathlib.Path or None
        Output directory (``results.duckdb`` and the PNG files), None when nothing was written.
    plots : list of pathlib.Path
        PNG files written.
    run_ids : list of str
        Runs written into the store.
    """

    experiment: str
    tables: dict[str, pd.DataFrame]
    summary: dict[str, Any] = field(default_factory=dict)
    out: Path | None = None
    plots: list[Path] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)

    def __getitem__(self, name: str) -> pd.DataFrame:
        try:
            return self.tables[name]
        except KeyError:
            raise LayerscopeError(
                f"experiment '{self.experiment}' has no table '{name}'; tables: {', '.join(self.tables)}"
            ) from None


# ------------------------------------------------------------------------------------------ inputs


def split_list(value: str | Iterable[Any] | None) -> list[str]:
    """A list from a comma-separated string (CLI) or any iterable; None gives an empty list."""
    if value is None:
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return [str(item).strip() if isinstance(item, str) else item for item in value]


def float_list(value: str | Iterable[float], name: str) -> list[float]:
    """Floats from a comma-separated string or an iterable (one-line error on a bad entry)."""
    try:
        return [float(item) for item in split_list(value)]
    except (TypeError, ValueError):
        raise LayerscopeError(f"{name} must be numbers separated by commas, got '{value}'") from None


def int_list(value: str | Iterable[int], name: str) -> list[int]:
    """Integers from a comma-separated string or an iterable."""
    try:
        return [int(item) for item in split_list(value)]
    except (TypeError, ValueError):
        raise LayerscopeError(f"{name} must be integers separated by commas, got '{value}'") from None


def as_model(
    model: str | LoadedModel,
    revision: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    final_norm: str = "none",
) -> LoadedModel:
    """``model`` itself when already loaded, else :func:`layerscope.load_model` of it."""
    if isinstance(model, LoadedModel):
        return model
    from layerscope.models import load_model

    return load_model(str(model), revision=revision, device=device, dtype=dtype, final_norm=final_norm)


def resolve_texts(
    texts: Sequence[str] | None, dataset: str | None, limit: int | None, seed: int
) -> tuple[list[str], str]:
    """The texts of an experiment and a label of where they came from.

    Parameters
    ----------
    texts : sequence of str, optional
        Used as given (``limit`` still applies, keeping the first ones).
    dataset : str, optional
        Otherwise a source for :func:`layerscope.load_texts` (default :data:`DEFAULT_DATASET`).
    limit : int, optional
        Number of texts (a seeded subset for datasets).
    seed : int
        Seed of the subset.
    """
    if texts is not None:
        if isinstance(texts, str):
            raise LayerscopeError("texts must be a list of strings, not one string")
        chosen = [str(text) for text in texts][: limit if limit else None]
        if not chosen:
            raise LayerscopeError("no texts given: the text list is empty")
        return chosen, "texts given in code"
    from layerscope.data import load_texts

    source = dataset or DEFAULT_DATASET
    return load_texts(source, limit=limit, seed=seed), str(source)


def texts_digest(texts: Sequence[str]) -> str:
    """Content hash of the texts (the store's ``data_hash``)."""
    from layerscope.extract.cache import texts_hash

    return texts_hash(list(texts))


def model_label(model: LoadedModel) -> str:
    """Short readable name of a model: its alias or the last part of its id/path, with the revision."""
    name = str(model.model_id).rstrip("/").split("/")[-1]
    # a hub revision (Pythia's step64000) tells checkpoints apart; bundled and local models need none
    return f"{name}@{model.revision}" if model.revision and model.source == "huggingface hub" else name


def step_of(label: str) -> int | None:
    """Training step named by a checkpoint label (``step1000``, ``checkpoint-512``), or None."""
    match = re.search(r"(\d+)$", str(label).rstrip("/"))
    return int(match.group(1)) if match else None


# ------------------------------------------------------------------------------------------ token metrics


def token_hook(
    n_texts: int,
    normalizations: Sequence[str] = ("maxEntropy", "raw"),
    prefix_lengths: Sequence[int] | None = None,
    curvature: bool = False,
    skip_tokens: int = 0,
) -> Any:
    """A :class:`~layerscope.metrics.accumulators.TokenMetrics` hook for prompt (and prefix) entropy.

    The first normalization is the one reported by default (``maxEntropy``, SPEC section 4). With
    ``skip_tokens`` the hook is wrapped in :class:`SkipFirstTokens`.
    """
    from layerscope.metrics.accumulators import (
        CurvatureAccumulator,
        PrefixEntropyAccumulator,
        PromptEntropyAccumulator,
        TokenMetrics,
    )

    members: list[Any] = [PromptEntropyAccumulator(n_texts, normalizations=tuple(normalizations))]
    if prefix_lengths:
        members.append(PrefixEntropyAccumulator(n_texts, tuple(prefix_lengths), normalizations=tuple(normalizations)))
    if curvature:
        members.append(CurvatureAccumulator(n_texts))
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


def layer_frame(values: Any, num_layers: int) -> pd.DataFrame:
    """Per-layer means of a :class:`~layerscope.metrics.accumulators.TokenMetricValues`, long format.

    Returns
    -------
    pandas.DataFrame
        ``layer, depth_pct, metric, normalization, value, n_used, n_skipped``.
    """
    frame = pd.DataFrame(values.records())
    frame.insert(1, "depth_pct", 100.0 * frame["layer"] / num_layers)
    return frame


def prompt_frame(per_prompt: np.ndarray, num_layers: int, metric: str, normalization: str) -> pd.DataFrame:
    """Per-prompt values ``(layers, n_texts)`` as a long table (NaN entries, skipped prompts, dropped).

    Returns
    -------
    pandas.DataFrame
        ``layer, depth_pct, prompt_index, metric, normalization, value``.
    """
    layer, prompt = np.nonzero(np.isfinite(per_prompt))
    return pd.DataFrame({
        "layer": layer.astype(int), "depth_pct": 100.0 * layer / num_layers, "prompt_index": prompt.astype(int),
        "metric": metric, "normalization": normalization, "value": per_prompt[layer, prompt],
    })


def spread_stats(values: np.ndarray, axis: int = -1) -> dict[str, np.ndarray]:
    """Mean, standard deviation, quartiles and count over ``axis``, ignoring NaN (skipped prompts)."""
    import warnings

    count = np.isfinite(values).sum(axis=axis)
    with warnings.catch_warnings():  # a layer where every prompt was skipped is NaN, not a warning
        warnings.simplefilter("ignore", RuntimeWarning)
        return {
            "mean": np.nanmean(values, axis=axis),
            "std": np.nanstd(values, axis=axis),
            "q25": np.nanquantile(values, 0.25, axis=axis),
            "median": np.nanmedian(values, axis=axis),
            "q75": np.nanquantile(values, 0.75, axis=axis),
            "n_used": count,
        }


def values_at_depths(
    frame: pd.DataFrame, value: str = "value", depths: Sequence[float] = SUMMARY_DEPTHS, group: str | None = None
) -> dict[str, Any]:
    """Values of the layers nearest to each depth %, e.g. ``{"0%": 0.91, "50%": 0.42, ...}``.

    With ``group`` the result is nested: ``{group value: {depth: value}}``.
    """
    if group is not None:
        return {str(key): values_at_depths(part, value, depths) for key, part in frame.groupby(group, sort=False)}
    by_depth = frame.groupby("depth_pct")[value].mean()
    out: dict[str, Any] = {}
    for depth in depths:
        nearest = by_depth.index[np.argmin(np.abs(by_depth.index.to_numpy(dtype=float) - depth))]
        out[f"{depth:g}%"] = _round(float(by_depth.loc[nearest]))
    return out


def _round(value: float, digits: int = 4) -> float | None:
    return None if not math.isfinite(value) else round(value, digits)


def valley(values: Sequence[float]) -> dict[str, Any]:
    """Shape of a mid-depth valley in a per-layer curve (index = layer 0..L).

    The valley depth is how far the lowest intermediate layer (0 < l < L) lies below the lower of
    the two ends (layer 0 = embeddings, layer L = last block): positive only for a real valley, and
    negative for a curve whose intermediate layers all lie above an end. The relative depth divides
    it by that end's value. A valley is *present* when the depth is positive.

    Returns
    -------
    dict
        ``min_layer, min_depth_pct, min_value, ends_min, valley_depth, relative_depth, present``.
    """
    curve = np.asarray(values, dtype=float)
    last = len(curve) - 1
    if last < 2 or not np.isfinite(curve).all():
        return {"min_layer": None, "min_depth_pct": None, "min_value": None, "ends_min": None,
                "valley_depth": None, "relative_depth": None, "present": False}
    min_layer = int(np.argmin(curve[1:last])) + 1
    ends = float(min(curve[0], curve[last]))
    depth = ends - float(curve[min_layer])
    return {
        "min_layer": min_layer,
        "min_depth_pct": round(100.0 * min_layer / last, 2),
        "min_value": _round(float(curve[min_layer])),
        "ends_min": _round(ends),
        "valley_depth": _round(depth),
        "relative_depth": _round(depth / ends) if ends else None,
        "present": bool(depth > 0),
    }


# ------------------------------------------------------------------------------------------ store and plots


def output_dir(out: str | Path | None) -> Path | None:
    """The output directory (created), or None when the experiment writes nothing."""
    if out is None:
        return None
    path = Path(out).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def experiment_rows(
    frame: pd.DataFrame,
    experiment: str,
    condition: str | Sequence[str] | None,
    key: str | Sequence[str],
    value: str = "value",
    layer: str | None = "layer",
) -> pd.DataFrame:
    """Rows of the store's ``experiment_values`` table from a result table.

    Parameters
    ----------
    frame : pandas.DataFrame
        A result table.
    experiment : str
        Experiment name written in every row.
    condition : str or sequence of str or None
        Column(s) naming the condition; several are joined as ``"a=x, b=y"``.
    key : str or sequence of str
        Column(s) naming the value (e.g. ``metric`` and ``normalization``, joined with ``:``).
    value : str
        Column of the value.
    layer : str or None
        Column of the layer (None: rows not tied to a layer).
    """

    def joined(columns: str | Sequence[str] | None, with_names: bool) -> pd.Series:
        if columns is None:
            return pd.Series([None] * len(frame), index=frame.index, dtype=object)
        names = [columns] if isinstance(columns, str) else list(columns)
        if len(names) == 1:
            return frame[names[0]].astype(str)
        parts = [(f"{name}=" if with_names else "") + frame[name].astype(str) for name in names]
        glue = ", " if with_names else ":"
        result = parts[0]
        for part in parts[1:]:
            result = result + glue + part
        return result

    return pd.DataFrame({
        "experiment": experiment,
        "condition": joined(condition, True).to_numpy(),
        "layer": frame[layer].astype("Int64").to_numpy() if layer else pd.array([pd.NA] * len(frame), dtype="Int64"),
        "key": joined(key, False).to_numpy(),
        "value": pd.to_numeric(frame[value], errors="coerce").astype(float).to_numpy(),
    })


def write_store(
    out: Path | None,
    config: Mapping[str, Any],
    *,
    model: LoadedModel | None = None,
    model_id: str | None = None,
    revision: str | None = None,
    data_source: str | None = None,
    data_hash: str | None = None,
    experiment_values: pd.DataFrame | None = None,
    metrics: pd.DataFrame | None = None,
    prompt_values: pd.DataFrame | None = None,
    skipped: Mapping[str, int] | None = None,
) -> str | None:
    """Write one run of an experiment into ``<out>/results.duckdb`` in one transaction; return its id.

    The run id hashes ``config`` (which names the experiment), so re-running the same configuration
    replaces its rows.
    """
    if out is None:
        return None
    from layerscope.store import ResultsStore

    if model is not None:
        model_id = model_id or str(model.model_id)
        revision = revision if revision is not None else model.revision
        config = {**config, "model": model.describe()}
    with ResultsStore.in_directory(out) as store:
        return store.write_run(
            dict(config),
            metrics=None if metrics is None else _store_columns(metrics, "metrics"),
            prompt_values=None if prompt_values is None else _store_columns(prompt_values, "prompt_values"),
            experiment_values=experiment_values,
            model_id=model_id,
            revision=revision,
            data_source=data_source,
            data_hash=data_hash,
            skipped=skipped,
        )


_STORE_COLUMNS = {
    "metrics": ["layer", "depth_pct", "metric", "normalization", "value", "n_used", "n_skipped", "dataset"],
    "prompt_values": ["layer", "prompt_index", "metric", "value", "dataset"],
}


def _store_columns(frame: pd.DataFrame, table: str) -> pd.DataFrame:
    """Only the columns the store keeps (it warns about any other)."""
    return frame[[column for column in _STORE_COLUMNS[table] if column in frame.columns]]


def plot_file(out: Path | None, experiment: str, name: str | None = None) -> Path | None:
    """``<out>/<experiment>[_<name>].png`` (None without an output directory)."""
    if out is None:
        return None
    return out / (f"{experiment}_{name}.png" if name else f"{experiment}.png")


def safe_plot(paths: list[Path], target: Path | None, draw: Any, *args: Any, **kwargs: Any) -> None:
    """Call ``draw(*args, out=target, **kwargs)`` and collect the path; a failed plot only warns.

    A plot is a by-product: the numbers are already stored when it is drawn, so a plotting problem
    (a degenerate table, a missing font) must not lose them.
    """
    if target is None:
        return
    try:
        result = draw(*args, out=target, **kwargs)
    except (LayerscopeError, ValueError) as error:
        logger.warning("no plot %s: %s", target.name, error)
        return
    paths.append(Path(result))


def progress_bar(iterable: Iterable[Any] | None, enabled: bool, description: str, total: int | None = None) -> Any:
    """A tqdm progress bar over ``iterable`` (None: updated by hand); disabled when ``enabled`` is False."""
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, disable=not enabled, desc=description, leave=False)


def log2_ticks(figure: Any, values: Sequence[float]) -> None:
    """Base-2 log x-axes with plain tick labels at ``values`` (token counts, training steps)."""
    ticks = sorted({float(value) for value in values if value > 0})
    if not ticks:
        return
    for axis in figure.axes:
        if axis.get_xscale() != "log":
            continue
        axis.set_xscale("log", base=2)
        axis.minorticks_off()
        shown = ticks if len(ticks) <= 12 else ticks[:: math.ceil(len(ticks) / 12)]
        axis.set_xticks(shown)
        axis.set_xticklabels([f"{tick:g}" for tick in shown])


# ------------------------------------------------------------------------------------------ several models

#: Metrics of the checkpoint and size experiments: no augmented views needed (no nlpaug, no extra passes).
DEFAULT_METRICS = ("prompt_entropy", "dataset_entropy", "curvature", "effective_rank")


def main_normalization(metric: str, available: Iterable[str]) -> str:
    """The normalization a plot shows for ``metric``: ``maxEntropy`` where it exists, else the first."""
    names = list(dict.fromkeys(available))
    return "maxEntropy" if "maxEntropy" in names else names[0]


def main_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows of a long metric table in each metric's main normalization (see :func:`main_normalization`)."""
    keep = [
        rows[rows["normalization"] == main_normalization(str(metric), rows["normalization"])]
        for metric, rows in frame.groupby("metric", sort=False)
    ]
    return pd.concat(keep, ignore_index=True) if keep else frame.iloc[0:0]


@dataclass
class ModelEntry:
    """One model of a multi-model experiment: a legend label and how to load it."""

    label: str
    model: str | LoadedModel
    revision: str | None = None


def metrics_over_models(
    entries: Sequence[ModelEntry],
    texts: Sequence[str],
    *,
    experiment: str,
    source: str,
    metrics: str | Sequence[str],
    max_length: int,
    batch_size: int | str,
    progress: bool,
    out: Path | None,
    config: Mapping[str, Any],
    device: str | None = None,
    dtype: str | None = None,
    final_norm: str = "none",
    condition: str = "model",
) -> tuple[pd.DataFrame, list[dict[str, Any]], list[str]]:
    """Per-layer metrics of several models (or checkpoints) on the same texts, one model in memory at a time.

    Each model is one run in the store (``layer_metrics`` and ``experiment_values`` with the model's
    label as condition).

    Returns
    -------
    frame : pandas.DataFrame
        :func:`~layerscope.metrics.compute.compute_metrics` rows of every model with a ``condition``
        column (the label) and ``order`` (position in ``entries``).
    described : list of dict
        :meth:`LoadedModel.describe` of each model, with its label.
    run_ids : list of str
        Store runs written (empty without ``out``).
    """
    from layerscope.config import ExtractConfig
    from layerscope.metrics.compute import METRIC_COLUMNS, measure

    frames, described, run_ids = [], [], []
    digest = texts_digest(texts)
    for order, entry in enumerate(progress_bar(entries, progress, experiment, total=len(entries))):
        loaded = as_model(entry.model, entry.revision, device, dtype, final_norm)
        measured = measure(loaded, texts, metrics=metrics, progress=False,
                           extraction=ExtractConfig(max_length=max_length, batch_size=batch_size))
        record = measured.record
        frame = measured.metrics[METRIC_COLUMNS].assign(**{condition: entry.label, "order": order})
        info = {**loaded.describe(), "label": entry.label, "extract_s": record.get("extract_s")}
        described.append(info)
        frames.append(frame)
        if out is not None:
            rows = experiment_rows(frame, experiment, condition, ["metric", "normalization"])
            run_id = write_store(out, {**config, condition: entry.label, "revision": entry.revision}, model=loaded,
                                 revision=entry.revision or loaded.revision, data_source=source, data_hash=digest,
                                 experiment_values=rows, metrics=frame.assign(dataset=source))
            run_ids.append(str(run_id))
        del loaded
    return pd.concat(frames, ignore_index=True), described, run_ids
