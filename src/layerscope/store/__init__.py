"""layerscope.store: the results database (DuckDB) and atomic artifact files.

One ``results.duckdb`` per output directory holds runs, per-layer metrics, per-layer task scores,
per-prompt values and experiment values (see :mod:`layerscope.store.db`); :mod:`layerscope.store.runs`
reads a run back (:func:`load_run`); plots and reports are written with the atomic helpers of
:mod:`layerscope.atomic`.
"""

from __future__ import annotations

from layerscope.atomic import (
    atomic_open,
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
)
from layerscope.store.db import (
    SCHEMA_VERSION,
    STORE_FILENAME,
    ResultsStore,
    RunInfo,
    RunWriter,
    run_id_for,
)
from layerscope.store.merge import merge_stores
from layerscope.store.runs import RunData, load_run, load_runs

__all__ = [
    "SCHEMA_VERSION",
    "STORE_FILENAME",
    "ResultsStore",
    "RunData",
    "RunInfo",
    "RunWriter",
    "atomic_open",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "load_run",
    "load_runs",
    "merge_stores",
    "run_id_for",
]
