"""The recipe parts of a run's report: the recipe answering without labels, and recipes vs the last layer per type.

A run of ``analyze --recipes`` (:mod:`layerscope.analysis.recipe_runs`) stores each task's score under each
recipe set; Table 2 shows one row per set (:func:`~layerscope.report.sections.selection_section`), and
:func:`recipe_section` compares every set with the last layer per task type, with the recipe serving
each type. When the set ``--recipes auto`` stood for is the run's answer without labels, the summary's
card and lead sentence name it (:func:`recipe_card`, :func:`recipe_lead`).
"""

from __future__ import annotations

from typing import Any

from layerscope.analysis.by_type import type_label
from layerscope.analysis.recipe_runs import recipe_rule
from layerscope.analysis.summary import Summary
from layerscope.config import AUTO
from layerscope.report.elements import Section, escape, formatter, note, number, section, signed, table
from layerscope.store.runs import RunData

__all__ = ["recipe_card", "recipe_lead", "recipe_section"]


def recipe_card(summary: Summary) -> str | None:
    """The "Chosen without labels" card of a run whose answer is a recipe set (None otherwise)."""
    chosen = summary.chosen_recipe_score()
    if chosen is None:
        return None
    recipe_set, average, gain = chosen
    detail = (f"{escape(recipe_set)}: average score {escape(number(average, 1))}; {signed(gain)} vs. last "
              "layer (the held-out recipe protocol's set, from the cached layers)")
    return (f'<div class="card chosen"><div class="k">Chosen without labels</div><div class="v">recipe set</div>'
            f'<div class="d">{detail}</div></div>')


def recipe_lead(summary: Summary) -> str | None:
    """The lead sentence of a run whose answer without labels is a recipe set (None otherwise)."""
    chosen = summary.chosen_recipe_score()
    return None if chosen is None else (
        "Without labels, layerscope's answer is the recipe set {} (one recipe per task type, chosen on other models "
        "and held out against the last layer): average {:.1f}, {:+.1f} points vs. the last layer.".format(*chosen))


def _record_caption(run: RunData) -> str:
    """Where ``auto``'s set came from, while the shipped recipe record still names it."""
    from layerscope.config import recipe_record

    record = recipe_record() or {}
    auto = run.recipes.loc[run.recipes["source"] == AUTO, "recipe_set"] if not run.recipes.empty else []
    kinds = record.get("kinds")
    entries = list(kinds.items()) if isinstance(kinds, dict) else [(None, record)]
    matching = [(kind, entry) for kind, entry in entries if len(auto) and entry.get("recipe_set") == auto.iloc[0]]
    if not matching:
        return ""
    kind, entry = matching[0]
    held = (entry.get("held_out") or {}).get("leave-one-model-out") or {}
    models = (record.get("trained_on") or {}).get("n_models") if kind is None else len(entry.get("models") or [])
    if not held:
        return ""
    of_kind = "" if kind is None else f" {escape(kind)}"
    return (f'<p class="caption">auto = the set the held-out recipe protocol chose on {models}{of_kind} models; '
            f"leave-one-model-out it gained {held['mean_gain']:+.2f} points over the raw last layer on average, with "
            f"{held['wins']} wins and {held['losses']} losses. Numbers from: {escape(record.get('command', ''))}.</p>")


def recipe_section(run: RunData, summary: Summary) -> Section | None:
    """Each recipe set against the last layer, per task type (None for a run without recipes)."""
    frame = summary.recipe_types
    if frame is None or frame.empty:
        return None
    frame = frame.assign(rule=[recipe_rule(str(text), str(source))
                               for text, source in zip(frame["recipe_set"], frame["source"], strict=True)],
                         kind=[kind if kind == "average" else f"{kind} ({type_label(str(kind))})"
                               for kind in frame["task_type"]])
    columns: list[tuple[str, str, Any]] = [
        ("rule", "recipe set", escape), ("kind", "task type", escape), ("recipe", "recipe for\nthe type", escape),
        ("n_tasks", "tasks", formatter(0)), ("last", "last layer\n(x100)", formatter(1)),
        ("score", "recipe\n(x100)", formatter(1)),
        ("gain", "vs. last\nlayer", lambda value: signed(float(value))),
    ]
    body = ('<p class="caption">Each recipe set scored from the run\'s cached per-layer embeddings (no forward pass; '
            "fitted on the run's unlabelled texts), against the last layer, per task type: the recipe a type gets, "
            "the mean score of the type's tasks under it and under the last layer. Recipes start from the layers "
            "as the model ships them.</p>")
    body += table(frame, columns, text_columns=["rule", "kind", "recipe"],
                  row_class=lambda row: "chosen" if row["recipe_set"] == summary.chosen_recipe
                  and row["task_type"] == "average" else "")
    body += _record_caption(run)
    if summary.chosen_recipe is None and (frame["source"] == AUTO).any():
        body += note("The auto set is not the run's answer here: --select-by names a rule other than the default.")
    return section("recipes", "Recipes vs. the last layer, per task type", body)
