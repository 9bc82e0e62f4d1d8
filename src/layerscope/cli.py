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
# piped or captured output has no terminal width: use a wide one so per-layer tables stay whole
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

# short column headers for the per-layer tables
SHORT_NAMES = {"prompt_entropy": "prompt H", "dataset_entropy": "dataset H", "curvature": "curv",
               "effective_rank": "eff rank", "entropy_rank": "exp(H)", "infonce": "InfoNCE", "lidar": "LiDAR",
               "dime": "DiME", "rankme": "RankMe", "avg_score": "avg score"}

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
DeviceOption = Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:1 ... | map (device_map='auto': a big model over all GPUs and the CPU)")]
DtypeOption = Annotated[str | None, typer.Option(help="float32 | bfloat16 | float16 (default: fp32 on CPU, bf16 on GPU)")]
CacheOption = Annotated[str | None, typer.Option("--cache-dir", help="Embedding cache folder (default: user cache).")]
NoCacheOption = Annotated[bool, typer.Option("--no-cache", help="Do not read or write the embedding cache.")]
TrustOption = Annotated[bool, typer.Option("--trust-remote-code", help="Allow model code from the hub (off by default).")]
EvalWorkersOption = Annotated[str, typer.Option("--eval-workers", help="Processes running the evaluators over layers, or auto (one per CPU).")]


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
    from layerscope.atomic import atomic_write_json

    atomic_write_json(path, payload)


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
    from layerscope.atomic import atomic_save_npy

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


def print_layer_table(frame: Any, title: str, marks: dict[int, str] | None = None) -> None:
    """Render a wide per-layer DataFrame (``layer``, ``depth_pct``, values...) as a rich table.

    ``marks`` maps a layer to a short label (e.g. "best (labels)") shown in a last column.
    """
    import math

    table = Table(title=title, title_justify="left")
    columns = [column for column in frame.columns if column not in ("layer", "depth_pct", "n_tasks")]
    table.add_column("layer", justify="right")
    table.add_column("depth %", justify="right")
    for column in columns:
        table.add_column(SHORT_NAMES.get(column, column.replace("_", " ")), justify="right")
    if marks:
        table.add_column("", justify="left")
    for row in frame.itertuples(index=False):
        record = row._asdict()
        cells = [str(int(record["layer"])), f"{record['depth_pct']:.0f}"]
        for column in columns:
            value = record[column]
            cells.append("-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4g}")
        if marks:
            cells.append(marks.get(int(record["layer"]), ""))
        style = "bold green" if marks and int(record["layer"]) in marks else None
        table.add_row(*cells, style=style)
    console.print(table)


