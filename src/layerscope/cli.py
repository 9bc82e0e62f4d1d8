"""The ``layerscope`` command line: every subcommand is a thin call into the library."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from layerscope.errors import LayerscopeError

app = typer.Typer(
    name="layerscope",
    help="Layer-by-layer analysis of the hidden representations of neural networks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

# short texts (review snippets): the default run takes a minute on a laptop CPU
DEFAULT_DATASET = "rotten-tomatoes"

# Options shared by several commands.
ModelOption = Annotated[str, typer.Option("--model", "-m", help="Bundled alias, HF hub id, local folder or .gguf file.")]
RevisionOption = Annotated[str | None, typer.Option(help="Hub revision (e.g. Pythia's step64000).")]
DatasetOption = Annotated[str, typer.Option("--dataset", "-d", help="Bundled corpus, file (.txt/.jsonl/.csv/.parquet) or HF dataset.")]
LimitOption = Annotated[int | None, typer.Option(help="Use a seeded random subset of this many texts.")]
ColumnOption = Annotated[str | None, typer.Option(help="Text column of table files and HF datasets.")]
PoolingOption = Annotated[str, typer.Option(help="mean | last | first")]
FinalNormOption = Annotated[str, typer.Option("--final-norm", help="none (raw residual stream) | all (final norm on every layer)")]
MaxLengthOption = Annotated[int, typer.Option("--max-length", help="Truncate texts to this many tokens.")]
BatchOption = Annotated[str, typer.Option("--batch-size", help="Texts per batch, or auto.")]
SeedOption = Annotated[int, typer.Option(help="Seed of subsets, views and evaluations.")]
DeviceOption = Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:1 ...")]
DtypeOption = Annotated[str | None, typer.Option(help="float32 | bfloat16 | float16 (default: fp32 on CPU, bf16 on GPU)")]
CacheOption = Annotated[str | None, typer.Option("--cache-dir", help="Embedding cache folder (default: user cache).")]
NoCacheOption = Annotated[bool, typer.Option("--no-cache", help="Do not read or write the embedding cache.")]
TrustOption = Annotated[bool, typer.Option("--trust-remote-code", help="Allow model code from the hub (off by default).")]


def default_cache_dir() -> str:
    """The embedding cache of the CLI: ``$LAYERSCOPE_CACHE/embeddings`` or the user cache directory."""
    root = os.environ.get("LAYERSCOPE_CACHE")
    if root:
        return str(Path(root) / "embeddings")
    import platformdirs

    return str(Path(platformdirs.user_cache_dir("layerscope")) / "embeddings")


def resolve_cache(cache_dir: str | None, no_cache: bool) -> str | None:
    return None if no_cache else (cache_dir or default_cache_dir())


def parse_batch_size(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise LayerscopeError(f"--batch-size must be an integer or 'auto', got '{value}'") from None


def load(model: str, revision: str | None = None, final_norm: str = "none", device: str = "auto",
         dtype: str | None = None, trust_remote_code: bool = False) -> Any:
    from layerscope.models import load_model

    with err_console.status(f"loading {model}"):
        return load_model(model, revision=revision, dtype=dtype, device=device, final_norm=final_norm,
                          trust_remote_code=trust_remote_code)


def write_json(path: Path, payload: Any) -> None:
    from layerscope.extract.cache import atomic_write_bytes

    atomic_write_bytes(path, json.dumps(payload, indent=1, default=str).encode())


@app.command("models")
def models_command() -> None:
    """List the bundled offline models and whether their packages are installed."""
    from layerscope.models import BUNDLED

    table = Table(title="Bundled models (offline)")
    for column in ("alias", "model", "layers", "width", "installed", "package", "license"):
        table.add_column(column)
    for bundled in BUNDLED.values():
        table.add_row(bundled.alias, bundled.hub_id, str(bundled.layers), str(bundled.hidden_size),
                      "yes" if bundled.installed() else "no", bundled.pip, bundled.license)
    console.print(table)
    console.print("Any Hugging Face id or local folder also works where the hub is reachable.")


@app.command("datasets")
def datasets_command() -> None:
    """List the bundled text corpora (read from installed packages, no network)."""
    from layerscope.data import available

    table = Table(title="Bundled corpora")
    for column in ("name", "texts", "labels", "installed", "description", "source"):
        table.add_column(column, overflow="fold")
    for info in available():
        table.add_row(info.name, str(info.size), info.labels, "yes" if info.installed else "no",
                      info.description, info.source)
    console.print(table)
    console.print("Also: files (.txt one text per line; .jsonl/.csv/.parquet with --column) and HF datasets online.")


def layer_summary(pooled: Any, num_layers: int) -> list[dict[str, float]]:
    """Per-layer mean norm and anisotropy (mean cosine between different texts) of pooled embeddings."""
    import numpy as np
    import torch

    stack = torch.from_numpy(np.array(pooled, dtype=np.float64))  # (layers, n, d)
    norms = stack.norm(dim=-1)
    unit = stack / norms.clamp_min(1e-12)[..., None]
    n = stack.shape[1]
    summed = unit.sum(1)
    mean_cos = ((summed * summed).sum(-1) - n) / max(n * (n - 1), 1)
    return [
        {"layer": layer, "depth_pct": 100.0 * layer / num_layers, "mean_norm": float(norms[layer].mean()),
         "anisotropy": float(mean_cos[layer])}
        for layer in range(stack.shape[0])
    ]


@app.command("extract")
def extract_command(
    model: ModelOption = "smollm2-135m",
    dataset: DatasetOption = DEFAULT_DATASET,
    limit: LimitOption = 256,
    pooling: PoolingOption = "mean",
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("runs/extract"),
    column: ColumnOption = None,
    revision: RevisionOption = None,
    final_norm: FinalNormOption = "none",
    max_length: MaxLengthOption = 512,
    batch_size: BatchOption = "auto",
    seed: SeedOption = 0,
    device: DeviceOption = "auto",
    dtype: DtypeOption = None,
    cache_dir: CacheOption = None,
    no_cache: NoCacheOption = False,
    trust_remote_code: TrustOption = False,
) -> None:
    """Pooled embeddings of every layer in one pass; writes embeddings.npy and record.json."""
    import numpy as np

    from layerscope.data import load_texts
    from layerscope.extract import extract

    texts = load_texts(dataset, limit=limit, seed=seed, column=column)
    loaded = load(model, revision, final_norm, device, dtype, trust_remote_code)
    result = extract(loaded, texts, pooling=pooling, max_length=max_length, batch_size=parse_batch_size(batch_size),
                     cache_dir=resolve_cache(cache_dir, no_cache))
    out.mkdir(parents=True, exist_ok=True)
    from layerscope.extract.cache import atomic_save_npy

    atomic_save_npy(out / "embeddings.npy", np.asarray(result.pooled))
    record = {**result.record, "dataset": dataset, "limit": limit, "seed": seed, "layers": result.layers}
    write_json(out / "record.json", record)
    table = Table(title=f"{loaded.model_id}: {len(result.texts)} texts from {dataset}, {pooling} pooling")
    for column_name in ("layer", "depth %", "mean norm", "anisotropy (mean cos)"):
        table.add_column(column_name, justify="right")
    for row in layer_summary(result.pooled, loaded.num_layers):
        table.add_row(str(row["layer"]), f"{row['depth_pct']:.0f}", f"{row['mean_norm']:.3g}", f"{row['anisotropy']:.3f}")
    console.print(table)
    skipped = record["n_skipped_empty"]
    console.print(f"embeddings {tuple(result.pooled.shape)} -> {out / 'embeddings.npy'}; record -> {out / 'record.json'}"
                  + (f"; {skipped} empty texts skipped" if skipped else "")
                  + ("; read from cache" if result.from_cache else f"; {record.get('time_s', 0):.1f} s"))


# --- commands of other stages are added below this line ----------------------------------------


TasksOption = Annotated[str, typer.Option("--tasks", "-t", help="offline | paper32 | comma-separated task names.")]
LayersOption = Annotated[str, typer.Option(help="all | last | comma-separated layer indices.")]


@app.command("tasks")
def tasks_command() -> None:
    """List the offline downstream tasks (bundled data, no network) and the paper's 32 hub tasks."""
    from layerscope.evaluate.tasks import describe_offline, paper32

    table = Table(title="Offline task suite (MTEB task classes over bundled data)")
    for column in ("task", "type", "texts", "main score", "source", "license"):
        table.add_column(column, overflow="fold")
    for info in describe_offline():
        table.add_row(info.name, info.type, str(info.n_texts), info.main_score, info.source, info.license)
    console.print(table)
    console.print("paper32 (MTEB hub tasks, need the network): " + ", ".join(paper32()))


