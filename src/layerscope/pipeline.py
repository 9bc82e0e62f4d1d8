"""The main job, ``analyze``: which layer, and why, from one encoding of every text.

This module composes the stages (models -> extract -> metrics/evaluate -> analysis -> store/report)
and is what ``layerscope analyze`` and sweep units call. The texts of every task are encoded once,
with the token hook computing prompt entropy and curvature on the fly; per-task metrics are slices
of that pass (so label-free selection uses each task's own texts, as in the paper's Table 2), the
MTEB evaluators read the same cached embeddings, and augmented views are encoded in one more call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from layerscope import __version__
from layerscope.errors import LayerscopeError

logger = logging.getLogger(__name__)

ALL_TASKS = "all"  # the ``dataset`` label of metrics computed on the union of all tasks' texts


@dataclass
class AnalysisResult:
    """What ``analyze`` produced (all of it is also in ``<out>/results.duckdb``)."""

    out: Path
    run_id: str
    metrics: pd.DataFrame
    scores: pd.DataFrame
    layer_table: pd.DataFrame
    selection: pd.DataFrame
    correlations: pd.DataFrame
    best_layer: int | None
    chosen_layer: int | None
    chosen_by: str
    record: dict[str, Any] = field(default_factory=dict)
    report: Path | None = None


def _subset_positions(count: int, limit: int | None, seed: int) -> np.ndarray:
    from layerscope.data import subset

    return subset(count, limit, seed)


def analyze(
    model: str = "smollm2-135m",
    revision: str | None = None,
    tasks: str | Iterable[str] = "offline",
    metrics: str | Iterable[str] = "all",
    dataset: str | None = None,
    limit: int | None = None,
    out: str | Path = "runs/analyze",
    n_views: int = 16,
    view_texts: int = 16,
    lidar_texts: int = 3,
    select_by: str = "dime",
    seed: int = 0,
    pooling: str = "mean",
    final_norm: str = "none",
    max_length: int = 512,
    batch_size: int | str = "auto",
    cache_dir: str | None = None,
    device: str = "auto",
    dtype: str | None = None,
    trust_remote_code: bool = False,
    progress: bool = True,
    report: bool = True,
    loaded_model: Any = None,
    eval_workers: int | str = "auto",
) -> AnalysisResult:
    """Run the main analysis and write ``results.duckdb``, plots and ``report.html`` to ``out``.

    Parameters
    ----------
    model, revision, final_norm, device, dtype, trust_remote_code
        As in :func:`layerscope.load_model` (or pass ``loaded_model``).
    tasks : "offline", "paper32", or task names
        Downstream tasks scored at every layer (MTEB evaluators).
    metrics : "all" or names
        Label-free metrics, computed per task on that task's own texts and on all texts together.
    dataset : str, optional
        An extra text source (bundled corpus, file, HF dataset) whose metrics are reported as well.
    limit : int, optional
        Texts of ``dataset`` to use (seeded subset).
    n_views : int
        Views per text for LiDAR (the paper's 16); InfoNCE and DiME use 2.
    view_texts, lidar_texts : int
        Per task, how many texts InfoNCE and DiME see (2 views each) and how many LiDAR sees
        (``n_views`` views each, the first 2 of which also serve InfoNCE and DiME). Views are extra
        forward passes of augmented, longer texts, so they are capped (seeded subsets, the LiDAR one
        inside the other); the defaults keep the offline suite on SmolLM2 under 10 minutes on 2 CPU
        cores. Raise them for steadier per-task invariance metrics.
    select_by : str
        The metric whose minimum (or maximum, per the registry) picks the label-free layer.
    eval_workers : int or "auto"
        Processes running MTEB's evaluators over the layers (see :func:`layerscope.evaluate_layers`).
    """
    from layerscope.analysis import correlate, per_layer_table, selection_table
    from layerscope.evaluate import evaluate_layers
    from layerscope.evaluate.runner import _load, collect_texts
    from layerscope.evaluate.tasks import resolve as resolve_tasks
    from layerscope.extract import extract
    from layerscope.metrics.compute import encode_views, metric_rows, resolve_options, token_hook
    from layerscope.metrics.registry import get, resolve
    from layerscope.models import load_model
    from layerscope.store import ResultsStore

    started = time.perf_counter()
    specs = resolve(metrics)
    get(select_by)  # a bad name fails before anything heavy runs
    task_list = resolve_tasks(tasks, seed=seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = {
        "command": "analyze", "model": model if loaded_model is None else loaded_model.model_id,
        "revision": revision, "tasks": [task.metadata.name for task in task_list],
        "metrics": [spec.name for spec in specs], "dataset": dataset, "limit": limit, "n_views": n_views,
        "view_texts": view_texts, "lidar_texts": lidar_texts, "select_by": select_by, "seed": seed,
        "pooling": pooling, "final_norm": final_norm, "max_length": max_length,
        "task_to_dataset": None,  # filled in below: each task's metrics come from its own texts
    }
    timings: dict[str, float] = {}
    loaded = loaded_model or load_model(model, revision=revision, dtype=dtype, device=device,
                                        final_norm=final_norm, trust_remote_code=trust_remote_code)

    # 1. the texts: each task's own (exactly what MTEB's evaluators encode), plus an optional dataset
    step = time.perf_counter()
    _load(task_list)
    per_task = {task.metadata.name: collect_texts([task], seed) for task in task_list}
    config["task_to_dataset"] = {name: name for name in per_task}
    texts = collect_texts(task_list, seed)  # their union, in the order evaluate_layers encodes it
    sources = dict(per_task)
    if dataset is not None:
        from layerscope.data import load_texts

        sources[dataset] = load_texts(dataset, limit=limit, seed=seed)
        known = set(texts)
        extra = [text for text in dict.fromkeys(sources[dataset]) if text not in known]
        texts = texts + extra
    if not texts:
        raise LayerscopeError("the selected tasks and dataset provide no texts")
    timings["prepare_s"] = time.perf_counter() - step

    store = ResultsStore.in_directory(out)
    import hashlib

    data_hash = hashlib.sha256("\x1e".join(texts).encode()).hexdigest()
    run_id = store.begin_run(config, model_id=loaded.model_id, revision=loaded.revision,
                             data_source=dataset or f"tasks:{tasks}", data_hash=data_hash)
    try:
        # 2. one pass over all texts: pooled embeddings to the cache, token metrics on the fly
        step = time.perf_counter()
        hook = token_hook(specs, len(texts))
        common = dict(pooling=pooling, max_length=max_length, batch_size=batch_size, cache_dir=cache_dir,
                      progress=progress)
        base = extract(loaded, texts, token_hook=hook, **common)
        token_values = hook.compute() if hook is not None else {}
        pooled = base.tensor(torch.float64)  # (layers, n_kept, d)
        row_of = {text: row for row, text in enumerate(base.texts)}
        timings["extract_s"] = time.perf_counter() - step

        # 3. views for the invariance metrics: capped seeded subsets of each source, the LiDAR subset
        # inside the pair subset, so a LiDAR text's first 2 of its n_views views serve InfoNCE and DiME
        # too (a text's views do not depend on how many are drawn); one extraction per view count
        step = time.perf_counter()
        view_specs = [spec for spec in specs if spec.n_views > 0]
        pair_rows: dict[str, np.ndarray] = {}
        lidar_rows: dict[str, np.ndarray] = {}
        rows_of_source = {}
        for name, source_texts in sources.items():
            rows = np.array(sorted({row_of[text] for text in source_texts if text in row_of}), dtype=np.int64)
            rows_of_source[name] = rows
            order = np.random.default_rng(seed).permutation(len(rows))
            pair_rows[name] = np.sort(rows[order[:view_texts]])
            lidar_rows[name] = np.sort(rows[order[:lidar_texts]])
        # all texts together: every text's rows, and the union of the per-source view subsets
        rows_of_source[ALL_TASKS] = np.arange(len(base.texts))
        pair_rows[ALL_TASKS] = np.unique(np.concatenate(list(pair_rows.values())))
        lidar_rows[ALL_TASKS] = np.unique(np.concatenate(list(lidar_rows.values())))
        needs_lidar = any(spec.n_views > 2 for spec in view_specs)
        needs_pairs = any(spec.n_views == 2 for spec in view_specs)
        lidar_set = lidar_rows[ALL_TASKS] if needs_lidar else np.array([], dtype=np.int64)
        pair_only = np.setdiff1d(pair_rows[ALL_TASKS], lidar_set) if needs_pairs else np.array([], dtype=np.int64)
        pair_views = lidar_views = None
        if len(lidar_set):
            lidar_views, _ = encode_views(loaded, [base.texts[i] for i in lidar_set], n_views, seed, **common)
        pair_order = np.concatenate([lidar_set, pair_only])  # the LiDAR texts' first 2 views, then the others'
        if needs_pairs and len(pair_order):
            parts = [lidar_views[:, :2]] if lidar_views is not None else []
            if len(pair_only):
                parts.append(encode_views(loaded, [base.texts[i] for i in pair_only], 2, seed, **common)[0])
            pair_views = torch.cat(parts, dim=2)
        pair_index = {int(row): i for i, row in enumerate(pair_order)}
        lidar_index = {int(row): i for i, row in enumerate(lidar_set)}
        timings["views_s"] = time.perf_counter() - step

        # 4. metrics per source (each task's texts, the dataset) and on all texts together
        step = time.perf_counter()
        chosen = {spec.name: resolve_options(spec, None, seed) for spec in specs}
        frames = []
        for name, rows in rows_of_source.items():
            if len(rows) < 2:
                logger.warning("source '%s' has fewer than 2 texts: no metrics", name)
                continue
            sub_pair = None if pair_views is None else pair_views[:, :, [pair_index[int(r)] for r in pair_rows[name]]]
            sub_lidar = None if lidar_views is None else \
                lidar_views[:, :, [lidar_index[int(r)] for r in lidar_rows[name]]]
            rows_list = metric_rows(specs, chosen, pooled[:, rows], token_values, base.kept[rows], 0,
                                    pair_views=sub_pair, lidar_views=sub_lidar)
            frame = pd.DataFrame(rows_list)
            frame["dataset"] = name
            frames.append(frame)
        metrics_frame = pd.concat(frames, ignore_index=True)
        metrics_frame.insert(1, "depth_pct", 100.0 * metrics_frame["layer"] / loaded.num_layers)
        timings["metrics_s"] = time.perf_counter() - step

        # 5. every layer on every task, from the cached embeddings (the model does not run again)
        step = time.perf_counter()
        scores = evaluate_layers(loaded, task_list, pooling=pooling, seed=seed, max_length=max_length,
                                 batch_size=batch_size, cache_dir=cache_dir, progress=progress,
                                 extraction=base, eval_workers=eval_workers)
        timings["evaluate_s"] = time.perf_counter() - step

        prompt_values = _prompt_values(token_values, base.kept)
        store.write_metrics(run_id, metrics_frame)
        store.write_scores(run_id, scores)
        if len(prompt_values):
            store.write_prompt_values(run_id, prompt_values)
    except BaseException as error:
        reason = "interrupted" if isinstance(error, KeyboardInterrupt) else str(error)[:500]
        store.finish_run(run_id, status="failed", error=reason)
        store.close()
        raise

    # 6. analysis: per-layer table, Table-2-style selection, correlations
    task_to_dataset = {name: name for name in per_task}
    all_metrics = metrics_frame[metrics_frame["dataset"] == ALL_TASKS]
    layer_table = per_layer_table(all_metrics, scores)
    selection = selection_table(metrics_frame, scores, task_to_dataset=task_to_dataset)
    correlations = correlate(metrics_frame, scores, task_to_dataset=task_to_dataset)
    average = scores.groupby("layer")["main_score"].mean()
    best_layer = int(average.idxmax()) if len(average) else None
    chosen_layer = _chosen_layer(all_metrics, select_by)
    record = {
        "layerscope": __version__, "run_id": run_id, "config": config, "model": loaded.describe(),
        "n_texts": len(texts), "n_kept": len(base.texts), "n_skipped_empty": base.record["n_skipped_empty"],
        "extraction": {k: v for k, v in base.record.items() if isinstance(v, (int, float, str, bool, type(None)))},
        "timings": {k: round(v, 2) for k, v in timings.items()},
    }
    skipped = {"empty_texts": int(base.record["n_skipped_empty"]),
               "nonfinite_layers": base.record.get("nonfinite_layers", {})}
    store.finish_run(run_id, skipped=skipped)
    store.close()
    result = AnalysisResult(out, run_id, metrics_frame, scores, layer_table, selection, correlations,
                            best_layer, chosen_layer, select_by, record)
    if report:
        step = time.perf_counter()
        from layerscope.report import write_examples

        picks = _subset_positions(len(base.texts), 5, seed)
        write_examples(out, [base.texts[i] for i in picks], indices=[int(base.kept[i]) for i in picks])
        result.report = _write_report(out, run_id, select_by)
        timings["report_s"] = time.perf_counter() - step
    timings["total_s"] = time.perf_counter() - started
    result.record["timings"] = {k: round(v, 2) for k, v in timings.items()}
    from layerscope.atomic import atomic_write_json

    atomic_write_json(out / "record.json", result.record)
    return result


def _chosen_layer(metrics_frame: pd.DataFrame, by: str) -> int | None:
    from layerscope.analysis import select_layer

    if metrics_frame.empty or by not in set(metrics_frame["metric"]):
        return None
    return int(select_layer(metrics_frame, by=by))


def _prompt_values(token_values: dict[str, Any], kept: np.ndarray) -> pd.DataFrame:
    """Per-prompt token metrics (default normalization of each) for histograms, indexed like the texts."""
    frames = []
    for name, values in token_values.items():
        normalization = next(iter(values.per_prompt))
        array = values.per_prompt[normalization]  # (layers, n_texts)
        layer, prompt = np.nonzero(np.isfinite(array))
        frames.append(pd.DataFrame({"layer": layer, "prompt_index": prompt, "metric": name,
                                    "value": array[layer, prompt]}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _write_report(out: Path, run_id: str, select_by: str) -> Path:
    from layerscope.report import build_report

    return build_report(out, run_id=run_id, select_by=select_by)


def analyze_many(configs: Sequence[dict[str, Any]]) -> list[AnalysisResult]:
    """Run several analyses in turn (the local sweep backend uses this)."""
    return [analyze(**config) for config in configs]