@app.command("metrics")
def metrics_command(
    model: ModelOption = "smollm2-135m",
    dataset: DatasetOption = DEFAULT_DATASET,
    limit: LimitOption = 256,
    metrics: Annotated[str, typer.Option(help="all, or a comma list (layerscope metrics --list).")] = "all",
    n_views: Annotated[int, typer.Option("--n-views", help="Augmented views per text for LiDAR.")] = 16,
    out: Annotated[Path | None, typer.Option(help="Write metrics.csv, prompt_values.csv, record.json here.")] = None,
    list_metrics: Annotated[bool, typer.Option("--list", help="List the metrics and exit.")] = False,
    column: ColumnOption = None,
    revision: RevisionOption = None,
    pooling: PoolingOption = "mean",
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
    """Every representation-quality metric of every layer (SPEC section 4)."""
    from layerscope.metrics import available

    if list_metrics:
        table = Table(title="Metrics")
        for name in ("name", "level", "views", "select", "random", "description"):
            table.add_column(name, overflow="fold")
        for spec in available():
            table.add_row(spec.name, spec.level, str(spec.n_views), "max" if spec.higher_is_better else "min",
                          "yes" if spec.random else "no", spec.description)
        console.print(table)
        return
    from layerscope.analysis import per_layer_table
    from layerscope.data import load_texts
    from layerscope.metrics import resolve
    from layerscope.metrics.compute import compute_metrics

    resolve(metrics)  # a bad name fails before the model loads
    texts = load_texts(dataset, limit=limit, seed=seed, column=column)
    loaded = load(model, revision, final_norm, device, dtype, trust_remote_code)
    frame = compute_metrics(loaded, texts, metrics=metrics, n_views=n_views, seed=seed, pooling=pooling,
                            max_length=max_length, batch_size=parse_batch_size(batch_size),
                            cache_dir=resolve_cache(cache_dir, no_cache))
    print_layer_table(per_layer_table(frame), f"{loaded.model_id}: {len(texts)} texts from {dataset}")
    if out is not None:
        from layerscope.atomic import atomic_write_text

        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "metrics.csv", frame.to_csv(index=False))
        atomic_write_text(out / "prompt_values.csv", frame.attrs["prompt_values"].to_csv(index=False))
        write_json(out / "record.json", {**frame.attrs["record"], "dataset": dataset, "limit": limit})
        console.print(f"wrote {out / 'metrics.csv'}, prompt_values.csv and record.json")


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
        from layerscope.atomic import atomic_write_bytes

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
    eval_workers: EvalWorkersOption = "auto",
) -> None:
    """Score every layer on downstream tasks with MTEB's evaluators (texts encoded once)."""
    from layerscope.evaluate import evaluate_layers, resolve

    task_list = resolve(tasks, seed=seed)  # bad names fail before the model loads
    loaded = load(model, revision, final_norm, device, dtype, trust_remote_code)
    frame = evaluate_layers(loaded, task_list, layers=layers, pooling=pooling, seed=seed, max_length=max_length,
                            batch_size=parse_batch_size(batch_size), cache_dir=resolve_cache(cache_dir, no_cache),
                            eval_workers=_workers(eval_workers))
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
    eval_workers: EvalWorkersOption = "auto",
) -> None:
    """Score every layer on real MTEB tasks from the hub (default: the paper's 32; needs the network)."""
    from layerscope.evaluate import paper32, resolve, run_mteb
    from layerscope.hub import require_hub

    task_list = resolve(tasks, seed=seed)
    require_hub("layerscope mteb (MTEB hub tasks)")  # before loading the model
    loaded = load(model, revision, final_norm, device, dtype, trust_remote_code)
    frame = run_mteb(loaded, task_list, layers=layers, pooling=pooling, seed=seed, max_length=max_length,
                     batch_size=parse_batch_size(batch_size), cache_dir=resolve_cache(cache_dir, no_cache),
                     eval_workers=_workers(eval_workers))
    paper = set(paper32()) <= set(frame["task"])
    _evaluation_outputs(frame, out, f"{loaded.model_id}: MTEB, {len(task_list)} tasks, average per layer", paper=paper)


