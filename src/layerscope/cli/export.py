"""``layerscope export`` (a layer as a smaller model) and ``layerscope embed`` (one layer's embeddings of a
file's texts)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from layerscope.cli.options import CORPUS, CacheOptions, configured, corpus_rows, load, output_folder
from layerscope.cli.output import console, err_console
from layerscope.config import ExtractConfig, ModelConfig, TextConfig
from layerscope.errors import LayerscopeError

RecipeOption = Annotated[str | None, typer.Option(
    "--recipe", help="A recipe instead of a layer: last | layer:L | depth:F | mean:A-B | zmean:A-B, optionally "
    "+standardize | +whiten[:rank] | +remove-top[:k] (fitted on unlabelled texts), or one per task type "
    "('classification=zmean:0.5-1;*=last+standardize', with --task-type), or auto (the held-out recipe "
    "record's set for the model's kind).")]
TaskTypeOption = Annotated[str | None, typer.Option(
    "--task-type", help="The task type the embedding is for (classification, clustering, sts, ...): picks the "
    "recipe of a per-type --recipe.")]


@configured(model=ModelConfig, extraction=ExtractConfig)
def export_command(
    model: ModelConfig, extraction: ExtractConfig,
    out: Annotated[Path, typer.Option(help="Folder of the exported model.")],
    layer: Annotated[int | None, typer.Option("--layer", "-l", help="The layer to keep (1..L; negative counts from "
                                              "the last).")] = None,
    recipe: RecipeOption = None,
    task_type: TaskTypeOption = None,
    fit_dataset: Annotated[str | None, typer.Option("--fit-dataset", help="Unlabelled texts (corpus, file) the "
                                                    "--condition transform or the recipe is fitted on.")] = None,
) -> None:
    """Write one layer, or a recipe, as a smaller sentence-transformers / Hugging Face model (blocks after it
    dropped)."""
    from layerscope.export import compare_speed, export_layer

    _layer_or_recipe(layer, recipe, extraction)
    if extraction.outlier_tokens is not None:
        raise LayerscopeError("an export cannot leave out outlier tokens (sentence-transformers pooling has no such "
                              "step): export without --outlier-tokens")
    fit_texts = corpus_rows(TextConfig(fit_dataset))[0].texts if fit_dataset else None
    output_folder(out)
    loaded = load(model.replace(device="cpu") if model.device == "auto" else model, extraction)
    recipe = _auto(recipe, loaded)
    with err_console.status(f"exporting {f'layer {layer}' if recipe is None else recipe} of {loaded.model_id}"):
        if recipe is not None:
            from layerscope.analysis.recipe_export import export_recipe

            result = export_recipe(loaded, recipe, out, task_type=task_type, pooling=extraction.pooling,
                                   final_norm=extraction.final_norm, normalize=extraction.normalize,
                                   max_length=extraction.max_length, fit_texts=fit_texts, fit_source=fit_dataset)
        else:
            result = export_layer(loaded, layer, out, pooling=extraction.pooling, final_norm=extraction.final_norm,
                                  normalize=extraction.normalize, max_length=extraction.max_length,
                                  condition=extraction.condition, fit_texts=fit_texts)
    speed = compare_speed(loaded, result)
    what = f"layer {result.layer}" if recipe is None else f"recipe {result.record['recipe']} (up to layer {result.layer})"
    console.print(f"{what} of {result.num_layers} -> {result.out}: {result.parameters:,} of "
                  f"{result.parameters_full:,} parameters kept ({100 * result.parameters / result.parameters_full:.0f}%); "
                  f"checked against layerscope: max difference {result.max_difference:.1e} "
                  f"(largest value {result.record['largest_value']:,.1f})", highlight=False)
    console.print(f"encode time of {speed.n_texts} texts, {speed.threads} threads: full model {speed.full_s:.3f} s, "
                  f"exported {speed.exported_s:.3f} s ({speed.full_s / speed.exported_s:.2f}x faster)")
    load_line = result.record.get("load") or f"SentenceTransformer({str(result.out)!r})"
    console.print(f"use it: {load_line}.encode(texts)", highlight=False)


@configured(model=ModelConfig, texts=CORPUS, extraction=ExtractConfig,
            cache=CacheOptions)
def embed_command(
    model: ModelConfig, texts: TextConfig, extraction: ExtractConfig, cache: CacheOptions,
    out: Annotated[Path, typer.Option(help="Output file: .parquet (id, embedding) or .npy (structured id, embedding); "
                                      "its record is written beside it, OUT.json.")],
    layer: Annotated[int | None, typer.Option("--layer", "-l", help="The layer (0..L; negative counts from the "
                                              "last).")] = None,
    recipe: RecipeOption = None,
    task_type: TaskTypeOption = None,
    chunk_size: Annotated[int, typer.Option("--chunk-size", help="Texts per extraction (memory bound; each chunk "
                                            "is cached, so a rerun resumes).")] = 4096,
) -> None:
    """Embeddings of one layer, or of a recipe (fitted on these texts), for the texts of a file, each row with
    its text's id in the file."""
    from layerscope.export.embed import embed_layer

    _layer_or_recipe(layer, recipe, extraction)
    if chunk_size < 1:
        raise LayerscopeError(f"--chunk-size must be a positive number of texts, got {chunk_size}")
    rows = texts.rows()
    err_console.print(f"{len(rows.texts)} texts from {texts.dataset}", highlight=False)
    loaded = load(model, extraction)
    recipe = _auto(recipe, loaded)
    if recipe is not None:
        from layerscope.analysis.recipe_export import embed_recipe

        result = embed_recipe(loaded, rows, recipe, out, task_type=task_type, extraction=extraction,
                              cache_dir=cache.resolve(), chunk_size=chunk_size)
    else:
        result = embed_layer(loaded, rows, layer, out, extraction=extraction, cache_dir=cache.resolve(),
                             chunk_size=chunk_size)
    what = f"layer {result.layer} of {loaded.num_layers}" if recipe is None else f"recipe {result.recipe}"
    console.print(f"{what}: {result.n_written} embeddings of dimension {result.dim} -> {result.out}"
                  + (f"; {result.n_skipped} empty texts skipped" if result.n_skipped else ""), highlight=False)


def _auto(recipe: str | None, loaded: object) -> str | None:
    """``--recipe auto`` as the recipe record's set for the loaded model's kind (said on stderr)."""
    if recipe is None or recipe.strip() != "auto":
        return recipe
    from layerscope.analysis.recipe_runs import auto_recipe_set

    kind = getattr(loaded, "kind", None)
    chosen = auto_recipe_set(kind=kind)
    why = ("the set chosen held out on models of its kind" if chosen != "last" else
           "no recipe beat the last layer held out on models of its kind")
    err_console.print(f"--recipe auto for a {kind}: {chosen} ({why})", highlight=False)
    return chosen


def _layer_or_recipe(layer: int | None, recipe: str | None, extraction: ExtractConfig) -> None:
    """One of --layer and --recipe, and a recipe's conditioning in the recipe (one-line errors)."""
    if (layer is None) == (recipe is None):
        raise LayerscopeError("give --layer or --recipe (one of them)")
    if recipe is not None and recipe.strip() != "auto":
        from layerscope.analysis.recipes import parse_recipe_set

        parse_recipe_set(recipe)  # a bad recipe fails before the model loads
        if extraction.condition != "none":
            raise LayerscopeError("give the conditioning in the recipe (e.g. --recipe 'last+standardize'), "
                                  "not as --condition")
