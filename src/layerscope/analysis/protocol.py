"""Judging label-free selection rules on models they were not chosen on (SPEC section 10, issue 13).

The protocol, over any list of :class:`~layerscope.analysis.rules.ModelData`:

1. A candidate set of rules (:func:`default_candidates`: every family of
   :mod:`layerscope.analysis.rules` over a modest parameter grid, a few hundred rules).
2. Folds: leave-one-model-out (``scheme="model"``: each model held out in turn) or
   leave-one-family-out (``scheme="family"``: all models of a family held out together).
3. For each fold the rule is chosen on the training models only (:func:`choose_rule`: the best mean
   regret; ties as documented there) and scored on each held-out model. The chooser is called with
   the training models and nothing else, so the held-out model's data cannot reach the choice.
4. Per held-out model: regret (oracle best single layer's average minus the rule's, x 100), gain
   and win against the last layer, and bootstrap intervals over tasks; over the models: the mean
   held-out regret with its bootstrap interval and the number of wins.

A fixed rule (no choice, e.g. the paper's min-DiME) can be evaluated alongside: it is scored on every
model as it is (``scheme="fixed"``).

Bootstrap over tasks: for each model, ``n_boot`` resamples of its tasks with replacement, drawn from
``numpy.random.default_rng([seed, crc32(model name)])``, so a model's resamples do not depend on the
other models or on the selector (comparisons are paired). In each resample the oracle is re-chosen
(the best single layer on the resampled tasks) and the rule's choices are kept. The interval of the
mean over models averages the models' resamples replicate by replicate.
"""

from __future__ import annotations

import itertools
import logging
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Union

import numpy as np
import pandas as pd

from layerscope.analysis.rules.base import SelectionRule
from layerscope.analysis.rules.depth import FixedDepth, LastLayer
from layerscope.analysis.rules.metric import MetricRule, WindowMetricRule
from layerscope.analysis.rules.model_data import ModelData
from layerscope.analysis.rules.rank import RankAggregateRule
from layerscope.analysis.rules.scoring import RuleScore, score_rule
from layerscope.analysis.rules.valley import ValleyFractionRule, ValleyRecoveryRule
from layerscope.errors import LayerscopeError, unknown

__all__ = [
    "DEFAULT_DEPTHS",
    "DEFAULT_RULE_METRICS",
    "DEFAULT_WINDOWS",
    "SCHEMES",
    "ProtocolResult",
    "RuleScorer",
    "choose_rule",
    "default_candidates",
    "evaluate_selector",
    "folds",
    "guarded_chooser",
    "nested_chooser",
    "one_layer_families",
    "rank_rules",
    "rules_of_family",
    "run_protocol",
]

logger = logging.getLogger(__name__)

#: Held-out schemes: leave one model out, leave one family out, or no choice at all (a fixed rule).
SCHEMES: tuple[str, ...] = ("model", "family", "fixed")

#: Metrics of the single-metric and window families, each in both directions.
DEFAULT_RULE_METRICS: tuple[str, ...] = (
    "prompt_entropy",
    "dataset_entropy",
    "dime",
    "infonce",
    "lidar",
    "curvature",
)
#: Fixed depths: 30% to 95% in steps of 5 (100% is the last-layer rule).
DEFAULT_DEPTHS: tuple[float, ...] = tuple(round(0.30 + 0.05 * step, 2) for step in range(14))
#: Depth windows of the window + metric family.
DEFAULT_WINDOWS: tuple[tuple[float, float], ...] = (
    (0.25, 0.75),
    (0.5, 0.9),
    (0.5, 1.0),
    (0.6, 0.9),
    (0.6, 1.0),
    (0.7, 1.0),
)
#: Metrics whose 2- and 3-subsets are rank-averaged (each in its registered direction).
DEFAULT_RANK_METRICS: tuple[str, ...] = ("prompt_entropy", "dataset_entropy", "dime", "infonce", "lidar")
DEFAULT_RANK_SIZES: tuple[int, ...] = (2, 3)
#: Windows of the rank-aggregation family (the first: the whole depth).
DEFAULT_RANK_WINDOWS: tuple[tuple[float, float], ...] = ((0.0, 1.0), (0.5, 0.9), (0.5, 1.0), (0.6, 1.0), (0.7, 1.0))
DEFAULT_VALLEY_METRICS: tuple[str, ...] = ("prompt_entropy", "dataset_entropy")
DEFAULT_VALLEY_FRACTIONS: tuple[float, ...] = (0.25, 0.5, 0.75)
DEFAULT_RECOVERY_FRACTIONS: tuple[float, ...] = (0.25, 0.5, 0.75, 0.9)