def _evaluation_outputs(frame: Any, out: Path | None, title: str, paper: bool = False) -> None:
    from layerscope.evaluate import best_and_last, layer_table, paper32_average

    summary = layer_table(frame)
    if paper:
        summary = summary.merge(paper32_average(frame)[["layer", "average"]].rename(columns={"average": "paper32"}), on="layer")
    best = best_and_last(frame)
    table = Table(title=title)
    columns = [c for c in summary.columns if c != "layer"]
    table.add_column("layer", justify="right")
    for column in columns:
        table.add_column("depth %" if column == "depth_pct" else column, justify="right")
    for row in summary.itertuples(index=False):
        values = row._asdict()
        mark = " *" if values["layer"] == best["best_layer"] else ""
        table.add_row(f"{values['layer']}{mark}", *(f"{values[c]:.0f}" if c == "depth_pct" else f"{values[c]:.2f}" for c in columns))
    console.print(table)
    seconds = frame.attrs.get("record", {}).get("seconds", {})
    console.print(f"best layer {best['best_layer']} ({best['best_average']:.2f}) vs last layer {best['last_layer']} "
                  f"({best['last_average']:.2f}); scores are MTEB main scores x 100"
                  + (f"; {seconds['total']:.0f} s" if "total" in seconds else ""))
    if out is not None:
        from layerscope.extract.cache import atomic_write_bytes

        out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out / "scores.csv", frame.to_csv(index=False).encode())
        atomic_write_bytes(out / "layers.csv", summary.to_csv(index=False).encode())
        write_json(out / "record.json", frame.attrs.get("record", {}))
        console.print(f"scores -> {out / 'scores.csv'}, per-layer summary -> {out / 'layers.csv'}, record -> {out / 'record.json'}")


