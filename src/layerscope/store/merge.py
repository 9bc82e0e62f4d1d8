"""Combining result databases: every run of several ``results.duckdb`` files copied into one.

Parallel units of a sweep each write their own database (DuckDB admits one writing process per file);
:func:`merge_stores` combines them afterwards, whole runs at a time.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

from layerscope.errors import LayerscopeError, unknown
from layerscope.store.db import (
    _ALL_TABLES,
    _DATA_TABLES,
    _RUN_COLUMNS,
    ResultsStore,
    _first_line,
    _quote_literal,
    _resolve_path,
)

__all__ = ["merge_stores"]

logger = logging.getLogger(__name__)

_CONFLICT_POLICIES = ("replace", "skip", "error")


def merge_stores(
    target: str | os.PathLike[str],
    sources: Iterable[str | os.PathLike[str]],
    *,
    on_conflict: str = "replace",
) -> list[str]:
    """Copy every run of several result databases into one.

    Sweep units each write their own database (DuckDB admits one writing process per file); this
    combines them. Each source is merged in its own transaction, so an interrupted merge leaves
    whole runs only.

    Parameters
    ----------
    target : str or os.PathLike
        Database file or directory to merge into (created if needed).
    sources : iterable of str or os.PathLike
        Database files or directories holding ``results.duckdb``; opened read-only. A source that
        is the target itself is skipped.
    on_conflict : {"replace", "skip", "error"}, default "replace"
        What to do with a run id already present in the target: replace its rows with the
        source's, keep the target's, or raise.

    Returns
    -------
    list of str
        The run ids copied into the target.
    """
    import duckdb

    if on_conflict not in _CONFLICT_POLICIES:
        raise unknown("conflict policy", on_conflict, _CONFLICT_POLICIES)
    merged: list[str] = []
    with ResultsStore(target) as store:
        connection = store.connection
        target_path = store.path.resolve()
        for index, source in enumerate(sources):
            source_path = _resolve_path(source)
            if not source_path.exists():
                raise LayerscopeError(f"no results database at {source_path}")
            if source_path.resolve() == target_path:
                logger.info("merge_stores: skipping %s (it is the target)", source_path)
                continue
            alias = f"layerscope_source_{index}"
            try:
                connection.execute(f"ATTACH {_quote_literal(str(source_path))} AS {alias} (READ_ONLY)")
            except duckdb.Error as error:
                raise LayerscopeError(
                    f"cannot read results database {source_path}: {_first_line(error)}"
                ) from error
            try:
                merged.extend(_merge_one(store, alias, on_conflict, source_path))
            finally:
                connection.execute(f"DETACH {alias}")
    return merged


def _merge_one(store: ResultsStore, alias: str, on_conflict: str, source_path: Path) -> list[str]:
    """Copy the runs of the attached database ``alias`` into ``store`` (one transaction)."""
    connection = store.connection
    present = {
        row[0]: set()
        for row in connection.execute(
            "SELECT DISTINCT table_name FROM duckdb_tables() WHERE database_name = ?", [alias]
        ).fetchall()
    }
    if "runs" not in present:
        raise LayerscopeError(f"{source_path} is not a layerscope results database (no 'runs' table)")
    for table_name, column_name in connection.execute(
        "SELECT table_name, column_name FROM duckdb_columns() WHERE database_name = ?", [alias]
    ).fetchall():
        present[table_name].add(column_name)

    source_runs = [row[0] for row in connection.execute(f"SELECT run_id FROM {alias}.runs").fetchall()]
    existing = {row[0] for row in connection.execute("SELECT run_id FROM runs").fetchall()}
    conflicts = sorted(set(source_runs) & existing)
    if conflicts and on_conflict == "error":
        raise LayerscopeError(f"run(s) {', '.join(conflicts)} of {source_path} already exist in {store.path}")
    chosen = [run for run in source_runs if on_conflict == "replace" or run not in existing]
    if not chosen:
        return []

    placeholders = ", ".join("?" for _ in chosen)
    target_columns = {"runs": list(_RUN_COLUMNS)}
    target_columns.update({table: ["run_id", *spec.columns] for table, spec in _DATA_TABLES.items()})
    with store.transaction():
        for table in _ALL_TABLES:
            connection.execute(f"DELETE FROM {table} WHERE run_id IN ({placeholders})", chosen)
            if table not in present:
                continue
            columns = [name for name in target_columns[table] if name in present[table]]
            column_list = ", ".join(columns)
            connection.execute(
                f"INSERT INTO {table} ({column_list}) SELECT {column_list} FROM {alias}.{table} "
                f"WHERE run_id IN ({placeholders})",
                chosen,
            )
    logger.info("merge_stores: %d run(s) from %s", len(chosen), source_path)
    return chosen
