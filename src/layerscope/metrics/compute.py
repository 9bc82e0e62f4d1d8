"""``compute_metrics``: every metric of every layer from one pass over the texts plus the view passes.

Token-level metrics (prompt entropy, curvature) are computed in the extraction's token hook, batch by
batch, so token states are never stored. Dataset-level metrics read the pooled embeddings of the same
pass. Invariance metrics read the pooled embeddings of the augmented views, encoded in one extraction
call: the 16 views of LiDAR are computed once and the first 2 serve InfoNCE and DiME.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from layerscope.errors import LayerscopeError
from layerscope.extract import extract
from layerscope.metrics.accumulators import TokenMetrics, make
from layerscope.metrics.registry import MetricSpec, resolve
from layerscope.models.loading import LoadedModel

logger = logging.getLogger(__name__)

METRIC_COLUMNS = ["layer", "depth_pct", "metric", "normalization", "value", "n_used", "n_skipped"]


def resolve_options(spec: MetricSpec, options: Mapping[str, Mapping[str, Any]] | None, seed: int) -> dict[str, Any]:
    """A metric's option overrides, validated; random metrics take the run's seed unless given one."""
    chosen = dict((options or {}).get(spec.name, {}))
    if spec.random and "seed" in spec.defaults:
        chosen.setdefault("seed", seed)
    unknown_keys = set(chosen) - set(spec.defaults)
    if unknown_keys:
        raise LayerscopeError(
            f"unknown option(s) {', '.join(sorted(unknown_keys))} for metric '{spec.name}'; "
            f"options: {', '.join(sorted(spec.defaults)) or 'none'}"
        )
    return chosen


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


def compute_metrics(
    model: LoadedModel,
    texts: Sequence[str],
    metrics: str | Iterable[str] = "all",
    n_views: int = 16,
    seed: int = 0,
    pooling: str = "mean",
    max_length: int = 512,
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
    seed : int
        Seed of the augmented views and of DiME's permutations.
    pooling, max_length, batch_size, cache_dir, progress
        As in :func:`layerscope.extract`.
    options : mapping, optional
        Per-metric option overrides, e.g. ``{"dime": {"legacy_covariance": True}}``.

    Returns
    -------
    pandas.DataFrame
        Columns ``layer, depth_pct, metric, normalization, value, n_used, n_skipped``. ``attrs``
        holds ``prompt_values`` (a DataFrame ``layer, prompt_index, metric, normalization, value``
        of per-prompt token metrics, for histograms) and ``record`` (how it was made, with timings).
    """
    specs = resolve(metrics)
    if n_views < 2:
        raise LayerscopeError(f"n_views must be at least 2, got {n_views}")
    chosen = {spec.name: resolve_options(spec, options, seed) for spec in specs}
    vision = model.modality == "vision"
    if vision:  # images: prepared once; views are random resized crops of the prepared pixels
        from layerscope.extract.images import prepare_images

        texts = prepare_images(model, texts)
    else:
        texts = list(texts) if not isinstance(texts, str) else texts
    hook = token_hook(specs, len(texts), chosen)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    common = dict(pooling=pooling, max_length=max_length, batch_size=batch_size, cache_dir=cache_dir,
                  progress=progress)
    if vision:
        from layerscope.extract.images import extract_images

        common.pop("max_length")
        base = extract_images(model, texts, token_hook=hook, prepared=True, **common)
    else:
        base = extract(model, texts, token_hook=hook, **common)
    timings["extract_s"] = time.perf_counter() - start
    n_empty = int(base.record["n_skipped_empty"])
    rows: list[dict[str, Any]] = []
    prompt_frames: list[pd.DataFrame] = []

    start = time.perf_counter()
    token_values = hook.compute() if hook is not None else {}
    for values in token_values.values():
        prompt_frames.append(_prompt_frame(values.metric, values.per_prompt))
    pooled = base.tensor(torch.float64)  # (layers, n, d)
    timings["metrics_s"] = time.perf_counter() - start

    view_specs = [spec for spec in specs if spec.n_views > 0]
    views = None
    n_forward = len(base.texts)
    if view_specs:
        needed = max(n_views if spec.n_views > 2 else 2 for spec in view_specs)
        start = time.perf_counter()
        views, n_encoded = encode_views(model, texts if vision else base.texts, needed, seed, **common)
        timings["views_s"] = time.perf_counter() - start
        n_forward += n_encoded
    start = time.perf_counter()
    rows += metric_rows(specs, chosen, pooled, token_values, base.kept, n_empty, pair_views=views,
                        lidar_views=views)
    timings["metrics_s"] += time.perf_counter() - start

    frame = pd.DataFrame(rows)
    frame.insert(1, "depth_pct", 100.0 * frame["layer"] / model.num_layers)
    frame = frame[METRIC_COLUMNS]
    frame.attrs["prompt_values"] = (
        pd.concat(prompt_frames, ignore_index=True) if prompt_frames
        else pd.DataFrame(columns=["layer", "prompt_index", "metric", "normalization", "value"])
    )
    frame.attrs["record"] = {
        **base.record,
        "metrics": [spec.name for spec in specs],
        "n_views": n_views if any(spec.n_views > 2 for spec in view_specs) else (2 if view_specs else 0),
        "seed": seed,
        "options": {name: dict(value) for name, value in chosen.items() if value},
        "n_forward_texts": n_forward,
        **{key: round(value, 3) for key, value in timings.items()},
    }
    return frame


