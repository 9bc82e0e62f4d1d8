"""The ``layerscope`` command line: every subcommand is a thin call into the library.

The options shared by several commands come from the configuration classes of
:mod:`layerscope.config` (their fields' help texts and flags): :func:`configured` adds them to a
command and hands it the built, validated configurations, so each option is declared once.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import logging
import os
import signal
import sys
import typing
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from layerscope.config import (
    AnalysisConfig,
    Config,
    ExtractConfig,
    IntervalConfig,
    ModelConfig,
    SelectConfig,
    TaskFileConfig,
    TextConfig,
    ViewConfig,
    option,
)
from layerscope.errors import LayerscopeError

app = typer.Typer(
    name="layerscope",
    help="Layer-by-layer analysis of the hidden representations of neural networks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts are shown as written: "[options: ...]" is text, not markup
)
# piped or captured output has no terminal width: use a wide one so per-layer tables stay whole
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

# short texts (review snippets): the default run takes a minute on a laptop CPU
DEFAULT_DATASET = "rotten-tomatoes"
#: Texts of a bundled corpus used by extract and metrics unless --limit says otherwise.
DEFAULT_CORPUS_LIMIT = 256
# What the Ctrl-C line of main() needs: the embedding cache in use, and the interrupt raised
_SESSION: dict[str, Any] = {"cache": None, "interrupt": None}


# ------------------------------------------------------------------------------------------ options


@dataclasses.dataclass(frozen=True)
class CacheOptions(Config):
    """Where embeddings are cached (not part of a run's configuration: it does not change a result)."""

    cache_dir: str | None = option(None, "Embedding cache folder (default: $LAYERSCOPE_CACHE or the user cache).")
    no_cache: bool = option(False, "Do not read or write the embedding cache.")

    def usable(self) -> CacheOptions:
        """These options, or no cache if the folder cannot be written: that costs speed, not the run
        (one warning line, before any work; :func:`configured` checks every command's cache so)."""
        from layerscope.atomic import writable_directory

        if self.no_cache:
            return self
        try:
            writable_directory(self.cache_dir or default_cache_dir(), "cache folder")
        except LayerscopeError as error:
            err_console.print(f"warning: {error} (running without the embedding cache)", highlight=False,
                              soft_wrap=True)
            return self.replace(no_cache=True)
        return self

    def resolve(self) -> str | None:
        """The cache folder to use, or None."""
        folder = None if self.no_cache else (self.cache_dir or default_cache_dir())
        _SESSION["cache"] = folder
        return folder


def default_cache_dir() -> str:
    """The embedding cache of the CLI: ``$LAYERSCOPE_CACHE/embeddings`` or the user cache directory."""
    root = os.environ.get("LAYERSCOPE_CACHE")
    if root:
        return str(Path(root) / "embeddings")
    import platformdirs

    return str(Path(platformdirs.user_cache_dir("layerscope")) / "embeddings")


def _cli_type(hint: Any) -> Any:
    """The type typer parses a field as: unions and tuples come in as text (the configuration parses them)."""
    args = set(typing.get_args(hint))
    if hint in (str, int, bool) or args in ({str, type(None)}, {int, type(None)}, {bool, type(None)}):
        return hint
    return str | None if type(None) in args else str


def _cli_value(hint: Any, value: Any) -> Any:
    """A command-line value as the field wants it (``"8"`` -> 8 for ``int | str`` fields such as batch size)."""
    if isinstance(value, str) and set(typing.get_args(hint)) >= {int, str}:
        try:
            return int(value)
        except ValueError:
            return value
    return value


def _config_options(cls: type[Config], defaults: dict[str, Any]) -> list[inspect.Parameter]:
    """One typer option per command-line field of ``cls`` (nested configurations are other groups)."""
    hints = typing.get_type_hints(cls)
    parameters = []
    for item in dataclasses.fields(cls):
        meta = item.metadata
        if not meta or not meta.get("cli", True):
            continue
        default = defaults.get(item.name, item.default)
        if isinstance(default, tuple):
            default = ",".join(default)
        declarations = [meta.get("flag") or "--" + item.name.replace("_", "-")]
        if meta.get("short"):
            declarations.append(meta["short"])
        annotation = Annotated[_cli_type(hints[item.name]), typer.Option(*declarations, help=meta["help"])]
        parameters.append(inspect.Parameter(item.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                            annotation=annotation))
    return parameters


@dataclasses.dataclass(frozen=True)
class Group:
    """A configuration class offered as options, with the command's own defaults.

    ``optional``: the group is None when its first field is not given (``--dataset`` of analyze).
    """

    cls: type[Config]
    defaults: dict[str, Any] = dataclasses.field(default_factory=dict)
    optional: bool = False


def _flag(cls: type[Config], name: str) -> str:
    """The command-line flag of a configuration field (``limit`` -> ``--limit``)."""
    item = next(item for item in dataclasses.fields(cls) if item.name == name)
    return item.metadata.get("flag") or "--" + name.replace("_", "-")


def _reject_unused(cls: type[Config], first: str, values: dict[str, Any], added: dict[str, inspect.Parameter],
                   shared: set[str]) -> None:
    """An optional group left out (no ``--dataset``) takes none of its other options: say so, not ignore them."""
    for item in dataclasses.fields(cls):
        name = item.name
        if name == first or name not in added or name in shared:
            continue
        if values[name] != added[name].default:
            raise LayerscopeError(f"{_flag(cls, name)} needs {_flag(cls, first)}: without it, {_flag(cls, name)} "
                                  "would be ignored")


def configured(**groups: type[Config] | Group) -> Callable[[Callable[..., Any]], Any]:
    """Give a command the options of configuration classes, and call it with the built configurations.

    ``groups`` maps the command's parameter names to a configuration class, or to a :class:`Group`
    where the command wants other defaults. A field shared by two groups (e.g. ``seed``) is one
    option feeding both. A group whose class has a nested configuration field of the same name as
    another group receives that group's value (``AnalysisConfig.model`` <- the ``model`` group).
    """
    specs = {name: spec if isinstance(spec, Group) else Group(spec) for name, spec in groups.items()}

    def decorate(command: Callable[..., Any]) -> Any:
        own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.name not in groups]
        added: dict[str, inspect.Parameter] = {}
        owners: dict[str, int] = {}
        for spec in specs.values():
            for parameter in _config_options(spec.cls, spec.defaults):
                added.setdefault(parameter.name, parameter)
                owners[parameter.name] = owners.get(parameter.name, 0) + 1
        shared = {name for name, count in owners.items() if count > 1}  # e.g. seed: used by another group too

        @functools.wraps(command)
        def wrapper(**values: Any) -> Any:
            built: dict[str, Any] = {}
            for group, spec in specs.items():
                hints = typing.get_type_hints(spec.cls)
                fields = dataclasses.fields(spec.cls)
                kwargs = {item.name: _cli_value(hints[item.name], values[item.name])
                          for item in fields if item.name in added}
                kwargs.update({item.name: built[item.name] for item in fields if item.name in built})
                missing = spec.optional and kwargs.get(fields[0].name) is None
                if missing:
                    _reject_unused(spec.cls, fields[0].name, values, added, shared)
                built[group] = None if missing else spec.cls(**kwargs)
                if isinstance(built[group], CacheOptions):
                    built[group] = built[group].usable()
                if isinstance(built[group], ModelConfig):  # a device or a path that cannot work: before the texts
                    from layerscope.models.loading import check_source

                    check_source(built[group].model, built[group].device)
            return command(**{p.name: values[p.name] for p in own}, **built)

        wrapper.__signature__ = inspect.Signature([*own, *added.values()])  # type: ignore[attr-defined]
        wrapper.__annotations__ = {}
        return wrapper

    return decorate


