"""Recipes chosen held out: a recipe per task type picked on some models, judged on another (issue 23).

The layer-selection protocol (:mod:`layerscope.analysis.protocol`) showed that no label-free rule
picking *one raw layer* beats the last layer on models it was not chosen on. This protocol widens the
choice to recipes (:mod:`layerscope.analysis.recipes`) and judges it the same way:

1. Every model's tasks are scored under every recipe of a grid (:func:`recipe_grid`), from the cached
   per-layer embeddings of one pass (:func:`~layerscope.analysis.recipes.evaluate_recipes`).
2. For a held-out model, each task type's recipe is the one with the largest mean gain over the raw
   last layer on the *other* models' tasks of that type (a type no other model has takes the recipe
   with the largest gain over all their tasks); ties go to the earlier recipe of the grid, so the
   raw last layer wins a tie. Leave-one-model-out, and leave-one-family-out (every model of the held-out
   model's family is left out, so a sibling cannot leak its answer).
3. The held-out model's score is the mean over its tasks of its own scores under the chosen recipes;
   the gain is that minus its raw last layer's mean, with a bootstrap interval over its tasks.
4. With model *kinds* (``language-model``, ``sentence-encoder``: what the model's files say it was
   trained for, :attr:`~layerscope.models.LoadedModel.kind`), a held-out model's recipes are chosen
   on the other models of its kind only; where none is left, it keeps the raw last layer (no evidence
   for its kind, no change). The verdict is then per kind.

Nothing about the held-out model enters its choice: :func:`choose_recipe_set` only ever receives the
training models' rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from layerscope.analysis.recipes import TASK_TYPES, Recipe, RecipeSet, parse_recipe
from layerscope.errors import LayerscopeError

__all__ = ["ALL_KINDS", "LAST", "RecipeProtocol", "choose_recipe_set", "recipe_grid", "run_recipe_protocol"]

#: The raw last layer, the baseline every gain is measured against.
LAST = "last"
#: Layer choices and conditionings of the default grid.
GRID_LAYERS = ("last", "depth:0.5", "depth:0.75", "mean:0.25-1", "mean:0.5-1", "mean:0.75-1",
               "zmean:0.25-1", "zmean:0.5-1", "zmean:0.75-1")
GRID_CONDITIONS = ("none", "standardize", "remove-top:1")


def recipe_grid(layers: Sequence[str] = GRID_LAYERS, conditions: Sequence[str] = GRID_CONDITIONS) -> list[Recipe]:
    """Every layer choice under every conditioning, the raw last layer first."""
    grid = [parse_recipe(base if condition == "none" else f"{base}+{condition}")
            for base in layers for condition in conditions]
    return list(dict.fromkeys([parse_recipe(LAST), *grid]))


def _gains(scores: pd.DataFrame) -> pd.DataFrame:
    """Per (model, task): each recipe's score minus the raw last layer's (``gain``), in points x 100."""
    last = scores[scores["recipe"] == LAST].set_index(["model", "task"])["main_score"]
    if last.empty:
        raise LayerscopeError("the recipe scores hold no raw last layer ('last') to measure gains against")
    keyed = scores.set_index(["model", "task"])
    return scores.assign(gain=100 * (keyed["main_score"] - last.reindex(keyed.index)).to_numpy())


def choose_recipe_set(train: pd.DataFrame, order: Sequence[str] | None = None) -> RecipeSet:
    """Per task type, the recipe with the largest mean gain over the raw last layer on ``train``.

    Parameters
    ----------
    train : pandas.DataFrame
        Recipe scores of the training models: ``model, recipe, task, task_type, main_score``.
    order : sequence of str, optional
        Recipe texts in tie-breaking order (default: the order of first appearance); the raw last
        layer should come first, so that no recipe replaces it without a gain.

    Returns
    -------
    RecipeSet
        One entry per task type of ``train``, plus ``*`` (the best recipe over all tasks) for the rest.
    """
    gains = _gains(train)
    order = list(order or dict.fromkeys(gains["recipe"]))
    # a model's gain on a type is the mean over its tasks of that type; models then count alike
    per_model = gains.groupby(["task_type", "recipe", "model"])["gain"].mean()
    per_type = per_model.groupby(level=["task_type", "recipe"]).mean()
    overall = gains.groupby(["recipe", "model"])["gain"].mean().groupby(level="recipe").mean()

    def best(means: pd.Series) -> Recipe:
        ranked = sorted(means.index, key=lambda recipe: (-round(float(means[recipe]), 12), order.index(recipe)))
        return parse_recipe(ranked[0])

    entries = [(task_type, best(per_type.loc[task_type])) for task_type in TASK_TYPES.values()
               if task_type in per_type.index.get_level_values(0)]
    return RecipeSet((*entries, ("*", best(overall))))


@dataclass(frozen=True)
class RecipeProtocol:
    """What the held-out protocol found.

    Attributes
    ----------
    held_out : pandas.DataFrame
        One row per (scheme, model): ``scheme`` (``leave-one-model-out``/``leave-one-family-out``),
        ``model``, ``family``, ``recipe_set`` (chosen without the model), ``last`` and ``score`` (its
        mean task score x 100 under the raw last layer and under the chosen set), ``gain``, ``low``,
        ``high`` (bootstrap interval of the gain over the model's tasks).
    chosen : RecipeSet
        The set chosen on every model, kinds aside.
    chosen_by_kind : dict of str to RecipeSet
        The set chosen on every model of each kind: what a new model of that kind gets (one entry,
        ``all``, without kinds).
    """

    held_out: pd.DataFrame
    chosen: RecipeSet
    chosen_by_kind: dict[str, RecipeSet]

    def summary(self, scheme: str = "leave-one-model-out", kind: str | None = None) -> dict[str, float]:
        """Mean gain, wins and losses against the raw last layer under one scheme (of one kind's models)."""
        rows = self.held_out[self.held_out["scheme"] == scheme]
        if kind is not None:
            rows = rows[rows["kind"] == kind]
        return {"mean_gain": float(rows["gain"].mean()), "wins": int((rows["gain"] > 0).sum()),
                "losses": int((rows["gain"] < 0).sum()), "worst": float(rows["gain"].min()), "models": len(rows)}

    def beats_last(self, scheme: str = "leave-one-model-out", kind: str | None = None) -> bool:
        """Held out, the chosen recipes beat the raw last layer on more models than they lose, on average."""
        summary = self.summary(scheme, kind)
        return summary["wins"] > summary["losses"] and summary["mean_gain"] > 0


def _interval(gains: np.ndarray, n_boot: int, seed: int) -> tuple[float, float]:
    """95% percentile interval of the mean of ``gains`` over tasks resampled with replacement."""
    draws = np.random.default_rng(seed).integers(0, len(gains), size=(n_boot, len(gains)))
    low, high = np.quantile(gains[draws].mean(axis=1), [0.025, 0.975])
    return float(low), float(high)


#: The one kind of every model when the protocol is given no kinds.
ALL_KINDS = "all"


def _lookup(mapping: Callable[[str], str] | dict[str, str] | None, default: Callable[[str], str]) -> Callable[[str], str]:
    if callable(mapping):
        return mapping
    return lambda model: (mapping or {}).get(model, default(model))


def run_recipe_protocol(scores: pd.DataFrame, families: Callable[[str], str] | dict[str, str] | None = None, *,
                        kinds: Callable[[str], str] | dict[str, str] | None = None,
                        n_boot: int = 1000, seed: int = 0) -> RecipeProtocol:
    """The held-out protocol over recipe scores of several models.

    Parameters
    ----------
    scores : pandas.DataFrame
        ``model, recipe, task, task_type, main_score`` (0..1), every recipe scored on every task of
        each model, the raw last layer (``"last"``) among them.
    families : callable or dict, optional
        Model -> family, for leave-one-family-out (default: each model its own family).
    kinds : callable or dict, optional
        Model -> kind (``language-model``, ``sentence-encoder``): a held-out model's recipes are chosen
        on models of its kind only, the raw last layer where there is none (default: one kind, ``all``).
    n_boot : int
        Bootstrap resamples of the held-out model's tasks.
    seed : int
        Seed of the resamples.
    """
    models = list(dict.fromkeys(scores["model"]))
    if len(models) < 2:
        raise LayerscopeError(f"the recipe protocol needs at least 2 models, got {len(models)}")
    family_of = _lookup(families, lambda model: model)
    kind_of = _lookup(kinds, lambda model: ALL_KINDS)
    order = list(dict.fromkeys(scores["recipe"]))
    if LAST in order:
        order.insert(0, order.pop(order.index(LAST)))
    rows = []
    for scheme in ("leave-one-model-out", "leave-one-family-out"):
        for model in models:
            left_out = {model} if scheme == "leave-one-model-out" else {m for m in models
                                                                       if family_of(m) == family_of(model)}
            kin = [m for m in models if kind_of(m) == kind_of(model) and m not in left_out]
            if not kin and kinds is None:
                continue  # every model is of one family: nothing to choose on
            # no model of its kind left to choose on: the raw last layer (no evidence, no change)
            chosen = choose_recipe_set(scores[scores["model"].isin(kin)], order) if kin else \
                RecipeSet((("*", parse_recipe(LAST)),))
            own = scores[scores["model"] == model]
            last = own[own["recipe"] == LAST].set_index("task")["main_score"]
            picked = [own[(own["task"] == task) & (own["recipe"] == chosen.for_type(kind).text)]["main_score"]
                      for task, kind in own.drop_duplicates("task")[["task", "task_type"]].itertuples(index=False)]
            if any(len(p) != 1 for p in picked):
                raise LayerscopeError(f"{model}: a chosen recipe was not scored on every task")
            tasks = own.drop_duplicates("task")["task"].tolist()
            score = np.array([float(p.iloc[0]) for p in picked])
            gains = 100 * (score - last.reindex(tasks).to_numpy())
            low, high = _interval(gains, n_boot, seed)
            rows.append({"scheme": scheme, "model": model, "family": family_of(model), "kind": kind_of(model),
                         "recipe_set": chosen.text, "last": 100 * float(last.mean()),
                         "score": 100 * float(score.mean()), "gain": float(gains.mean()), "low": low, "high": high})
    by_kind = {kind: choose_recipe_set(scores[scores["model"].isin([m for m in models if kind_of(m) == kind])], order)
               for kind in dict.fromkeys(kind_of(m) for m in models)}
    return RecipeProtocol(pd.DataFrame(rows), choose_recipe_set(scores, order), by_kind)