@app.command("evaluate")
def evaluate_command(
    model: ModelOption = "smollm2-135m",
    tasks: TasksOption = "offline",
    layers: LayersOption = "all",
    out: Annotated[Path | None, typer.Option(help="Output folder (scores.csv, layers.csv, record.json).")] = None,
    pooling: PoolingOption = "mean",
    revision: RevisionOption = None,
    final_norm: FinalNormOption = "none",
    max_length: MaxLengthOption = 512,
    batch_size: BatchOption = "auto",
    seed: SeedOption = 0,
    device: DeviceOption = "auto",
    dtype: DtypeOption = None,
    cache_dir: CacheOption = None,
    no_cache: NoCacheOption = False,
    trust_remote_code: TrustOption = False,
) -> None:
    """Score every layer on downstream tasks with MTEB's evaluators (texts encoded once)."""
    from layerscope.evaluate import evaluate_layers, resolve

    task_list = resolve(tasks, seed=seed)  # bad names fail before the model loads
    loaded = load(model, revision, final_norm, device, dtype, trust_remote_code)
    frame = evaluate_layers(loaded, task_list, layers=layers, pooling=pooling, seed=seed, max_length=max_length,
                            batch_size=parse_batch_size(batch_size), cache_dir=resolve_cache(cache_dir, no_cache))
    _evaluation_outputs(frame, out, f"{loaded.model_id}: {len(task_list)} tasks, {pooling} pooling, average per layer")


@app.command("mteb")
def mteb_command(
    model: ModelOption = "smollm2-135m",
    tasks: TasksOption = "paper32",
    layers: LayersOption = "all",
    out: Annotated[Path | None, typer.Option(help="Output folder (scores.csv, layers.csv, record.json).")] = None,
    pooling: PoolingOption = "mean",
    revision: RevisionOption = None,
    final_norm: FinalNormOption = "none",
    max_length: MaxLengthOption = 512,
    batch_size: BatchOption = "auto",
    seed: SeedOption = 0,
    device: DeviceOption = "auto",
    dtype: DtypeOption = None,
    cache_dir: CacheOption = None,
    no_cache: NoCacheOption = False,
    trust_remote_code: TrustOption = False,
) -> None:
    """Score every layer on real MTEB tasks from the hub (default: the paper's 32; needs the network)."""
    from layerscope.evaluate import paper32, resolve, run_mteb
    from layerscope.hub import require_hub

    task_list = resolve(tasks, seed=seed)
    require_hub("layerscope mteb (MTEB hub tasks)")  # before loading the model
    loaded = load(model, revision, final_norm, device, dtype, trust_remote_code)
    frame = run_mteb(loaded, task_list, layers=layers, pooling=pooling, seed=seed, max_length=max_length,
                     batch_size=parse_batch_size(batch_size), cache_dir=resolve_cache(cache_dir, no_cache))
    paper = set(paper32()) <= set(frame["task"])
    _evaluation_outputs(frame, out, f"{loaded.model_id}: MTEB, {len(task_list)} tasks, average per layer", paper=paper)


def main() -> None:
    """Entry point: user errors print one line (no traceback) and exit with status 2."""
    logging.basicConfig(level=os.environ.get("LAYERSCOPE_LOG", "WARNING"), format="%(levelname)s %(name)s: %(message)s")
    for name in ("transformers", "huggingface_hub", "datasets", "mteb"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        app(standalone_mode=False)
    except LayerscopeError as error:
        err_console.print(f"[bold red]error:[/] {error}", highlight=False, markup=True, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted: finished batches are kept in the cache and store; rerun to resume")
        sys.exit(130)
    except Exception as error:  # click usage errors carry their own exit code
        import click

        if isinstance(error, click.exceptions.ClickException):
            error.show()
            sys.exit(error.exit_code)
        if isinstance(error, click.exceptions.Abort):
            sys.exit(130)
        raise


if __name__ == "__main__":
    main()