#: A selector: one fixed rule, or candidates to choose from on the training models of each fold.
Selector = Union[SelectionRule, Sequence[SelectionRule]]
#: ``chooser(candidates, training_models) -> rule``.
Chooser = Callable[[Sequence[SelectionRule], Sequence[ModelData]], SelectionRule]

_TOLERANCE = 1e-9


def default_candidates(
    *,
    metrics: Sequence[str] = DEFAULT_RULE_METRICS,
    depths: Sequence[float] = DEFAULT_DEPTHS,
    windows: Sequence[tuple[float, float]] = DEFAULT_WINDOWS,
    rank_metrics: Sequence[str] = DEFAULT_RANK_METRICS,
    rank_sizes: Sequence[int] = DEFAULT_RANK_SIZES,
    rank_windows: Sequence[tuple[float, float]] = DEFAULT_RANK_WINDOWS,
    valley_metrics: Sequence[str] = DEFAULT_VALLEY_METRICS,
    valley_fractions: Sequence[float] = DEFAULT_VALLEY_FRACTIONS,
    recovery_fractions: Sequence[float] = DEFAULT_RECOVERY_FRACTIONS,
) -> tuple[SelectionRule, ...]:
    """The default candidate rules: every family over a modest parameter grid.

    In this order (which is also the tie order of :func:`choose_rule`: simpler rules first):

    - the last layer (1);
    - fixed depths ``depths`` (14);
    - each metric of ``metrics`` x {min, max} x {per task, on all texts} (24);
    - each window of ``windows`` x metric x {min, max}, on all texts (72);
    - rank averages of every ``rank_sizes``-subset of ``rank_metrics`` (registered directions) x
      ``rank_windows`` x {on all texts, per task} (200);
    - valley rules: ``valley_metrics`` x (``valley_fractions`` of the way to the last layer, and
      recovery to ``recovery_fractions``), on all texts (14).

    That is 325 rules with the defaults.

    Returns
    -------
    tuple of SelectionRule
        Without duplicates.
    """
    rules: list[SelectionRule] = [LastLayer()]
    rules += [FixedDepth(fraction) for fraction in depths]
    rules += [
        MetricRule(metric, direction, texts=texts)
        for texts in ("task", "all")
        for metric in metrics
        for direction in ("min", "max")
    ]
    rules += [
        WindowMetricRule(metric, lo, hi, direction=direction)
        for lo, hi in windows
        for metric in metrics
        for direction in ("min", "max")
    ]
    rules += [
        RankAggregateRule(tuple(subset), lo, hi, texts=texts)
        for texts in ("all", "task")
        for lo, hi in rank_windows
        for size in rank_sizes
        for subset in itertools.combinations(rank_metrics, size)
    ]
    for metric in valley_metrics:
        rules += [ValleyFractionRule(metric, fraction) for fraction in valley_fractions]
        rules += [ValleyRecoveryRule(metric, fraction) for fraction in recovery_fractions]
    return tuple(dict.fromkeys(rules))


