"""Running a sweep: units in turn on this machine, or as Ray tasks on a Ray cluster (SPEC section 8).

Each unit writes its own folder ``<out>/units/<unit folder>/`` (its ``results.duckdb``, plots,
report) and, last, ``unit.json`` with its status; a unit whose ``unit.json`` says ``done`` for the
same configuration is skipped on a rerun, so an interrupted sweep resumes where it stopped and a
failed unit is retried. When the units are through, their databases are merged into
``<out>/results.duckdb`` (one run per unit) and ``<out>/compare.html`` overlays them.

The Ray backend uses Ray's own scheduler (``ray.remote`` tasks with their CPU and GPU needs); every
node of a cluster needs layerscope installed in the same environment as the driver.
"""

from __future__ import annotations

import logging
import os
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from layerscope.errors import LayerscopeError, unknown
from layerscope.sweep.spec import SweepSpec, Unit, load_sweep

__all__ = ["BACKENDS", "SweepResult", "run_sweep", "run_unit", "unit_status"]

logger = logging.getLogger(__name__)

BACKENDS = ("local", "ray")
UNIT_FILE = "unit.json"


@dataclass
class SweepResult:
    """What a sweep did.

    Attributes
    ----------
    out : pathlib.Path
        The sweep folder (``results.duckdb`` merges every finished unit).
    units : pandas.DataFrame
        One row per unit: ``unit_id, label, model, revision, dataset, status`` (``done``,
        ``skipped`` = done by an earlier run, ``failed``), ``seconds``, ``error``, ``folder``.
    merged_runs : list of str
        Run ids in the merged database.
    compare : pathlib.Path or None
        The comparison report, when at least one unit finished.
    """

    out: Path
    units: pd.DataFrame
    merged_runs: list[str]
    compare: Path | None = None

    @property
    def failed(self) -> pd.DataFrame:
        return self.units[self.units["status"] == "failed"]


def unit_status(unit: Unit, out: str | Path) -> dict[str, Any] | None:
    """The ``unit.json`` of a unit in sweep folder ``out``, if it exists and matches its configuration."""
    import json

    path = Path(out) / "units" / unit.folder / UNIT_FILE
    try:
        status = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return status if status.get("unit_id") == unit.unit_id else None


def _one_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def run_unit(config: dict[str, Any], folder: str, threads: int | None = None) -> dict[str, Any]:
    """Run one unit (in this process or a Ray worker) and write its ``unit.json``; never raises.

    Parameters
    ----------
    config : dict
        :meth:`Unit.config`.
    folder : str
        The unit's output folder.
    threads : int, optional
        Torch threads for this unit (a Ray task gets as many as the CPUs it holds).

    Returns
    -------
    dict
        The status written to ``unit.json``: ``unit_id, config, status ("done" | "failed"), seconds,
        error, run_id``, and for ``analyze`` the best and label-free layers.
    """
    import torch

    from layerscope.atomic import atomic_write_json
    from layerscope.store import run_id_for

    if threads:
        torch.set_num_threads(int(threads))
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    status: dict[str, Any] = {"unit_id": run_id_for(config), "config": config, "host": platform.node(),
                              "pid": os.getpid()}
    start = time.perf_counter()
    try:
        status.update(_run_job(config, out, threads))
        status["status"] = "done"
    except KeyboardInterrupt:
        raise
    except Exception as error:  # noqa: BLE001 - a failed unit is recorded; the other units go on
        from layerscope.errors import disk_full

        full = disk_full(error)
        if full is error:  # the next units would fail alike: stop with the one line (unit not marked)
            raise
        if full is not None:
            raise full from error
        logger.warning("sweep unit %s failed: %s", config.get("model"), _one_line(error))
        status.update(status="failed", error=_one_line(error))
    status["seconds"] = round(time.perf_counter() - start, 2)
    atomic_write_json(out / UNIT_FILE, status)
    return status


def _run_job(config: dict[str, Any], out: Path, threads: int | None = None) -> dict[str, Any]:
    options = dict(config["options"])
    if config["job"] == "analyze":
        from layerscope.pipeline import analyze

        # a unit holding n CPUs (a Ray task) evaluates on n processes, not on every CPU of the node
        options.setdefault("eval_workers", threads or "auto")
        result = analyze(model=config["model"], revision=config["revision"], dataset=config["dataset"], out=out,
                         progress=False, **options)
        return {"run_id": result.run_id, "best_layer": result.best_layer, "chosen_layer": result.chosen_layer,
                "chosen_by": result.chosen_by}
    return _metrics_job(config, options, out)