@app.command("analyze")
def analyze_command(
    model: ModelOption = "smollm2-135m",
    revision: RevisionOption = None,
    tasks: Annotated[str, typer.Option(help="offline (bundled suite), paper32 (needs the hub), or task names.")] = "offline",
    metrics: Annotated[str, typer.Option(help="all, or a comma list of metrics.")] = "all",
    dataset: Annotated[str | None, typer.Option("--dataset", "-d", help="Extra text source whose metrics are reported too.")] = None,
    limit: LimitOption = None,
    out: Annotated[Path, typer.Option(help="Output folder: results.duckdb, plots, report.html.")] = Path("runs/analyze"),
    select_by: Annotated[str, typer.Option("--select-by", help="Metric that picks the layer without labels.")] = "dime",
    n_views: Annotated[int, typer.Option("--n-views", help="Views per text for LiDAR.")] = 16,
    view_texts: Annotated[int, typer.Option("--view-texts", help="Texts per task given 2 views (InfoNCE, DiME).")] = 16,
    lidar_texts: Annotated[int, typer.Option("--lidar-texts", help="Texts per task given --n-views views (LiDAR; their first 2 serve InfoNCE and DiME).")] = 3,
    pooling: PoolingOption = "mean",
    final_norm: FinalNormOption = "none",
    max_length: MaxLengthOption = 512,
    batch_size: BatchOption = "auto",
    seed: SeedOption = 0,
    device: DeviceOption = "auto",
    dtype: DtypeOption = None,
    cache_dir: CacheOption = None,
    no_cache: NoCacheOption = False,
    trust_remote_code: TrustOption = False,
    eval_workers: EvalWorkersOption = "auto",
) -> None:
    """The main job: every metric and every task score at every layer; which layer, and why."""
    from layerscope.pipeline import analyze

    result = analyze(model=model, revision=revision, tasks=tasks, metrics=metrics, dataset=dataset, limit=limit,
                     out=out, n_views=n_views, view_texts=view_texts, lidar_texts=lidar_texts, select_by=select_by,
                     seed=seed, pooling=pooling, final_norm=final_norm, max_length=max_length,
                     batch_size=parse_batch_size(batch_size), cache_dir=resolve_cache(cache_dir, no_cache),
                     device=device, dtype=dtype, trust_remote_code=trust_remote_code,
                     eval_workers=_workers(eval_workers))
    print_analysis(result)


def print_analysis(result: Any) -> None:
    """The per-layer table with the best and the label-free layers marked, then the selection summary."""
    marks: dict[int, str] = {}
    if result.chosen_layer is not None:
        marks[result.chosen_layer] = f"<- min {result.chosen_by} (no labels)" if not _higher(result.chosen_by) \
            else f"<- max {result.chosen_by} (no labels)"
    if result.best_layer is not None:
        marks[result.best_layer] = "<- best (labels)" + (" = no labels" if result.best_layer in marks and
                                                          result.best_layer == result.chosen_layer else "")
    model = result.record["model"]
    print_layer_table(result.layer_table, f"{model['model_id']}: {model['num_layers'] + 1} layers, "
                      f"{result.record['n_kept']} texts, {result.scores['task'].nunique()} tasks "
                      "(metrics on all task texts; avg score x 100)", marks)
    selection = result.selection
    table = Table(title="Layer choice per task (Table 2 of the paper): average task score x 100", title_justify="left")
    for column in ("rule", "layer", "depth %", "average", "vs last"):
        table.add_column(column, justify="right" if column != "rule" else "left")
    for row in selection.itertuples(index=False):
        table.add_row(str(row.rule), str(row.layer), f"{row.depth_pct:.0f}", f"{row.average:.1f}",
                      f"{row.gain_vs_last:+.1f}")
    console.print(table)
    average = result.scores.groupby("layer")["main_score"].mean() * 100
    last = int(average.index.max())
    if result.best_layer is not None:
        console.print(f"best layer with labels: {result.best_layer} ({average[result.best_layer]:.1f}), "
                      f"last layer {last} ({average[last]:.1f}): {average[result.best_layer] - average[last]:+.1f} points")
    if result.chosen_layer is not None:
        console.print(f"chosen without labels ({result.chosen_by} on all texts): layer {result.chosen_layer} "
                      f"({average[result.chosen_layer]:.1f}, {average[result.chosen_layer] - average[last]:+.1f} vs last)")
    console.print(f"results: {result.out / 'results.duckdb'}" + (f"; report: {result.report}" if result.report else "")
                  + f"; {result.record['timings'].get('total_s', 0):.0f} s")


@app.command("report")
def report_command(
    directory: Annotated[Path, typer.Argument(help="Output folder of a run (holds results.duckdb).")],
    run_id: Annotated[str | None, typer.Option("--run-id", help="Run to report (default: the latest).")] = None,
    out: Annotated[Path | None, typer.Option(help="HTML file to write (default: DIR/report.html).")] = None,
    select_by: Annotated[str | None, typer.Option("--select-by", help="Metric of the label-free choice.")] = None,
) -> None:
    """Rebuild the self-contained HTML report (plots embedded) from a run's database."""
    from layerscope.report import build_report

    with err_console.status("building the report"):
        path = build_report(directory, run_id=run_id, out=out, select_by=select_by)
    console.print(f"report: {path}")


