"""A recipe taken away: exported as a sentence-transformers model, or written as embeddings of a file.

:func:`export_recipe` writes a model folder whose ``SentenceTransformer`` encoding equals
:func:`~layerscope.analysis.recipes.recipe_embeddings` fitted on the same unlabelled texts. A recipe of
one layer (``last``, ``layer:L``, ``depth:F``) is :func:`~layerscope.export.export_layer`: the model cut
after that layer, pooling, its conditioning as a ``Dense`` module, loaded by ``SentenceTransformer(path)``
with no custom code. A window (``mean:A-B``, ``zmean:A-B``) is
:func:`~layerscope.export.window.export_window`: the model cut after the window's last layer, a custom
module averaging the window's pooled layers (``zmean``'s z-scores as its per-layer maps), then the
conditioning; it loads with ``SentenceTransformer(path, trust_remote_code=True)``.

:func:`embed_recipe` writes the recipe's embeddings of the texts of a file, fitted on those texts.

Both start from the layers as :class:`~layerscope.config.ExtractConfig` ``normalize`` says (by default
the last layer of a model that ships normalized, L2-normalized as it ships), and record which.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from layerscope.analysis.recipes import (
    FittedRecipe,
    Recipe,
    RecipeSet,
    fit_recipe,
    recipe_embeddings,
    recipe_for,
)
from layerscope.errors import LayerscopeError

__all__ = ["embed_recipe", "export_recipe"]


def export_recipe(
    model: Any,
    recipe: Recipe | RecipeSet | str,
    out: str | Path,
    *,
    task_type: str | None = None,
    pooling: str = "mean",
    final_norm: str = "none",
    normalize: bool | None = None,
    max_length: int | None = None,
    fit_texts: Sequence[str] | None = None,
    fit_source: str | None = None,
    verify: bool = True,
) -> Any:
    """Write a recipe as a standalone sentence-transformers model folder.

    Parameters
    ----------
    model : LoadedModel or str
        The source model (loaded, or a name for :func:`layerscope.load_model`).
    recipe : Recipe, RecipeSet or str
        The recipe; a recipe set needs ``task_type`` unless it holds one recipe.
    out : str or Path
        The model folder to write.
    task_type : str, optional
        The task type the model is for (picks a set's recipe).
    pooling : {"mean", "last", "first"}
    final_norm : {"none", "all"}
        As :func:`~layerscope.export.export_layer`; a window exports the raw residual stream only.
    normalize : bool or None
        ``None`` (auto): the recipe starts from the last layer as the model ships it (L2-normalized where
        its sentence-transformers pipeline ends in ``Normalize``); ``False``: from the raw layers;
        ``True``: the output is L2-normalized last.
    max_length : int, optional
        Maximum sequence length in tokens (default: the model's configured one, else 512).
    fit_texts : sequence of str, optional
        Unlabelled texts the recipe's standardization and conditioning are fitted on (needed unless the
        recipe fits nothing: a plain layer or ``mean`` without conditioning).
    fit_source : str, optional
        Where the fitting texts came from, for the record.
    verify : bool
        Load the folder as a user would, encode a few probe texts, and check they equal the recipe's
        embeddings of them (to :data:`~layerscope.export.TOLERANCE` relative to the largest value).

    Returns
    -------
    ExportResult
        Its ``record`` names the recipe, what it was fitted on, which layers it starts from normalized,
        and ``load``: how the folder loads.
    """
    from layerscope.config import ExtractConfig
    from layerscope.export import export_layer

    chosen = recipe_for(recipe, task_type)
    if isinstance(model, str):
        from layerscope.models import load_model

        model = load_model(model, device="cpu")
    extraction = ExtractConfig(pooling=pooling, final_norm=final_norm, normalize=normalize, max_length=max_length)
    shipped = extraction.normalized_layers(model)
    window = chosen.layers(model.num_layers)
    needs_fit = chosen.kind == "zmean" or chosen.condition != "none"
    if needs_fit and not fit_texts:
        raise LayerscopeError(f"the recipe '{chosen.text}' is fitted on texts: give some (--fit-dataset)")
    record = {"recipe": chosen.text, "task_type": task_type, "recipe_set": _set_text(recipe),
              "starts_from": _starts_from(window, shipped),
              "fitted_on": (f"{len(fit_texts)} unlabelled texts" + (f" of {fit_source}" if fit_source else "")
                            if needs_fit and fit_texts else None)}
    if chosen.kind == "layer":  # one layer: the pure sentence-transformers export, no custom code
        result = export_layer(model, window[0], out, pooling=pooling, final_norm=final_norm, normalize=normalize,
                              max_length=max_length, condition=chosen.condition, fit_texts=fit_texts,
                              verify=verify, record={**record, "load": f"SentenceTransformer({str(out)!r})"})
        return result
    return _export_window_recipe(model, chosen, out, extraction, fit_texts if needs_fit else None, verify, record)


def _export_window_recipe(model: Any, recipe: Recipe, out: str | Path, extraction: Any,
                          fit_texts: Sequence[str] | None, verify: bool, record: dict[str, Any]) -> Any:
    """:func:`export_recipe` of a window: fit the recipe, then :func:`~layerscope.export.window.export_window`."""
    import dataclasses

    from layerscope.export import PROBE_TEXTS
    from layerscope.export.window import export_window
    from layerscope.extract import extract
    from layerscope.extract.engine import resolve_max_length

    if model.modality != "text":
        raise LayerscopeError(f"export supports text models; {model.model_id} is a {model.modality} model")
    if extraction.final_norm != "none" and model.adapter.final_norm is not None:
        raise LayerscopeError("a window of layers exports the raw residual stream only: export with --final-norm none")
    if model.final_norm != extraction.final_norm:
        model = dataclasses.replace(model, final_norm=extraction.final_norm)
    window = recipe.layers(model.num_layers)
    max_length, _ = resolve_max_length(model, extraction.max_length)
    texts = list(fit_texts) if fit_texts else list(PROBE_TEXTS)  # nothing is fitted without fit texts
    fit = extract(model, texts, pooling=extraction.pooling, layers=window, max_length=max_length,
                  progress=False).pooled  # (w, m, d)
    fitted = fit_recipe(fit, window, recipe, last_layer=model.num_layers,
                        normalized=extraction.normalized_layers(model))
    maps = window_maps(fitted, normalize=bool(extraction.normalize))

    def expected(pooled: np.ndarray) -> np.ndarray:  # the recipe's own computation on the probe texts
        vectors = fitted.apply(torch.as_tensor(pooled, dtype=torch.float64))
        if extraction.normalize:
            vectors = vectors / torch.linalg.vector_norm(vectors, dim=1, keepdim=True).clamp_min(1e-300)
        return vectors.numpy()

    readme = (f"It computes the layerscope recipe `{recipe.text}`: {_describe(recipe, fitted)} "
              f"({record['fitted_on'] or 'nothing fitted'}; {'; '.join(record['starts_from'])}).")
    return export_window(model, maps, out, pooling=extraction.pooling, max_length=max_length, verify=verify,
                         expected=expected, record={**record, "fitted": fitted.describe()}, readme=readme)


def window_maps(fitted: FittedRecipe, *, normalize: bool = False) -> Any:
    """A fitted window recipe as :class:`~layerscope.export.window.WindowMaps` (what the export computes)."""
    from layerscope.export.window import WindowMaps

    scale = shift = None
    if fitted.standardize is not None:  # z-scores: a diagonal map per layer, x * (1 / std) - mean / std
        assert fitted.standardize.weight is not None and fitted.standardize.bias is not None
        scale = torch.diagonal(fitted.standardize.weight, dim1=-2, dim2=-1).numpy()  # (w, d)
        shift = fitted.standardize.bias.numpy()  # (w, d)
    affine = None if fitted.conditioner is None else fitted.conditioner.layer(0)
    return WindowMaps(list(fitted.layers), tuple(fitted.normalized), scale, shift, affine, normalize)


def _describe(recipe: Recipe, fitted: FittedRecipe) -> str:
    layers = f"layers {fitted.layers[0]}-{fitted.layers[-1]}"
    base = (f"the mean of the per-dimension z-scores of {layers}" if recipe.kind == "zmean"
            else f"the mean of {layers}")
    return base if recipe.condition == "none" else f"{base}, then {recipe.condition} (a Dense module)"


def _starts_from(window: Sequence[int], shipped: Sequence[int]) -> list[str]:
    """Which layers the recipe starts from, and how: what every recipe states."""
    return [f"layer {layer} L2-normalized as the model ships it" if layer in shipped else f"layer {layer} raw"
            for layer in window]


def _set_text(recipe: Recipe | RecipeSet | str) -> str:
    from layerscope.analysis.recipes import parse_recipe_set

    return parse_recipe_set(recipe).text


def embed_recipe(
    model: Any,
    rows: Any,
    recipe: Recipe | RecipeSet | str,
    out: str | Path,
    *,
    task_type: str | None = None,
    extraction: Any = None,
    cache_dir: str | None = None,
    chunk_size: int = 4096,
    progress: bool = True,
) -> Any:
    """Write the embeddings a recipe makes of ``rows``, fitted on those same texts (no labels).

    The texts go through the model in chunks as in :func:`~layerscope.export.embed.embed_layer` (each
    chunk one extraction of the recipe's layers only, cached, so a rerun resumes); the standardization
    and conditioning are then fitted on the embeddings of every text, so the window's embeddings of all
    texts are held in memory (``w x n x d`` float32) before the recipe is computed (in float64).

    Parameters
    ----------
    model : LoadedModel
    rows : layerscope.data.Rows
        The texts and their row ids.
    recipe : Recipe, RecipeSet or str
        A set needs ``task_type`` unless it holds one recipe.
    out : str or Path
        ``.parquet`` or ``.npy`` file; its record is written beside it
        (:func:`~layerscope.export.embed.record_path`).
    task_type : str, optional
        The task type the embeddings are for (picks a set's recipe).
    extraction : ExtractConfig, optional
        Pooling, max length, batch size; ``normalize`` auto (default): the recipe starts from the last
        layer as the model ships it; ``False``: from the raw layers; ``True``: the output is L2-normalized
        last. No ``condition``: the recipe carries its own.
    cache_dir, chunk_size, progress
        As in :func:`~layerscope.export.embed.embed_layer`.

    Returns
    -------
    EmbedResult
    """
    from layerscope.config import ExtractConfig
    from layerscope.export.embed import EmbedResult, embed_chunks, output_file, write_embeddings
    from layerscope.extract.conditioning import normalize_record

    extraction = extraction or ExtractConfig()
    chosen = recipe_for(recipe, task_type)
    target = output_file(out)
    if extraction.condition != "none":
        raise LayerscopeError(f"give the conditioning in the recipe (e.g. '{chosen.text.split('+')[0]}+standardize'), "
                              "not as --condition")
    window = chosen.layers(model.num_layers)
    ids, pooled, skipped = embed_chunks(model, rows, window, extraction, cache_dir, chunk_size, progress)
    shipped = extraction.normalized_layers(model)
    vectors = recipe_embeddings(pooled, window, chosen, last_layer=model.num_layers, normalized=shipped)  # (n, k)
    if extraction.normalize:
        vectors = vectors / torch.linalg.vector_norm(vectors, dim=1, keepdim=True).clamp_min(1e-300)
    matrix = vectors.to(torch.float32).numpy()
    fits = chosen.kind == "zmean" or chosen.condition != "none"
    record = {"model": model.describe(), "recipe": chosen.text, "task_type": task_type,
              "recipe_set": _set_text(recipe), "layers": window, "starts_from": _starts_from(window, shipped),
              "fitted_on": (f"the {len(ids)} texts embedded ({rows.source}), without labels" if fits else None),
              "n_written": len(ids), "n_skipped_empty": skipped, "dim": int(matrix.shape[1]), "source": rows.source,
              **extraction.to_dict(), "normalize": normalize_record(extraction, model)}
    write_embeddings(target, ids, matrix, record)
    return EmbedResult(target, None, len(ids), skipped, int(matrix.shape[1]), record, chosen.text)
