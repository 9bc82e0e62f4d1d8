"""Representation recipes: what to take from one pass's per-layer embeddings, per task type.

A *recipe* turns the cached pooled embeddings of every layer, ``(L+1, N, D)``, into one embedding per
text, with no further forward pass:

=================  ==========================================================================
``last``           the last layer ``L``
``layer:l``        layer ``l`` (an index: meaningful for one model only)
``depth:f``        the layer at depth ``f`` in [0, 1] (``floor(f L + 1/2)``, as the depth rules)
``mean:a-b``       the mean of the layers whose depth ``l / L`` lies in ``[a, b]``
``zmean:a-b``      the same mean over *standardized* layers: each layer's per-dimension z-scores
                   (fitted on unlabelled texts) first, so that no layer's scale dominates the mean
``... + cond``     then a conditioning fitted on unlabelled texts: ``standardize``,
                   ``whiten[:rank]``, ``remove-top[:k]`` (:mod:`layerscope.extract.conditioning`)
=================  ==========================================================================

A *recipe set* gives one recipe per task type, since the best representation differs by type
(classification favours a mean over the upper layers, the cosine-based tasks a conditioned last
layer): ``classification=zmean:0.5-1.0;*=last+standardize``. ``*`` (or an entry without ``type=``)
serves every type not named. Types are MTEB's (``classification``, ``clustering``,
``pairclassification``, ``reranking``, ``retrieval``, ``sts``; case, ``-`` and ``_`` ignored).

Everything is fitted on unlabelled embeddings (by default those of the texts being embedded,
transductively, as :func:`~layerscope.extract.conditioning.fit_conditioner` is used by ``analyze``)
and computed in float64.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from layerscope.config import parse_condition
from layerscope.errors import LayerscopeError, suggest
from layerscope.extract.conditioning import Conditioner, fit_conditioner, l2_normalize_layers
from layerscope.metrics.functional import as_tensor

if TYPE_CHECKING:
    from mteb.abstasks import AbsTask

    from layerscope.extract import Extraction

__all__ = [
    "TASK_TYPES",
    "FittedRecipe",
    "Recipe",
    "RecipeSet",
    "evaluate_recipes",
    "fit_recipe",
    "parse_recipe",
    "parse_recipe_set",
    "recipe_embeddings",
    "recipe_for",
    "recipe_layers",
    "recipe_set_scores",
]

#: MTEB's task types, as recipe sets name them (keys: lowercase without ``-``/``_``).
TASK_TYPES = {name.lower(): name for name in
              ("Classification", "Clustering", "PairClassification", "Reranking", "Retrieval", "STS")}
_GRAMMAR = ("last, layer:L, depth:F, mean:A-B or zmean:A-B, optionally followed by +standardize, "
            "+whiten[:rank] or +remove-top[:k]")
_FRACTION = r"(?:\d+(?:\.\d*)?|\.\d+)"
_WINDOW = re.compile(rf"^({_FRACTION})-({_FRACTION})$")


@dataclass(frozen=True)
class Recipe:
    """Which layers (one, or the mean over a depth window), then which conditioning.

    Attributes
    ----------
    kind : {"layer", "mean", "zmean"}
    start, stop : float
        Depth window ``[start, stop]`` in [0, 1]; equal for a single layer given by depth.
    condition : str
        ``none``, ``standardize``, ``whiten[:rank]`` or ``remove-top[:k]``.
    index : int, optional
        For ``layer:l``, the layer index itself (``start``/``stop`` then unused).
    """

    kind: Literal["layer", "mean", "zmean"]
    start: float = 1.0
    stop: float = 1.0
    condition: str = "none"
    index: int | None = None

    @property
    def text(self) -> str:
        """The canonical text of the recipe (``parse_recipe(r.text) == r``)."""
        if self.index is not None:
            base = f"layer:{self.index}"
        elif self.kind == "layer":
            base = "last" if self.start == 1.0 else f"depth:{self.start:g}"
        else:
            base = f"{self.kind}:{self.start:g}-{self.stop:g}"
        return base if self.condition == "none" else f"{base}+{self.condition}"

    def __str__(self) -> str:
        return self.text

    def layers(self, last_layer: int) -> list[int]:
        """Canonical layers the recipe reads, for a model whose last layer is ``last_layer``."""
        from layerscope.analysis.selection import depth_layer

        if self.index is not None:
            if not 0 <= self.index <= last_layer:
                raise LayerscopeError(f"recipe '{self.text}': the model has layers 0 to {last_layer}")
            return [self.index]
        if self.kind == "layer":
            return [depth_layer(self.start, last_layer)]
        # the small epsilon keeps e.g. 0.5 * 30 = 15 inside [0.5, 1.0] whatever the rounding
        inside = [layer for layer in range(last_layer + 1)
                  if self.start - 1e-9 <= layer / max(last_layer, 1) <= self.stop + 1e-9]
        if not inside:
            raise LayerscopeError(f"recipe '{self.text}' holds no layer of a model with layers 0 to {last_layer}")
        return inside


def parse_recipe(text: str) -> Recipe:
    """Parse one recipe (see the module docstring); a bad one raises a one-line :class:`LayerscopeError`."""
    if isinstance(text, Recipe):
        return text
    base, *conditions = [part.strip() for part in str(text).strip().lower().split("+")]
    if len(conditions) > 1:
        raise LayerscopeError(f"bad recipe '{text}': one conditioning at most ({_GRAMMAR})")
    condition = conditions[0] if conditions else "none"
    try:
        name, count = parse_condition(condition)
    except LayerscopeError as error:
        raise LayerscopeError(f"bad recipe '{text}': {error}") from None
    condition = name if count is None else f"{name}:{count}"
    kind, _, argument = base.partition(":")
    if kind == "last" and not argument:
        return Recipe("layer", 1.0, 1.0, condition)
    if kind == "layer" and argument.isdigit():
        return Recipe("layer", condition=condition, index=int(argument))
    if kind == "depth" and re.fullmatch(_FRACTION, argument):
        fraction = float(argument)
        if fraction <= 1.0:
            return Recipe("layer", fraction, fraction, condition)
    if kind in ("mean", "zmean") and (window := _WINDOW.match(argument)):
        start, stop = float(window.group(1)), float(window.group(2))
        if start <= stop <= 1.0:
            return Recipe(kind, start, stop, condition)  # type: ignore[arg-type]
    raise LayerscopeError(f"bad recipe '{text}': use {_GRAMMAR}, depths in [0, 1] with A <= B")


def _task_type(name: str) -> str:
    key = name.strip().lower().replace("-", "").replace("_", "")
    if key == "*":
        return "*"
    if key not in TASK_TYPES:
        raise LayerscopeError(f"unknown task type '{name}' in a recipe set{suggest(key, TASK_TYPES)}; "
                              f"use {', '.join(TASK_TYPES)} or *")
    return TASK_TYPES[key]


@dataclass(frozen=True)
class RecipeSet:
    """One recipe per task type (``"*"``: every type not named).

    Attributes
    ----------
    entries : tuple of (str, Recipe)
        ``(MTEB task type or "*", recipe)``, named types in :data:`TASK_TYPES` order, ``*`` last.
    """

    entries: tuple[tuple[str, Recipe], ...]

    @property
    def text(self) -> str:
        """The canonical text (``parse_recipe_set(s.text) == s``)."""
        return ";".join(f"{kind.lower()}={recipe.text}" for kind, recipe in self.entries)

    def __str__(self) -> str:
        return self.text

    def for_type(self, task_type: str) -> Recipe:
        """The recipe serving tasks of ``task_type`` (MTEB's name)."""
        by_type = dict(self.entries)
        if task_type in by_type:
            return by_type[task_type]
        if "*" in by_type:
            return by_type["*"]
        raise LayerscopeError(f"recipe set '{self.text}' has no recipe for {task_type} tasks (add *=...)")

    @property
    def recipes(self) -> list[Recipe]:
        """The distinct recipes of the set, in the order of :attr:`entries`."""
        return list(dict.fromkeys(recipe for _, recipe in self.entries))


def parse_recipe_set(text: str | RecipeSet | Recipe) -> RecipeSet:
    """Parse ``type=recipe;...;*=recipe`` (a single recipe serves every type)."""
    if isinstance(text, RecipeSet):
        return text
    if isinstance(text, Recipe):
        return RecipeSet((("*", text),))
    entries: dict[str, Recipe] = {}
    for part in str(text).split(";"):
        if not part.strip():
            continue
        kind, equals, recipe = part.partition("=")
        kind, recipe = (kind, recipe) if equals else ("*", kind)
        kind = _task_type(kind)
        if kind in entries:
            raise LayerscopeError(f"bad recipe set '{text}': {kind} is given twice")
        entries[kind] = parse_recipe(recipe)
    if not entries:
        raise LayerscopeError("empty recipe set: give e.g. 'classification=zmean:0.5-1.0;*=last+standardize'")
    order = [*TASK_TYPES.values(), "*"]
    return RecipeSet(tuple(sorted(entries.items(), key=lambda entry: order.index(entry[0]))))


@dataclass(frozen=True)
class FittedRecipe:
    """A recipe with everything it fitted on unlabelled texts: what an export carries as modules.

    Attributes
    ----------
    recipe : Recipe
    layers : list of int
        The canonical layers it reads (its window).
    normalized : tuple of int
        Positions in ``layers`` L2-normalized first (the last layer of a model that ships normalized).
    standardize : Conditioner or None
        ``zmean``'s per-layer z-scores, one affine map per layer of the window.
    conditioner : Conditioner or None
        The recipe's conditioning, fitted on the (mean) embedding of the fitting texts.
    n_fit : int
        Texts it was fitted on.
    """

    recipe: Recipe
    layers: list[int]
    normalized: tuple[int, ...]
    standardize: Conditioner | None
    conditioner: Conditioner | None
    n_fit: int

    def apply(self, x: Tensor) -> Tensor:
        """``(w, n, d)`` float64 embeddings of :attr:`layers` -> ``(n, k)`` float64."""
        x = l2_normalize_layers(x, self.normalized)
        if self.standardize is not None:
            x = self.standardize.apply(x)
        if self.recipe.kind != "layer":
            x = x.mean(dim=0, keepdim=True)  # (1, n, d)
        if self.conditioner is not None:
            x = self.conditioner.apply(x)
        return x[0]

    def describe(self) -> dict[str, Any]:
        """What was fitted, for a record."""
        return {"recipe": self.recipe.text, "layers": self.layers,
                "normalized_first": [self.layers[position] for position in self.normalized],
                "n_fit": self.n_fit,
                "conditioning": None if self.conditioner is None else self.conditioner.describe()}


def fit_recipe(
    fit: np.ndarray | Tensor,
    layers: Sequence[int],
    recipe: Recipe | str,
    *,
    last_layer: int,
    normalized: Sequence[int] = (),
) -> FittedRecipe:
    """Fit a recipe's standardization and conditioning on the embeddings of unlabelled texts.

    Parameters
    ----------
    fit : array or Tensor, shape (n_layers, m, d)
        Pooled embeddings of the fitting texts, one slice per canonical layer in ``layers``.
    layers : sequence of int
        Canonical index of each slice.
    recipe : Recipe or str
    last_layer : int
        ``L`` of the model.
    normalized : sequence of int
        Canonical layers L2-normalized before anything else: the last layer of a model that ships
        normalized, as it ships (``ExtractConfig.normalized_layers``); default none (raw layers).

    Returns
    -------
    FittedRecipe
    """
    recipe = parse_recipe(recipe)
    window = recipe.layers(last_layer)
    fitted = _slices(fit, _positions(recipe, window, layers))  # (w, m, d)
    first = tuple(position for position, layer in enumerate(window) if layer in set(normalized))
    fitted = l2_normalize_layers(fitted, first)
    standardize = None
    if recipe.kind == "zmean":
        standardize = fit_conditioner(fitted, "standardize")
        assert standardize is not None
        fitted = standardize.apply(fitted)
    if recipe.kind != "layer":
        fitted = fitted.mean(dim=0, keepdim=True)  # (1, m, d)
    conditioner = fit_conditioner(fitted, recipe.condition)
    return FittedRecipe(recipe, window, first, standardize, conditioner, int(fitted.shape[1]))


def recipe_for(recipe: Recipe | RecipeSet | str, task_type: str | None = None) -> Recipe:
    """The one recipe a single embedding (an export, an embedding file) is made by.

    Parameters
    ----------
    recipe : Recipe, RecipeSet or str
        A recipe, or a recipe set (``type=recipe;...``).
    task_type : str, optional
        The task type the embedding is for (MTEB's, case, ``-`` and ``_`` ignored): picks the set's
        recipe for it. Without it, the set must hold a single recipe.

    Returns
    -------
    Recipe
    """
    recipe_set = parse_recipe_set(recipe)
    if task_type is not None:
        kind = _task_type(task_type)
        if kind == "*":
            raise LayerscopeError(f"name a task type, not *: {', '.join(TASK_TYPES)}")
        return recipe_set.for_type(kind)
    if len(recipe_set.recipes) > 1:
        raise LayerscopeError(f"recipe set '{recipe_set.text}' holds one recipe per task type: name the type the "
                              "embedding is for (--task-type classification, ...)")
    return recipe_set.recipes[0]


def recipe_embeddings(
    pooled: np.ndarray | Tensor,
    layers: Sequence[int],
    recipe: Recipe | str,
    *,
    last_layer: int,
    fit: np.ndarray | Tensor | None = None,
    normalized: Sequence[int] = (),
) -> Tensor:
    """One embedding per text by ``recipe``, from the per-layer embeddings of one pass.

    Parameters
    ----------
    pooled : array or Tensor, shape (n_layers, n, d)
        Pooled embeddings of the texts, one slice per canonical layer in ``layers`` (an
        :class:`~layerscope.extract.Extraction`'s ``pooled`` and ``layers``; a memory map is read,
        not copied whole).
    layers : sequence of int
        Canonical index of each slice.
    recipe : Recipe or str
    last_layer : int
        ``L`` of the model (depths are ``l / L``).
    fit : array or Tensor, shape (n_layers, m, d), optional
        Embeddings of the unlabelled texts the standardization and conditioning are fitted on
        (default: ``pooled`` itself).
    normalized : sequence of int
        Canonical layers the recipe starts from L2-normalized (see :func:`fit_recipe`); default none:
        it starts from the raw layers.

    Returns
    -------
    Tensor, float64, shape (n, k)
        ``k = d`` except after ``whiten:rank``.
    """
    recipe = parse_recipe(recipe)
    window = recipe.layers(last_layer)
    x = _slices(pooled, _positions(recipe, window, layers))  # (w, n, d), read once
    fitted = fit_recipe(x if fit is None else fit, window if fit is None else layers, recipe,
                        last_layer=last_layer, normalized=normalized)
    return fitted.apply(x)


def _positions(recipe: Recipe, window: Sequence[int], layers: Sequence[int]) -> list[int]:
    """Where each layer of the recipe's window lies in ``layers`` (one line when one was not extracted)."""
    positions = []
    for layer in window:
        if layer not in layers:
            raise LayerscopeError(f"recipe '{recipe.text}' needs layer {layer}, which was not extracted")
        positions.append(list(layers).index(layer))
    return positions


def _slices(pooled: np.ndarray | Tensor, positions: list[int]) -> Tensor:
    """float64 slices ``positions`` of the layer axis, (w, n, d), read once (memory maps included)."""
    if isinstance(pooled, Tensor):
        return pooled[positions].to(torch.float64)
    return as_tensor(np.asarray(pooled[positions]), torch.float64)


# ------------------------------------------------------------------------------------------ scoring


def evaluate_recipes(
    extraction: Extraction,
    recipes: Iterable[Recipe | str],
    tasks: str | AbsTask | Iterable[Any] = "offline",
    *,
    seed: int | None = None,
    fit: np.ndarray | None = None,
    name: str = "layerscope",
    eval_workers: int | str = 1,
    normalized: Sequence[int] = (),
) -> pd.DataFrame:
    """Score recipes with MTEB's evaluators, as :func:`~layerscope.evaluate.evaluate_layers` scores layers.

    Parameters
    ----------
    extraction : Extraction
        The per-layer embeddings of (at least) every text the tasks need.
    recipes : iterable of Recipe or str
    tasks : str, AbsTask or iterable
        As for :func:`~layerscope.evaluate.evaluate_layers`.
    seed : int, optional
        Overrides every task's seed (default: each task's own); each (recipe, task) is reseeded.
    fit : ndarray, shape (n_layers, m, d), optional
        Unlabelled embeddings to fit on (default: the extraction's own rows).
    name : str
        Model name recorded in MTEB's results.
    eval_workers : int or "auto"
        Processes running the evaluators (one recipe at a time each).
    normalized : sequence of int
        Canonical layers the recipes start from L2-normalized (the last layer of a model that ships
        normalized: ``ExtractConfig.normalized_layers(model)``); default none, the raw layers.

    Returns
    -------
    pandas.DataFrame
        One row per (recipe, task): ``recipe`` (its text), ``task``, ``task_type``, ``main_score``, ``scores``.
    """
    from layerscope.evaluate import resolve
    from layerscope.evaluate.runner import _load, own_seeds_kept, resolve_workers

    recipe_list = list(dict.fromkeys(parse_recipe(recipe) for recipe in recipes))
    task_list = resolve(tasks, seed=seed)
    _load(task_list)
    vectors = [recipe_embeddings(extraction.pooled, extraction.layers, recipe, last_layer=extraction.num_layers,
                                 fit=fit, normalized=normalized).to(torch.float32).numpy() for recipe in recipe_list]
    _RECIPE_STATE.clear()
    _RECIPE_STATE.update(texts=list(extraction.texts), vectors=vectors, tasks=task_list, seed=seed, name=name)
    from layerscope.evaluate.runner import fork_map

    workers = resolve_workers(eval_workers, len(recipe_list))
    try:
        with own_seeds_kept(task_list):
            results = fork_map(_score_recipe, range(len(recipe_list)), workers)
    finally:
        _RECIPE_STATE.clear()
    rows = [{"recipe": recipe_list[position].text, **row}
            for position in range(len(recipe_list)) for row in results[position]]
    return pd.DataFrame(rows, columns=["recipe", "task", "task_type", "main_score", "scores"])


_RECIPE_STATE: dict[str, Any] = {}


def _score_recipe(position: int) -> list[dict[str, Any]]:
    """Every task on one recipe's embeddings (here, or in a forked worker sharing ``_RECIPE_STATE``)."""
    from layerscope.evaluate.encoder import LayerView
    from layerscope.evaluate.intervals import scores_json
    from layerscope.evaluate.runner import main_score, run_task

    state = _RECIPE_STATE
    view = LayerView(state["texts"], name=state["name"])
    view.set_layer(position, state["vectors"][position])
    rows = []
    for task in state["tasks"]:
        scores = run_task(view, task, state["seed"])
        rows.append({"task": task.metadata.name, "task_type": task.metadata.type, "main_score": main_score(scores),
                     "scores": scores_json(scores)})
    return rows


def recipe_set_scores(scores: pd.DataFrame, recipe_set: RecipeSet | str) -> pd.DataFrame:
    """Each task's score under a recipe set: the row of the recipe serving the task's type.

    Parameters
    ----------
    scores : pandas.DataFrame
        :func:`evaluate_recipes`' output holding every recipe of the set.
    recipe_set : RecipeSet or str

    Returns
    -------
    pandas.DataFrame
        ``task``, ``task_type``, ``recipe``, ``main_score``, one row per task.
    """
    recipe_set = parse_recipe_set(recipe_set)
    tasks = scores.drop_duplicates("task")[["task", "task_type"]]
    wanted = tasks.assign(recipe=[recipe_set.for_type(kind).text for kind in tasks["task_type"]])
    merged = wanted.merge(scores[["recipe", "task", "main_score"]], on=["task", "recipe"], how="left")
    missing = merged[merged["main_score"].isna()]
    if len(missing):
        raise LayerscopeError(f"no score of recipe '{missing['recipe'].iloc[0]}' on {missing['task'].iloc[0]}")
    return merged.reset_index(drop=True)


def recipe_layers(recipe_set: RecipeSet | str, last_layer: int) -> Mapping[str, list[int]]:
    """The layers each type's recipe reads, e.g. for a run record."""
    recipe_set = parse_recipe_set(recipe_set)
    return {kind: recipe.layers(last_layer) for kind, recipe in recipe_set.entries}