OutOption = Annotated[Path | None, typer.Option(help="Output folder.")]
ScoresOutOption = Annotated[Path | None, typer.Option(help="Output folder (scores.csv, layers.csv, record.json).")]
EvalWorkersOption = Annotated[str, typer.Option("--eval-workers", help="Processes running the evaluators over "
                                                "layers, or auto (one per CPU).")]
LayersOption = Annotated[str, typer.Option(help="all | last | comma-separated layer indices.")]
TasksOption = Annotated[str, typer.Option("--tasks", "-t", help="offline | paper32 | task names | task files (.csv, "
                                          ".tsv, .jsonl, .parquet), comma-separated.")]
EvalSeedOption = Annotated[int | None, typer.Option("--seed", help="Seed of every evaluation (default: each MTEB task's "
                                                    "own seed, 42, as a plain MTEB run).")]


def output_folder(out: Path | None) -> Path | None:
    """``--out`` checked writable before any work (one-line error otherwise)."""
    from layerscope.atomic import writable_directory

    return None if out is None else writable_directory(out, "--out")


def load(model: ModelConfig, extraction: ExtractConfig | None = None) -> Any:
    """Load the model with a status line (errors stay one line)."""
    with err_console.status(f"loading {model.model}"):
        return model.load(extraction.final_norm if extraction else "none")


def say(line: str) -> None:
    """A line about the work ahead (the views budget, the time estimate) on stderr, beside the progress bars."""
    err_console.print(line, highlight=False, soft_wrap=True)


def write_json(path: Path, payload: Any) -> None:
    from layerscope.atomic import atomic_write_json

    atomic_write_json(path, payload)


def _workers(value: str) -> int | str:
    from layerscope.evaluate.runner import resolve_workers

    return "auto" if value == "auto" else resolve_workers(value, 1 << 30)


def _corpus_rows(texts: TextConfig) -> tuple[Any, TextConfig]:
    """The texts of a source with their row ids; a bundled corpus without --limit gets the default
    subset (said so)."""
    from layerscope.data import bundled

    if texts.limit is None and texts.dataset in bundled.names():
        texts = texts.replace(limit=DEFAULT_CORPUS_LIMIT)
    rows = texts.rows()
    err_console.print(f"{len(rows.texts)} texts from {texts.dataset}"
                      + (f" (seeded subset of --limit {texts.limit})" if texts.limit else ""), highlight=False)
    return rows, texts


def _corpus_texts(texts: TextConfig) -> tuple[list[str], TextConfig]:
    """The texts of a source (see :func:`_corpus_rows`)."""
    rows, texts = _corpus_rows(texts)
    return rows.texts, texts


# ------------------------------------------------------------------------------------------ listings


def print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[str]], **column_options: Any) -> None:
    """Print a table of ``rows`` under ``columns``; ``column_options`` (e.g. ``overflow``) apply to every column."""
    table = Table(title=title)
    for column in columns:
        table.add_column(column, **column_options)
    for row in rows:
        table.add_row(*row)
    console.print(table)


@app.command("models")
def models_command() -> None:
    """List the bundled offline models and whether their packages are installed."""
    from layerscope.models import BUNDLED

    print_table("Bundled models (offline)", ("alias", "model", "layers", "width", "installed", "package", "license"),
                ((bundled.alias, bundled.hub_id, str(bundled.layers), str(bundled.hidden_size),
                  "yes" if bundled.installed() else "no", bundled.pip, bundled.license) for bundled in BUNDLED.values()))
    console.print("Any Hugging Face id or local folder also works where the hub is reachable.")


@app.command("datasets")
def datasets_command() -> None:
    """List the bundled text corpora (read from installed packages, no network)."""
    from layerscope.data import available

    print_table("Bundled corpora", ("name", "texts", "labels", "installed", "description", "source"),
                ((info.name, str(info.size), info.labels, "yes" if info.installed else "no", info.description,
                  info.source) for info in available()), overflow="fold")
    print_fetched_sources()
    console.print("Also: files (.txt one text per line; .jsonl/.csv/.parquet with --column) and HF datasets online.")


def print_fetched_sources() -> None:
    """The registry archives the offline suite's v2 tasks read, and whether each is in the data cache."""
    from layerscope.data.fetch import SOURCES, data_cache_dir
    from layerscope.data.fetched import FETCHED

    corpora = {name: ", ".join(c.name for c in FETCHED.values() if c.fetch == name) for name in SOURCES}
    print_table(f"Fetched sources (suite v2 data; cache: {data_cache_dir()})",
                ("name", "package", "registry", "fetched", "corpora", "license"),
                ((item.name, item.spec, item.registry, "yes" if item.fetched else "no", corpora[item.name], item.license)
                 for item in SOURCES.values()), overflow="fold")
    console.print("Fetch them with `layerscope data fetch --all` (or one by name); the first use fetches too.")


data_app = typer.Typer(help="Data sets fetched from the package registries (suite v2 of the offline tasks).")
app.add_typer(data_app, name="data")


