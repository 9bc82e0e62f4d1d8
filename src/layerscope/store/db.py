"""The results database: one DuckDB file (``results.duckdb``) per output directory.

Tables
------
``runs``
    One row per run: ``run_id``, ``config`` (JSON), ``layerscope_version``, ``model_id``,
    ``revision``, ``data_source``, ``data_hash`` (content hash of the texts), ``status``
    (``running`` / ``finished`` / ``failed``), ``created_at`` and ``finished_at`` (UTC), ``skipped``
    (JSON object of skip counts, e.g. empty prompts) and ``error``.
``layer_metrics``
    ``run_id, layer, depth_pct, metric, normalization, value, n_used, n_skipped, dataset``.
``task_scores``
    ``run_id, layer, depth_pct, task, task_type, main_score, scores`` (``scores``: JSON of all of
    the evaluator's scores).
``prompt_values``
    ``run_id, layer, prompt_index, metric, value, dataset`` (per-prompt values for histograms).
``recipe_scores``
    ``run_id, recipe_set, source, recipe, task, task_type, main_score, scores``: each task's score under
    each recipe set of ``analyze --recipes`` (``recipe``: the set's recipe for the task's type; ``source``:
    ``auto`` or ``given``). A database written before this table existed gets it, empty, when it is next
    opened for writing; read-only, it reads as empty.
``experiment_values``
    ``run_id, experiment, condition, layer, key, value``: a generic long table for the further
    experiments (SPEC section 7).

Identity and idempotence
------------------------
``run_id`` is a deterministic hash of the run's configuration (:func:`run_id_for`). Starting a run
whose configuration is already stored deletes that run's rows first, so re-running a configuration
replaces its results instead of duplicating them.

Transactions and faults
-----------------------
Every write is one transaction (``BEGIN`` ... ``COMMIT``; a replace is delete + insert inside it);
on error it is rolled back. DuckDB writes a write-ahead log, so a process killed mid-run leaves the
database readable with every committed transaction in it; the run row keeps ``status='running'``.
A full disk (or quota) during a write or its commit raises :class:`~layerscope.errors.DiskFullError`
(one line naming the database); DuckDB rolls the transaction back and the database stays usable,
with every earlier transaction, for the rerun once space is freed.

Concurrency
-----------
DuckDB allows one process to open a database file for writing (it takes a file lock); other
processes then cannot open it at all, and several processes may open it only if all are
read-only. Parallel units of a sweep therefore each write their own file and are combined
afterwards with :func:`~layerscope.store.merge.merge_stores`. Inside one process a :class:`ResultsStore` holds a single
connection and is not thread-safe.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TypedDict

import pandas as pd

from layerscope.errors import LayerscopeError, check_keywords, disk_full, unknown

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["STORE_FILENAME", "SCHEMA_VERSION", "ResultsStore", "RunInfo", "RunWriter", "run_id_for"]

logger = logging.getLogger(__name__)

STORE_FILENAME = "results.duckdb"
SCHEMA_VERSION = 1

class _Table(NamedTuple):
    """A data table: its columns after ``run_id`` (always first, set by the store), in order, and those an
    input frame must have."""

    columns: tuple[str, ...]
    required: tuple[str, ...]


_DATA_TABLES: dict[str, _Table] = {
    "layer_metrics": _Table(("layer", "depth_pct", "metric", "normalization", "value", "n_used", "n_skipped", "dataset"),
                            required=("layer", "metric", "value")),
    "task_scores": _Table(("layer", "depth_pct", "task", "task_type", "main_score", "scores"),
                          required=("layer", "task", "main_score")),
    "prompt_values": _Table(("layer", "prompt_index", "metric", "value", "dataset"),
                            required=("layer", "prompt_index", "metric", "value")),
    "experiment_values": _Table(("experiment", "condition", "layer", "key", "value"),
                                required=("experiment", "key", "value")),
    "recipe_scores": _Table(("recipe_set", "source", "recipe", "task", "task_type", "main_score", "scores"),
                            required=("recipe_set", "recipe", "task", "main_score")),
}

_RUN_COLUMNS: tuple[str, ...] = ("run_id", "config", "layerscope_version", "model_id", "revision", "data_source",
                                 "data_hash", "status", "created_at", "finished_at", "skipped", "error")


class RunInfo(TypedDict, total=False):
    """What a run measured, stored in the ``runs`` table beside its configuration (searchable copies).

    :meth:`ResultsStore.begin_run`, :meth:`ResultsStore.run` and :meth:`ResultsStore.write_run` take it as
    keyword arguments (``**info``); each is optional.

    Attributes
    ----------
    model_id, revision : str or None
        The run's model and its revision.
    data_source, data_hash : str or None
        Its text source and the hash of the text content.
    """

    model_id: str | None
    revision: str | None
    data_source: str | None
    data_hash: str | None


#: SQL type of a column, the same in every table: VARCHAR unless listed here.
_COLUMN_TYPES: dict[str, str] = {
    "layer": "INTEGER", "depth_pct": "DOUBLE", "value": "DOUBLE", "main_score": "DOUBLE", "n_used": "BIGINT",
    "n_skipped": "BIGINT", "prompt_index": "BIGINT", "created_at": "TIMESTAMP", "finished_at": "TIMESTAMP",
}


def _sql_type(column: str) -> str:
    return _COLUMN_TYPES.get(column, "VARCHAR")


_ALL_TABLES = ("runs", *_DATA_TABLES)
_RUN_STATUSES = ("running", "finished", "failed")
_INPUT_VIEW = "_layerscope_input"


def _canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace; values JSON cannot hold go through ``str``."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False)


def run_id_for(config: Mapping[str, Any]) -> str:
    """Return the deterministic id of a run configuration.

    Parameters
    ----------
    config : Mapping
        Everything that defines the run (model, revision, data source, metrics, pooling, ...).
        Key order does not matter; values that JSON cannot represent are hashed through ``str``.

    Returns
    -------
    str
        16 hexadecimal characters of the SHA-256 of the canonical JSON of ``config``.
    """
    return hashlib.sha256(_canonical_json(dict(config)).encode("utf-8")).hexdigest()[:16]


def _utc_now() -> datetime:
    """Current UTC time as a naive datetime (stored in ``TIMESTAMP`` columns, documented as UTC)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _open_error(path: Path, error: Exception, read_only: bool) -> LayerscopeError:
    """Why a database would not open, in one line; for DuckDB's lock (one writing process per file):
    who holds it and what to do."""
    full = disk_full(error, path)
    if full is not None:
        return full
    text = _first_line(error)
    if "could not set lock" not in text.lower() and "conflicting lock" not in text.lower():
        return LayerscopeError(f"cannot open results database {path}: {text}")
    import re

    holder = re.search(r"\(PID (\d+)\)", str(error))
    who = "another layerscope process" + (f" (PID {holder.group(1)})" if holder else "")
    advice = "wait for it to finish" + ("" if read_only else " or use another --out")
    return LayerscopeError(f"cannot open results database {path}: {who} is writing it; {advice}")


