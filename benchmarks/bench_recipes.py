"""Benchmark: representation recipes chosen held out against the raw last layer (issue 23, point 2).

For each model (a bundled alias, hub id or local path) it encodes the task suite's texts once (the
embedding cache of ``layerscope analyze`` is reused when it holds them), scores every recipe of
:func:`layerscope.analysis.recipe_protocol.recipe_grid` on every task with MTEB's evaluators, and keeps
those scores in ``--out`` (a rerun reads them). Then the held-out protocol of
:mod:`layerscope.analysis.recipe_protocol` picks a recipe per task type on the other models (and the
other families) and scores it on each model in turn. It prints:

(a) per scheme and model: the recipe set chosen without that model, its raw last layer's and the set's
    task average x 100, the gain with its 95% bootstrap interval over the model's tasks;
(b) wins, losses, mean and worst gain per scheme; the set chosen on every model (what ``auto`` would
    give a new model) and whether it beats the raw last layer held out.

The last line is ``gain: <leave-one-model-out mean gain over the raw last layer, points x 100>``.

    python benchmarks/bench_recipes.py [MODEL ...] [--tasks offline] [--out runs/recipes]
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

import pandas as pd

from layerscope.analysis import format_table
from layerscope.analysis.recipe_protocol import recipe_grid, run_recipe_protocol
from layerscope.analysis.recipes import evaluate_recipes
from layerscope.analysis.rules import model_family


def recipe_scores(model_name: str, tasks: str, out: Path, workers: str) -> pd.DataFrame:
    """Every grid recipe on every task of one model (read from ``out`` when it holds them)."""
    path = out / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', model_name)}-{tasks}.parquet"
    grid = [recipe.text for recipe in recipe_grid()]
    if path.is_file():
        kept = pd.read_parquet(path)
        if set(grid) <= set(kept["recipe"]) and "starts_from" in kept.columns:
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
        model=model_name, starts_from="last layer L2-normalized as shipped" if normalized else "raw layers")
    out.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path)
    print(f"{model_name}: {len(extraction.texts)} texts encoded in {encoded - started:.0f} s "
          f"({'cache' if extraction.from_cache else 'model'}), {len(grid)} recipes scored in "
          f"{time.perf_counter() - encoded:.0f} s")
    return frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", default=["minilm-l6", "smollm2-135m"])
    parser.add_argument("--tasks", default="offline", help="task group (default: the offline suite)")
    parser.add_argument("--out", type=Path, default=Path("runs/recipes"), help="where recipe scores are kept")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--eval-workers", default="auto")
    args = parser.parse_args()

    scores = pd.concat([recipe_scores(name, args.tasks, args.out, args.eval_workers) for name in args.models])
    result = run_recipe_protocol(scores, model_family, n_boot=args.n_boot)
    table = result.held_out.assign(interval=[f"[{low:+.1f}, {high:+.1f}]" for low, high
                                             in zip(result.held_out["low"], result.held_out["high"], strict=True)])
    print(format_table(table[["scheme", "model", "recipe_set", "last", "score", "gain", "interval"]], decimals=1))
    for scheme in table["scheme"].unique():
        summary = result.summary(scheme)
        print(f"{scheme}: mean gain {summary['mean_gain']:+.2f}, {summary['wins']} wins / {summary['losses']} losses "
              f"of {summary['models']} models, worst {summary['worst']:+.2f}")
    verdict = "beats" if result.beats_last() else "does not beat"
    print(f"chosen on all {scores['model'].nunique()} models: {result.chosen.text} ({verdict} the raw last layer "
          "held out)")
    print(f"gain: {result.summary()['mean_gain']:.2f}")


if __name__ == "__main__":
    main()