@data_app.command("fetch")
def data_fetch_command(
    names: Annotated[list[str] | None, typer.Argument(help="Sources to fetch (see `layerscope datasets`).")] = None,
    all_sources: Annotated[bool, typer.Option("--all", help="Fetch every source.")] = False,
) -> None:
    """Download sources by name and pinned version (pip/npm) into the data cache and check their sha256."""
    from layerscope.data.fetch import SOURCES, fetch, source

    if not names and not all_sources:
        raise LayerscopeError("name the sources to fetch, or give --all; sources: " + ", ".join(SOURCES))
    chosen = list(SOURCES) if all_sources else [source(name).name for name in names or []]  # unknown names fail first
    for name in chosen:
        path = fetch(name, progress=sys.stderr.isatty())
        console.print(f"{SOURCES[name].spec}: {path}", highlight=False, soft_wrap=True)


@app.command("tasks")
def tasks_command() -> None:
    """List the offline downstream tasks (suite v2: bundled and fetched data) and the paper's 32 hub tasks."""
    from layerscope.evaluate.catalog import group
    from layerscope.evaluate.tasks import describe_offline, paper32

    v1 = set(group("offline-v1"))
    print_table("Offline task suite v2, `offline` (MTEB task classes over bundled and fetched data; `offline-v1`: "
                "the tasks of suite v1)", ("task", "suite", "type", "texts", "main score", "source", "license"),
                ((info.name, "v1" if info.name in v1 else "v2", info.type, str(info.n_texts), info.main_score,
                  info.source, info.license) for info in describe_offline()), overflow="fold")
    console.print("paper32 (MTEB hub tasks, need the network): " + ", ".join(paper32()))


# ------------------------------------------------------------------------------------------ extract, metrics


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
@configured(model=ModelConfig, texts=Group(TextConfig, {"dataset": DEFAULT_DATASET}), extraction=ExtractConfig,
            cache=CacheOptions)
def extract_command(
    model: ModelConfig,
    texts: TextConfig,
    extraction: ExtractConfig,
    cache: CacheOptions,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("runs/extract"),
) -> None:
    """Pooled embeddings of every layer in one pass; writes embeddings.npy and record.json."""
    import numpy as np

    from layerscope.atomic import atomic_save_npy
    from layerscope.extract import extract

    folder = output_folder(out)
    assert folder is not None
    rows, texts = _corpus_rows(texts)
    loaded = load(model, extraction)
    result = extract(loaded, rows.texts, cache_dir=cache.resolve(), **extraction.extract_options())
    atomic_save_npy(folder / "embeddings.npy", np.asarray(result.pooled))
    record = {**result.record, "texts": texts.to_dict(), "layers": result.layers,
              "row_ids": [rows.ids[int(i)] for i in result.kept]}  # each embedding's row in the source
    write_json(folder / "record.json", record)
    table = Table(title=f"{loaded.model_id}: {len(result.texts)} texts from {texts.dataset}, {extraction.pooling} pooling")
    for column_name in ("layer", "depth %", "mean norm", "anisotropy (mean cos)"):
        table.add_column(column_name, justify="right")
    for row in layer_summary(result.pooled, loaded.num_layers):
        table.add_row(str(row["layer"]), f"{row['depth_pct']:.0f}", f"{row['mean_norm']:.3g}", f"{row['anisotropy']:.3f}")
    console.print(table)
    skipped = record["n_skipped_empty"]
    console.print(f"embeddings {tuple(result.pooled.shape)} -> {folder / 'embeddings.npy'}; record -> {folder / 'record.json'}"
                  + (f"; {skipped} empty texts skipped" if skipped else "")
                  + ("; read from cache" if result.from_cache else f"; {record.get('time_s', 0):.1f} s"))


def print_layer_table(frame: Any, title: str, marks: dict[int, str] | None = None) -> None:
    """Render a wide per-layer DataFrame (``layer``, ``depth_pct``, values...) as a rich table.

    ``marks`` maps a layer to a short label (e.g. "best (labels)") shown in a last column. Metric
    columns are headed by the registry's short names.
    """
    import math

    from layerscope.metrics.registry import find

    def header(column: str) -> str:
        spec = find(column)
        return spec.short if spec is not None else {"avg_score": "avg score"}.get(column, column.replace("_", " "))

    table = Table(title=title, title_justify="left")
    columns = [column for column in frame.columns if column not in ("layer", "depth_pct", "n_tasks")]
    table.add_column("layer", justify="right")
    table.add_column("depth %", justify="right")
    for column in columns:
        table.add_column(header(column), justify="right")
    if marks:
        table.add_column("", justify="left")
    for row in frame.itertuples(index=False):
        record = row._asdict()
        cells = [str(int(record["layer"])), f"{record['depth_pct']:.0f}"]
        for column in columns:
            value = record[column]
            missing = value is None or (isinstance(value, float) and math.isnan(value))
            cells.append("-" if missing else value if isinstance(value, str) else f"{value:.4g}")
        if marks:
            cells.append(marks.get(int(record["layer"]), ""))
        style = "bold green" if marks and int(record["layer"]) in marks else None
        table.add_row(*cells, style=style)
    console.print(table)


def print_text_table(text_table: Any) -> None:
    """Render a :class:`layerscope.analysis.by_type.TextTable` (nothing for None), its notes below it."""
    if text_table is None:
        return
    table = Table(title=text_table.title, title_justify="left")
    for column in text_table.columns:
        table.add_column(column, justify="left" if column in text_table.left else "right")
    for index, row in enumerate(text_table.rows):
        table.add_row(*row, style="bold green" if index in text_table.highlighted else None)
    console.print(table)
    for line in text_table.notes:
        console.print(line, highlight=False)


def print_metric_list() -> None:
    """The registry as a table (``layerscope metrics --list``)."""
    from layerscope.metrics import available

    print_table("Metrics", ("name", "column", "reads", "views", "select", "random", "description"),
                ((spec.name, spec.short, spec.inputs, str(spec.n_views), "max" if spec.higher_is_better else "min",
                  "yes" if spec.random else "no", spec.description) for spec in available()), overflow="fold")


@app.command("metrics")
@configured(model=ModelConfig, texts=Group(TextConfig, {"dataset": DEFAULT_DATASET}), extraction=ExtractConfig,
            views=ViewConfig, cache=CacheOptions)
