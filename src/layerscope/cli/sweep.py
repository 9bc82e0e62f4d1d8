"""``layerscope sweep``: many (model, revision, dataset) runs as resumable units, in turn or on Ray."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from layerscope.cli.options import output_folder
from layerscope.cli.output import console, print_table
from layerscope.errors import LayerscopeError


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