@app.command("compare")
def compare_command(
    directories: Annotated[list[Path], typer.Argument(help="Output folders of two or more runs.")],
    out: Annotated[Path, typer.Option(help="Folder (or .html file) of the comparison.")] = Path("runs/compare"),
    all_runs: Annotated[bool, typer.Option("--all-runs", help="Every run of each folder, not only the latest.")] = False,
) -> None:
    """Overlay several runs (models, revisions) on depth %, with their selection tables side by side."""
    from layerscope.report import compare_runs

    with err_console.status("comparing runs"):
        path = compare_runs(directories, out, all_runs=all_runs)
    console.print(f"comparison: {path}")


@app.command("sweep")
def sweep_command(
    sweep_file: Annotated[Path, typer.Argument(help="Sweep file (.yaml or .json): models, revisions, datasets, options.")],
    backend: Annotated[str, typer.Option(help="local (units in turn) | ray (Ray tasks on a local or remote cluster)")] = "local",
    out: Annotated[Path | None, typer.Option(help="Sweep folder (default: the file's 'out').")] = None,
    address: Annotated[str | None, typer.Option(help="Ray cluster to join (auto, ray://host:10001); default: local Ray.")] = None,
    cpus_per_unit: Annotated[float, typer.Option("--cpus-per-unit", help="CPUs Ray reserves per unit (its torch threads).")] = 1,
    gpus_per_unit: Annotated[float, typer.Option("--gpus-per-unit", help="GPUs Ray reserves per unit.")] = 0,
    num_cpus: Annotated[int | None, typer.Option("--num-cpus", help="CPUs of a local Ray instance (default: all).")] = None,
    no_resume: Annotated[bool, typer.Option("--no-resume", help="Rerun units already done.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list the units and whether they are done.")] = False,
) -> None:
    """Many (model, revision, dataset) runs as resumable units, in turn or on a Ray cluster (SPEC section 8)."""
    from layerscope.sweep import load_sweep, run_sweep, unit_status

    spec = load_sweep(sweep_file)
    root = out or spec.out
    units = spec.units()
    if dry_run:
        table = Table(title=f"{sweep_file}: {len(units)} units of job '{spec.job}' -> {root}")
        for column in ("unit", "model", "revision", "dataset", "status"):
            table.add_column(column)
        for unit in units:
            status = unit_status(unit, root)
            table.add_row(unit.unit_id, unit.model, unit.revision or "-", unit.dataset or "-",
                          status["status"] if status else "to run")
        console.print(table)
        return

    def announce(unit: Any, status: dict[str, Any]) -> None:
        detail = f"{status.get('seconds', 0):.0f} s" if status["status"] == "done" else status.get("error", "")
        console.print(f"{'done' if status['status'] == 'done' else '[red]failed[/]'}: {unit.label} ({detail})",
                      highlight=False)

    result = run_sweep(spec, backend=backend, out=root, resume=not no_resume, address=address,
                       cpus_per_unit=cpus_per_unit, gpus_per_unit=gpus_per_unit, num_cpus=num_cpus, on_unit=announce)
    table = Table(title=f"sweep {sweep_file} ({backend}): {len(result.units)} units")
    for column in ("unit", "status", "seconds", "best layer", "label-free layer", "error"):
        table.add_column(column, overflow="fold")
    for row in result.units.itertuples(index=False):
        table.add_row(row.label, row.status, "-" if row.seconds is None or row.seconds != row.seconds else f"{row.seconds:.0f}",
                      _cell(row.best_layer), _cell(row.chosen_layer), row.error or "")
    console.print(table)
    console.print(f"results: {result.out / 'results.duckdb'} ({len(result.merged_runs)} runs)"
                  + (f"; comparison: {result.compare}" if result.compare else ""))
    if len(result.failed):
        raise LayerscopeError(f"{len(result.failed)} of {len(result.units)} units failed; rerun the sweep to retry them")


