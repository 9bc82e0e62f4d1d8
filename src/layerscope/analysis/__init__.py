"""layerscope.analysis: correlations of metrics with task scores, label-free layer selection, tables.

Works on the long per-layer tables the other stages produce (SPEC section 6):

>>> import layerscope.analysis as la                                    # doctest: +SKIP
>>> la.select_layer(metrics, by="dime")                                 # a layer, without labels
>>> la.selection_table(metrics, scores, task_to_dataset=mapping)        # the paper's Table 2
>>> la.correlate(metrics, scores)                                       # dcor / Spearman / Kendall
>>> la.per_layer_table(metrics, scores)                                 # one row per layer
"""

from __future__ import annotations

from layerscope.analysis.authors import (
    AUTHORS_RESULTS_ENV,
    AuthorsResults,
    authors_results_dir,
    load_authors_results,
)
from layerscope.analysis.correlation import CORRELATION_METHODS, correlate, correlation
from layerscope.analysis.selection import (
    DEFAULT_HIGHER_IS_BETTER,
    METRIC_ALIASES,
    depth_layer,
    metric_directions,
    select_layer,
    select_layers,
    selection_table,
)
from layerscope.analysis.tables import (
    ScoreGrid,
    default_normalization,
    format_table,
    infer_last_layer,
    metric_profile,
    per_layer_table,
    score_grid,
)

__all__ = [
    "AUTHORS_RESULTS_ENV",
    "CORRELATION_METHODS",
    "DEFAULT_HIGHER_IS_BETTER",
    "METRIC_ALIASES",
    "AuthorsResults",
    "ScoreGrid",
    "authors_results_dir",
    "correlate",
    "correlation",
    "default_normalization",
    "depth_layer",
    "format_table",
    "infer_last_layer",
    "load_authors_results",
    "metric_directions",
    "metric_profile",
    "per_layer_table",
    "score_grid",
    "select_layer",
    "select_layers",
    "selection_table",
]
