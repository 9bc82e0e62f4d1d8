"""``layerscope report`` (a run's HTML report, rebuilt from its database) and ``layerscope compare``
(several runs overlaid)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from layerscope.cli.output import console, err_console


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
