"""The listings: bundled models, corpora, fetched sources and tasks; and ``layerscope data fetch``."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from layerscope.cli.output import console, print_table
from layerscope.errors import LayerscopeError


def models_command() -> None:
    """List the bundled offline models and whether their packages are installed."""
    from layerscope.models import BUNDLED

    print_table("Bundled models (offline)", ("alias", "model", "layers", "width", "installed", "package", "license"),
                ((bundled.alias, bundled.hub_id, str(bundled.layers), str(bundled.hidden_size),
                  "yes" if bundled.installed() else "no", bundled.pip, bundled.license) for bundled in BUNDLED.values()))
    console.print("Any Hugging Face id or local folder also works where the hub is reachable.")


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
