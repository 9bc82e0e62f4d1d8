"""How a rule does on a model: its regret against the best single layer chosen with labels."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from layerscope.analysis.rules.base import SelectionRule
from layerscope.analysis.rules.model_data import _EPSILON, ModelData
from layerscope.errors import LayerscopeError

__all__ = ["RuleScore", "score_rule"]


@dataclass(frozen=True, eq=False)
class RuleScore:
    """How one rule does on one model (scores x 100, averaged over the grid's tasks).

    Attributes
    ----------
    rule, family, model : str
        Rule name, rule family, model name.
    average : float
        Mean over tasks of the score at each task's chosen layer.
    oracle : float
        Average of the best single layer chosen with labels (``oracle_layer``).
    last : float
        Average of the last layer.
    regret : float
        ``oracle - average`` (>= 0).
    gain_vs_last : float
        ``average - last``.
    n_tasks, n_fallback : int
        Tasks averaged; tasks for which the rule could not decide (they got the last layer).
    depth_pct : float
        Mean depth of the chosen layers, in percent of L.
    layers : dict of str to int
        The choice.
    per_task : numpy.ndarray
        Score (0..1) at the chosen layer, per task in ``model.tasks`` order.
    """

    rule: str
    family: str
    model: str
    average: float
    oracle: float
    oracle_layer: int
    last: float
    regret: float
    gain_vs_last: float
    n_tasks: int
    n_fallback: int
    depth_pct: float
    layers: dict[str, int] = field(repr=False)
    per_task: np.ndarray = field(repr=False)

    @property
    def win(self) -> bool:
        """Whether the rule beats the last layer (by more than rounding)."""
        return self.gain_vs_last > _EPSILON

    def as_record(self) -> dict[str, object]:
        """The scalar fields, plus ``win`` and the chosen layer when it is one for every task."""
        distinct = set(self.layers.values())
        return {
            "rule": self.rule,
            "family": self.family,
            "model": self.model,
            "average": self.average,
            "oracle": self.oracle,
            "oracle_layer": self.oracle_layer,
            "last": self.last,
            "regret": self.regret,
            "gain_vs_last": self.gain_vs_last,
            "win": self.win,
            "layer": distinct.pop() if len(distinct) == 1 else pd.NA,
            "depth_pct": self.depth_pct,
            "n_tasks": self.n_tasks,
            "n_fallback": self.n_fallback,
        }


def score_rule(rule: SelectionRule, model: ModelData) -> RuleScore:
    """Score a rule on one model against the best single layer chosen with labels.

    Parameters
    ----------
    rule : SelectionRule
    model : ModelData

    Returns
    -------
    RuleScore
        Averages x 100 over the model's grid tasks; ``regret = oracle - average``.
    """
    choice, fallbacks = rule.choose_with_fallbacks(model)
    tasks = model.tasks
    chosen = np.array([choice[task] for task in tasks], dtype=np.int64)
    rows = model.grid.matrix.index.get_indexer(chosen)
    if (rows < 0).any():
        raise LayerscopeError(f"rule '{rule.name}' chose a layer outside the score grid of {model.name}")
    matrix = model.score_matrix
    per_task = matrix[rows, np.arange(len(tasks))]
    layer_means = matrix.mean(axis=1)
    oracle_row = int(np.argmax(layer_means))
    average = 100.0 * float(per_task.mean())
    oracle = 100.0 * float(layer_means[oracle_row])
    last = 100.0 * float(layer_means[-1])
    return RuleScore(
        rule=rule.name,
        family=rule.family,
        model=model.name,
        average=average,
        oracle=oracle,
        oracle_layer=int(model.layers[oracle_row]),
        last=last,
        regret=oracle - average,
        gain_vs_last=average - last,
        n_tasks=len(tasks),
        n_fallback=len(fallbacks),
        depth_pct=float(np.mean(chosen) * 100.0 / model.last_layer) if model.last_layer > 0 else 0.0,
        layers=choice,
        per_task=per_task,
    )
