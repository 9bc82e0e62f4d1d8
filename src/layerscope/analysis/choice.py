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
"""

from __future__ import annotations

import functools
import json
import re
from importlib import resources
from typing import Any

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
from layerscope.errors import LayerscopeError

__all__ = ["AUTO", "RECORD_FILE", "choose_layer", "default_rule", "held_out_record", "parse_rule", "rule_spec"]

AUTO = "auto"
RECORD_FILE = "label_free_record.json"
#: Used when no record has been written (a fresh checkout before the benchmark ran).
FALLBACK_SPEC = "dime"

_WINDOW = re.compile(r"^(?P<body>[^@]+)@(?P<lo>[0-9.]+%?)-(?P<hi>[0-9.]+%?)$")
#: ``--select-by`` prefix of each valley rule.
_VALLEY_RULES: dict[str, type[ValleyFractionRule] | type[ValleyRecoveryRule]] = {
    "valley": ValleyFractionRule, "recovery": ValleyRecoveryRule}


def _fraction(text: str) -> float:
    try:
        value = float(text.rstrip("%")) / (100.0 if text.endswith("%") else 1.0)
    except ValueError:
        raise LayerscopeError(f"'{text}' is not a depth (a fraction like 0.75, or 75%)") from None
    if not 0.0 <= value <= 1.0:
        raise LayerscopeError(f"depth {text} is not between 0 and 1 (0% and 100%)")
    return value


def _metric(token: str) -> tuple[str, str | None]:
    """``"max:lidar"`` -> ``("lidar", "max")``; the metric must be registered."""
    from layerscope.metrics.registry import get

    direction, _, name = token.rpartition(":")
    if direction not in ("", "min", "max"):
        raise LayerscopeError(f"'{token}': a direction is min: or max:")
    return get(name).name, direction or None


def parse_rule(spec: str) -> SelectionRule:
    """The selection rule a ``--select-by`` text describes (see the module docstring).

    Raises
    ------
    LayerscopeError
        One line naming what is wrong (unknown metric with the nearest name, bad depth...).
    """
    text = str(spec).strip()
    if text == AUTO:
        return default_rule()
    if text == "last":
        return LastLayer()
    if text.startswith("depth:"):
        return FixedDepth(_fraction(text.partition(":")[2]))
    kind, _, rest = text.partition(":")
    if kind in _VALLEY_RULES:
        metric, _, fraction = rest.rpartition(":")
        if not metric or not fraction:
            raise LayerscopeError(f"'{text}': {kind}: needs a metric and a fraction, e.g. {kind}:dime:0.5")
        return _VALLEY_RULES[kind](_metric(metric)[0], _fraction(fraction), texts="all")
    window = _WINDOW.match(text)
    body = window["body"] if window else text
    lo, hi = (_fraction(window["lo"]), _fraction(window["hi"])) if window else (0.0, 1.0)
    if body.startswith("rank:"):
        parsed = [_metric(token) for token in body.partition(":")[2].split("+") if token]
        if not parsed:
            raise LayerscopeError(f"'{text}': rank: needs metrics joined by +, e.g. rank:infonce+lidar")
        directions = None if all(d is None for _, d in parsed) else tuple(
            d or ("max" if _higher(m) else "min") for m, d in parsed)
        return RankAggregateRule(tuple(m for m, _ in parsed), lo, hi, directions, texts="all")
    metric, direction = _metric(body)
    if window:
        return WindowMetricRule(metric, lo, hi, direction, texts="all")
    return MetricRule(metric, direction, texts="all")


def _higher(metric: str) -> bool:
    from layerscope.metrics.registry import get

    return get(metric).higher_is_better


def rule_spec(rule: SelectionRule) -> str:
    """The ``--select-by`` text of a rule (the inverse of :func:`parse_rule` for the rules it writes)."""

    def window(lo: float, hi: float) -> str:
        return "" if (lo, hi) == (0.0, 1.0) else f"@{lo:g}-{hi:g}"

    def token(metric: str, direction: str | None) -> str:
        return metric if direction is None or direction == ("max" if _higher(metric) else "min") else \
            f"{direction}:{metric}"

    if isinstance(rule, LastLayer):
        return "last"
    if isinstance(rule, FixedDepth):
        return f"depth:{rule.fraction:g}"
    if getattr(rule, "texts", "all") != "all":
        raise LayerscopeError(f"'{rule.name}' chooses per task: the headline choice needs one layer for all texts")
    if isinstance(rule, RankAggregateRule):
        directions = rule.directions or (None,) * len(rule.metrics)
        metrics = "+".join(token(m, d) for m, d in zip(rule.metrics, directions, strict=True))
        return f"rank:{metrics}{window(rule.lo, rule.hi)}"
    if isinstance(rule, WindowMetricRule):
        return f"{token(rule.metric, rule.direction)}{window(rule.lo, rule.hi)}"
    if isinstance(rule, MetricRule):
        return token(rule.metric, rule.direction)
    kind = next((kind for kind, cls in _VALLEY_RULES.items() if type(rule) is cls), None)
    if kind is not None and rule.normalization is None and rule.fallback == "last":  # type: ignore[attr-defined]
        return f"{kind}:{rule.metric}:{rule.fraction:g}"  # type: ignore[attr-defined]
    raise LayerscopeError(f"no --select-by text for the rule '{rule.name}'")


@functools.cache
def held_out_record() -> dict[str, Any] | None:
    """The default rule and how it did on models it was not chosen on (None before the benchmark ran)."""
    try:
        text = resources.files("layerscope.analysis").joinpath(RECORD_FILE).read_text("utf-8")
    except OSError:
        return None
    try:
        return json.loads(text)
    except ValueError as error:
        raise LayerscopeError(f"{RECORD_FILE} is not valid JSON ({error}): rerun benchmarks/bench_selection.py "
                              "with --write-record") from None


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