def _metrics_job(config: dict[str, Any], options: dict[str, Any], out: Path) -> dict[str, Any]:
    """Label-free metrics of every layer on one dataset, written as one run of the unit's store."""
    from layerscope.config import ExtractConfig, MetricsConfig, ModelConfig, TextConfig, ViewConfig
    from layerscope.metrics.compute import measure
    from layerscope.pipeline import main_prompt_values
    from layerscope.store import ResultsStore

    def take(keys: tuple[str, ...]) -> dict[str, Any]:
        return {key: options.pop(key) for key in keys if key in options}

    seed = options.pop("seed", 0)
    model = ModelConfig(config["model"], config["revision"], **take(("device", "dtype", "trust_remote_code")))
    extraction = ExtractConfig(**take(("pooling", "final_norm", "max_length", "batch_size", "cache_dtype")))
    texts = TextConfig(config["dataset"], seed=seed, **take(("column", "limit")))
    views = ViewConfig(**take(("n_views", "view_texts", "lidar_texts", "view_max_length")))
    report = options.pop("report", True)
    cache_dir = options.pop("cache_dir", None)
    job = MetricsConfig(model=model, texts=texts, extraction=extraction, views=views, seed=seed,
                        **take(("metrics", "options")))
    loaded = model.load(extraction.final_norm)
    with ResultsStore.in_directory(out) as store, store.run(
        {**job.to_dict(), "unit": config}, model_id=str(loaded.model_id), revision=loaded.revision,
        data_source=config["dataset"],
    ) as run:
        measured = measure(loaded, texts.load(), metrics=job.metrics, views=views, extraction=extraction, seed=seed,
                           options=job.options, cache_dir=cache_dir, progress=False)
        run.write_metrics(measured.metrics.assign(dataset=config["dataset"]))
        run.write_prompt_values(main_prompt_values(measured.prompt_values).assign(dataset=config["dataset"]))
        run.skipped["empty_texts"] = int(measured.extraction.record.get("n_skipped_empty", 0))
    if report:
        from layerscope.report import build_report

        build_report(out, run_id=run.run_id)
    return {"run_id": run.run_id}


def run_sweep(
    sweep: SweepSpec | str | Path,
    *,
    backend: str = "local",
    out: str | Path | None = None,
    resume: bool = True,
    address: str | None = None,
    cpus_per_unit: float = 1,
    gpus_per_unit: float = 0,
    num_cpus: int | None = None,
    progress: bool = True,
    on_unit: Callable[[Unit, dict[str, Any]], None] | None = None,
) -> SweepResult:
    """Run every unit of a sweep not done yet, merge their results and overlay them.

    Parameters
    ----------
    sweep : SweepSpec, or path of a sweep file
    backend : {"local", "ray"}
        ``local`` runs the units in turn in this process; ``ray`` submits each as a Ray task.
    out : str or Path, optional
        Sweep folder (default: the file's ``out``).
    resume : bool, default True
        Skip units already done with the same configuration (``False`` reruns them all).
    address : str, optional
        Ray cluster to join (``"auto"``, ``"ray://head:10001"``); default: a local Ray instance.
    cpus_per_unit, gpus_per_unit : float
        Resources Ray reserves for each unit (its torch threads follow ``cpus_per_unit``).
    num_cpus : int, optional
        CPUs of a local Ray instance (default: all of this machine's).
    progress : bool
        Show a progress bar over the units.
    on_unit : callable, optional
        Called with each unit and its status as it finishes (the CLI prints a line).

    Returns
    -------
    SweepResult
    """
    if backend not in BACKENDS:
        raise unknown("sweep backend", backend, BACKENDS)
    spec = sweep if isinstance(sweep, SweepSpec) else load_sweep(sweep)
    root = Path(out).expanduser() if out is not None else spec.out
    root.mkdir(parents=True, exist_ok=True)
    units = spec.units()
    statuses: dict[str, dict[str, Any]] = {}
    todo: list[Unit] = []
    for unit in units:
        previous = unit_status(unit, root) if resume else None
        if previous is not None and previous.get("status") == "done":
            statuses[unit.unit_id] = {**previous, "status": "skipped"}
        else:
            todo.append(unit)
    if todo:
        runner = _run_ray if backend == "ray" else _run_local
        runner(todo, root, statuses, address=address, cpus_per_unit=cpus_per_unit, gpus_per_unit=gpus_per_unit,
               num_cpus=num_cpus, progress=progress, on_unit=on_unit)
    return _finish(units, root, statuses)


