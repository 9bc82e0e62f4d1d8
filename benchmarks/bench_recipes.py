"""Benchmark: representation recipes chosen held out against the raw last layer (issue 23, point 2).

For each model (a bundled alias, hub id or local path) it encodes the task suite's texts once (the
embedding cache of ``layerscope analyze`` is reused when it holds them), scores every recipe of
:func:`layerscope.analysis.recipe_protocol.recipe_grid` on every task with MTEB's evaluators, and keeps
those scores in ``--out`` (a rerun reads them). Then the held-out protocol of
:mod:`layerscope.analysis.recipe_protocol` picks a recipe per task type on the other models (and the
other families) and scores it on each model in turn. It prints:

(a) per scheme and model: the recipe set chosen without that model, its raw last layer's and the set's
    task average x 100, the gain with its 95% bootstrap interval over the model's tasks;
(b) wins, losses, mean and worst gain per scheme, over every model and per model kind (a held-out
    model's recipes are chosen on the other models of its kind only: ``language-model`` or
    ``sentence-encoder``, from the model's own files; none left, the raw last layer); per kind, the set
    chosen on its models (what ``auto`` gives a new model of that kind) and whether it beats the raw last
    layer held out.

``--write-record FILE`` writes the set chosen on every model and its held-out evidence as JSON
(:func:`record`); ``layerscope analyze --recipes auto`` reads it from
``src/layerscope/analysis/recipe_record.json``, where the record is shipped:

    python benchmarks/bench_recipes.py MODEL ... --write-record src/layerscope/analysis/recipe_record.json

With fewer than two models there is nothing to hold out: the record then has no held-out evidence and
``beats_last_held_out`` false (``auto`` stays the last layer).

The last line is ``gain: <leave-one-model-out mean gain over the raw last layer, points x 100>`` (``nan``
without held-out evidence). A kind with a single model has no held-out evidence (its model keeps the
raw last layer, gain 0 by rule), and the script says so: the defaults (MiniLM, a sentence encoder, and
SmolLM2, a language model) are one of each, so the record's run adds Gemma-3 (``gemma3-270m``).

    python benchmarks/bench_recipes.py [MODEL ...] [--tasks offline] [--out runs/recipes] [--write-record FILE]
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

from layerscope.analysis import format_table
from layerscope.analysis.recipe_protocol import (
    RecipeProtocol,
    choose_recipe_set,
    recipe_grid,
    run_recipe_protocol,
)
from layerscope.analysis.recipes import evaluate_recipes
from layerscope.analysis.rules import model_family


def recipe_scores(model_name: str, tasks: str, out: Path, workers: str) -> pd.DataFrame:
    """Every grid recipe on every task of one model (read from ``out`` when it holds them)."""
    path = out / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', model_name)}-{tasks}.parquet"
    grid = [recipe.text for recipe in recipe_grid()]
    if path.is_file():
        kept = pd.read_parquet(path)
        names = _task_names(tasks)  # scores kept for another version of the suite are not reused
        if (set(grid) <= set(kept["recipe"]) and "starts_from" in kept.columns
                and (names is None or set(kept["task"]) == names)):
            if "kind" not in kept.columns:  # kept before kinds: the model's files say it (loading is enough)
                from layerscope import load_model

                kept = kept.assign(kind=load_model(model_name).kind)
                kept.to_parquet(path)
            return kept
    from layerscope import load_model
    from layerscope.cli import default_cache_dir
    from layerscope.config import ExtractConfig
    from layerscope.evaluate import resolve
    from layerscope.evaluate.runner import _load, collect_texts
    from layerscope.extract import extract

    started = time.perf_counter()
    task_list = resolve(tasks)
    _load(task_list)
    model = load_model(model_name)
    extraction = extract(model, collect_texts(task_list), cache_dir=default_cache_dir(), progress=True,
                         **ExtractConfig().extract_options())
    encoded = time.perf_counter()
    # the last layer as the model ships it (a sentence-transformers model ending in Normalize: L2-normalized)
    normalized = ExtractConfig().normalized_layers(model)
    frame = evaluate_recipes(extraction, grid, task_list, name=f"layerscope/{model.model_id}", eval_workers=workers,
                             normalized=normalized)
    frame = frame.drop(columns="scores").assign(
        model=model_name, starts_from="last layer L2-normalized as shipped" if normalized else "raw layers",
        kind=model.kind)
    out.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path)
    print(f"{model_name}: {len(extraction.texts)} texts encoded in {encoded - started:.0f} s "
          f"({'cache' if extraction.from_cache else 'model'}), {len(grid)} recipes scored in "
          f"{time.perf_counter() - encoded:.0f} s")
    return frame


def _task_names(tasks: str) -> set[str] | None:
    """The task names of a task group, or None for a name layerscope does not resolve (kept scores only)."""
    from layerscope.errors import LayerscopeError
    from layerscope.evaluate import resolve

    try:
        return {task.metadata.name for task in resolve(tasks)}
    except LayerscopeError:
        return None


def pretrained(model: str) -> bool:
    """Whether a model is a pretrained one (the tiny models, random or trained here, are not)."""
    return model_family(model) != "tiny-neox" and not model.lower().rsplit("/", 1)[-1].startswith("tiny")


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _held_out(result: RecipeProtocol, scheme: str, kind: str | None = None) -> dict[str, Any]:
    """One scheme's summary (of one kind's models), its worst pretrained model and every held-out row."""
    rows = result.held_out[result.held_out["scheme"] == scheme]
    if kind is not None:
        rows = rows[rows["kind"] == kind]
    kept = rows[[pretrained(model) for model in rows["model"]]]
    worst = kept.loc[kept["gain"].idxmin()] if len(kept) else None
    return {
        **{key: _plain(value) for key, value in result.summary(scheme, kind).items()},
        "worst_pretrained": None if worst is None else {"model": worst["model"], "gain": float(worst["gain"])},
        "per_model": [{**{key: _plain(value) for key, value in row.items()}, "pretrained": pretrained(row["model"])}
                      for row in rows.drop(columns="scheme").to_dict("records")]}


def record(scores: pd.DataFrame, result: RecipeProtocol | None, args: argparse.Namespace,
           argv: list[str]) -> dict[str, Any]:
    """What ``analyze --recipes auto`` reads: per model kind, the set chosen on that kind's models and how
    it did held out.

    A kind's ``beats_last_held_out`` is the protocol's verdict on its models (leave-one-model-out: more
    wins than losses against the raw last layer, and a positive mean gain); false without held-out
    evidence (a kind of one model: held out, it has no model of its kind to be chosen on).
    """
    from layerscope.evaluate.offline import SUITES

    order = [recipe.text for recipe in recipe_grid()]
    models = list(dict.fromkeys(scores["model"]))
    kind_of = scores.drop_duplicates("model").set_index("model")["kind"].to_dict()
    schemes = [] if result is None else list(dict.fromkeys(result.held_out["scheme"]))
    kinds: dict[str, Any] = {}
    for kind in dict.fromkeys(kind_of.values()):
        members = [model for model in models if kind_of[model] == kind]
        chosen = (result.chosen_by_kind[kind] if result is not None
                  else choose_recipe_set(scores[scores["model"].isin(members)], order))
        kinds[kind] = {"recipe_set": chosen.text,
                       "beats_last_held_out": bool(result is not None and result.beats_last(kind=kind)),
                       "models": members,
                       "held_out": {scheme: _held_out(result, scheme, kind) for scheme in schemes}}
    starts = scores.drop_duplicates("model").set_index("model")["starts_from"]
    return {
        "kinds": kinds,
        "beats_last_held_out": any(entry["beats_last_held_out"] for entry in kinds.values()),
        "verdict": "per model kind, leave-one-model-out: wins > losses against the raw last layer and mean gain > 0; "
                   "a held-out model's recipes are chosen on the other models of its kind (none: the last layer)",
        "held_out": {scheme: _held_out(result, scheme) for scheme in schemes},
        "note": None if result is not None else f"{len(models)} model: nothing to hold out, auto stays the last layer",
        "trained_on": {"n_models": len(models), "models": [
            {"model": model, "family": model_family(model), "kind": kind_of[model], "pretrained": pretrained(model),
             "starts_from": starts.get(model)} for model in models]},
        "suite": {"name": args.tasks, "version": SUITES.get(args.tasks),
                  "tasks": sorted(scores["task"].unique().tolist())},
        "grid": order, "n_boot": args.n_boot,
        "command": "python benchmarks/bench_recipes.py " + " ".join(argv),
        "date": datetime.date.today().isoformat(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", default=["minilm-l6", "smollm2-135m"])
    parser.add_argument("--tasks", default="offline", help="task group (default: the offline suite)")
    parser.add_argument("--out", type=Path, default=Path("runs/recipes"), help="where recipe scores are kept")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--eval-workers", default="auto")
    parser.add_argument("--write-record", type=Path, default=None,
                        help="write the chosen recipe set and its held-out record as JSON (analyze --recipes auto)")
    args = parser.parse_args(argv)

    scores = pd.concat([recipe_scores(name, args.tasks, args.out, args.eval_workers) for name in args.models])
    if scores["model"].nunique() < 2:
        print(f"only {scores['model'].nunique()} model: the held-out protocol needs 2 or more")
        if args.write_record is not None:
            write(args.write_record, record(scores, None, args, list(sys.argv[1:] if argv is None else argv)))
        print("gain: nan")
        return
    kind_of = scores.drop_duplicates("model").set_index("model")["kind"].to_dict()
    for kind, count in pd.Series(kind_of).value_counts().items():
        if count < 2:
            example = "gemma3-270m, a run folder" if kind == "language-model" else "a sentence-transformers model"
            print(f"only 1 {kind} model: held out, it has no model of its kind to be chosen on (gain 0 by rule, "
                  f"no evidence either way); add another ({example})")
    result = run_recipe_protocol(scores, model_family, kinds=kind_of, n_boot=args.n_boot)
    table = result.held_out.assign(interval=[f"[{low:+.1f}, {high:+.1f}]" for low, high
                                             in zip(result.held_out["low"], result.held_out["high"], strict=True)])
    print(format_table(table[["scheme", "model", "kind", "recipe_set", "last", "score", "gain", "interval"]],
                       decimals=1))
    for scheme in table["scheme"].unique():
        for kind in [None, *dict.fromkeys(kind_of.values())]:
            summary = result.summary(scheme, kind)
            print(f"{scheme}{'' if kind is None else f' ({kind})'}: mean gain {summary['mean_gain']:+.2f}, "
                  f"{summary['wins']} wins / {summary['losses']} losses of {summary['models']} models, "
                  f"worst {summary['worst']:+.2f}")
    for kind, chosen in result.chosen_by_kind.items():
        count = sum(value == kind for value in kind_of.values())
        verdict = "beats" if result.beats_last(kind=kind) else "does not beat"
        print(f"chosen on the {count} {kind} model{'s' if count != 1 else ''}: {chosen.text} ({verdict} the raw last "
              f"layer held out: auto = {'this set' if result.beats_last(kind=kind) else 'the last layer'})")
    if args.write_record is not None:
        write(args.write_record, record(scores, result, args, list(sys.argv[1:] if argv is None else argv)))
    print(f"gain: {result.summary()['mean_gain']:.2f}")


def write(path: Path, written: dict[str, Any]) -> None:
    """The record as JSON, written atomically."""
    from layerscope.atomic import atomic_write_text

    atomic_write_text(path, json.dumps(written, indent=1) + "\n")
    print(f"record -> {path}")


if __name__ == "__main__":
    main()