def rules_of_family(
    candidates: Iterable[SelectionRule], *families: str, predicate: Callable[[SelectionRule], bool] | None = None
) -> tuple[SelectionRule, ...]:
    """The candidates of the given families (``fixed_depth``, ``rank_aggregate``...), optionally filtered.

    Parameters
    ----------
    candidates : iterable of SelectionRule
    *families : str
        Family names (``rule.family``).
    predicate : callable, optional
        Keep only rules for which it is true (e.g. ``lambda rule: rule.lo >= 0.5``).

    Returns
    -------
    tuple of SelectionRule
    """
    chosen = tuple(
        rule
        for rule in candidates
        if (not families or rule.family in families) and (predicate is None or predicate(rule))
    )
    if not chosen:
        raise LayerscopeError(f"no candidate rule of famil{'ies' if len(families) > 1 else 'y'} {', '.join(families)}")
    return chosen


class RuleScorer:
    """Memoised :func:`~layerscope.analysis.rules.score_rule`: each (rule, model) is scored once.

    The memo only answers for the model object it is asked about, so sharing it between folds
    lets no model's data into another model's fold.
    """

    def __init__(self) -> None:
        self._scores: dict[tuple[SelectionRule, int], RuleScore] = {}
        self._models: dict[int, ModelData] = {}  # keeps the models alive while their ids are keys

    def __call__(self, rule: SelectionRule, model: ModelData) -> RuleScore:
        key = (rule, id(model))
        if key not in self._scores:
            self._models[id(model)] = model
            self._scores[key] = score_rule(rule, model)
        return self._scores[key]


def rank_rules(
    candidates: Sequence[SelectionRule], models: Sequence[ModelData], *, scorer: RuleScorer | None = None
) -> pd.DataFrame:
    """Candidates ranked by their mean regret over ``models`` (in-sample).

    Order: the lowest mean regret (differences under 1e-9 count as ties), then the most wins
    against the last layer, then the position in ``candidates``.

    Parameters
    ----------
    candidates : sequence of SelectionRule
    models : sequence of ModelData
    scorer : RuleScorer, optional
        Shared memo.

    Returns
    -------
    pandas.DataFrame
        One row per rule, best first: ``rule, family, params, mean_regret, worst_regret,
        mean_gain_vs_last, wins, n_models, position``; ``attrs["rules"]`` holds the rule objects in
        the same order.
    """
    if not candidates:
        raise LayerscopeError("no candidate rules to rank")
    if not models:
        raise LayerscopeError("no models to rank the rules on")
    scorer = scorer or RuleScorer()
    regrets = np.array([[scorer(rule, model).regret for model in models] for rule in candidates])
    gains = np.array([[scorer(rule, model).gain_vs_last for model in models] for rule in candidates])
    table = pd.DataFrame(
        {
            "rule": [rule.name for rule in candidates],
            "family": [rule.family for rule in candidates],
            "params": [rule.params_json() for rule in candidates],
            "mean_regret": regrets.mean(axis=1),
            "worst_regret": regrets.max(axis=1),
            "mean_gain_vs_last": gains.mean(axis=1),
            "wins": (gains > _TOLERANCE).sum(axis=1),
            "n_models": len(models),
            "position": np.arange(len(candidates)),
        }
    )
    # round away float noise so that equal regrets reached by different sums tie
    key = np.round(table["mean_regret"].to_numpy() / _TOLERANCE) * _TOLERANCE
    order = np.lexsort((table["position"].to_numpy(), -table["wins"].to_numpy(), key))
    table = table.iloc[order].reset_index(drop=True)
    table.attrs["rules"] = [candidates[position] for position in table["position"]]
    return table


def choose_rule(
    candidates: Sequence[SelectionRule], training: Sequence[ModelData], *, scorer: RuleScorer | None = None
) -> SelectionRule:
    """The candidate with the best mean regret on the training models.

    Ties: more wins against the last layer, then the earlier candidate (see :func:`rank_rules`).

    Parameters
    ----------
    candidates : sequence of SelectionRule
    training : sequence of ModelData
        The only models whose data are read.
    scorer : RuleScorer, optional
        Shared memo.

    Returns
    -------
    SelectionRule
    """
    return rank_rules(candidates, training, scorer=scorer).attrs["rules"][0]


