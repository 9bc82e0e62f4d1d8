"""What the commands print and write: the rich consoles and the tables every command family uses."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

# piped or captured output has no terminal width: use a wide one so per-layer tables stay whole
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
# What the Ctrl-C line of main() needs: the embedding cache in use, and the interrupt raised
SESSION: dict[str, Any] = {"cache": None, "interrupt": None}


def say(line: str) -> None:
    """A line about the work ahead (the views budget, the time estimate) on stderr, beside the progress bars."""
    err_console.print(line, highlight=False, soft_wrap=True)


def kept_text(kept: Mapping[str, int] | None) -> str:
    """``"; read back from the cache: 31 layers' scores, 62 bootstrap units"`` (empty when nothing was)."""
    said = [f"{count} {what}" for key, what in (("layers", "layers' scores"), ("bootstrap_units", "bootstrap units"))
            if (count := (kept or {}).get(key, 0))]
    return f"; read back from the cache: {', '.join(said)}" if said else ""


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


def write_json(path: Path, payload: Any) -> None:
    from layerscope.atomic import atomic_write_json

    atomic_write_json(path, payload)


def print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[str]], **column_options: Any) -> None:
    """Print a table of ``rows`` under ``columns``; ``column_options`` (e.g. ``overflow``) apply to every column."""
    table = Table(title=title)
    for column in columns:
        table.add_column(column, **column_options)
    for row in rows:
        table.add_row(*row)
    console.print(table)


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
