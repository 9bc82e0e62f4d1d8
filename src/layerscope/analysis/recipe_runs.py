"""Recipes in a run: ``analyze --recipes`` read, scored beside the layers, and shown (issue 23, point 4).

``--recipes`` names recipe sets (:mod:`layerscope.analysis.recipes`) separated by ``|`` (the recipe
grammar uses ``;``, ``=``, ``:``, ``+`` and ``-``, never ``|``). ``auto``, the default, stands for the set
of the held-out recipe protocol's record (``recipe_record.json`` beside this module, written by
``benchmarks/bench_recipes.py --write-record``) when, on models it was not chosen on, that set beat the raw
last layer on more models than it lost and by a positive mean gain; otherwise for the last layer, which
every run scores already (Table 2's ``last layer`` row), so nothing more is scored. ``none`` scores no
recipe.

Each set is scored from the run's cached per-layer embeddings (no forward pass; each distinct recipe of
all the sets once, :func:`~layerscope.analysis.recipes.evaluate_recipes`), starting from the layers as
the model ships them (the last layer L2-normalized where a sentence-transformers model ends in
``Normalize``). The store keeps one row per (set, task) (``recipe_scores``); Table 2 gets one row per
set (:func:`with_recipe_rows`), and :func:`recipe_type_table` compares each set with the last layer per
task type. With the default label-free layer rule, a set that ``auto`` stands for is the run's answer
without labels (:func:`headline_recipe`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from layerscope.analysis.by_type import TextTable, type_label
from layerscope.analysis.recipes import RecipeSet, evaluate_recipes, parse_recipe_set, recipe_set_scores
from layerscope.config import AUTO, RECIPE_RECORD_FILE, RECIPE_SEPARATOR
from layerscope.errors import LayerscopeError

if TYPE_CHECKING:
    from layerscope.analysis.summary import Summary
    from layerscope.evaluate.select import Candidates
    from layerscope.extract import Extraction

__all__ = [
    "RECIPE_COLUMNS",
    "RECIPE_KIND",
    "RECIPE_SEPARATOR",
    "RunRecipeSet",
    "auto_recipe_set",
    "candidate_recipe",
    "headline_recipe",
    "kind_record",
    "recipe_candidates",
    "recipe_headline_text",
    "recipe_rule",
    "recipe_text_table",
    "recipe_type_table",
    "recipes_record",
    "resolve_recipes",
    "score_recipe_sets",
    "with_recipe_rows",
]

#: Columns of a run's recipe scores (the store's ``recipe_scores`` table, less ``run_id``).
RECIPE_COLUMNS = ["recipe_set", "source", "recipe", "task", "task_type", "main_score", "scores"]
#: ``kind`` of the recipe rows of Table 2.
RECIPE_KIND = "recipe"
#: Where ``auto`` comes from, as a run records it.
RECORD_PATH = f"layerscope/analysis/{RECIPE_RECORD_FILE} (benchmarks/bench_recipes.py --write-record)"


@dataclass(frozen=True)
class RunRecipeSet:
    """A recipe set a run scores, and where it came from (``auto``: the record's; ``given``: ``--recipes``)."""

    recipe_set: RecipeSet
    source: str

    @property
    def text(self) -> str:
        """The set's canonical text."""
        return self.recipe_set.text


def _record(record: Mapping[str, Any] | None) -> Mapping[str, Any]:
    if record is not None:
        return record
    from layerscope.config import recipe_record  # looked up at call time: tests replace it

    return recipe_record() or {}


def kind_record(record: Mapping[str, Any] | None = None, kind: str | None = None) -> Mapping[str, Any]:
    """The part of a recipe record that speaks for models of ``kind``.

    A record written with model kinds (``kinds``: one entry per kind, see
    :func:`~layerscope.analysis.recipe_protocol.run_recipe_protocol`) gives that kind's entry, empty for a
    kind it holds no model of (or no kind given); a record without kinds speaks for every model.
    """
    record = _record(record)
    kinds = record.get("kinds")
    if isinstance(kinds, Mapping):
        entry = kinds.get(kind) if kind is not None else None
        return entry if isinstance(entry, Mapping) else {}
    return record


def auto_recipe_set(record: Mapping[str, Any] | None = None, kind: str | None = None) -> str:
    """The recipe-set text ``--recipes auto`` stands for (for a model of ``kind``).

    Parameters
    ----------
    record : mapping, optional
        A recipe record (``bench_recipes.py --write-record``); default the one shipped with layerscope
        (an empty mapping: no record).
    kind : str, optional
        The model's kind (:attr:`~layerscope.models.LoadedModel.kind`), for a record written with kinds.

    Returns
    -------
    str
        The ``recipe_set`` of the record (of its entry for ``kind``) when its ``beats_last_held_out`` is
        true, else ``"last"``: a kind the record holds no model of keeps the last layer.
    """
    entry = kind_record(record, kind)
    if entry.get("beats_last_held_out") is True and entry.get("recipe_set"):
        return str(entry["recipe_set"])
    return "last"


def _is_last(recipe_set: RecipeSet) -> bool:
    return all(recipe.text == "last" for recipe in recipe_set.recipes)


def resolve_recipes(texts: Iterable[str], *, record: Mapping[str, Any] | None = None,
                    kind: str | None = None) -> list[RunRecipeSet]:
    """The recipe sets a run scores: ``--recipes`` read, ``auto`` resolved, the plain last layer left out.

    Parameters
    ----------
    texts : iterable of str
        ``AnalysisConfig.recipes``: recipe-set texts and ``auto``.
    record : mapping, optional
        The recipe record ``auto`` reads (default: the one shipped with layerscope).
    kind : str, optional
        The model's kind, which ``auto`` depends on (see :func:`auto_recipe_set`).

    Returns
    -------
    list of RunRecipeSet
        In the order given, each set once (a given set equal to ``auto``'s is marked ``auto``); a set
        that is the raw last layer for every type is left out (Table 2's ``last layer`` row is it).

    Raises
    ------
    LayerscopeError
        One line for a bad set (before any model loads) or a record whose set does not parse.
    """
    chosen: dict[str, RunRecipeSet] = {}
    for text in texts:
        auto = str(text).strip() == AUTO
        try:
            recipe_set = parse_recipe_set(auto_recipe_set(record, kind) if auto else text)
        except LayerscopeError as error:
            if auto:
                raise LayerscopeError(f"--recipes auto: the set of {RECIPE_RECORD_FILE} does not parse ({error}): "
                                      "rerun benchmarks/bench_recipes.py --write-record") from None
            raise LayerscopeError(f"--recipes: {error} (separate recipe sets with {RECIPE_SEPARATOR})") from None
        if _is_last(recipe_set):
            continue
        if auto or recipe_set.text not in chosen:
            chosen[recipe_set.text] = RunRecipeSet(recipe_set, AUTO if auto else "given")
    return list(chosen.values())


def recipe_candidates(sets: Sequence[RunRecipeSet], task_types: Iterable[str], last_layer: int, *,
                      normalized: Sequence[int] = ()) -> Candidates | None:
    """The recipes of ``sets`` as candidates beside the layers of ``select`` (issue 23, point 4).

    Every recipe a set gives to one of ``task_types`` is a candidate scored on every task (named
    ``recipe <text>``); a set giving the types different recipes is one more candidate that takes each
    task's scores from its type's recipe (named ``recipes auto`` or ``recipes <set text>``).

    Parameters
    ----------
    sets : sequence of RunRecipeSet
        :func:`resolve_recipes` of ``select --recipes``.
    task_types : iterable of str
        MTEB types of the tasks (``Classification``, ...).
    last_layer : int
        ``L`` of the model.
    normalized : sequence of int
        Canonical layers the recipes start from L2-normalized (``ExtractConfig.normalized_layers``).

    Returns
    -------
    Candidates or None
        None when there is no set.
    """
    from layerscope.analysis.recipes import recipe_embeddings
    from layerscope.evaluate.select import Candidates

    types = list(dict.fromkeys(task_types))
    if not sets or not types:
        return None
    recipes, by_type = {}, {}
    for item in sets:
        chosen = {kind: item.recipe_set.for_type(kind) for kind in types}
        for recipe in chosen.values():
            recipes.setdefault(RECIPE_PREFIX + recipe.text, recipe)
        if len({recipe.text for recipe in chosen.values()}) > 1:
            label = AUTO if item.source == AUTO else item.text
            by_type[SET_PREFIX + label] = {kind: RECIPE_PREFIX + recipe.text for kind, recipe in chosen.items()}

    def compute(extraction: Extraction) -> list[np.ndarray]:
        return [recipe_embeddings(extraction.pooled, extraction.layers, recipe, last_layer=last_layer,
                                  normalized=normalized).to(dtype=torch.float32).numpy() for recipe in recipes.values()]

    reads = sorted({layer for recipe in recipes.values() for layer in recipe.layers(last_layer)})
    return Candidates(tuple(recipes), tuple(reads), compute, by_type)


#: How :func:`recipe_candidates` names a recipe and a by-type recipe set among ``select``'s candidates.
RECIPE_PREFIX, SET_PREFIX = "recipe ", "recipes "


def candidate_recipe(name: str) -> tuple[str, bool]:
    """What ``--recipe`` of ``export`` computes a candidate of :func:`recipe_candidates`: the recipe (or
    set) text, and whether it needs ``--task-type`` (a set with one recipe per type)."""
    if name.startswith(SET_PREFIX):
        return name.removeprefix(SET_PREFIX), True
    if name.startswith(RECIPE_PREFIX):
        return name.removeprefix(RECIPE_PREFIX), False
    raise LayerscopeError(f"'{name}' is not a recipe candidate")


def recipes_record(texts: Sequence[str], sets: Sequence[RunRecipeSet], last_layer: int,
                   normalized: Sequence[int], *, record: Mapping[str, Any] | None = None,
                   kind: str | None = None) -> dict[str, Any]:
    """What a run's ``record.json`` says of its recipes: the texts asked, the sets scored, where ``auto`` came from.

    Parameters
    ----------
    texts : sequence of str
        ``--recipes`` as configured.
    sets : sequence of RunRecipeSet
        :func:`resolve_recipes` of them.
    last_layer : int
        The model's last layer L.
    normalized : sequence of int
        Layers the recipes start from L2-normalized (the last, as shipped).
    record : mapping, optional
        The recipe record (default: the one shipped with layerscope).
    kind : str, optional
        The model's kind (``auto`` reads that kind's entry of a record written with kinds).
    """
    from layerscope.analysis.recipes import recipe_layers

    full = _record(record)
    auto = None
    if AUTO in texts:
        entry = kind_record(full, kind)
        held = (entry.get("held_out") or {}).get("leave-one-model-out") or {}
        source = RECORD_PATH if full else "no recipe record: the last layer"
        if full and not entry:
            source += f": no model of kind {kind} in it, the last layer"
        auto = {"recipe_set": auto_recipe_set(full, kind), "from": source, "kind": kind,
                "record_set": entry.get("recipe_set"), "beats_last_held_out": entry.get("beats_last_held_out"),
                "held_out_mean_gain": held.get("mean_gain"), "wins": held.get("wins"), "losses": held.get("losses"),
                "trained_on": entry.get("models", (full.get("trained_on") or {}).get("models")),
                "command": full.get("command"), "date": full.get("date")}
    return {"asked": list(texts), "auto": auto,
            "starts_from": "last layer L2-normalized as shipped" if normalized else "raw layers",
            "sets": [{"recipe_set": item.text, "source": item.source,
                      "layers": {kind: list(layers) for kind, layers in recipe_layers(item.recipe_set,
                                                                                     last_layer).items()}}
                     for item in sets]}


def score_recipe_sets(
    extraction: Extraction,
    sets: Sequence[RunRecipeSet],
    tasks: Any,
    *,
    normalized: Sequence[int] = (),
    seed: int | None = None,
    name: str = "layerscope",
    eval_workers: int | str = 1,
) -> pd.DataFrame:
    """Each task's score under each recipe set, from one extraction (each distinct recipe scored once).

    Parameters
    ----------
    extraction : Extraction
        The run's raw per-layer embeddings of every text the tasks need.
    sets : sequence of RunRecipeSet
    tasks
        As for :func:`~layerscope.analysis.recipes.evaluate_recipes`.
    normalized, seed, name, eval_workers
        As for :func:`~layerscope.analysis.recipes.evaluate_recipes`.

    Returns
    -------
    pandas.DataFrame
        :data:`RECIPE_COLUMNS`, one row per (set, task).
    """
    if not sets:
        return pd.DataFrame(columns=RECIPE_COLUMNS)
    recipes = list(dict.fromkeys(recipe for item in sets for recipe in item.recipe_set.recipes))
    scores = evaluate_recipes(extraction, recipes, tasks, seed=seed, name=name, eval_workers=eval_workers,
                              normalized=normalized)
    frames = []
    for item in sets:
        per_task = recipe_set_scores(scores, item.recipe_set)
        per_task = per_task.merge(scores[["recipe", "task", "scores"]], on=["recipe", "task"], how="left")
        frames.append(per_task.assign(recipe_set=item.text, source=item.source))
    return pd.concat(frames, ignore_index=True)[RECIPE_COLUMNS]


def recipe_rule(recipe_set: str, source: str) -> str:
    """The Table 2 rule of a recipe set: ``recipes (auto): <set>`` or ``recipes: <set>``."""
    return f"recipes{' (auto)' if source == AUTO else ''}: {recipe_set}"


def _grid_scores(recipe_scores: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """Recipe rows of the tasks Table 2 averages over (those the complete score grid kept), the sets in one
    order whatever order they were stored in: ``auto``'s first, then by text."""
    dropped = set(table.attrs.get("score_grid", {}).get("dropped_tasks", []))
    kept = recipe_scores[~recipe_scores["task"].isin(dropped)]
    return kept.assign(_auto=kept["source"] != AUTO).sort_values(["_auto", "recipe_set"], kind="stable").drop(
        columns="_auto")


def with_recipe_rows(table: pd.DataFrame | None, recipe_scores: pd.DataFrame | None) -> pd.DataFrame | None:
    """Table 2 with one row per recipe set (kind ``recipe``), before the metric rules.

    Each row is the mean over Table 2's tasks of each task's score under its type's recipe (x 100), its
    gain over the ``last layer`` row, and the mean per task type; ``layer`` is missing and ``depth_pct``
    NaN (a recipe may read several layers, differently per type).
    """
    if table is None or recipe_scores is None or recipe_scores.empty:
        return table
    fixed = {"rule", "kind", "layer", "depth_pct", "average", "gain_vs_last", "n_tasks", "n_fallback"}
    types = [str(column) for column in table.columns if column not in fixed]
    last = float(table.loc[table["rule"] == "last layer", "average"].iloc[0])
    rows = []
    scored = _grid_scores(recipe_scores, table)
    for (text, source), group in scored.groupby(["recipe_set", "source"], sort=False):
        average = 100.0 * float(group["main_score"].mean())
        row: dict[str, Any] = {"rule": recipe_rule(str(text), str(source)), "kind": RECIPE_KIND, "layer": pd.NA,
                               "depth_pct": np.nan, "average": average, "gain_vs_last": average - last,
                               "n_tasks": len(group), "n_fallback": 0}
        for task_type in types:
            of_type = group.loc[group["task_type"] == task_type, "main_score"]
            row[task_type] = 100.0 * float(of_type.mean()) if len(of_type) else np.nan
        rows.append(row)
    position = int((table["kind"] != "metric").sum())  # the metric rules come last
    added = pd.DataFrame(rows, columns=table.columns).astype({"layer": "Int64"})
    frame = pd.concat([table.iloc[:position], added, table.iloc[position:]], ignore_index=True)
    frame.attrs = dict(table.attrs)
    return frame


def recipe_type_table(recipe_scores: pd.DataFrame | None, scores: pd.DataFrame | None,
                      table: pd.DataFrame | None) -> pd.DataFrame | None:
    """Per recipe set and task type: the recipe serving the type, and its mean score against the last layer's.

    Parameters
    ----------
    recipe_scores : pandas.DataFrame
        :data:`RECIPE_COLUMNS` rows of the run.
    scores : pandas.DataFrame
        The run's per-layer task scores.
    table : pandas.DataFrame
        Table 2 (its ``attrs["score_grid"]`` names the last layer scored and the tasks averaged over).

    Returns
    -------
    pandas.DataFrame or None
        ``recipe_set, source, task_type, recipe, n_tasks, last, score, gain`` (x 100; ``gain = score -
        last``), then one ``average`` row per set over all its tasks; None without recipe scores.
    """
    if recipe_scores is None or recipe_scores.empty or scores is None or table is None:
        return None
    grid = table.attrs.get("score_grid", {})
    last_layer = (grid.get("layers") or [int(scores["layer"].max())])[-1]
    last = scores[scores["layer"] == last_layer].set_index("task")["main_score"]
    rows = []
    for (text, source), group in _grid_scores(recipe_scores, table).groupby(["recipe_set", "source"], sort=False):
        parts = [(str(kind), part) for kind, part in group.groupby("task_type", sort=True)] + [("average", group)]
        for kind, part in parts:
            baseline = 100.0 * float(last.reindex(part["task"]).mean())
            score = 100.0 * float(part["main_score"].mean())
            recipes = list(dict.fromkeys(part["recipe"]))
            rows.append({"recipe_set": text, "source": source, "task_type": kind,
                         "recipe": recipes[0] if len(recipes) == 1 else "per type", "n_tasks": len(part),
                         "last": baseline, "score": score, "gain": score - baseline})
    return pd.DataFrame(rows)


def headline_recipe(recipe_scores: pd.DataFrame | None, chosen_rule: str | None) -> str | None:
    """The recipe set that is a run's answer without labels, if any.

    It is the set ``--recipes auto`` stood for when the run was made (so the recipe record had it beat
    the raw last layer held out), and only while the label-free layer rule is the default one (``auto``),
    so that an explicit ``--select-by`` keeps the headline on its layer.
    """
    from layerscope.analysis.choice import default_rule, rule_spec

    if recipe_scores is None or recipe_scores.empty or chosen_rule is None:
        return None
    auto = recipe_scores.loc[recipe_scores["source"] == AUTO, "recipe_set"]
    if auto.empty or chosen_rule != rule_spec(default_rule()):
        return None
    return str(auto.iloc[0])


def recipe_text_table(summary: Summary) -> TextTable | None:
    """:attr:`Summary.recipe_types` as text: each set against the last layer, per task type (x 100)."""
    frame = summary.recipe_types
    if frame is None or frame.empty:
        return None
    rows, named = [], set()
    for row in frame.itertuples(index=False):
        kind = row.task_type if row.task_type == "average" else type_label(str(row.task_type))
        rule = recipe_rule(str(row.recipe_set), str(row.source))
        # a set's text once, on its first row: the "recipe" column says what each type gets
        rows.append(("" if rule in named else rule, kind, str(row.recipe), str(row.n_tasks),
                     f"{row.last:.1f}", f"{row.score:.1f}", f"{row.gain:+.1f}"))
        named.add(rule)
    return TextTable(title="Recipes vs the last layer per task type, x 100 (from the cached layers, no forward pass)",
                     columns=("recipe set", "type", "recipe", "tasks", "last layer", "recipe", "vs last"),
                     rows=tuple(rows), left=("recipe set", "type", "recipe"))


def recipe_headline_text(summary: Summary) -> str | None:
    """The answer-without-labels line of a run whose answer is a recipe set (None otherwise), for a terminal."""
    chosen = summary.chosen_recipe_score()
    return None if chosen is None else (
        "chosen without labels (recipes auto, held out against the last layer): {} ({:.1f}, {:+.1f} vs last)"
        .format(*chosen))
