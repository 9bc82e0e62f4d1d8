"""Model size (SPEC section 7.3): several models, usually one family at several sizes, on depth %.

Any list of aliases, hub ids or folders works (``EleutherAI/pythia-70m,EleutherAI/pythia-410m,...``
with the network; offline, e.g. ``smollm2-135m,minilm-l6`` or local folders). Models are loaded one at
a time and ordered by parameter count in the plots. Per model: every metric per layer (curves on
depth % so different depths align) and the shape of its prompt-entropy valley. The paper reports
that larger models of a family compress more in their intermediate layers (a deeper valley).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

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
    model_label,
    split_list,
)
from layerscope.experiments.curves import entropy_valleys, main_normalization, main_rows, values_at_depths
from layerscope.models.loading import LoadedModel

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from layerscope.experiments.base import CommonOptions

__all__ = ["model_sizes"]

EXPERIMENT = "sizes"


@common_options(without=("revision",))
def model_sizes(
    models: Sequence[str | LoadedModel] | str,
    texts: Sequence[str] | None = None,
    *,
    labels: Sequence[str] | str | None = None,
    metrics: str | Sequence[str] = DEFAULT_METRICS,
    **common: Unpack[CommonOptions],
) -> ExperimentResult:
    """Per-layer metrics of several models on the same texts, compared on depth %.

    Parameters
    ----------
    models : sequence of str or LoadedModel, or comma string
        The models (aliases, hub ids, folders, or loaded models).
    texts : sequence of str, optional
        The prompts (default: 64 texts of ``dataset``, BBC news articles, truncated to 128 tokens).
    labels : sequence of str or comma string, optional
        Legend names (default: the model names).
    metrics : str or sequence of str
        Registered metrics (default: prompt entropy, dataset entropy, curvature, effective rank).
    **common
        The options every experiment takes (:class:`~layerscope.experiments.base.CommonOptions`) but
        ``revision`` (each model loads at its default revision).

    Returns
    -------
    ExperimentResult
        Tables ``metrics`` (``model, parameters, num_layers, layer, depth_pct, metric, normalization,
        value, n_used, n_skipped``) and ``models`` (per model: ``model, model_id, parameters,
        num_layers, hidden_size`` and its prompt-entropy valley: ``min_layer, min_depth_pct,
        min_value, valley_depth, relative_depth, present``).
    """
    items: list[Any] = list(models) if not isinstance(models, str) else split_list(models)
    if not items:
        raise LayerscopeError("sizes needs at least one model")
    names = split_list(labels) if labels is not None else []
    if names and len(names) != len(items):
        raise LayerscopeError(f"{len(names)} labels for {len(items)} models")
    entries = []
    for index, item in enumerate(items):
        default = model_label(item) if isinstance(item, LoadedModel) else str(item).rstrip("/").split("/")[-1]
        entries.append(ModelEntry(names[index] if names else default, item))
    setup = Setup.from_options(
        EXPERIMENT, model=items, texts=texts, options={"labels": names, "metrics": metric_names(metrics)}, **common)
    setup.load_texts()
    frame, described = measure_models(setup, entries, metrics, condition="model")
    info = {item["label"]: item for item in described}
    frame["parameters"] = [int(info[label]["parameters"]) for label in frame["model"]]
    frame["num_layers"] = [int(info[label]["num_layers"]) for label in frame["model"]]
    frame = frame[["model", "parameters", "num_layers", "layer", "depth_pct", "metric", "normalization", "value",
                   "n_used", "n_skipped"]]
    order = sorted(info, key=lambda label: info[label]["parameters"])
    entropy, _, valleys = entropy_valleys(frame, "model", order)
    rows = [{"model": label, "model_id": info[label]["model_id"], "parameters": info[label]["parameters"],
             "num_layers": info[label]["num_layers"], "hidden_size": info[label]["hidden_size"],
             **{key: value for key, value in valleys[label].items() if key != "ends_min"}} for label in order]
    summary: dict[str, Any] = {"models": order, "n_prompts": len(setup.texts.texts), "dataset": setup.texts.source,
                               "parameters": {label: int(info[label]["parameters"]) for label in order}}
    if not entropy.empty:
        summary[f"prompt_entropy_{main_normalization('prompt_entropy')}"] = values_at_depths(entropy, group="model")
        summary["valley"] = {row["model"]: {key: row[key] for key in ("min_depth_pct", "min_value", "valley_depth",
                                                                      "present")} for row in rows}
    return setup.finish({"metrics": frame, "models": pd.DataFrame(rows)}, summary, _plots)


def _plots(result: ExperimentResult) -> list[Plot]:
    from layerscope.report import plots

    order = result.summary["models"]
    main = main_rows(result["metrics"], label="metric")
    return [Plot("metrics", plots.plot_lines_by_condition, main, "depth_pct", "value", "model", facet="metric",
                 hue_order=order, ordered=len(order) > 2, ylabel="value", hue_label="model (by size)",
                 title="Metrics by depth across model sizes")]
