"""Training progression (SPEC section 7.2): one model at several checkpoints, per-layer metrics of each.

Checkpoints are hub revisions (Pythia's ``step1`` ... ``step143000``: ``model="EleutherAI/pythia-410m",
revisions="step1,step512,step143000"``), local checkpoint folders, or a folder holding checkpoint
folders (what :func:`layerscope.experiments.train_tiny.train_tiny` writes; ``revisions=None`` then
takes all of them, ordered by the step number ending their names).

Reported: every metric per layer per checkpoint (a line per checkpoint against depth %, and a
heat map layer x checkpoint per metric); the shape of the prompt-entropy valley per checkpoint
(lowest intermediate layer, and how far it lies below the lower of the two ends: see
:func:`layerscope.experiments.curves.valley`); and when each layer settles (the first checkpoint
from which its prompt entropy stays within ``settle_tolerance`` x (range of the final curve) of
its final value). The paper reports, for Pythia, that the intermediate layers change most over
training and that their prompt entropy drops (the mid-depth valley deepens), while early layers
settle early.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from layerscope.errors import LayerscopeError
from layerscope.experiments.base import (
    DEFAULT_METRICS,
    ExperimentResult,
    ModelEntry,
    Plot,
    Setup,
    common_options,
    measure_models,
    metric_names,
    split_list,
)
from layerscope.experiments.curves import (
    entropy_valleys,
    main_normalization,
    main_rows,
    rounded,
    values_at_depths,
)
from layerscope.models.loading import LoadedModel

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from layerscope.experiments.base import CommonOptions

__all__ = ["checkpoint_progression", "resolve_checkpoints"]

logger = logging.getLogger(__name__)

EXPERIMENT = "checkpoints"
#: The normalization of prompt entropy whose valley is followed (the registry's main one).
MAIN = main_normalization("prompt_entropy")


def step_of(label: str) -> int | None:
    """Training step named by a checkpoint label (``step1000``, ``checkpoint-512``), or None."""
    match = re.search(r"(\d+)$", str(label).rstrip("/"))
    return int(match.group(1)) if match else None


def _is_model_folder(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def resolve_checkpoints(model: str, revisions: Sequence[str] | str | None = None) -> list[ModelEntry]:
    """The checkpoints to load, as (label, model, revision) entries in order.

    Parameters
    ----------
    model : str
        A hub id or alias (then ``revisions`` are hub revisions), a folder of checkpoint folders, or
        a model folder.
    revisions : sequence of str or comma string, optional
        Hub revisions, checkpoint folders (paths), or names of sub-folders of ``model``. When
        omitted, ``model`` must be a folder of checkpoint folders (each with a ``config.json``),
        taken in the order of the step number that ends their names.
    """
    names = split_list(revisions)
    root = Path(str(model)).expanduser()
    if not names:
        if root.is_dir() and not _is_model_folder(root):
            found = [path for path in root.iterdir() if _is_model_folder(path)]
            if not found:
                raise LayerscopeError(f"no checkpoint folders (with a config.json) in {root}")
            found.sort(key=lambda path: (step_of(path.name) is None, step_of(path.name) or 0, path.name))
            # a local folder's revision is only recorded (load_model reads the folder): the checkpoint name
            return [ModelEntry(path.name, str(path), path.name) for path in found]
        raise LayerscopeError(
            "checkpoints needs revisions (e.g. --revisions step1000,step143000) or a folder of checkpoint folders"
        )
    entries = []
    for name in names:
        path = Path(name).expanduser()
        if _is_model_folder(path):
            entries.append(ModelEntry(path.name, str(path), path.name))
        elif root.is_dir() and _is_model_folder(root / name):
            entries.append(ModelEntry(name, str(root / name), name))
        else:
            entries.append(ModelEntry(name, str(model), name))
    labels = [entry.label for entry in entries]
    if len(set(labels)) != len(labels):
        raise LayerscopeError(f"checkpoint names must be distinct, got {labels}")
    return entries


@common_options(without=("revision",))
def checkpoint_progression(
    model: str | Sequence[LoadedModel],
    revisions: Sequence[str] | str | None = None,
    texts: Sequence[str] | None = None,
    *,
    metrics: str | Sequence[str] = DEFAULT_METRICS,
    settle_tolerance: float = 0.1,
    **common: Unpack[CommonOptions],
) -> ExperimentResult:
    """Per-layer metrics of one model at several training checkpoints.

    Parameters
    ----------
    model : str or sequence of LoadedModel
        Hub id, alias or folder (see :func:`resolve_checkpoints`), or already loaded checkpoints in
        training order (their ``revision`` is the label).
    revisions : sequence of str or comma string, optional
        Checkpoints (see :func:`resolve_checkpoints`).
    texts : sequence of str, optional
        The prompts (default: 64 texts of ``dataset``, BBC news articles, truncated to 128 tokens).
    metrics : str or sequence of str
        Registered metrics (default: prompt entropy, dataset entropy, curvature, effective rank).
    settle_tolerance : float, default 0.1
        A layer has settled once its prompt entropy stays within this fraction of the final curve's
        range (max - min over layers) of its final value.
    **common
        The options every experiment takes (:class:`~layerscope.experiments.base.CommonOptions`) but
        ``revision`` (see ``revisions``).

    Returns
    -------
    ExperimentResult
        Tables ``metrics`` (``checkpoint, step, order, layer, depth_pct, metric, normalization,
        value, n_used, n_skipped``), ``valley`` (per checkpoint: ``checkpoint, step, min_layer,
        min_depth_pct, min_value, ends_min, valley_depth, relative_depth, present``) and
        ``settling`` (per layer: ``layer, depth_pct, settle_order, settle_checkpoint, settle_step``).
    """
    if isinstance(model, (list, tuple)) and model and all(isinstance(item, LoadedModel) for item in model):
        entries = [ModelEntry(str(item.revision or f"checkpoint{i}"), item) for i, item in enumerate(model)]
        name = str(model[0].model_id)
    else:
        entries = resolve_checkpoints(str(model), revisions)
        name = str(model)
    if len(entries) < 2:
        logger.warning("only one checkpoint: there is no progression to show")
    setup = Setup.from_options(
        EXPERIMENT, model=name, texts=texts, options={"metrics": metric_names(metrics),
                                                      "settle_tolerance": settle_tolerance}, **common)
    setup.load_texts()
    frame, described = measure_models(setup, entries, metrics, condition="checkpoint")
    frame["step"] = [step_of(label) for label in frame["checkpoint"]]
    frame = frame[["checkpoint", "step", "order", "layer", "depth_pct", "metric", "normalization", "value",
                   "n_used", "n_skipped"]]
    labels = [entry.label for entry in entries]

    entropy, curves, valleys = entropy_valleys(frame, "checkpoint", labels)
    valley_rows = [{"checkpoint": label, "step": step_of(label), **valleys[label]} for label in labels]
    valley_table = pd.DataFrame(valley_rows)
    settling = _settling(curves, labels, settle_tolerance) if not entropy.empty else \
        pd.DataFrame(columns=["layer", "depth_pct", "settle_order", "settle_checkpoint", "settle_step"])

    summary: dict[str, Any] = {"model": name, "checkpoints": labels, "n_prompts": len(setup.texts.texts),
                               "dataset": setup.texts.source, "num_layers": int(described[0]["num_layers"])}
    if not entropy.empty:
        summary[f"prompt_entropy_{MAIN}"] = values_at_depths(entropy, group="checkpoint")
        summary["valley"] = {row["checkpoint"]: {key: row[key] for key in
                                                 ("min_layer", "min_depth_pct", "min_value", "valley_depth",
                                                  "relative_depth", "present")}
                             for row in valley_rows}
        summary.update(_valley_trend(valley_table))
        summary["settle_order_by_layer"] = [int(v) for v in settling["settle_order"]]
        summary["settling_spearman"] = _spearman(settling["layer"], settling["settle_order"])
    return setup.finish({"metrics": frame, "valley": valley_table, "settling": settling}, summary, _plots)


def _settling(curves: dict[str, np.ndarray], labels: list[str], tolerance: float) -> pd.DataFrame:
    """First checkpoint from which each layer stays near its final value."""
    matrix = np.stack([curves[label] for label in labels])  # (checkpoints, layers)
    final = matrix[-1]
    band = tolerance * max(float(np.nanmax(final) - np.nanmin(final)), 1e-12)
    close = np.abs(matrix - final[None, :]) <= band  # (checkpoints, layers)
    # settled from k on: every later checkpoint is close too
    stays = np.flip(np.logical_and.accumulate(np.flip(close, 0), axis=0), 0)
    first = stays.argmax(axis=0)
    num_layers = matrix.shape[1] - 1
    layers = np.arange(matrix.shape[1])
    return pd.DataFrame({"layer": layers, "depth_pct": 100.0 * layers / max(num_layers, 1), "settle_order": first,
                         "settle_checkpoint": [labels[i] for i in first],
                         "settle_step": [step_of(labels[i]) for i in first]})


def _spearman(x: Any, y: Any) -> float | None:
    from scipy.stats import spearmanr

    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return round(float(spearmanr(x, y).statistic), 4)


def _valley_trend(valley_table: pd.DataFrame) -> dict[str, Any]:
    """When the valley first appears and whether it deepens over training."""
    present = valley_table[valley_table["present"]]
    depths = pd.to_numeric(valley_table["valley_depth"], errors="coerce")
    out: dict[str, Any] = {
        "valley_appears_at": None if present.empty else str(present["checkpoint"].iloc[0]),
        "valley_present_at_end": bool(valley_table["present"].iloc[-1]) if len(valley_table) else False,
        "valley_depth_first": None if depths.empty else _float(depths.iloc[0]),
        "valley_depth_last": None if depths.empty else _float(depths.iloc[-1]),
        "valley_depth_spearman": _spearman(np.arange(len(depths)), depths) if depths.notna().all() else None,
    }
    first, last = out["valley_depth_first"], out["valley_depth_last"]
    out["valley_deepens"] = bool(first is not None and last is not None and last > first
                                 and (out["valley_depth_spearman"] or 0) > 0)
    return out


def _float(value: Any) -> float | None:
    return rounded(float(value))


def _plots(result: ExperimentResult) -> list[Plot]:
    from layerscope.report import plots

    labels = result.summary["checkpoints"]
    main = main_rows(result["metrics"], label="metric")
    drawn = [Plot("metrics", plots.plot_lines_by_condition, main, "depth_pct", "value", "checkpoint", facet="metric",
                  hue_order=labels, ordered=True, ylabel="value", hue_label="checkpoint",
                  title=f"Metrics by layer over training: {result.summary['model']}")]
    for metric, rows in main.groupby("metric", sort=False):
        matrix = rows.pivot_table(index="layer", columns="checkpoint", values="value").reindex(columns=labels)
        drawn.append(Plot(f"heatmap_{str(metric).split(' (')[0]}", plots.plot_heatmap, matrix, None, None,
                          title=f"{metric}: layer x checkpoint", xlabel="checkpoint", ylabel="layer",
                          colorbar_label=str(metric)))
    return drawn