def metrics_command(
    model: ModelConfig,
    texts: TextConfig,
    extraction: ExtractConfig,
    views: ViewConfig,
    cache: CacheOptions,
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
    loaded_texts, texts = _corpus_texts(texts)
    loaded = load(model, extraction)
    measured = measure(loaded, loaded_texts, metrics=config.metrics, views=views, extraction=extraction,
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


# ------------------------------------------------------------------------------------------ evaluate


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

        atomic_write_bytes(out / "scores.csv", frame.to_csv(index=False).encode())
        atomic_write_bytes(out / "layers.csv", summary.to_csv(index=False).encode())
        write_json(out / "record.json", frame.attrs.get("record", {}))
        console.print(f"scores -> {out / 'scores.csv'}, per-layer summary -> {out / 'layers.csv'}, record -> {out / 'record.json'}")


@app.command("evaluate")
@configured(model=ModelConfig, extraction=ExtractConfig, cache=CacheOptions, task_files=TaskFileConfig)
def evaluate_command(
    model: ModelConfig,
    extraction: ExtractConfig,
    cache: CacheOptions,
    task_files: TaskFileConfig,
    tasks: TasksOption = "offline",
    layers: LayersOption = "all",
    seed: EvalSeedOption = None,
    out: ScoresOutOption = None,
    eval_workers: EvalWorkersOption = "auto",
) -> None:
    """Score every layer on downstream tasks with MTEB's evaluators (texts encoded once).

    --tasks also takes labelled files: text + label (classification; --clustering adds clustering),
    sentence1 + sentence2 + score (STS) or + 0/1 label (pair classification), query + positive
    [+ negative] (reranking).
    """
    from layerscope.evaluate import evaluate_layers, resolve

    folder = output_folder(out)
    task_list = resolve(tasks, seed=seed, files=task_files)  # bad names and files fail before the model loads
    loaded = load(model, extraction)
    frame = evaluate_layers(loaded, task_list, layers=layers, seed=seed, cache_dir=cache.resolve(),
                            eval_workers=_workers(eval_workers), **extraction.extract_options())
    _evaluation_outputs(frame, folder, f"{loaded.model_id}: {len(task_list)} tasks, {extraction.pooling} pooling, "
                        "average per layer")


@app.command("mteb")
@configured(model=ModelConfig, extraction=ExtractConfig, cache=CacheOptions)
def mteb_command(
    model: ModelConfig,
    extraction: ExtractConfig,
    cache: CacheOptions,
    tasks: TasksOption = "paper32",
    layers: LayersOption = "all",
    seed: EvalSeedOption = None,
    out: ScoresOutOption = None,
    eval_workers: EvalWorkersOption = "auto",
) -> None:
    """Score every layer on real MTEB tasks from the hub (default: the paper's 32; needs the network)."""
    from layerscope.evaluate import paper32, resolve, run_mteb
    from layerscope.hub import require_hub

    folder = output_folder(out)
    task_list = resolve(tasks, seed=seed)
    require_hub("layerscope mteb (MTEB hub tasks)")  # before loading the model
    loaded = load(model, extraction)
    frame = run_mteb(loaded, task_list, layers=layers, seed=seed, cache_dir=cache.resolve(),
                     eval_workers=_workers(eval_workers), **extraction.extract_options())
    paper = set(paper32()) <= set(frame["task"])
    _evaluation_outputs(frame, folder, f"{loaded.model_id}: MTEB, {len(task_list)} tasks, average per layer", paper=paper)


# ------------------------------------------------------------------------------------------ analyze


@app.command("analyze")
@configured(model=ModelConfig, extraction=ExtractConfig, views=ViewConfig,
            dataset=Group(TextConfig, {"dataset": None}, optional=True), config=AnalysisConfig, cache=CacheOptions,
            task_files=TaskFileConfig, intervals=Group(IntervalConfig, {"bootstrap": 0}))
def analyze_command(
    config: AnalysisConfig,
    cache: CacheOptions,
    model: ModelConfig,
    extraction: ExtractConfig,
    views: ViewConfig,
    dataset: TextConfig | None,
    task_files: TaskFileConfig,
    intervals: IntervalConfig,
    out: Annotated[Path, typer.Option(help="Output folder: results.duckdb, plots, report.html.")] = Path("runs/analyze"),
    eval_workers: EvalWorkersOption = "auto",
) -> None:
    """The main job: every metric and every task score at every layer; which layer, and why."""
    from layerscope.evaluate import resolve
    from layerscope.pipeline import run_analysis
    from layerscope.store import ResultsStore

    folder = output_folder(out)
    assert folder is not None
    # task names and task files are read and checked before the model loads
    task_list = resolve(list(config.tasks), seed=config.eval_seed, files=task_files)
    ResultsStore.in_directory(folder).close()  # another process writing this --out fails now, not after loading
    result = run_analysis(config, out=folder, tasks=task_list, cache_dir=cache.resolve(),
                          eval_workers=_workers(eval_workers), intervals=intervals, notify=say)
    print_analysis(result)


def print_analysis(result: Any) -> None:
    """The per-layer table with the best and the label-free layers marked, then the selection summary."""
    summary = result.summary
    marks: dict[int, str] = {}
    if summary.chosen_layer is not None:
        marks[summary.chosen_layer] = f"<- {summary.chosen_label} (no labels)"
    if summary.best_layer is not None:
        marks[summary.best_layer] = "<- best (labels)" + (" = no labels" if summary.best_layer == summary.chosen_layer
                                                         else "")
    model = result.record["model"]
    per_layer, interval_note = summary.per_layer, ""
    if summary.intervals is not None and "avg_score" in per_layer.columns:
        from layerscope.evaluate.uncertainty import layer_interval_texts

        attrs = summary.intervals.attrs
        column = layer_interval_texts(summary.intervals, per_layer["layer"].tolist())
        per_layer = per_layer.copy()
        per_layer.insert(per_layer.columns.get_loc("avg_score") + 1, "interval", column)
        interval_note = (f"; {100 * attrs['confidence']:g}% interval from {attrs['n_resamples']} bootstrap resamples "
                         "of each task's evaluation examples")
    from layerscope.analysis.by_type import scores_by_type_table, selection_text_table, without_type_columns
    from layerscope.analysis.recipe_runs import recipe_headline_text, recipe_text_table

    print_layer_table(without_type_columns(per_layer), f"{model['model_id']}: {model['num_layers'] + 1} layers, "
                      f"{result.record['n_kept']} texts, {result.scores['task'].nunique()} tasks "
                      f"(metrics on all task texts; avg score x 100{interval_note})", marks)
    print_text_table(scores_by_type_table(summary, marks))
    print_text_table(selection_text_table(summary))
    print_text_table(recipe_text_table(summary))
    last, best, chosen = summary.last_layer, summary.best_layer, summary.chosen_layer
    last_score = summary.score_at(last)
    if best is not None and last_score is not None:
        console.print(f"best layer with labels: {best} ({summary.score_at(best):.1f}), "
                      f"last layer {last} ({last_score:.1f}): {summary.score_at(best) - last_score:+.1f} points")
    if summary.verdict is not None:
        console.print(f"with intervals: {summary.verdict.describe()}", highlight=False)
    if recipe_headline_text(summary) is not None:
        console.print(recipe_headline_text(summary), highlight=False)
    elif chosen is not None and last_score is not None:
        where = " on all texts" if summary.chosen_uses_metrics else ""
        console.print(f"chosen without labels ({summary.chosen_label}{where}): layer {chosen} "
                      f"({summary.score_at(chosen):.1f}, {summary.score_at(chosen) - last_score:+.1f} vs last)")
        loses = summary.label_free_loses()
        if loses is not None:
            console.print(f"on this model the label-free choice trails the last layer by {loses:.1f} points: "
                          "use a few labels instead (layerscope select --labels-per-class 8)")
        if summary.last_by_default:
            console.print("(no label-free rule beat the last layer on models it was not chosen on: --select-by "
                          "applies one anyway, e.g. dime or depth:0.75; layerscope select --labels-per-class 8 "
                          "chooses with a few labels)")
    console.print(f"results: {result.out / 'results.duckdb'}" + (f"; report: {result.report}" if result.report else "")
                  + f"; {result.record['timings'].get('total_s', 0):.0f} s")


# ------------------------------------------------------------------------------------------ select


@app.command("select")
@configured(model=ModelConfig, extraction=ExtractConfig, cache=CacheOptions, task_files=TaskFileConfig,
            choice=SelectConfig)
def select_command(
    model: ModelConfig,
    extraction: ExtractConfig,
    cache: CacheOptions,
    task_files: TaskFileConfig,
    choice: SelectConfig,
    tasks: Annotated[str, typer.Option("--tasks", "-t", help="Task files (.csv, .tsv, .jsonl, .parquet) and task "
                                       "names, comma-separated.")],
    layers: LayersOption = "all",
    seed: EvalSeedOption = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (select.json, layers.csv, task_scores.csv, "
                                             "scores.csv, few_labels.csv, cv_scores.csv, resamples.npz).")] = None,
    eval_workers: EvalWorkersOption = "auto",
) -> None:
    """Choose a layer with labels: every layer's score with a bootstrap interval, best vs last beyond the noise.

    The interval resamples each task's evaluation examples (test examples, pairs, texts or queries)
    and scores every resample at every layer with MTEB's evaluator from the cached embeddings.
    --labels-per-class K also chooses the layer by cross-validation on K labelled examples per class
    of each classification task and reports how that choice scores on the test set.
    """
    from layerscope.evaluate import resolve
    from layerscope.evaluate.select import check_choice, select_layer_with_labels

    folder = output_folder(out)
    task_list = resolve(tasks, seed=seed, files=task_files)  # bad names and files fail before the model loads
    check_choice(task_list, bootstrap=choice.bootstrap, labels_per_class=choice.labels_per_class)
    loaded = load(model, extraction)
    result = select_layer_with_labels(
        loaded, task_list, bootstrap=choice.bootstrap, confidence=choice.confidence,
        labels_per_class=choice.labels_per_class, resample_seed=choice.resample_seed, seed=seed, layers=layers,
        cache_dir=cache.resolve(), eval_workers=_workers(eval_workers), **extraction.extract_options())
    print_choice(result, f"{loaded.model_id}: {len(task_list)} task{'s' if len(task_list) != 1 else ''}, "
                 f"{extraction.pooling} pooling")
    if folder is not None:
        write_choice(result, folder, {"model": model.to_dict(), "extraction": extraction.to_dict(),
                                      "task_files": task_files.to_dict(), "select": choice.to_dict(),
                                      "tasks": tasks, "layers": layers, "seed": seed})


def _units_text(units: dict[str, str]) -> str:
    kinds = sorted(set(units.values()))
    return f"the {kinds[0]}" if len(kinds) == 1 else "each task's evaluation examples"


def print_choice(result: Any, title: str) -> None:
    """The per-layer table of :func:`layerscope.evaluate.select.select_layer_with_labels`, the verdict, the few-label choice."""
    from layerscope.evaluate.uncertainty import interval_text

    layers = result.layers
    bootstrapped = result.verdict is not None
    marks: dict[int, list[str]] = {result.best_layer: ["best"]}
    marks.setdefault(result.last_layer, []).append("last")
    few = result.few_labels
    if few is not None:
        k = result.record["labels_per_class"]
        chosen, cv_best = int(few["chosen_layer"].iloc[-1]), int(few["cv_best_layer"].iloc[-1])
        marks.setdefault(chosen, []).append(f"chosen from {k} labels/class")
        if cv_best != chosen:
            marks.setdefault(cv_best, []).append(f"best CV on {k} labels/class, not beyond the noise")
    if bootstrapped:
        level = f"{100 * layers.attrs['confidence']:g}%"
        title += (f"; score = MTEB main score x 100 (task average), {level} intervals from "
                  f"{layers.attrs['n_resamples']} bootstrap resamples of {_units_text(layers.attrs['units'])}")
    table = Table(title=title, title_justify="left")
    headers = ["layer", "depth %", "score"]
    if bootstrapped:
        headers += [f"{level} interval", "vs last", f"{level} interval (paired)", "<= last"]
    for header in headers:
        table.add_column(header, justify="right")
    table.add_column("", justify="left")
    for row in layers.itertuples(index=False):
        cells = [str(int(row.layer)), f"{row.depth_pct:.0f}", f"{row.score:.1f}"]
        if bootstrapped:
            last = int(row.layer) == result.last_layer
            cells += [interval_text(row.low, row.high), "" if last else f"{row.vs_last:+.1f}",
                      "" if last else interval_text(row.vs_last_low, row.vs_last_high, signed=True),
                      "" if last else f"{100 * row.not_above_last:.0f}%"]
        layer_marks = marks.get(int(row.layer), [])
        table.add_row(*cells, ", ".join(layer_marks), style="bold green" if "best" in layer_marks else None)
    console.print(table)
    if bootstrapped:
        console.print(result.verdict.describe() + " (beyond the noise = the interval of the paired difference lies "
                      "above 0; '<= last' is the share of resamples where a layer does not beat the last)",
                      highlight=False)
    else:
        console.print(f"best layer {result.best_layer}, last layer {result.last_layer} (no intervals: --bootstrap 0)",
                      highlight=False)
    if len(set(result.task_scores["task"])) > 1:
        _print_task_table(result, bootstrapped)
    if few is not None:
        _print_few_labels(result)
    for note_text in result.notes:
        console.print(f"note: {note_text}", highlight=False)
    console.print(f"{result.record['seconds']['total']:.0f} s (bootstrap {result.record['seconds']['bootstrap']:.0f} s)",
                  highlight=False)


def _print_task_table(result: Any, bootstrapped: bool) -> None:
    from layerscope.evaluate.uncertainty import interval_text

    frame = result.task_scores
    tasks = list(dict.fromkeys(frame["task"]))
    table = Table(title="Per task: score x 100" + (" [interval]" if bootstrapped else ""), title_justify="left")
    table.add_column("layer", justify="right")
    for task in tasks:
        table.add_column(task, justify="right", overflow="fold")
    for layer, rows in frame.groupby("layer", sort=True):
        by_task = rows.set_index("task")
        table.add_row(str(int(layer)), *(f"{by_task.loc[task, 'score']:.1f}" + (
            f" {interval_text(by_task.loc[task, 'low'], by_task.loc[task, 'high'])}" if bootstrapped else "")
            for task in tasks))
    console.print(table)


def _print_few_labels(result: Any) -> None:
    from layerscope.evaluate.uncertainty import interval_text

    few = result.few_labels
    k = result.record["labels_per_class"]
    level = f"{100 * result.record['confidence']:g}%"
    table = Table(title=f"Layer chosen from {k} labelled examples per class (cross-validated, seed "
                  f"{result.record['resample_seed']}), scored on the test set (MTEB, x 100)", title_justify="left")
    for header in ("task", "labelled", "best CV layer (accuracy)", f"its CV gain vs last [{level}]", "chosen layer",
                   "test score", "best layer (score)", "last score", "regret", "vs last"):
        table.add_column(header, justify="left" if header == "task" else "right",
                         no_wrap=header.startswith("its CV gain"))
    for row in few.itertuples(index=False):
        gain = "" if row.cv_best_layer == result.last_layer else (
            f"{row.cv_gain:+.1f} {interval_text(row.cv_gain_low, row.cv_gain_high, signed=True)}")
        table.add_row(str(row.task), str(row.n_labelled), f"{row.cv_best_layer} ({row.cv_accuracy:.1f})", gain,
                      str(row.chosen_layer), f"{row.score:.1f}", f"{row.best_layer} ({row.best_score:.1f})",
                      f"{row.last_score:.1f}", f"{row.regret:.1f}", f"{row.vs_last:+.1f}")
    console.print(table)
    console.print("chosen = the best CV layer when its gain over the last layer on the held-out labelled examples is "
                  "beyond the noise (interval above 0), else the last layer; regret = best layer's test score - chosen "
                  "layer's; the 'average' row chooses one layer for every task", highlight=False)
    overruled = few[few["chosen_layer"] != few["cv_best_layer"]]
    if len(overruled):
        row = overruled.iloc[-1]
        console.print(f"({row.task}: the best CV layer {row.cv_best_layer} would score {row.cv_best_score:.1f} on the "
                      f"test set, {row.cv_best_score - row.last_score:+.1f} vs last)", highlight=False)


def write_choice(result: Any, folder: Path, config: dict[str, Any]) -> None:
    """Everything of a ``select`` run under ``folder``, enough to rerun and check it."""
    import io

    import numpy as np

    from layerscope.atomic import atomic_write_bytes

    write_json(folder / "select.json", {**result.to_dict(), "config": config})
    tables = {"layers.csv": result.layers, "task_scores.csv": result.task_scores, "scores.csv": result.scores,
              "few_labels.csv": result.few_labels, "cv_scores.csv": result.cv_scores}
    for name, frame in tables.items():
        if frame is not None:
            atomic_write_bytes(folder / name, frame.to_csv(index=False).encode())
    if result.resamples:
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **result.resamples)
        atomic_write_bytes(folder / "resamples.npz", buffer.getvalue())
    console.print(f"results -> {folder} (select.json, layers.csv, task_scores.csv, scores.csv"
                  + (", few_labels.csv, cv_scores.csv" if result.few_labels is not None else "")
                  + (", resamples.npz" if result.resamples else "") + ")", highlight=False)