def folds(models: Sequence[ModelData], scheme: str = "model") -> list[tuple[str, list[ModelData], list[ModelData]]]:
    """Split the models into (label, held-out models, training models) folds.

    Parameters
    ----------
    models : sequence of ModelData
        Distinct names.
    scheme : {"model", "family"}, default "model"
        Leave one model out, or leave one family out (families in order of first appearance).

    Returns
    -------
    list of (str, list of ModelData, list of ModelData)
    """
    names = [model.name for model in models]
    if len(set(names)) != len(names):
        duplicates = sorted({name for name in names if names.count(name) > 1})
        raise LayerscopeError(f"model names must be distinct, repeated: {', '.join(duplicates)}")
    if scheme == "model":
        groups = [(model.name, [model]) for model in models]
    elif scheme == "family":
        families = list(dict.fromkeys(model.family for model in models))
        groups = [(family, [model for model in models if model.family == family]) for family in families]
    else:
        raise unknown("held-out scheme", scheme, ("model", "family"))
    if len(groups) < 2:
        raise LayerscopeError(
            f"leave-one-{scheme}-out needs at least 2 {'models' if scheme == 'model' else 'families'}, "
            f"got {len(groups)}"
        )
    return [
        (label, held_out, [model for model in models if all(model is not other for other in held_out)])
        for label, held_out in groups
    ]


def _task_resamples(model: ModelData, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n_tasks) task indices drawn with replacement, seeded by ``seed`` and the model's name."""
    rng = np.random.default_rng([seed, zlib.crc32(model.name.encode("utf-8"))])
    n_tasks = len(model.tasks)
    return rng.integers(0, n_tasks, size=(n_boot, n_tasks))


class _Bootstrap:
    """Per-model resamples and the oracle / last-layer averages on them, computed once."""

    def __init__(self, n_boot: int, seed: int) -> None:
        self.n_boot = n_boot
        self.seed = seed
        self._cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def base(self, model: ModelData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if id(model) not in self._cache:
            index = _task_resamples(model, self.n_boot, self.seed)
            layer_means = model.score_matrix[:, index].mean(axis=2)  # (layers, n_boot)
            self._cache[id(model)] = (index, layer_means.max(axis=0), layer_means[-1])
        return self._cache[id(model)]

    def replicates(self, score: RuleScore, model: ModelData) -> tuple[np.ndarray, np.ndarray]:
        """(regret, gain vs last) per resample, x 100."""
        index, oracle, last = self.base(model)
        average = score.per_task[index].mean(axis=1)
        return 100.0 * (oracle - average), 100.0 * (average - last)


def _interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    if values.size == 0:
        return float("nan"), float("nan")
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)


