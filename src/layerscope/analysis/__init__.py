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
from layerscope.analysis.protocol import (
    ProtocolResult,
    RuleScorer,
    choose_rule,
    default_candidates,
    evaluate_selector,
    rank_rules,
    rules_of_family,
    run_protocol,
)
from layerscope.analysis.rules import (
    FixedDepth,
    LastLayer,
    MetricRule,
    ModelData,
    RankAggregateRule,
    RuleScore,
    SelectionRule,
    ValleyFractionRule,
    ValleyRecoveryRule,
    WindowMetricRule,
    authors_coverage,
    authors_models,
    model_family,
    run_models,
    score_rule,
)
from layerscope.analysis.selection import (
    METRIC_ALIASES,
    depth_layer,
    metric_directions,
    select_layer,
    select_layers,
    selection_table,
)
from layerscope.analysis.summary import ALL_TEXTS, Summary, reference_metrics, summarize
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
    "ALL_TEXTS",
    "AUTHORS_RESULTS_ENV",
    "CORRELATION_METHODS",
    "METRIC_ALIASES",
    "AuthorsResults",
    "FixedDepth",
    "LastLayer",
    "MetricRule",
    "ModelData",
    "ProtocolResult",
    "RankAggregateRule",
    "RuleScore",
    "RuleScorer",
    "ScoreGrid",
    "SelectionRule",
    "Summary",
    "ValleyFractionRule",
    "ValleyRecoveryRule",
    "WindowMetricRule",
    "authors_coverage",
    "authors_models",
    "authors_results_dir",
    "choose_rule",
    "correlate",
    "correlation",
    "default_candidates",
    "default_normalization",
    "depth_layer",
    "evaluate_selector",
    "format_table",
    "infer_last_layer",
    "load_authors_results",
    "metric_directions",
    "metric_profile",
    "model_family",
    "per_layer_table",
    "rank_rules",
    "reference_metrics",
    "rules_of_family",
    "run_models",
    "run_protocol",
    "score_grid",
    "score_rule",
    "select_layer",
    "select_layers",
    "selection_table",
    "summarize",
]


def __getattr__(name: str) -> object:
    if name == "DEFAULT_HIGHER_IS_BETTER":  # deprecated: see layerscope.analysis.selection
        from layerscope.analysis import selection

        return selection.DEFAULT_HIGHER_IS_BETTER
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