# ------------------------------------------------------------------------------------------ export


RecipeOption = Annotated[str | None, typer.Option(
    "--recipe", help="A recipe instead of a layer: last | layer:L | depth:F | mean:A-B | zmean:A-B, optionally "
    "+standardize | +whiten[:rank] | +remove-top[:k] (fitted on unlabelled texts), or one per task type "
    "('classification=zmean:0.5-1;*=last+standardize', with --task-type).")]
TaskTypeOption = Annotated[str | None, typer.Option(
    "--task-type", help="The task type the embedding is for (classification, clustering, sts, ...): picks the "
    "recipe of a per-type --recipe.")]


@app.command("export")
@configured(model=ModelConfig, extraction=ExtractConfig)
def export_command(
    model: ModelConfig,
    extraction: ExtractConfig,
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
    import torch

    from layerscope.export import PROBE_TEXTS, encode_speed, export_layer

    _layer_or_recipe(layer, recipe, extraction)
    if extraction.outlier_tokens is not None:
        raise LayerscopeError("an export cannot leave out outlier tokens (sentence-transformers pooling has no such "
                              "step): export without --outlier-tokens")
    fit_texts = _corpus_texts(TextConfig(fit_dataset))[0] if fit_dataset else None
    output_folder(out)
    loaded = load(model.replace(device="cpu") if model.device == "auto" else model, extraction)
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
    from transformers import AutoModel

    exported = AutoModel.from_pretrained(str(result.out)).eval()
    texts = [f"{text} ({index})" for index in range(32) for text in PROBE_TEXTS]
    threads = torch.get_num_threads()
    length = result.record["max_length"]
    full_s = encode_speed(loaded.model, loaded.tokenizer, texts, max_length=length)
    exported_s = encode_speed(exported, loaded.tokenizer, texts, max_length=length)
    what = f"layer {result.layer}" if recipe is None else f"recipe {result.record['recipe']} (up to layer {result.layer})"
    console.print(f"{what} of {result.num_layers} -> {result.out}: {result.parameters:,} of "
                  f"{result.parameters_full:,} parameters kept ({100 * result.parameters / result.parameters_full:.0f}%); "
                  f"checked against layerscope: max difference {result.max_difference:.1e} "
                  f"(largest value {result.record['largest_value']:,.1f})", highlight=False)
    console.print(f"encode time of {len(texts)} texts, {threads} threads: full model {full_s:.3f} s, exported "
                  f"{exported_s:.3f} s ({full_s / exported_s:.2f}x faster)")
    load_line = result.record.get("load") or f"SentenceTransformer({str(result.out)!r})"
    console.print(f"use it: {load_line}.encode(texts)", highlight=False)


@app.command("embed")
@configured(model=ModelConfig, texts=Group(TextConfig, {"dataset": DEFAULT_DATASET}), extraction=ExtractConfig,
            cache=CacheOptions)
def embed_command(
    model: ModelConfig,
    texts: TextConfig,
    extraction: ExtractConfig,
    cache: CacheOptions,
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


def _layer_or_recipe(layer: int | None, recipe: str | None, extraction: ExtractConfig) -> None:
    """One of --layer and --recipe, and a recipe's conditioning in the recipe (one-line errors)."""
    if (layer is None) == (recipe is None):
        raise LayerscopeError("give --layer or --recipe (one of them)")
    if recipe is not None:
        from layerscope.analysis.recipes import parse_recipe_set

        parse_recipe_set(recipe)  # a bad recipe fails before the model loads
        if extraction.condition != "none":
            raise LayerscopeError("give the conditioning in the recipe (e.g. --recipe 'last+standardize'), "
                                  "not as --condition")


# ------------------------------------------------------------------------------------------ report, compare, sweep


@app.command("report")
def report_command(
    directory: Annotated[Path, typer.Argument(help="Output folder of a run (holds results.duckdb).")],
    run_id: Annotated[str | None, typer.Option("--run-id", help="Run to report (default: the latest).")] = None,
    out: Annotated[Path | None, typer.Option(help="HTML file to write (default: DIR/report.html).")] = None,
    select_by: Annotated[str | None, typer.Option(
        "--select-by", help="Rule of the label-free choice (dime, depth:0.75, last...; default: the run's own).")] = None,
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
        statuses = [unit_status(unit, root) for unit in units]
        print_table(f"{sweep_file}: {len(units)} units of job '{spec.job}' -> {root}",
                    ("unit", "model", "revision", "dataset", "status"),
                    ((unit.unit_id, unit.model, unit.revision or "-", unit.dataset or "-",
                      status["status"] if status else "to run") for unit, status in zip(units, statuses, strict=True)))
        return
    output_folder(root)

    def announce(unit: Any, status: dict[str, Any]) -> None:
        detail = f"{status.get('seconds', 0):.0f} s" if status["status"] == "done" else status.get("error", "")
        console.print(f"{'done' if status['status'] == 'done' else '[red]failed[/]'}: {unit.label} ({detail})",
                      highlight=False)

    result = run_sweep(spec, backend=backend, out=root, resume=not no_resume, address=address,
                       cpus_per_unit=cpus_per_unit, gpus_per_unit=gpus_per_unit, num_cpus=num_cpus, on_unit=announce)
    print_table(f"sweep {sweep_file} ({backend}): {len(result.units)} units",
                ("unit", "status", "seconds", "best layer", "label-free layer", "error"),
                ((row.label, row.status, "-" if row.seconds is None or row.seconds != row.seconds else f"{row.seconds:.0f}",
                  _cell(row.best_layer), _cell(row.chosen_layer), row.error or "")
                 for row in result.units.itertuples(index=False)), overflow="fold")
    console.print(f"results: {result.out / 'results.duckdb'} ({len(result.merged_runs)} runs)"
                  + (f"; comparison: {result.compare}" if result.compare else ""))
    if len(result.failed):
        raise LayerscopeError(f"{len(result.failed)} of {len(result.units)} units failed; rerun the sweep to retry them")


def _cell(value: Any) -> str:
    return "-" if value is None or (isinstance(value, float) and value != value) else str(int(value))


# ------------------------------------------------------------------------------------------ experiments


def _experiment_help() -> str:
    lines = ["The paper's further experiments (SPEC section 7). NAME is one of:"]
    try:
        from layerscope.experiments import EXPERIMENTS
        from layerscope.experiments.base import COMMON_OPTIONS

        for experiment in EXPERIMENTS.values():
            own = ", ".join(key for key in experiment.options() if key not in COMMON_OPTIONS)
            lines.append(f"\b\n  {experiment.name}: {experiment.description} [own options: {own or 'none'}]")
        lines.append("\b\nEvery experiment also takes the common options (those it uses): "
                     + ", ".join(key for key in COMMON_OPTIONS if key not in ("texts", "progress")) + ".")
    except Exception:  # the help text must never break the CLI
        pass
    lines.append("\b\nExperiment-specific options go as --set key=value (repeatable; lists as comma strings).")
    return "\n\n".join(lines)


def _option_help(cls: type[Config], name: str) -> str:
    """The help text a configuration declares for one of its fields (declared once, in layerscope.config)."""
    return next(item.metadata["help"] for item in dataclasses.fields(cls) if item.name == name)


@app.command("experiment", help=_experiment_help())
def experiment_command(
    name: Annotated[str, typer.Argument(help="Experiment name (see above).")],
    model: Annotated[str | None, typer.Option("--model", "-m", help=_option_help(ModelConfig, "model"))] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", "-d", help=_option_help(TextConfig, "dataset")
                                                + " Vision: an image source (digits, a folder, .npz).")] = None,
    limit: Annotated[int | None, typer.Option(help=_option_help(TextConfig, "limit"))] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (default runs/experiments/NAME).")] = None,
    seed: Annotated[int | None, typer.Option(help=_option_help(TextConfig, "seed"))] = None,
    max_length: Annotated[int | None, typer.Option("--max-length", help=_option_help(ExtractConfig, "max_length"))] = None,
    batch_size: Annotated[str | None, typer.Option("--batch-size", help=_option_help(ExtractConfig, "batch_size"))] = None,
    final_norm: Annotated[str | None, typer.Option("--final-norm", help=_option_help(ExtractConfig, "final_norm"))] = None,
    revision: Annotated[str | None, typer.Option(help=_option_help(ModelConfig, "revision"))] = None,
    device: Annotated[str | None, typer.Option(help=_option_help(ModelConfig, "device"))] = None,
    dtype: Annotated[str | None, typer.Option(help=_option_help(ModelConfig, "dtype"))] = None,
    settings: Annotated[list[str] | None, typer.Option("--set", help="key=value option of the experiment.")] = None,
    report: Annotated[bool, typer.Option(help="Build report.html in the output folder.")] = True,
) -> None:
    """Run one of the paper's further experiments; results go to results.duckdb, PNGs and a report."""
    from layerscope.experiments import get, run_cli

    experiment = get(name)  # unknown names fail with a suggestion before anything runs
    output_folder(out)
    options: dict[str, Any] = {"model": model, "dataset": dataset, "limit": limit, "out": out, "seed": seed,
                               "max_length": max_length, "batch_size": None if batch_size is None else
                               _parse_value(batch_size), "final_norm": final_norm, "revision": revision,
                               "device": device, "dtype": dtype}
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


# ------------------------------------------------------------------------------------------ entry point


class Terminated(BaseException):
    """SIGTERM, raised where the process is, so the same clean-up as Ctrl-C runs."""


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated()


def _interrupt(signum: int, frame: Any) -> None:
    """Ctrl-C as Python raises it, remembered: typer turns it into a bare exit status 130, and the one
    line of :func:`main` reads what the extraction engine attached to it (``layerscope_kept``)."""
    error = KeyboardInterrupt()
    _SESSION["interrupt"] = error
    raise error


def _kept(error: BaseException | None) -> tuple[int, int] | None:
    """(texts kept, texts of the pass) that an interrupted extraction left in the cache, if it says."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        kept = getattr(error, "layerscope_kept", None)
        if kept is not None:
            return int(kept[0]), int(kept[1])
        error = error.__cause__ or error.__context__
    return None


def _interrupted_line(what: str, error: BaseException | None) -> str:
    """The one line of an interrupted run: what a rerun will not redo."""
    kept = _kept(error)
    if kept is not None:
        count = kept[0]
        return f"{what}; {count} text{'' if count == 1 else 's'} kept in the cache, rerun to resume"
    if _SESSION["cache"] is not None:  # stopped between passes: every finished pass is in the cache
        return f"{what}; finished passes are kept in the cache, rerun to resume"
    return f"{what}; nothing was kept (no embedding cache in use), a rerun starts again"


def _command_path() -> str:
    """``layerscope COMMAND`` from the command line (for errors click raises without a context)."""
    names = {command.name or command.callback.__name__.removesuffix("_command").replace("_", "-")
             for command in app.registered_commands if command.callback is not None}
    words = [word for word in sys.argv[1:] if not word.startswith("-")]
    return "layerscope" + (f" {words[0]}" if words and words[0] in names else "")


def _usage_error(error: BaseException) -> str:
    """Click's one-line message of a usage error, with the help hint."""
    context = getattr(error, "ctx", None)
    path = context.command_path if context is not None else _command_path()
    message = error.format_message() if hasattr(error, "format_message") else str(error)
    return " ".join(message.split()) + f" (try '{path} --help')"


def _usage_error_classes() -> tuple[type[BaseException], ...]:
    """Click's usage errors as typer raises them: its vendored copy (typer >= 0.29) or click itself (before)."""
    import contextlib
    import importlib

    classes: list[type[BaseException]] = []
    for module in ("typer._click.exceptions", "click.exceptions"):
        with contextlib.suppress(ImportError):
            classes.append(importlib.import_module(module).ClickException)
    return tuple(classes)


def _app() -> Any:
    """The typer app, with a full disk anywhere beneath it (an OSError, numpy's short write, DuckDB's
    IOException...) turned into the one-line :class:`~layerscope.errors.DiskFullError`."""
    from layerscope.errors import disk_full

    try:
        return app(standalone_mode=False)
    except Exception as error:
        full = disk_full(error)
        if full is None or full is error:
            raise
        raise full from error


def main() -> None:
    """Entry point: user errors print one line (no traceback) and exit with status 2; a full disk (or
    quota) one line naming the path and exit status 74; Ctrl-C exits 130, SIGTERM 143, after a one-line
    note of what was kept."""
    from layerscope.errors import EXIT_DISK_FULL, DiskFullError

    logging.basicConfig(level=os.environ.get("LAYERSCOPE_LOG", "WARNING"), format="%(levelname)s %(name)s: %(message)s")
    for name in ("transformers", "huggingface_hub", "datasets", "mteb"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # transformers sets its own log level when first imported (later, lazily): tell it through its
    # environment variable, and keep its per-load "Loading weights" bars out of our progress display
    # (hub downloads keep their bars); neither imports transformers here (~1 s on every command)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from layerscope.models.loading import show_load_bars

    show_load_bars(False)
    _SESSION.update(cache=None, interrupt=None)
    signal.signal(signal.SIGTERM, _terminate)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not where Ctrl-C is ignored (nohup, &)
        signal.signal(signal.SIGINT, _interrupt)
    usage_errors = _usage_error_classes()
    try:
        result = _app()
    except DiskFullError as error:  # a LayerscopeError, with a status of its own
        err_console.print(f"[bold red]error:[/] {error}", highlight=False, markup=True, soft_wrap=True)
        sys.exit(EXIT_DISK_FULL)
    except LayerscopeError as error:
        err_console.print(f"[bold red]error:[/] {error}", highlight=False, markup=True, soft_wrap=True)
        sys.exit(2)
    except (KeyboardInterrupt, typer.Abort) as error:
        err_console.print(_interrupted_line("interrupted", error), highlight=False, soft_wrap=True)
        sys.exit(130)
    except Terminated as error:
        err_console.print(_interrupted_line("terminated", error), highlight=False, soft_wrap=True)
        sys.exit(143)
    except typer.Exit as error:
        sys.exit(error.exit_code)
    except usage_errors as error:
        err_console.print(f"[bold red]error:[/] {_usage_error(error)}", highlight=False, markup=True, soft_wrap=True)
        sys.exit(2)
    if result == 130:  # typer turns Ctrl-C into a returned status 130
        err_console.print(_interrupted_line("interrupted", _SESSION["interrupt"]), highlight=False, soft_wrap=True)
        sys.exit(130)
    if isinstance(result, int) and result:  # click returns an exit code instead of raising in places
        sys.exit(result)


if __name__ == "__main__":
    main()
