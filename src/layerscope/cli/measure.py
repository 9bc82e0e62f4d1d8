"""``layerscope extract`` (pooled embeddings of every layer) and ``layerscope metrics`` (every metric of
every layer)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from layerscope.cli.options import CORPUS, CacheOptions, configured, corpus_rows, load, output_folder
from layerscope.cli.output import console, print_layer_table, print_table, say, write_json
from layerscope.config import ExtractConfig, ModelConfig, TextConfig, ViewConfig


@configured(model=ModelConfig, texts=CORPUS, extraction=ExtractConfig,
            cache=CacheOptions)
def extract_command(
    model: ModelConfig, texts: TextConfig, extraction: ExtractConfig, cache: CacheOptions,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("runs/extract"),
) -> None:
    """Pooled embeddings of every layer in one pass; writes embeddings.npy and record.json."""
    import numpy as np

    from layerscope.atomic import atomic_save_npy
    from layerscope.extract import extract
    from layerscope.extract.pooling import pooled_summary

    folder = output_folder(out)
    assert folder is not None
    rows, texts = corpus_rows(texts)
    loaded = load(model, extraction)
    result = extract(loaded, rows.texts, cache_dir=cache.resolve(), **extraction.extract_options())
    atomic_save_npy(folder / "embeddings.npy", np.asarray(result.pooled))
    record = {**result.record, "texts": texts.to_dict(), "layers": result.layers,
              "row_ids": [rows.ids[int(i)] for i in result.kept]}  # each embedding's row in the source
    write_json(folder / "record.json", record)
    table = Table(title=f"{loaded.model_id}: {len(result.texts)} texts from {texts.dataset}, {extraction.pooling} pooling")
    for column_name in ("layer", "depth %", "mean norm", "anisotropy (mean cos)"):
        table.add_column(column_name, justify="right")
    for row in pooled_summary(result.pooled, loaded.num_layers):
        table.add_row(str(row["layer"]), f"{row['depth_pct']:.0f}", f"{row['mean_norm']:.3g}", f"{row['anisotropy']:.3f}")
    console.print(table)
    skipped = record["n_skipped_empty"]
    console.print(f"embeddings {tuple(result.pooled.shape)} -> {folder / 'embeddings.npy'}; record -> {folder / 'record.json'}"
                  + (f"; {skipped} empty texts skipped" if skipped else "")
                  + ("; read from cache" if result.from_cache else f"; {record.get('time_s', 0):.1f} s"))


def print_metric_list() -> None:
    """The registry as a table (``layerscope metrics --list``)."""
    from layerscope.metrics import available

    print_table("Metrics", ("name", "column", "reads", "views", "select", "random", "description"),
                ((spec.name, spec.short, spec.inputs, str(spec.n_views), "max" if spec.higher_is_better else "min",
                  "yes" if spec.random else "no", spec.description) for spec in available()), overflow="fold")


@configured(model=ModelConfig, texts=CORPUS, extraction=ExtractConfig,
            views=ViewConfig, cache=CacheOptions)
def metrics_command(
    model: ModelConfig, texts: TextConfig, extraction: ExtractConfig, views: ViewConfig, cache: CacheOptions,
    metrics: Annotated[str, typer.Option(help="all, or a comma list (layerscope metrics --list).")] = "all",
    out: Annotated[Path | None, typer.Option(help="Write metrics.csv, prompt_values.csv, record.json here.")] = None,
    list_metrics: Annotated[bool, typer.Option("--list", help="List the metrics and exit.")] = False,
) -> None:
    """Every representation-quality metric of every layer (SPEC section 4)."""
    if list_metrics:
        print_metric_list()
        return
    from layerscope.analysis import per_layer_table
    from layerscope.config import MetricsConfig
    from layerscope.metrics.compute import METRIC_COLUMNS, measure

    folder = output_folder(out)
    config = MetricsConfig(model=model, texts=texts, extraction=extraction, views=views, metrics=metrics,
                           seed=texts.seed)  # a bad metric name fails here, before the model loads
    rows, texts = corpus_rows(texts)
    loaded = load(model, extraction)
    measured = measure(loaded, rows.texts, metrics=config.metrics, views=views, extraction=extraction,
                       seed=config.seed, cache_dir=cache.resolve(), notify=say)
    frame = measured.metrics[METRIC_COLUMNS]
    print_layer_table(per_layer_table(frame), f"{loaded.model_id}: {len(measured.extraction.texts)} texts from "
                      f"{texts.dataset}")
    if folder is not None:
        from layerscope.atomic import atomic_write_text

        atomic_write_text(folder / "metrics.csv", frame.to_csv(index=False))
        atomic_write_text(folder / "prompt_values.csv", measured.prompt_values.to_csv(index=False))
        write_json(folder / "record.json", {**measured.record, "config": config.replace(texts=texts).to_dict()})
        console.print(f"wrote {folder / 'metrics.csv'}, prompt_values.csv and record.json")