def encode_views(model: LoadedModel, texts: Sequence[str] | torch.Tensor, n_views: int, seed: int,
                 **extract_options: Any) -> tuple[torch.Tensor, int]:
    """Pooled embeddings of ``n_views`` augmented views of each text, from one extraction call.

    For a vision model ``texts`` are prepared pixel values (N, C, H, W) and the views are random
    resized crops (:func:`layerscope.augment.random_resized_crops`).

    Returns
    -------
    views : Tensor, shape (layers, n_views, n_texts, dim), float64
    n_encoded : int
        Texts that went through the model (the views count in the cost).
    """
    if model.modality == "vision":
        from layerscope.augment import random_resized_crops
        from layerscope.extract.images import extract_images

        crops = random_resized_crops(texts, n_views, seed=seed)  # (views, n, C, H, W)
        n_images = crops.shape[1]
        options = {key: value for key, value in extract_options.items() if key != "max_length"}
        encoded = extract_images(model, crops.reshape(-1, *crops.shape[2:]), prepared=True, **options)
        stacked = encoded.tensor(torch.float64)
        return stacked.reshape(stacked.shape[0], n_views, n_images, -1), n_views * n_images
    from layerscope.augment import text_views

    texts = list(texts)
    views = text_views(texts, n_views, seed=seed)  # (views, n)
    flat = [view if view.strip() else original for row in views for view, original in zip(row, texts, strict=True)]
    encoded = extract(model, flat, **extract_options)
    stacked = encoded.tensor(torch.float64)
    return stacked.reshape(stacked.shape[0], n_views, len(texts), -1), len(flat)


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
        elif spec.n_views == 0:
            rows += _rows(spec.name, spec.compute(pooled, **chosen[spec.name]), layers, n, n_missing)
        elif spec.n_views == 2 and pair_views is not None:
            values = spec.compute(pair_views[:, 0], pair_views[:, 1], **chosen[spec.name])
            rows += _rows(spec.name, values, layers, pair_views.shape[2], n - pair_views.shape[2] + n_missing)
        elif spec.n_views > 2 and lidar_views is not None:
            values = spec.compute(lidar_views.transpose(1, 2), **chosen[spec.name])  # (layers, n, views, d)
            rows += _rows(spec.name, values, layers, lidar_views.shape[2], n - lidar_views.shape[2] + n_missing)
    return rows


def token_hook(specs: Sequence[MetricSpec], n_texts: int,
               chosen: Mapping[str, Mapping[str, Any]] | None = None) -> TokenMetrics | None:
    """The extraction token hook computing every token-level metric of ``specs`` over ``n_texts``
    prompts (each with its registry defaults, overridden by ``chosen[name]``), or None if there is none."""
    accumulators = [make(spec.name, n_texts, **{**dict(spec.defaults), **(chosen or {}).get(spec.name, {})})
                    for spec in specs if spec.level == "token"]
    return TokenMetrics(accumulators) if accumulators else None


def _prompt_frame(metric: str, per_prompt: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """Long per-prompt values (NaN entries, i.e. skipped prompts, are left out)."""
    frames = []
    for normalization, values in per_prompt.items():  # values: (layers, n_texts)
        layer, prompt = np.nonzero(np.isfinite(values))
        frames.append(pd.DataFrame({"layer": layer, "prompt_index": prompt, "metric": metric,
                                    "normalization": normalization, "value": values[layer, prompt]}))
    return pd.concat(frames, ignore_index=True)
