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


@configured(model=ModelConfig, extraction=ExtractConfig)
def export_command(
    model: ModelConfig, extraction: ExtractConfig,
    layer: Annotated[int, typer.Option("--layer", "-l", help="The layer to keep (1..L; negative counts from the last).")],
    out: Annotated[Path, typer.Option(help="Folder of the exported model.")],
    fit_dataset: Annotated[str | None, typer.Option("--fit-dataset", help="Unlabelled texts (corpus, file) the "
                                                    "--condition transform is fitted on.")] = None,
) -> None:
    """Write one layer as a smaller sentence-transformers / Hugging Face model (blocks after it dropped)."""
    from layerscope.export import compare_speed, export_layer

    if extraction.outlier_tokens is not None:
        raise LayerscopeError("an export cannot leave out outlier tokens (sentence-transformers pooling has no such "
                              "step): export without --outlier-tokens")
    fit_texts = corpus_rows(TextConfig(fit_dataset))[0].texts if fit_dataset else None
    output_folder(out)
    loaded = load(model.replace(device="cpu") if model.device == "auto" else model, extraction)
    with err_console.status(f"exporting layer {layer} of {loaded.model_id}"):
        result = export_layer(loaded, layer, out, pooling=extraction.pooling, final_norm=extraction.final_norm,
                              normalize=extraction.normalize, max_length=extraction.max_length,
                              condition=extraction.condition, fit_texts=fit_texts)
    speed = compare_speed(loaded, result)
    console.print(f"layer {result.layer} of {result.num_layers} -> {result.out}: {result.parameters:,} of "
                  f"{result.parameters_full:,} parameters kept ({100 * result.parameters / result.parameters_full:.0f}%); "
                  f"checked against layerscope: max difference {result.max_difference:.1e} "
                  f"(largest value {result.record['largest_value']:,.1f})")
    console.print(f"encode time of {speed.n_texts} texts, {speed.threads} threads: full model {speed.full_s:.3f} s, "
                  f"exported {speed.exported_s:.3f} s ({speed.full_s / speed.exported_s:.2f}x faster)")
    console.print(f"use it: SentenceTransformer({str(result.out)!r}).encode(texts)")


@configured(model=ModelConfig, texts=CORPUS, extraction=ExtractConfig,
            cache=CacheOptions)
def embed_command(
    model: ModelConfig, texts: TextConfig, extraction: ExtractConfig, cache: CacheOptions,
    layer: Annotated[int, typer.Option("--layer", "-l", help="The layer (0..L; negative counts from the last).")],
    out: Annotated[Path, typer.Option(help="Output file: .parquet (id, embedding) or .npy (structured id, embedding).")],
    chunk_size: Annotated[int, typer.Option("--chunk-size", help="Texts per extraction (memory bound; each chunk "
                                            "is cached, so a rerun resumes).")] = 4096,
) -> None:
    """Embeddings of one layer for the texts of a file, each row with its text's id in the file."""
    from layerscope.export.embed import embed_layer

    if chunk_size < 1:
        raise LayerscopeError(f"--chunk-size must be a positive number of texts, got {chunk_size}")
    rows = texts.rows()
    err_console.print(f"{len(rows.texts)} texts from {texts.dataset}", highlight=False)
    loaded = load(model, extraction)
    result = embed_layer(loaded, rows, layer, out, extraction=extraction, cache_dir=cache.resolve(),
                         chunk_size=chunk_size)
    console.print(f"layer {result.layer} of {loaded.num_layers}: {result.n_written} embeddings of dimension "
                  f"{result.dim} -> {result.out}" + (f"; {result.n_skipped} empty texts skipped" if result.n_skipped
                                                     else ""))
