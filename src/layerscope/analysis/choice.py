"""The label-free layer choice of a run: a selection rule written as text, and the default one.

``--select-by`` (``AnalysisConfig.select_by``) takes a rule of :mod:`layerscope.analysis.rules` in a
short form:

==========================  ================================================================
``auto``                    the default rule: the one the held-out protocol picked (below)
``last``                    the last layer
``depth:0.75``              a fixed depth (a fraction, or ``75%``)
``dime``, ``max:lidar``     the extreme of one metric on all texts (direction: the registry's
                            unless ``min:``/``max:`` says otherwise)
``dime@0.5-0.9``            the same inside a depth window
``rank:infonce+lidar``      the best average rank of several metrics (``@lo-hi`` for a window)
``valley:dime:0.75``        75% of the way from a metric's valley (its lowest layer) to the last
``recovery:dime:0.5``       the first layer after the valley where the metric regained 50% of its
                            rise to the last layer
==========================  ================================================================

The default is chosen by :mod:`layerscope.analysis.protocol` (the nested choice of a rule, kept only
where it beat the last layer on held-out models; see ``guarded_chooser``) on every model with a
layer x task grid: the authors' stored results and layerscope's own runs. ``benchmarks/bench_selection.py
--write-record`` writes that choice and its held-out record to ``label_free_record.json`` beside this
module, which the report quotes. With the models measured so far no label-free rule held up, so
``auto`` is the last layer; ``--select-by dime`` is the paper's rule.

The text itself is read by :func:`layerscope.config.parse_select_by` (configurations check
``--select-by`` when they are made, and sit below the rules); this module turns what it read into a
rule of :mod:`layerscope.analysis.rules`, and a rule back into its text.
"""

from __future__ import annotations

import pandas as pd

from layerscope.analysis.rules import (
    FixedDepth,
    LastLayer,
    MetricRule,
    ModelData,
    RankAggregateRule,
    SelectionRule,
    ValleyFractionRule,
    ValleyRecoveryRule,
    WindowMetricRule,
)
from layerscope.config import AUTO, FALLBACK_SPEC, RECORD_FILE, SelectBy, held_out_record, parse_select_by
from layerscope.errors import LayerscopeError

# AUTO, RECORD_FILE, FALLBACK_SPEC and held_out_record live with the grammar in layerscope.config (which
# checks --select-by without importing the rules, a layer above it); they are this module's names too.
__all__ = ["AUTO", "RECORD_FILE", "choose_layer", "default_rule", "held_out_record", "parse_rule", "rule_spec"]

#: ``--select-by`` prefix of each valley rule.
_VALLEY_RULES: dict[str, type[ValleyFractionRule] | type[ValleyRecoveryRule]] = {
    "valley": ValleyFractionRule, "recovery": ValleyRecoveryRule}


def parse_rule(spec: str) -> SelectionRule:
    """The selection rule a ``--select-by`` text describes (see the module docstring).

    Raises
    ------
    LayerscopeError
        One line naming what is wrong (unknown metric with the nearest name, bad depth...).
    """
    if str(spec).strip() == AUTO:
        return default_rule()
    parsed = parse_select_by(spec)
    if parsed.kind == "last":
        return LastLayer()
    if parsed.kind == "depth":
        return FixedDepth(parsed.fraction)
    if parsed.kind in _VALLEY_RULES:
        return _VALLEY_RULES[parsed.kind](parsed.metrics[0], parsed.fraction, texts="all")
    if parsed.kind == "rank":
        directions = None if all(d is None for d in parsed.directions) else tuple(
            d or ("max" if _higher(m) else "min") for m, d in zip(parsed.metrics, parsed.directions, strict=True))
        return RankAggregateRule(parsed.metrics, parsed.lo, parsed.hi, directions, texts="all")
    metric, direction = parsed.metrics[0], parsed.directions[0]
    if parsed.kind == "window":
        return WindowMetricRule(metric, parsed.lo, parsed.hi, direction, texts="all")
    return MetricRule(metric, direction, texts="all")


def _higher(metric: str) -> bool:
    from layerscope.metrics.registry import get

    return get(metric).higher_is_better


def rule_spec(rule: SelectionRule) -> str:
    """The ``--select-by`` text of a rule (the inverse of :func:`parse_rule` for the rules it writes)."""
    if isinstance(rule, LastLayer):
        return "last"
    if isinstance(rule, FixedDepth):
        return SelectBy("depth", fraction=rule.fraction).text()
    if getattr(rule, "texts", "all") != "all":
        raise LayerscopeError(f"'{rule.name}' chooses per task: the headline choice needs one layer for all texts")
    if isinstance(rule, RankAggregateRule):
        directions = rule.directions or (None,) * len(rule.metrics)
        return SelectBy("rank", rule.metrics, directions, rule.lo, rule.hi).text()
    if isinstance(rule, WindowMetricRule):
        return SelectBy("window", (rule.metric,), (rule.direction,), rule.lo, rule.hi).text()
    if isinstance(rule, MetricRule):
        return SelectBy("metric", (rule.metric,), (rule.direction,)).text()
    kind = next((kind for kind, cls in _VALLEY_RULES.items() if type(rule) is cls), None)
    if kind is not None and rule.normalization is None and rule.fallback == "last":  # type: ignore[attr-defined]
        return SelectBy(kind, (rule.metric,), (None,), fraction=rule.fraction).text()  # type: ignore[attr-defined]
    raise LayerscopeError(f"no --select-by text for the rule '{rule.name}'")


def default_rule() -> SelectionRule:
    """The rule ``auto`` stands for: the held-out protocol's choice (see :func:`held_out_record`)."""
    record = held_out_record()
    return parse_rule(record["rule"] if record else FALLBACK_SPEC)


def choose_layer(metrics: pd.DataFrame, rule: SelectionRule, *, last_layer: int | None = None,
                 name: str = "run") -> int | None:
    """The one layer ``rule`` picks from a run's metrics (no scores needed); None when it cannot.

    The candidates are the layers with metric values; the rule reads the all-texts set (``all``)
    where the run has several text sets.
    """
    if metrics is None or metrics.empty:
        return None
    layers = sorted(int(layer) for layer in metrics["layer"].unique())
    placeholder = pd.DataFrame({"layer": layers, "task": "(label-free)", "main_score": 0.0})
    model = ModelData.from_frames(name, metrics, placeholder, last_layer=last_layer)
    choices, fallbacks = rule.choose_with_fallbacks(model)
    if fallbacks:
        return None
    return int(next(iter(choices.values())))
