"""layerscope.sweep: many (model, revision, dataset) runs as resumable units, locally or on Ray.

    from layerscope.sweep import run_sweep
    result = run_sweep("sweep.yaml", backend="ray")   # or backend="local"
    print(result.units)                                # status, time, best layer of every unit

See :mod:`layerscope.sweep.spec` for the sweep file and :mod:`layerscope.sweep.runner` for how
units run, resume and merge.
"""

from __future__ import annotations

from layerscope.sweep.runner import BACKENDS, SweepResult, run_sweep, run_unit, unit_status
from layerscope.sweep.spec import JOBS, SweepSpec, Unit, load_sweep, plan

__all__ = ["BACKENDS", "JOBS", "SweepResult", "SweepSpec", "Unit", "load_sweep", "plan", "run_sweep", "run_unit",
           "unit_status"]