def _first_line(error: BaseException) -> str:
    """First line of an exception's message (DuckDB's can span several), or its type name."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _quote_literal(text: str) -> str:
    """Quote a string as an SQL literal (for statements such as ATTACH that take no parameters)."""
    return "'" + text.replace("'", "''") + "'"


def _resolve_path(path: str | os.PathLike[str]) -> Path:
    """A directory means ``<directory>/results.duckdb``."""
    resolved = Path(path)
    if resolved.is_dir():
        resolved = resolved / STORE_FILENAME
    return resolved


def _as_id_list(run_id: str | Sequence[str] | None) -> list[str] | None:
    if run_id is None:
        return None
    if isinstance(run_id, str):
        return [run_id]
    return list(run_id)


class RunWriter:
    """The writes of one run opened with :meth:`ResultsStore.run`.

    Attributes
    ----------
    run_id : str
    skipped : dict of str to int
        Skip counts recorded when the run finishes.
    """

    def __init__(self, store: ResultsStore, run_id: str) -> None:
        self.store = store
        self.run_id = run_id
        self.skipped: dict[str, Any] = {}

    def write_metrics(self, frame: pd.DataFrame) -> int:
        """See :meth:`ResultsStore.write_metrics`."""
        return self.store.write_metrics(self.run_id, frame)

    def write_scores(self, frame: pd.DataFrame) -> int:
        """See :meth:`ResultsStore.write_scores`."""
        return self.store.write_scores(self.run_id, frame)

    def write_prompt_values(self, frame: pd.DataFrame) -> int:
        """See :meth:`ResultsStore.write_prompt_values`."""
        return self.store.write_prompt_values(self.run_id, frame)

    def write_experiment_values(self, frame: pd.DataFrame) -> int:
        """See :meth:`ResultsStore.write_experiment_values`."""
        return self.store.write_experiment_values(self.run_id, frame)

    def write_recipe_scores(self, frame: pd.DataFrame) -> int:
        """See :meth:`ResultsStore.write_recipe_scores`."""
        return self.store.write_recipe_scores(self.run_id, frame)


class ResultsStore:
    """Results of layerscope runs in one DuckDB file.

    Parameters
    ----------
    path : str or os.PathLike
        Database file, or an existing directory (then ``<path>/results.duckdb``). Parent
        directories are created for a writable store.
    read_only : bool, default False
        Open without write access (several processes may read at once, but only while no process
        has the file open for writing).

    Examples
    --------
    >>> with ResultsStore("runs/p410") as store:                     # doctest: +SKIP
    ...     run_id = store.begin_run(config, model_id="EleutherAI/pythia-410m", revision="main")
    ...     store.write_metrics(run_id, metrics_frame)
    ...     store.write_scores(run_id, scores_frame)
    ...     store.finish_run(run_id, skipped={"empty_prompts": 2})
    ...     table = store.metrics(run_id)
    """

    def __init__(self, path: str | os.PathLike[str], *, read_only: bool = False) -> None:
        import duckdb  # imported here so that importing layerscope.store stays cheap

        self.path = _resolve_path(path)
        self.read_only = read_only
        if read_only and not self.path.exists():
            raise LayerscopeError(f"no results database at {self.path}")
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._connection: Any = duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.Error as error:
            raise _open_error(self.path, error, read_only) from error
        self._in_transaction = False
        if not read_only:
            self._create_schema()

    @classmethod
    def in_directory(cls, directory: str | os.PathLike[str], *, read_only: bool = False) -> ResultsStore:
        """Open ``<directory>/results.duckdb``, creating the directory for a writable store."""
        directory = Path(directory)
        if not read_only:
            directory.mkdir(parents=True, exist_ok=True)
        return cls(directory / STORE_FILENAME, read_only=read_only)

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Close the connection (idempotent)."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "read-only" if self.read_only else "read-write"
        state = "closed" if self._connection is None else mode
        return f"ResultsStore({str(self.path)!r}, {state})"

    @property
    def connection(self) -> Any:
        """The underlying ``duckdb.DuckDBPyConnection`` (for ad-hoc SQL)."""
        if self._connection is None:
            raise LayerscopeError(f"results database {self.path} is closed")
        return self._connection

    def _create_schema(self) -> None:
        with self.transaction() as connection:
            connection.execute("CREATE TABLE IF NOT EXISTS layerscope_meta (key VARCHAR, value VARCHAR)")
            for table, names in (("runs", _RUN_COLUMNS),
                                 *((table, ("run_id", *spec.columns)) for table, spec in _DATA_TABLES.items())):
                columns = ", ".join(f"{name} {_sql_type(name)}" for name in names)
                connection.execute(f"CREATE TABLE IF NOT EXISTS {table} ({columns})")
            found = connection.execute(
                "SELECT value FROM layerscope_meta WHERE key = 'schema_version'"
            ).fetchall()
            if not found:
                connection.execute(
                    "INSERT INTO layerscope_meta VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)]
                )

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:
        """Run the body in one transaction: committed on success, rolled back on any exception.

        Nested uses join the outer transaction (DuckDB has no nested transactions).

        Yields
        ------
        duckdb.DuckDBPyConnection
            The store's connection.
        """
        connection = self.connection
        if self._in_transaction:
            yield connection
            return
        connection.begin()
        self._in_transaction = True
        try:
            yield connection
        except BaseException:
            self._in_transaction = False
            connection.rollback()
            raise
        self._in_transaction = False
        try:
            connection.commit()  # DuckDB rolls back a commit that fails (e.g. its WAL on a full disk)
        except Exception as error:
            full = disk_full(error, self.path)
            if full is not None:
                raise full from error
            raise

    def _require_writable(self) -> None:
        if self.read_only:
            raise LayerscopeError(f"results database {self.path} was opened read-only")

    # ------------------------------------------------------------------ runs

    def begin_run(
        self,
        config: Mapping[str, Any],
        *,
        run_id: str | None = None,
        resume: bool = False,
        **info: Unpack[RunInfo],
    ) -> str:
        """Register a run and return its id.

        Parameters
        ----------
        config : Mapping
            The full run configuration, stored as JSON; its hash is the run id.
        run_id : str, optional
            Explicit id; defaults to :func:`run_id_for` of ``config``.
        resume : bool, default False
            Keep the rows this run already has (a resumed run adds what is missing). By default
            the run's existing rows in every table are deleted, so a re-run replaces them.
        **info
            Searchable copies of the run's model, revision, text source and text content hash
            (:class:`RunInfo`: ``model_id``, ``revision``, ``data_source``, ``data_hash``).

        Returns
        -------
        str
            The run id.
        """
        check_keywords("begin_run", info, RunInfo)
        self._require_writable()
        run_id = run_id or run_id_for(config)
        from layerscope import __version__

        with self.transaction() as connection:
            # fetchall, not fetchone: DuckDB refuses new work while a result is half read
            previous = connection.execute("SELECT created_at FROM runs WHERE run_id = ?", [run_id]).fetchall()
            if previous and resume:
                connection.execute(
                    "UPDATE runs SET status = 'running', finished_at = NULL, error = NULL WHERE run_id = ?",
                    [run_id],
                )
                return run_id
            for table in _ALL_TABLES:
                connection.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])
            connection.execute(
                "INSERT INTO runs (run_id, config, layerscope_version, model_id, revision, data_source, "
                "data_hash, status, created_at, finished_at, skipped, error) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, 'running', ?, NULL, NULL, NULL)",
                [
                    run_id,
                    _canonical_json(dict(config)),
                    __version__,
                    *(info.get(name) for name in RunInfo.__annotations__),  # its order: that of the columns
                    _utc_now(),
                ],
            )
        return run_id

    def finish_run(
        self,
        run_id: str,
        *,
        status: str = "finished",
        skipped: Mapping[str, int] | None = None,
        error: str | None = None,
    ) -> None:
        """Mark a run finished (or failed), with its skip counts.

        Parameters
        ----------
        run_id : str
            A run registered with :meth:`begin_run`.
        status : {"finished", "failed", "running"}, default "finished"
        skipped : Mapping[str, int], optional
            Counts of skipped inputs (empty prompts, too-short prompts, NaN layers, ...).
        error : str, optional
            One-line reason for a failed run.
        """
        self._require_writable()
        if status not in _RUN_STATUSES:
            raise unknown("run status", status, _RUN_STATUSES)
        with self.transaction() as connection:
            self._require_run(connection, run_id)
            connection.execute(
                "UPDATE runs SET status = ?, finished_at = ?, skipped = ?, error = ? WHERE run_id = ?",
                [
                    status,
                    _utc_now(),
                    None if skipped is None else _canonical_json(dict(skipped)),
                    error,
                    run_id,
                ],
            )

    @contextlib.contextmanager
    def run(self, config: Mapping[str, Any], **options: Any) -> Iterator[RunWriter]:
        """A run as a ``with`` block: registered on entry (:meth:`begin_run`, which takes ``options``:
        ``run_id``, ``resume`` and the :class:`RunInfo` ones), marked finished at the end of the block,
        or failed (with the one-line reason, ``interrupted`` for Ctrl-C) if the block raises.

        Examples
        --------
        >>> with store.run(config, model_id="smollm2-135m") as run:        # doctest: +SKIP
        ...     run.write_metrics(metrics)
        ...     run.skipped["empty_texts"] = 2
        """
        run_id = self.begin_run(config, **options)
        writer = RunWriter(self, run_id)
        try:
            yield writer
        except BaseException as error:
            reason = "interrupted" if isinstance(error, KeyboardInterrupt) else _first_line(error)[:500]
            with contextlib.suppress(Exception):  # the original error is the one to report
                self.finish_run(run_id, status="failed", error=reason)
            raise
        self.finish_run(run_id, skipped=writer.skipped)

    def delete_run(self, run_id: str) -> None:
        """Delete a run and all its rows (no error if it does not exist)."""
        self._require_writable()
        with self.transaction() as connection:
            for table in _ALL_TABLES:
                connection.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])

    @staticmethod
    def _require_run(connection: Any, run_id: str) -> None:
        if not connection.execute("SELECT 1 FROM runs WHERE run_id = ?", [run_id]).fetchall():
            raise LayerscopeError(f"unknown run '{run_id}': call begin_run(config) first")

    # ------------------------------------------------------------------ writes

    def _insert(
        self,
        table: str,
        run_id: str,
        frame: pd.DataFrame,
        *,
        replace: bool,
        replace_where: tuple[str, list[Any]] | None = None,
    ) -> int:
        """Insert ``frame`` into ``table`` for ``run_id`` in one transaction; return the row count."""
        self._require_writable()
        spec = _DATA_TABLES[table]
        if not isinstance(frame, pd.DataFrame):
            raise TypeError(f"expected a pandas DataFrame for {table}, got {type(frame).__name__}")
        missing = [name for name in spec.required if name not in frame.columns]
        if missing:
            raise LayerscopeError(f"cannot store {table}: missing column(s) {', '.join(missing)}")
        known = {*spec.columns, "run_id"}
        extra = [str(column) for column in frame.columns if column not in known]
        if extra:
            logger.warning("%s: ignoring column(s) the store does not keep: %s", table, ", ".join(extra))
        frame = frame.reset_index(drop=True)
        if table in ("task_scores", "recipe_scores") and "scores" in frame.columns:
            frame = frame.assign(
                scores=frame["scores"].map(
                    lambda value: value if value is None or isinstance(value, str) else _canonical_json(value)
                )
            )
        select = ", ".join(
            f'CAST({_INPUT_VIEW}."{name}" AS {_sql_type(name)})'
            if name in frame.columns
            else f"CAST(NULL AS {_sql_type(name)})"
            for name in spec.columns
        )
        columns = ", ".join(["run_id", *spec.columns])
        with self.transaction() as connection:
            self._require_run(connection, run_id)
            if replace:
                where, parameters = replace_where or ("", [])
                connection.execute(f"DELETE FROM {table} WHERE run_id = ?{where}", [run_id, *parameters])
            if len(frame):
                import duckdb

                connection.register(_INPUT_VIEW, frame)
                try:
                    connection.execute(
                        f"INSERT INTO {table} ({columns}) SELECT ?, {select} FROM {_INPUT_VIEW}", [run_id]
                    )
                except duckdb.Error as error:
                    full = disk_full(error, self.path)
                    if full is not None:  # the transaction rolls back: the database stays as it was
                        raise full from error
                    raise LayerscopeError(f"cannot store {table}: {_first_line(error)}") from error
                finally:
                    # after a failed statement the transaction is aborted and refuses even this;
                    # the registration is replaced by the next register() anyway
                    with contextlib.suppress(duckdb.Error):
                        connection.unregister(_INPUT_VIEW)
        return len(frame)

    def write_metrics(self, run_id: str, frame: pd.DataFrame, *, replace: bool = True) -> int:
        """Store per-layer metrics (long format).

        Parameters
        ----------
        run_id : str
            A run registered with :meth:`begin_run`.
        frame : pandas.DataFrame
            Columns ``layer, metric, value`` and optionally ``depth_pct, normalization, n_used,
            n_skipped, dataset``.
        replace : bool, default True
            Delete the run's previous metric rows first (same transaction). ``False`` appends,
            e.g. layer by layer as they are computed.

        Returns
        -------
        int
            Number of rows written.
        """
        return self._insert("layer_metrics", run_id, frame, replace=replace)

    def write_scores(self, run_id: str, frame: pd.DataFrame, *, replace: bool = True) -> int:
        """Store per-layer task scores: ``layer, task, main_score`` (+ ``depth_pct, task_type, scores``).

        ``scores`` may hold JSON strings or dicts (serialised here). See :meth:`write_metrics`.
        """
        return self._insert("task_scores", run_id, frame, replace=replace)

    def write_prompt_values(self, run_id: str, frame: pd.DataFrame, *, replace: bool = True) -> int:
        """Store per-prompt values: ``layer, prompt_index, metric, value`` (+ ``dataset``)."""
        return self._insert("prompt_values", run_id, frame, replace=replace)

    def write_experiment_values(self, run_id: str, frame: pd.DataFrame, *, replace: bool = True) -> int:
        """Store experiment results: ``experiment, key, value`` (+ ``condition, layer``).

        With ``replace=True`` only the run's rows of the experiments present in ``frame`` are
        replaced, so several experiments can share a run.
        """
        experiments = sorted({str(name) for name in frame["experiment"]}) if "experiment" in frame else []
        where = None
        if experiments:
            where = (f" AND experiment IN ({', '.join('?' for _ in experiments)})", list(experiments))
        return self._insert("experiment_values", run_id, frame, replace=replace, replace_where=where)

    def write_recipe_scores(self, run_id: str, frame: pd.DataFrame, *, replace: bool = True) -> int:
        """Store task scores under recipe sets: ``recipe_set, recipe, task, main_score`` (+ ``source, task_type,
        scores``), one row per (set, task). See :meth:`write_metrics`."""
        return self._insert("recipe_scores", run_id, frame, replace=replace)

    def write_run(
        self,
        config: Mapping[str, Any],
        *,
        metrics: pd.DataFrame | None = None,
        scores: pd.DataFrame | None = None,
        prompt_values: pd.DataFrame | None = None,
        experiment_values: pd.DataFrame | None = None,
        skipped: Mapping[str, int] | None = None,
        **info: Unpack[RunInfo],
    ) -> str:
        """Write a complete run in one transaction (all of it or nothing) and return its id.

        Parameters are those of :meth:`begin_run`, the ``write_*`` methods and :meth:`finish_run`.
        """
        check_keywords("write_run", info, RunInfo)
        with self.transaction():
            run_id = self.begin_run(config, **info)
            if metrics is not None:
                self.write_metrics(run_id, metrics)
            if scores is not None:
                self.write_scores(run_id, scores)
            if prompt_values is not None:
                self.write_prompt_values(run_id, prompt_values)
            if experiment_values is not None:
                self.write_experiment_values(run_id, experiment_values)
            self.finish_run(run_id, skipped=skipped)
        return run_id

    # ------------------------------------------------------------------ reads

    def _read(self, table: str, run_id: str | Sequence[str] | None = None, **equal: Any) -> pd.DataFrame:
        """Rows of ``table`` of the runs ``run_id`` (None: every run) whose ``column`` equals each value of
        ``equal`` (a value None leaves its column free), in the table's own order."""
        filters = [("run_id", _as_id_list(run_id)),
                   *((column, None if value is None else [value]) for column, value in equal.items())]
        clauses: list[str] = []
        parameters: list[Any] = []
        for column, values in filters:
            if values is None:
                continue
            clauses.append(f"{column} IN ({', '.join('?' for _ in values)})" if values else "FALSE")
            parameters.extend(values)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        order = {
            "runs": "created_at, run_id",
            "layer_metrics": "run_id, dataset, metric, normalization, layer",
            "task_scores": "run_id, task, layer",
            "prompt_values": "run_id, metric, layer, prompt_index",
            "experiment_values": "run_id, experiment, condition, layer, key",
            "recipe_scores": "run_id, recipe_set, task",
        }[table]
        return self.connection.execute(f"SELECT * FROM {table}{where} ORDER BY {order}", parameters).df()

    def runs(self, *, status: str | None = None) -> pd.DataFrame:
        """All runs (one row each, oldest first); optionally only those with ``status``."""
        return self._read("runs", status=status)

    def run_config(self, run_id: str) -> dict[str, Any]:
        """The stored configuration of a run, parsed from JSON."""
        rows = self.connection.execute("SELECT config FROM runs WHERE run_id = ?", [run_id]).fetchall()
        if not rows:
            raise unknown("run", run_id, self.runs()["run_id"].tolist())
        return dict(json.loads(rows[0][0]))

    def latest_run_id(self, *, status: str | None = "finished") -> str | None:
        """Id of the most recently created run (with ``status``, by default finished ones), or None."""
        frame = self.runs(status=status)
        return None if frame.empty else str(frame["run_id"].iloc[-1])

    def metrics(
        self, run_id: str | Sequence[str] | None = None, *, metric: str | None = None
    ) -> pd.DataFrame:
        """Per-layer metrics of one run, several, or all (``run_id=None``)."""
        return self._read("layer_metrics", run_id, metric=metric)

    def scores(self, run_id: str | Sequence[str] | None = None, *, task: str | None = None) -> pd.DataFrame:
        """Per-layer task scores of one run, several, or all (``run_id=None``)."""
        return self._read("task_scores", run_id, task=task)

    def prompt_values(
        self,
        run_id: str | Sequence[str] | None = None,
        *,
        metric: str | None = None,
        layer: int | None = None,
    ) -> pd.DataFrame:
        """Per-prompt values, optionally of one metric and one layer."""
        return self._read("prompt_values", run_id, metric=metric, layer=None if layer is None else int(layer))

    def recipe_scores(self, run_id: str | Sequence[str] | None = None) -> pd.DataFrame:
        """Task scores under recipe sets (one row per run, set and task); empty for a database older than the
        table, opened read-only."""
        present = self.connection.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'recipe_scores' AND database_name = "
            "current_database()").fetchone()[0]
        if not present:
            return pd.DataFrame(columns=["run_id", *_DATA_TABLES["recipe_scores"].columns])
        return self._read("recipe_scores", run_id)

    def experiment_values(
        self, run_id: str | Sequence[str] | None = None, *, experiment: str | None = None
    ) -> pd.DataFrame:
        """Rows of the generic experiment table, optionally of one experiment."""
        return self._read("experiment_values", run_id, experiment=experiment)