def evaluate_selector(
    selector: Selector,
    models: Sequence[ModelData],
    *,
    scheme: str = "model",
    label: str | None = None,
    chooser: Chooser | None = None,
    scorer: RuleScorer | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Held-out record of one selector: per model, and summed up over the models.

    Parameters
    ----------
    selector : SelectionRule or sequence of SelectionRule
        A fixed rule (scored as it is on every model; ``scheme`` becomes ``"fixed"``), or candidates
        chosen from on each fold's training models.
    models : sequence of ModelData
    scheme : {"model", "family"}, default "model"
        Held-out scheme for candidates.
    label : str, optional
        Selector label in the output (default: the rule's name, or ``"protocol"``).
    chooser : callable, optional
        ``chooser(candidates, training) -> rule``; default :func:`choose_rule`. It is only ever
        given the fold's training models.
    scorer : RuleScorer, optional
        Shared memo.
    n_boot : int, default 2000
        Bootstrap resamples of the tasks (0: no intervals).
    seed : int, default 0
        Bootstrap seed.
    confidence : float, default 0.95
        Interval coverage.

    Returns
    -------
    (pandas.DataFrame, pandas.DataFrame)
        Per held-out model: ``selector, scheme, fold, model, family, rule, rule_family, params,
        n_training, average, oracle, oracle_layer, last, regret, regret_low, regret_high,
        gain_vs_last, gain_low, gain_high, win, layer, depth_pct, n_tasks, n_fallback``; and the
        one-row summary: ``selector, scheme, n_models, mean_regret, regret_low, regret_high,
        mean_gain_vs_last, gain_low, gain_high, wins, rules`` (distinct rules chosen).
    """
    if not 0.0 < confidence < 1.0:
        raise LayerscopeError(f"confidence must lie in (0, 1), got {confidence}")
    if n_boot < 0:
        raise LayerscopeError(f"n_boot must be >= 0, got {n_boot}")
    scorer = scorer or RuleScorer()
    bootstrap = _Bootstrap(n_boot, seed)
    if isinstance(selector, SelectionRule):
        scheme = "fixed"
        label = label or selector.name
        plan = [(model.name, [model], [], selector) for model in models]
    else:
        candidates = tuple(selector)
        if not candidates:
            raise LayerscopeError("a selector needs at least one candidate rule")
        label = label or "protocol"
        if chooser is None:

            def chooser(rules: Sequence[SelectionRule], training: Sequence[ModelData]) -> SelectionRule:
                return choose_rule(rules, training, scorer=scorer)

        plan = [
            (fold, held_out, training, chooser(candidates, list(training)))
            for fold, held_out, training in folds(models, scheme)
        ]
    records: list[dict[str, object]] = []
    regret_draws: list[np.ndarray] = []
    gain_draws: list[np.ndarray] = []
    for fold, held_out, training, rule in plan:
        for model in held_out:
            score = scorer(rule, model)
            record = score.as_record()
            record["rule_family"] = record.pop("family")
            record.update(
                selector=label, scheme=scheme, fold=fold, family=model.family, params=rule.params_json(),
                n_training=len(training),
            )  # fmt: skip
            if n_boot:
                regrets, gains = bootstrap.replicates(score, model)
                regret_draws.append(regrets)
                gain_draws.append(gains)
                record["regret_low"], record["regret_high"] = _interval(regrets, confidence)
                record["gain_low"], record["gain_high"] = _interval(gains, confidence)
            else:
                record["regret_low"] = record["regret_high"] = float("nan")
                record["gain_low"] = record["gain_high"] = float("nan")
            records.append(record)
    columns = [
        "selector", "scheme", "fold", "model", "family", "rule", "rule_family", "params", "n_training",
        "average", "oracle", "oracle_layer", "last", "regret", "regret_low", "regret_high", "gain_vs_last",
        "gain_low", "gain_high", "win", "layer", "depth_pct", "n_tasks", "n_fallback",
    ]  # fmt: skip
    per_model = pd.DataFrame.from_records(records)[columns]
    per_model["layer"] = per_model["layer"].astype("Int64")
    regret_low = regret_high = gain_low = gain_high = float("nan")
    if regret_draws:
        regret_low, regret_high = _interval(np.mean(regret_draws, axis=0), confidence)
        gain_low, gain_high = _interval(np.mean(gain_draws, axis=0), confidence)
    summary = pd.DataFrame(
        [
            {
                "selector": label,
                "scheme": scheme,
                "n_models": len(per_model),
                "mean_regret": float(per_model["regret"].mean()),
                "regret_low": regret_low,
                "regret_high": regret_high,
                "mean_gain_vs_last": float(per_model["gain_vs_last"].mean()),
                "gain_low": gain_low,
                "gain_high": gain_high,
                "wins": int(per_model["win"].sum()),
                "rules": " | ".join(dict.fromkeys(per_model["rule"])),
            }
        ]
    )
    return per_model, summary


@dataclass(frozen=True, eq=False)
class ProtocolResult:
    """What :func:`run_protocol` found.

    Attributes
    ----------
    per_model : pandas.DataFrame
        One row per (selector, scheme, held-out model); see :func:`evaluate_selector`.
    summary : pandas.DataFrame
        One row per (selector, scheme).
    ranking : pandas.DataFrame
        The protocol's candidates ranked on all models (:func:`rank_rules`).
    selector : SelectionRule
        The rule the protocol picks for new models: the best on all models.
    label : str
        The protocol's selector label in the tables.
    """

    per_model: pd.DataFrame
    summary: pd.DataFrame
    ranking: pd.DataFrame
    selector: SelectionRule
    label: str = "protocol"

    def held_out_regret(self, scheme: str = "model") -> float:
        """Mean held-out regret of the protocol's selection under ``scheme``."""
        rows = self.summary[(self.summary["selector"] == self.label) & (self.summary["scheme"] == scheme)]
        if rows.empty:
            raise unknown("scheme of the protocol's selector", scheme, self.summary["scheme"].unique())
        return float(rows["mean_regret"].iloc[0])


def run_protocol(
    models: Sequence[ModelData],
    candidates: Sequence[SelectionRule] | None = None,
    *,
    selectors: Mapping[str, Selector] | None = None,
    schemes: Sequence[str] = ("model", "family"),
    chooser: Chooser | None = None,
    choosers: Mapping[str, Chooser] | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
    label: str = "protocol",
) -> ProtocolResult:
    """Run the held-out protocol for the candidate rules (and any other selectors).

    Parameters
    ----------
    models : sequence of ModelData
        Distinct names; two or more (and two or more families for ``scheme="family"``).
    candidates : sequence of SelectionRule, optional
        The protocol's candidates (default :func:`default_candidates`).
    selectors : Mapping of str to selector, optional
        More selectors to report under their labels: a fixed rule, or a candidate subset
        (chosen per fold like the protocol's).
    schemes : sequence of {"model", "family"}, default ("model", "family")
        Held-out schemes for candidate sets; ``"family"`` is skipped (with a log line) when the
        models hold a single family.
    chooser : callable, optional
        See :func:`evaluate_selector`.
    choosers : mapping of str to callable, optional
        A chooser for some selectors by label (the others use ``chooser``).
    n_boot, seed, confidence
        Bootstrap over tasks (see :func:`evaluate_selector`).
    label : str, default "protocol"
        The protocol's selector label in the tables.

    Returns
    -------
    ProtocolResult
    """
    if len(models) < 2:
        raise LayerscopeError(f"the protocol needs at least 2 models, got {len(models)}")
    candidates = tuple(candidates) if candidates is not None else default_candidates()
    if label in (selectors or {}):
        raise LayerscopeError(f"selector label '{label}' is the protocol's own: choose another")
    everything: dict[str, Selector] = {label: candidates, **dict(selectors or {})}
    scorer = RuleScorer()
    n_families = len({model.family for model in models})
    per_model: list[pd.DataFrame] = []
    summaries: list[pd.DataFrame] = []
    for name, selector in everything.items():
        chosen_schemes = ["fixed"] if isinstance(selector, SelectionRule) else list(schemes)
        for scheme in chosen_schemes:
            if scheme == "family" and n_families < 2:
                logger.info("leave-one-family-out skipped for '%s': the models hold a single family", name)
                continue
            frame, summary = evaluate_selector(
                selector, models, scheme=scheme, label=name, chooser=(choosers or {}).get(name, chooser), scorer=scorer,
                n_boot=n_boot, seed=seed, confidence=confidence,
            )  # fmt: skip
            per_model.append(frame)
            summaries.append(summary)
    ranking = rank_rules(candidates, models, scorer=scorer)
    return ProtocolResult(
        per_model=pd.concat(per_model, ignore_index=True),
        summary=pd.concat(summaries, ignore_index=True),
        ranking=ranking,
        selector=ranking.attrs["rules"][0],
        label=label,
    )


# ------------------------------------------------------------------------------------------ nested choice


def one_layer_families(candidates: Sequence[SelectionRule] | None = None) -> dict[str, tuple[SelectionRule, ...]]:
    """The candidate rules that give one layer for every task, grouped by family (``last layer`` included).

    A default label-free choice must name one layer (the card of a run, an export), so per-task rules
    are left out.
    """
    candidates = tuple(candidates) if candidates is not None else default_candidates()
    families: dict[str, list[SelectionRule]] = {}
    for rule in candidates:
        if getattr(rule, "texts", "all") == "all":
            families.setdefault(rule.family, []).append(rule)
    return {family: tuple(rules) for family, rules in families.items()}


def nested_chooser(families: Mapping[str, Sequence[SelectionRule]], *, scheme: str = "model",
                   scorer: RuleScorer | None = None) -> Chooser:
    """A chooser that first picks a family by an inner held-out loop, then the family's best rule.

    On the training models it hands it, the chooser scores each family leave-one-out (``scheme``)
    exactly as :func:`evaluate_selector` would, keeps the family with the lowest held-out mean regret
    (ties: more wins, then the family's order), and returns that family's best rule on all the
    training models. Choosing among few, differently shaped families this way guards against the
    overfitting of choosing among hundreds of rules at once; given to :func:`evaluate_selector` with
    the union of the families as candidates, the outer loop then measures the whole procedure on
    models it never saw (nested cross-validation).
    """
    scorer = scorer or RuleScorer()
    ordered = {name: tuple(rules) for name, rules in families.items()}

    def choose(candidates: Sequence[SelectionRule], training: Sequence[ModelData]) -> SelectionRule:
        allowed = set(candidates)
        pools = {name: tuple(rule for rule in rules if rule in allowed) for name, rules in ordered.items()}
        pools = {name: rules for name, rules in pools.items() if rules}
        if len(training) < 2 or len(pools) == 1:
            best_family = next(iter(pools))
        else:
            inner = [(name, *_inner_record(rules, training, scheme, scorer)) for name, rules in pools.items()]
            best_family = min(inner, key=lambda item: (round(item[1] / _TOLERANCE), -item[2]))[0]
        return choose_rule(pools[best_family], training, scorer=scorer)

    return choose


def _inner_folds(training: Sequence[ModelData], scheme: str) -> list[tuple[str, list[ModelData], list[ModelData]]]:
    """:func:`folds` of the training models; leave one model out when they hold a single family."""
    try:
        return folds(training, scheme)
    except LayerscopeError:
        return folds(training, "model")


def _inner_record(rules: Sequence[SelectionRule], training: Sequence[ModelData], scheme: str,
                  scorer: RuleScorer) -> tuple[float, int]:
    """Held-out mean regret and wins of choosing among ``rules`` on ``training`` (no bootstrap)."""
    if len(rules) == 1:
        scores = [scorer(rules[0], model) for model in training]
    else:
        scores = [scorer(choose_rule(rules, rest, scorer=scorer), model)
                  for _, held_out, rest in _inner_folds(training, scheme) for model in held_out]
    return float(np.mean([score.regret for score in scores])), int(sum(score.win for score in scores))


def guarded_chooser(chooser: Chooser, *, scheme: str = "model", scorer: RuleScorer | None = None) -> Chooser:
    """A chooser that keeps ``chooser``'s rule only where that choice held up against the last layer.

    On the training models it is handed, ``chooser`` is run held out (``scheme``: each training model
    or family in turn, chosen on the others); its rule on all the training models is kept only when,
    held out, it beat the last layer on more models than it lost to it and by a positive mean gain.
    Otherwise the last layer is the choice. The guard is part of the procedure, so an outer held-out
    loop measures it too: it answers "does choosing without labels beat simply taking the last
    layer on models it was not chosen on?" before a rule becomes anyone's default.
    """
    scorer = scorer or RuleScorer()

    def choose(candidates: Sequence[SelectionRule], training: Sequence[ModelData]) -> SelectionRule:
        if len(training) < 2:
            return LastLayer()
        gains = np.array([scorer(chooser(candidates, rest), model).gain_vs_last
                          for _, held_out, rest in _inner_folds(training, scheme) for model in held_out])
        wins, losses = int((gains > _TOLERANCE).sum()), int((gains < -_TOLERANCE).sum())
        if wins > losses and gains.mean() > _TOLERANCE:
            return chooser(candidates, training)
        return LastLayer()

    return choose
