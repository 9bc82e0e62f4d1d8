"""Vision (SPEC section 7.8): the same metrics on a vision transformer, scored by a linear probe per layer.

The paper extends its analysis to image models: representations are the mean over patch and CLS
tokens of each layer, augmentation invariance uses random resized crops instead of text
perturbations, and the downstream score of a layer is a probe trained on its embeddings. Here one
pass over the images gives every layer's pooled embedding and the token-level metrics (prompt
entropy over a picture's patch tokens), the views give DiME, InfoNCE and LiDAR, and a logistic
regression probe per layer (same split for every layer) gives the score. The run goes to the store
as an ordinary analysis (layer metrics + a "linear probe" task), so the report, the selection table
(best layer by the probe vs the label-free rules) and the correlations all apply.

Works with any Hugging Face ViT-family model (``google/vit-base-patch16-224``,
``facebook/dino-vitb16`` ...) where the hub is reachable; offline, tests run a random-init ViT. The
images come from :func:`layerscope.data.images.load_images` (default: scikit-learn's digits).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from layerscope.errors import LayerscopeError
from layerscope.experiments.base import ExperimentResult, Plot, Setup, common_options, metric_names
from layerscope.experiments.curves import main_rows
from layerscope.models.loading import LoadedModel

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from layerscope.experiments.base import CommonOptions

__all__ = ["vision"]

EXPERIMENT = "vision"
DEFAULT_METRICS = "prompt_entropy,dataset_entropy,effective_rank,infonce,dime,lidar"


@common_options(dataset="digits", limit=512, without=("max_length",))
def vision(
    model: str | LoadedModel,
    images: Any = None,
    labels: Any = None,
    *,
    metrics: str = DEFAULT_METRICS,
    n_views: int = 16,
    view_images: int | str | None = None,
    test_fraction: float = 0.3,
    pooling: str = "mean",
    **common: Unpack[CommonOptions],
) -> ExperimentResult:
    """Per-layer metrics and linear-probe accuracy of a vision transformer.

    Parameters
    ----------
    model : str or LoadedModel
        A ViT-family model (hub id, folder, or loaded).
    images, labels : optional
        Images (see :func:`layerscope.extract.prepare_images`) and their integer labels; otherwise
        ``dataset`` is loaded.
    metrics : str
        Metrics computed on all images (the invariance metrics on ``view_images`` of them).
    n_views : int
        Random resized crops per image for LiDAR (the first 2 serve InfoNCE and DiME).
    view_images : int, "all" or None
        Images given views, for LiDAR and for InfoNCE and DiME alike (each view is a forward pass);
        default None: the views budget of every command (:class:`~layerscope.config.ViewConfig`'s
        defaults); ``"all"``: every image.
    test_fraction : float
        Held-out share of the probe's stratified split.
    pooling : {"mean", "first"}
        Mean over patch and CLS tokens (default), or the CLS token.
    **common
        The options every experiment takes (:class:`~layerscope.experiments.base.CommonOptions`) but
        ``max_length``. Here ``dataset`` is an image source for
        :func:`layerscope.data.images.load_images` (default ``"digits"``) and ``limit`` counts images
        (default 512, a seeded subset).

    Returns
    -------
    ExperimentResult
        Tables ``metrics`` (long, per layer), ``probe`` (``layer, depth_pct, accuracy, chance``),
        ``selection`` (Table-2-style rules scored by the probe) and ``correlations``.
    """
    from layerscope.analysis import correlate, selection_table
    from layerscope.config import ViewConfig
    from layerscope.evaluate.probe import linear_probe
    from layerscope.metrics.compute import measure

    if images is not None and labels is None:
        raise LayerscopeError("images given without labels: the probe needs one label per image")
    setup = Setup.from_options(
        EXPERIMENT, model=model, texts=images, pooling=pooling, options={
            "metrics": metric_names(metrics), "n_views": n_views, "view_images": view_images,
            "test_fraction": test_fraction}, **common)
    dataset, seed = common["dataset"], setup.config.seed
    # validated before the model loads
    views = ViewConfig(n_views) if view_images is None else ViewConfig(n_views, view_images, view_images)
    loaded = setup.load(model)
    if loaded.modality != "vision":
        raise LayerscopeError(f"the vision experiment needs a vision model; {loaded.model_id} is a {loaded.modality} model")
    if images is None:
        from layerscope.data.images import load_images

        data = load_images(dataset, limit=setup.text_source.limit, seed=seed)
        images, labels, source = data.images, data.labels, data.source
    else:
        source = "images given in code"
    labels = np.asarray(labels)

    # one pass over the images (token metrics in its hook), then the views of a seeded subset
    measured = measure(loaded, images, metrics=metrics, views=views, extraction=setup.extraction, seed=seed,
                       progress=setup.progress)
    base = measured.extraction
    if len(labels) != len(base.kept):
        raise LayerscopeError(f"{len(base.kept)} images but {len(labels)} labels")
    metrics_frame = measured.metrics.assign(dataset=source)
    probe = linear_probe(np.asarray(base.pooled), labels, test_fraction=test_fraction, seed=seed)
    probe.insert(1, "depth_pct", 100.0 * probe["layer"] / loaded.num_layers)
    task = f"linear probe ({dataset})"
    scores = pd.DataFrame({"layer": probe["layer"], "depth_pct": probe["depth_pct"], "task": task,
                           "task_type": "Probe", "main_score": probe["accuracy"]})
    selection = selection_table(metrics_frame, scores, task_to_dataset={task: source}, by_task_type=False)
    correlations = correlate(metrics_frame, scores, task_to_dataset={task: source})
    best = probe.loc[probe["accuracy"].idxmax()]
    summary: dict[str, Any] = {
        "model": str(loaded.model_id), "dataset": source, "n_images": len(base.kept),
        "n_classes": int(len(np.unique(labels))), "pooling": pooling,
        "best_layer": int(best["layer"]), "best_accuracy": round(float(best["accuracy"]), 4),
        "last_layer_accuracy": round(float(probe["accuracy"].iloc[-1]), 4), "chance": round(float(best["chance"]), 4),
        "accuracy_by_layer": [round(float(value), 4) for value in probe["accuracy"]],
        "selection": {row.rule: {"layer": None if pd.isna(row.layer) else int(row.layer), "accuracy": round(row.average, 2)}
                      for row in selection.itertuples(index=False)},
    }
    # an ordinary analysis run (layer metrics + the probe as a task), so the report's selection and
    # correlations apply
    setup.write(details={"task_to_dataset": {task: source}, "n_images": len(base.kept)}, model=loaded,
                metrics=metrics_frame, scores=scores, data_source=source, data_hash=base.record.get("images_sha256"))
    tables = {"metrics": metrics_frame, "probe": probe, "selection": selection, "correlations": correlations}
    return setup.finish(tables, summary, _plots)


def _plots(result: ExperimentResult) -> list[Plot]:
    from layerscope.report import plots

    probe, model = result["probe"], result.summary["model"]
    curves = pd.concat([
        main_rows(result["metrics"], label="panel"),
        probe.assign(panel="linear probe accuracy", value=probe["accuracy"], metric="probe"),
    ], ignore_index=True)
    return [Plot("layers", plots.plot_lines_by_condition, curves.assign(model=model), "depth_pct", "value", "model",
                 facet="panel", ylabel="value", title=f"{model}: metrics and linear-probe accuracy by depth")]