def _workers(value: str) -> int | str:
    from layerscope.evaluate.runner import resolve_workers

    return "auto" if value == "auto" else resolve_workers(value, 1 << 30)


def _cell(value: Any) -> str:
    return "-" if value is None or (isinstance(value, float) and value != value) else str(int(value))


def _experiment_help() -> str:
    lines = ["The paper's further experiments (SPEC section 7). NAME is one of:"]
    try:
        from layerscope.experiments import EXPERIMENTS

        for experiment in EXPERIMENTS.values():
            options = ", ".join(f"{key}" for key in experiment.options())
            lines.append(f"\b\n  {experiment.name}: {experiment.description} [options: {options}]")
    except Exception:  # the help text must never break the CLI
        pass
    lines.append("\b\nExperiment-specific options go as --set key=value (repeatable; lists as comma strings).")
    return "\n\n".join(lines)


@app.command("experiment", help=_experiment_help())
def experiment_command(
    name: Annotated[str, typer.Argument(help="Experiment name (see above).")],
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model (alias, hub id, folder).")] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", "-d", help="Text source.")] = None,
    limit: LimitOption = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (default runs/experiments/NAME).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed.")] = None,
    max_length: Annotated[int | None, typer.Option("--max-length", help="Truncate prompts to this many tokens.")] = None,
    revision: RevisionOption = None,
    settings: Annotated[list[str] | None, typer.Option("--set", help="key=value option of the experiment.")] = None,
    report: Annotated[bool, typer.Option(help="Build report.html in the output folder.")] = True,
) -> None:
    """Run one of the paper's further experiments; results go to results.duckdb, PNGs and a report."""
    from layerscope.experiments import get, run_cli

    experiment = get(name)  # unknown names fail with a suggestion before anything runs
    options: dict[str, Any] = {"model": model, "dataset": dataset, "limit": limit, "out": out, "seed": seed,
                               "max_length": max_length, "revision": revision}
    options = {key: value for key, value in options.items() if value is not None and key in experiment.options()}
    for setting in settings or []:
        key, separator, value = setting.partition("=")
        if not separator or not key.strip():
            raise LayerscopeError(f"--set takes key=value, got '{setting}'")
        options[key.strip().replace("-", "_")] = _parse_value(value.strip())
    folder = run_cli(experiment.name, **options)
    summary_path = folder / f"{experiment.key}_summary.json"
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        console.print_json(json.dumps(summary.get("summary", {}), default=str))
    if report:
        from layerscope.report import build_report

        try:
            console.print(f"report: {build_report(folder)}")
        except LayerscopeError as error:
            console.print(f"(no report: {error})")
    console.print(f"results: {folder}")


def _parse_value(value: str) -> Any:
    """``3`` -> 3, ``0.5`` -> 0.5, ``true`` -> True, anything else stays a string (lists stay comma strings)."""
    lowered = value.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def _higher(metric: str) -> bool:
    from layerscope.metrics import get

    return bool(get(metric).higher_is_better)


def main() -> None:
    """Entry point: user errors print one line (no traceback) and exit with status 2."""
    logging.basicConfig(level=os.environ.get("LAYERSCOPE_LOG", "WARNING"), format="%(levelname)s %(name)s: %(message)s")
    for name in ("transformers", "huggingface_hub", "datasets", "mteb"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # transformers sets its own log level when first imported (later, lazily): tell it through its
    # environment variable, and keep its per-load "Loading weights" bars out of our progress display
    # (hub downloads keep their bars); neither imports transformers here (~1 s on every command)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from layerscope.models.loading import show_load_bars

    show_load_bars(False)
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
