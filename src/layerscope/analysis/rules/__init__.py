"""Label-free layer-selection rules as data (SPEC sections 6 and 10, issue 13).

A rule is a small frozen object: a name, its parameters, and ``choose(model) -> {task: layer}``.
Rules only read a model's metrics and its layer and task lists; scores are read afterwards, by
:func:`score_rule`, to judge them (regret against the best single layer chosen with labels).

Families
--------
``last layer`` (:class:`LastLayer`)
    The usual default: the deepest layer of the score grid.
``fixed depth`` (:class:`FixedDepth`)
    Layer ``floor(fraction * L + 0.5)`` of a model whose last layer is L, or the nearest scored
    layer (ties: the deeper), as :func:`layerscope.analysis.selection.depth_layer` computes it.
``single metric`` (:class:`MetricRule`)
    The layer where one metric is lowest (``direction="min"``) or highest, either per task on the
    task's own texts (``texts="task"``: the paper's rule) or once on all texts (``texts="all"``:
    one layer for every task).
``depth window + metric`` (:class:`WindowMetricRule`)
    The same, restricted to the scored layers whose depth ``layer / L`` lies in ``[lo, hi]``.
``rank aggregation`` (:class:`RankAggregateRule`)
    Each metric is ranked over the candidate layers in its direction (rank 1 = best, ties share
    their average rank), the ranks are averaged over the metrics, and the layer with the lowest
    average rank wins; optionally inside a depth window.
``valley-relative`` (:class:`ValleyFractionRule`, :class:`ValleyRecoveryRule`)
    Rules anchored at the minimum of a metric's depth profile (the prompt-entropy valley): a fixed
    fraction of the way from the valley to the last layer, or the first layer after the valley
    where the metric has recovered a fraction of its rise to the last layer's value.

Conventions shared by every rule
--------------------------------
- Candidate layers are those of the model's complete score grid
  (:func:`layerscope.analysis.tables.score_grid`), so that every choice has a score.
- Metric ties go to the shallower layer (as in :mod:`layerscope.analysis.selection`); NaN metric
  values are ignored; each metric uses its default normalization unless a rule names one.
- Text sources, as in :func:`layerscope.analysis.selection.select_layers`: with ``texts="task"``
  a task uses the metric computed on its own texts (``task_to_dataset``, default the task name);
  when the model's metric table has a single text source, that source serves every task. A task
  whose texts have no metric falls back to the last layer (``fallback="last"``, the authors' rule
  for their pair-classification tasks) or to the same rule on all texts (``fallback="all"``).
  With ``texts="all"`` the rule reads the model's all-texts profile (:meth:`ModelData.all_texts_profile`).
- A rule that cannot decide (its metric is missing) chooses the last layer; :func:`score_rule`
  counts such tasks in ``n_fallback``.

Modules
-------
One per family, and what they share: :mod:`~layerscope.analysis.rules.model_data` (:class:`ModelData`,
:func:`model_family`), :mod:`~layerscope.analysis.rules.base` (:class:`SelectionRule` and the
machinery of the metric rules), :mod:`~layerscope.analysis.rules.depth`,
:mod:`~layerscope.analysis.rules.metric`, :mod:`~layerscope.analysis.rules.rank`,
:mod:`~layerscope.analysis.rules.valley`, :mod:`~layerscope.analysis.rules.scoring`
(:func:`score_rule`) and :mod:`~layerscope.analysis.rules.loaders` (models from the authors' results
and from run folders). Every name is importable from this package. A new family is a module here
with a subclass of :class:`SelectionRule` (or of ``_MetricBased`` to read metrics), re-exported below.
"""

from __future__ import annotations

from layerscope.analysis.rules.base import SelectionRule
from layerscope.analysis.rules.depth import FixedDepth, LastLayer
from layerscope.analysis.rules.loaders import authors_coverage, authors_models, run_models
from layerscope.analysis.rules.metric import MetricRule, WindowMetricRule
from layerscope.analysis.rules.model_data import ALL_TEXTS_DATASETS, FAMILY_PATTERNS, ModelData, model_family
from layerscope.analysis.rules.rank import RankAggregateRule, _average_ranks  # noqa: F401 - tested directly
from layerscope.analysis.rules.scoring import RuleScore, score_rule
from layerscope.analysis.rules.valley import ValleyFractionRule, ValleyRecoveryRule

__all__ = [
    "ALL_TEXTS_DATASETS",
    "FAMILY_PATTERNS",
    "FixedDepth",
    "LastLayer",
    "MetricRule",
    "ModelData",
    "RankAggregateRule",
    "RuleScore",
    "SelectionRule",
    "ValleyFractionRule",
    "ValleyRecoveryRule",
    "WindowMetricRule",
    "authors_coverage",
    "authors_models",
    "model_family",
    "run_models",
    "score_rule",
]
