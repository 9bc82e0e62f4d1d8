"""One measurement path: every metric of every layer from one pass over the texts plus the view passes.

:func:`measure` is the single place where the model runs for metrics: given a loaded model, its texts
(or images), named sets of them and a view plan, it runs one extraction with the token hook (prompt
entropy and curvature on each batch's token states, never stored), reads the dataset-level metrics
off the pooled embeddings of that same pass, encodes the planned augmented views once (LiDAR's views
double as InfoNCE's and DiME's), and returns one metric table per set. ``compute_metrics``,
``analyze``, the sweep's metrics job and the vision experiment all call it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from layerscope.config import (
    DEFAULT_LIDAR_TEXTS,
    DEFAULT_N_VIEWS,
    DEFAULT_VIEW_MAX_LENGTH,
    DEFAULT_VIEW_TEXTS,
    ExtractConfig,
    ViewConfig,
)
from layerscope.extract import extract
from layerscope.metrics.accumulators import TokenMetrics
from layerscope.metrics.budget import WorkEstimate, plan_record
from layerscope.metrics.registry import MetricSpec, resolve
from layerscope.metrics.views import ViewPlan, encode_planned, encode_views, plan_for, set_rows
from layerscope.models.loading import LoadedModel

__all__ = ["METRIC_COLUMNS", "Measurement", "announce", "compute_metrics", "encode_views", "measure", "metric_rows",
           "resolve_options", "token_hook"]

logger = logging.getLogger(__name__)

METRIC_COLUMNS = ["layer", "depth_pct", "metric", "normalization", "value", "n_used", "n_skipped"]
PROMPT_COLUMNS = ["layer", "prompt_index", "metric", "normalization", "value"]
#: Name of the one text set of :func:`compute_metrics`.
TEXTS_SET = "texts"


def resolve_options(spec: MetricSpec, options: Mapping[str, Mapping[str, Any]] | None, seed: int) -> dict[str, Any]:
    """A metric's option overrides, validated; random metrics take the run's seed unless given one."""
    chosen = dict((options or {}).get(spec.name, {}))
    if spec.random and "seed" in spec.defaults:
        chosen.setdefault("seed", seed)
    spec.resolve_options(chosen)  # unknown options raise here
    return chosen


@dataclass
class Measurement:
    """What :func:`measure` produced.

    Attributes
    ----------
    metrics : pandas.DataFrame
        Long table ``layer, depth_pct, metric, normalization, value, n_used, n_skipped, dataset``
        (``dataset`` = the text set's name).
    prompt_values : pandas.DataFrame
        Per-prompt token metrics ``layer, prompt_index, metric, normalization, value`` (``prompt_index``
        = position in the input list; skipped prompts left out).
    extraction : Extraction
        The one pass over the texts (pooled embeddings of every layer).
    plan : ViewPlan
        Which texts got views.
    record : dict
        How it was made: the extraction record, metrics, options, seed, forward passes, timings.
    conditioner : Conditioner or None
        The label-free conditioning fitted on the texts (see ``ExtractConfig.condition``), if any.
    """

    metrics: pd.DataFrame
    prompt_values: pd.DataFrame
    extraction: Any
    plan: ViewPlan
    record: dict[str, Any] = field(default_factory=dict)
    conditioner: Any = None

    @property
    def embeddings(self) -> Any:
        """The extraction as the metrics saw it: conditioned (and normalized) when asked to."""
        if self.conditioner is None:
            return self.extraction
        import dataclasses

        conditioned = self.conditioner.apply(self.extraction.pooled).to(torch.float32).numpy()
        return dataclasses.replace(self.extraction, pooled=conditioned)


def measure(
    model: LoadedModel,
    texts: Sequence[str] | Any,
    *,
    sets: Mapping[str, Sequence[int]] | None = None,
    union: str | None = None,
    metrics: str | Iterable[str] = "all",
    views: ViewConfig | None = None,
    extraction: ExtractConfig | None = None,
    seed: int = 0,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    cache_dir: str | None = None,
    progress: bool = True,
    notify: Callable[[str], None] | None = None,
) -> Measurement:
    """Every metric of every layer on named sets of texts, from one pass plus the planned views.

    Parameters
    ----------
    model : LoadedModel
    texts : sequence of str, or images for a vision model
        Every text the sets draw from; empty texts are skipped and counted.
    sets : mapping of str to sequence of int, optional
        Named sets of positions in ``texts`` (default: one set ``"texts"`` with all of them). Each
        set's metrics are computed on its own texts (a set with fewer than 2 texts gets none).
    union : str, optional
        Name of an extra set over all of ``sets`` whose invariance metrics use the union of their views.
    metrics : "all", a name, a comma list, or names
    views : ViewConfig, optional
        The views budget of the run (default: :class:`ViewConfig`'s defaults, the measured budget).
    extraction : ExtractConfig, optional
        Pooling, max length, batch size, cache dtype.
    seed : int
        Seed of the view subsets, the views and random metrics.
    options : mapping, optional
        Per-metric option overrides, e.g. ``{"dime": {"legacy_covariance": True}}``.
    cache_dir, progress
        As in :func:`layerscope.extract`.
    notify : callable, optional
        Gets, before the first pass, the line saying the views and their cost and, for work over a
        minute, the time estimate (:func:`announce`; default: logged at INFO level).

    Returns
    -------
    Measurement
    """
    specs = resolve(metrics)
    views = views or ViewConfig()
    extraction = extraction or ExtractConfig()
    chosen = {spec.name: resolve_options(spec, options, seed) for spec in specs}
    vision = model.modality == "vision"
    if vision:  # images: prepared once; views are random resized crops of the prepared pixels
        from layerscope.extract.images import prepare_images

        texts = prepare_images(model, texts)
    else:
        texts = list(texts) if not isinstance(texts, str) else texts
    n_inputs = len(texts)
    sets = {TEXTS_SET: range(n_inputs)} if sets is None else sets
    timings: dict[str, float] = {}
    common: dict[str, Any] = {**extraction.extract_options(), "cache_dir": cache_dir, "progress": progress}
    estimate = announce(model, texts, sets, specs, chosen, views, extraction, seed, union=union, notify=notify)

    # 1. one pass: pooled embeddings of every layer, token metrics on the fly
    start = time.perf_counter()
    hook = token_hook(specs, n_inputs, chosen)
    if vision:
        from layerscope.extract.images import extract_images

        common.pop("max_length")
        base = extract_images(model, texts, token_hook=hook, prepared=True, **common)
    else:
        base = extract(model, texts, token_hook=hook, **common)
    token_values = hook.compute() if hook is not None else {}
    timings["extract_s"] = time.perf_counter() - start

    # 2. the sets as rows of the pass (empty texts never reached the model: counted as skipped)
    usable, missing = set_rows(sets, base.kept, n_inputs)

    # 3. the planned views, encoded once
    start = time.perf_counter()
    view_specs = [spec for spec in specs if spec.n_views > 0]
    plan = plan_for(usable, [spec.n_views for spec in view_specs], views, seed, union=union)
    if union is not None:
        missing[union] = sum(missing.values())
    view_inputs = texts if vision else base.texts
    pair_views, lidar_views = encode_planned(model, view_inputs, plan, seed,
                                             **{**common, "max_length": views.view_length(extraction.max_length)})
    timings["views_s"] = time.perf_counter() - start

    # 4. metrics of every set, on the device of the model where it is a GPU; a conditioning is fitted
    # on all the texts' embeddings (no labels) and applied to them and to the views
    start = time.perf_counter()
    from layerscope.extract.conditioning import fit_configured, normalize_record

    conditioner = fit_configured(base.pooled, base.layers, extraction, model)
    device = _metrics_device(model, base.pooled)
    pooled = base.tensor(torch.float64).to(device)  # (layers, n_kept, d)
    if conditioner is not None:
        pooled, pair_views, lidar_views = (None if x is None else conditioner.apply(x)
                                           for x in (pooled, pair_views, lidar_views))
    pair_views = None if pair_views is None else pair_views.to(device)
    lidar_views = None if lidar_views is None else lidar_views.to(device)
    frames = []
    for name, part in plan.sets.items():
        rows = part.rows
        sub_pair = None if pair_views is None else pair_views[:, :, plan.pair_positions(name)]
        sub_lidar = None if lidar_views is None else lidar_views[:, :, plan.lidar_positions(name)]
        frame = pd.DataFrame(metric_rows(specs, chosen, pooled[:, torch.as_tensor(rows, device=device)],
                                         token_values, base.kept[rows], missing.get(name, 0),
                                         pair_views=sub_pair, lidar_views=sub_lidar))
        frames.append(frame.assign(dataset=name))
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*METRIC_COLUMNS, "dataset"])
    table.insert(1, "depth_pct", 100.0 * table["layer"].astype(float) / model.num_layers)
    timings["metrics_s"] = time.perf_counter() - start

    needs_lidar = any(spec.n_views > 2 for spec in view_specs)
    record = {
        **base.record,
        "metrics": [spec.name for spec in specs],
        "n_views": views.n_views if needs_lidar else (2 if view_specs else 0),
        "seed": seed,
        "options": {name: dict(value) for name, value in chosen.items() if value},
        "n_forward_texts": len(base.texts) + plan.n_encoded,
        "views": plan_record(plan, views, union=union),
        "estimated_s": None if estimate is None else round(estimate.seconds, 1),
        "conditioning": None if conditioner is None else conditioner.describe(),
        "normalize": normalize_record(extraction, model),
        **{key: round(value, 3) for key, value in timings.items()},
    }
    return Measurement(table[[*METRIC_COLUMNS, "dataset"]], _prompt_frame(token_values), base, plan, record,
                       conditioner)


def announce(
    model: LoadedModel,
    inputs: Sequence[Any] | Any,
    sets: Mapping[str, Sequence[int]],
    specs: Sequence[MetricSpec],
    chosen: Mapping[str, Mapping[str, Any]],
    views: ViewConfig,
    extraction: ExtractConfig,
    seed: int,
    *,
    union: str | None = None,
    notify: Callable[[str], None] | None = None,
) -> WorkEstimate | None:
    """Say, before the first pass, what the views are and cost and, for long work, how long it takes.

    The plan is :func:`~layerscope.metrics.budget.plan_ahead`'s (the one :func:`measure` then makes).
    Work of at least :data:`~layerscope.metrics.budget.PROBE_FROM_PASSES` forward passes is timed on a
    probe batch (:func:`~layerscope.metrics.budget.estimate_work`: a few texts, token metrics included,
    and one view of each, without the cache) and said when it exceeds a minute. ``inputs`` are the
    texts, or the prepared images of a vision model. Returns the estimate, if one was made.
    """
    from layerscope.metrics import budget

    say = notify or logger.info
    vision = model.modality == "vision"
    plan = budget.plan_ahead(inputs, sets, specs, views, seed, union=union, vision=vision)
    line = budget.budget_line(plan, specs, union=union, views=views)
    if line:
        say(line)
    kept = budget.kept_inputs(inputs, vision=vision)
    if len(kept) + plan.n_encoded < budget.PROBE_FROM_PASSES:
        return None
    options: dict[str, Any] = {**extraction.extract_options(), "cache_dir": None, "progress": False}

    def pick(rows: Sequence[int]) -> Any:
        chosen_rows = kept[np.asarray(rows, dtype=np.int64)]
        return inputs[torch.as_tensor(chosen_rows)] if vision else [inputs[i] for i in chosen_rows]

    def run_texts(rows: Sequence[int]) -> None:
        hook = token_hook(specs, len(rows), chosen)
        if vision:
            from layerscope.extract.images import extract_images

            extract_images(model, pick(rows), token_hook=hook, prepared=True,
                           **{key: value for key, value in options.items() if key != "max_length"})
        else:
            extract(model, pick(rows), token_hook=hook, **options)
        if hook is not None:
            hook.compute()

    def run_views(rows: Sequence[int]) -> None:
        encode_views(model, pick(rows), 1, seed, **{**options, "max_length": views.view_length(extraction.max_length)})

    estimate = budget.estimate_work(len(kept), plan.n_encoded, run_texts, run_views, len(kept), seed=seed,
                                    scale=None if vision else _padding(model, pick(range(len(kept))), extraction, views))
    if estimate.seconds >= budget.SAY_FROM_SECONDS:
        say(estimate.describe())
    return estimate


def _padding(model: LoadedModel, texts: Sequence[str], extraction: ExtractConfig,
             views: ViewConfig) -> Callable[[Sequence[int]], tuple[float, float]]:
    """``scale`` of :func:`~layerscope.metrics.budget.estimate_work`: the texts' token lengths (views cut at
    the views' length) batched as the pass batches them, against the probe's."""
    from layerscope.extract.engine import TokenizedTexts, resolve_max_length
    from layerscope.metrics.budget import padding_scale

    max_length, _ = resolve_max_length(model, extraction.max_length)
    lengths = TokenizedTexts.from_texts(model, texts, max_length).lengths
    view_lengths = lengths.clamp(max=views.view_length(max_length) or max_length)
    every = range(len(texts))

    def scale(rows: Sequence[int]) -> tuple[float, float]:
        return (padding_scale(lengths, rows, every, model, extraction.batch_size),
                padding_scale(view_lengths, rows, every, model, extraction.batch_size))

    return scale


def _metrics_device(model: LoadedModel, pooled: np.ndarray) -> torch.device:
    """The model's GPU when it has one and the float64 embeddings (and their Grams) fit, else the CPU."""
    device = model.device
    if device.type != "cuda":
        return torch.device("cpu")
    free, _ = torch.cuda.mem_get_info(device)
    layers, n, d = pooled.shape
    needed = 8 * layers * (n * d + 11 * n * n)  # embeddings + DiME's 1 + 10 n x n matrices per layer
    return device if needed < 0.5 * free else torch.device("cpu")


def compute_metrics(
    model: LoadedModel,
    texts: Sequence[str],
    metrics: str | Iterable[str] = "all",
    *,
    n_views: int = DEFAULT_N_VIEWS,
    view_texts: int | str | None = DEFAULT_VIEW_TEXTS,
    lidar_texts: int | str | None = DEFAULT_LIDAR_TEXTS,
    view_max_length: int | str | None = DEFAULT_VIEW_MAX_LENGTH,
    seed: int = 0,
    pooling: str = "mean",
    max_length: int | None = None,
    batch_size: int | str = "auto",
    cache_dir: str | None = None,
    progress: bool = True,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> pd.DataFrame:
    """Per-layer values of the selected metrics, as a long table.

    Parameters
    ----------
    model : LoadedModel
        From :func:`layerscope.load_model`.
    texts : sequence of str, or images for a vision model
        Empty texts are skipped and counted (``n_skipped``). A vision model takes images (see
        :func:`layerscope.extract.prepare_images`) and random resized crops as views.
    metrics : "all", a name, a comma list, or names
        See :func:`layerscope.metrics.available`.
    n_views : int
        Augmented views per text for LiDAR (the paper's 16); InfoNCE and DiME use the first 2.
    view_texts, lidar_texts, view_max_length : int, "all" or None
        How many texts get 2 views (InfoNCE, DiME) and ``n_views`` views (LiDAR), and the tokens of a
        view: the views budget by default (:class:`~layerscope.config.ViewConfig`); None or ``"all"``:
        every text, whole (the paper's setting).
    seed : int
        Seed of the augmented views and of DiME's permutations.
    pooling, max_length, batch_size, cache_dir, progress
        As in :func:`layerscope.extract`.
    options : mapping, optional
        Per-metric option overrides, e.g. ``{"dime": {"legacy_covariance": True}}``.

    Returns
    -------
    pandas.DataFrame
        Columns ``layer, depth_pct, metric, normalization, value, n_used, n_skipped``: a plain table
        that concatenates and merges. The per-prompt values and the record of how it was made come
        with :func:`measure`, which this calls.
    """
    measured = measure(model, texts, metrics=metrics, views=ViewConfig(n_views, view_texts, lidar_texts, view_max_length),
                       extraction=ExtractConfig(pooling=pooling, max_length=max_length, batch_size=batch_size),
                       seed=seed, options=options, cache_dir=cache_dir, progress=progress)
    return measured.metrics[METRIC_COLUMNS]


def metric_rows(
    specs: Sequence[MetricSpec],
    chosen: Mapping[str, Mapping[str, Any]],
    pooled: torch.Tensor,
    token_values: Mapping[str, Any],
    positions: np.ndarray,
    n_missing: int = 0,
    pair_views: torch.Tensor | None = None,
    lidar_views: torch.Tensor | None = None,
    layers: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """Long rows of every metric of ``specs`` on one set of texts.

    Parameters
    ----------
    pooled : Tensor, shape (layers, n, d)
        Pooled embeddings of the texts.
    token_values : mapping of metric name to TokenMetricValues
        Per-prompt token metrics over a larger list; ``positions`` (n,) picks this set's prompts.
    n_missing : int
        Texts of the set that never reached the model (empty): counted as skipped.
    pair_views : Tensor, shape (layers, >=2, n_pairs, d), optional
        Views for InfoNCE and DiME (the first two are used).
    lidar_views : Tensor, shape (layers, J, n_lidar, d), optional
        Views for LiDAR.
    """
    layers = list(range(pooled.shape[0])) if layers is None else list(layers)
    rows: list[dict[str, Any]] = []
    n = pooled.shape[1]
    for spec in specs:
        options = chosen.get(spec.name, {})
        if spec.level == "token":
            values = token_values[spec.name]
            means, used = {}, None
            for normalization, per_prompt in values.per_prompt.items():
                subset = per_prompt[:, positions]  # (layers, n)
                finite = np.isfinite(subset)
                used = finite.sum(1)
                means[normalization] = np.where(used > 0, np.nansum(subset, 1) / np.maximum(used, 1), np.nan)
            assert used is not None
            rows += _rows(spec.name, means, layers, used, n - used + n_missing)
        elif spec.inputs == "pooled":
            rows += _rows(spec.name, spec.compute(pooled, **options), layers, n, n_missing)
        elif spec.inputs == "pair" and pair_views is not None:
            values = spec.compute(pair_views[:, 0], pair_views[:, 1], **options)
            rows += _rows(spec.name, values, layers, pair_views.shape[2], n - pair_views.shape[2] + n_missing)
        elif spec.inputs == "views" and lidar_views is not None:
            values = spec.compute(lidar_views.transpose(1, 2), **options)  # (layers, n, views, d)
            rows += _rows(spec.name, values, layers, lidar_views.shape[2], n - lidar_views.shape[2] + n_missing)
    return rows


def _rows(spec_name: str, values: Mapping[str, torch.Tensor | np.ndarray], layers: Sequence[int],
          n_used: Iterable[int] | int, n_skipped: Iterable[int] | int) -> list[dict[str, Any]]:
    used = list(n_used) if not isinstance(n_used, int) else [n_used] * len(layers)
    skipped = list(n_skipped) if not isinstance(n_skipped, int) else [n_skipped] * len(layers)
    rows = []
    for normalization, tensor in values.items():
        array = tensor.detach().cpu().numpy() if isinstance(tensor, torch.Tensor) else np.asarray(tensor)
        for position, layer in enumerate(layers):
            rows.append({"layer": layer, "metric": spec_name, "normalization": normalization,
                         "value": float(array[position]), "n_used": int(used[position]),
                         "n_skipped": int(skipped[position])})
    return rows


def token_hook(specs: Sequence[MetricSpec], n_texts: int,
               chosen: Mapping[str, Mapping[str, Any]] | None = None) -> TokenMetrics | None:
    """The extraction token hook computing every token-level metric of ``specs`` over ``n_texts``
    prompts (each with its registry defaults, overridden by ``chosen[name]``), or None if there is none."""
    accumulators = [spec.make_accumulator(n_texts, **(chosen or {}).get(spec.name, {}))
                    for spec in specs if spec.level == "token"]
    return TokenMetrics(accumulators) if accumulators else None


def _prompt_frame(token_values: Mapping[str, Any]) -> pd.DataFrame:
    """Long per-prompt values of every token metric (NaN entries, i.e. skipped prompts, left out)."""
    frames = []
    for metric, values in token_values.items():
        for normalization, array in values.per_prompt.items():  # (layers, n_texts)
            layer, prompt = np.nonzero(np.isfinite(array))
            frames.append(pd.DataFrame({"layer": layer, "prompt_index": prompt, "metric": metric,
                                        "normalization": normalization, "value": array[layer, prompt]}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=PROMPT_COLUMNS)