def _run_local(units: Sequence[Unit], root: Path, statuses: dict[str, dict[str, Any]], *, progress: bool,
               on_unit: Callable[..., None] | None, **_: Any) -> None:
    from tqdm.auto import tqdm

    for unit in tqdm(units, desc="sweep units", unit="unit", disable=not progress):
        status = run_unit(unit.config(), str(root / "units" / unit.folder))
        statuses[unit.unit_id] = status
        if on_unit is not None:
            on_unit(unit, status)


def _ray_init(address: str | None, num_cpus: int | None) -> None:
    """Start (or join) Ray quietly; a local instance needs no network beyond loopback."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError:
        raise LayerscopeError("the ray backend needs Ray: pip install 'layerscope[ray]'") from None
    if ray.is_initialized():
        return
    settings: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    if address:
        settings["address"] = address
    else:
        # A private instance on loopback only (so no token authentication to set up), with a short
        # temp path: Ray's socket paths must stay under the 107-byte Unix limit.
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        settings.update(num_cpus=num_cpus or os.cpu_count(), object_store_memory=256 * 2**20,
                        _node_ip_address="127.0.0.1",
                        _temp_dir=tempfile.mkdtemp(prefix="ray-", dir="/tmp" if os.path.isdir("/tmp") else None))
    try:
        ray.init(**settings)
    except Exception as error:  # noqa: BLE001 - e.g. no cluster at the address
        raise LayerscopeError(f"cannot start or join Ray{f' at {address}' if address else ''}: {_one_line(error)}") from None


def _run_ray(units: Sequence[Unit], root: Path, statuses: dict[str, dict[str, Any]], *, address: str | None,
             cpus_per_unit: float, gpus_per_unit: float, num_cpus: int | None, progress: bool,
             on_unit: Callable[..., None] | None) -> None:
    from tqdm.auto import tqdm

    _ray_init(address, num_cpus)
    import ray

    started_here = address is None
    task = ray.remote(num_cpus=cpus_per_unit, num_gpus=gpus_per_unit, max_retries=1)(run_unit)
    threads = max(1, int(cpus_per_unit))
    pending = {task.remote(unit.config(), str((root / "units" / unit.folder).resolve()), threads): unit
               for unit in units}
    bar = tqdm(total=len(units), desc="sweep units (ray)", unit="unit", disable=not progress)
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            unit = pending.pop(ready[0])
            try:
                status = ray.get(ready[0])
            except Exception as error:  # noqa: BLE001 - the worker died (out of memory, node lost)
                status = {"unit_id": unit.unit_id, "config": unit.config(), "status": "failed",
                          "error": f"ray task failed: {_one_line(error)}"}
            statuses[unit.unit_id] = status
            bar.update(1)
            if on_unit is not None:
                on_unit(unit, status)
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    finally:
        bar.close()
        if started_here:
            ray.shutdown()


def _finish(units: Sequence[Unit], root: Path, statuses: dict[str, dict[str, Any]]) -> SweepResult:
    from layerscope.atomic import atomic_write_json
    from layerscope.store import STORE_FILENAME, merge_stores

    rows = []
    finished = []
    for unit in units:
        status = statuses.get(unit.unit_id, {})
        folder = root / "units" / unit.folder
        if status.get("status") in ("done", "skipped") and (folder / STORE_FILENAME).is_file():
            finished.append(folder)
        rows.append({"unit_id": unit.unit_id, "label": unit.label, "model": unit.model, "revision": unit.revision,
                     "dataset": unit.dataset, "status": status.get("status", "not run"),
                     "seconds": status.get("seconds"), "error": status.get("error"),
                     "best_layer": status.get("best_layer"), "chosen_layer": status.get("chosen_layer"),
                     "folder": str(folder)})
    table = pd.DataFrame(rows)
    # rebuilt from the units each time (a unit whose configuration changed leaves no stale run behind),
    # next to the old one, which it replaces only when complete
    building = root / f".{STORE_FILENAME}.building"
    for stale in (building, building.with_name(building.name + ".wal")):
        stale.unlink(missing_ok=True)
    merged = merge_stores(building, finished) if finished else []
    if finished:
        os.replace(building, root / STORE_FILENAME)
    compare = None
    if finished:
        from layerscope.report import compare_runs

        try:
            compare = compare_runs([root], root / "compare.html", all_runs=True)
        except LayerscopeError as error:
            logger.warning("no comparison report: %s", error)
    atomic_write_json(root / "sweep.json", {"units": table.to_dict(orient="records"), "merged_runs": merged})
    return SweepResult(root, table, merged, compare)
