"""Texts from user files: ``.txt`` (one text per line), ``.jsonl``, ``.json``, ``.csv``, ``.tsv``, ``.parquet``."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from layerscope.errors import LayerscopeError

logger = logging.getLogger(__name__)

#: File suffixes :func:`read_texts` understands.
SUFFIXES = (".txt", ".jsonl", ".json", ".csv", ".tsv", ".parquet")


def looks_like_file(source: str) -> bool:
    """Whether ``source`` names a file (an existing path, or a name with a known suffix or a separator)."""
    path = Path(source).expanduser()
    return path.exists() or path.suffix.lower() in SUFFIXES or source.startswith((".", "/", "~"))


#: Suffixes of table files (:func:`read_table`).
TABLE_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")
# bytes read to tell a text table from a binary file
_SNIFF_BYTES = 1 << 16


def _check_text(path: Path) -> None:
    """A one-line error if a text table (.csv, .tsv, .jsonl, .json) is binary or not UTF-8."""
    import codecs

    with path.open("rb") as handle:
        head = handle.read(_SNIFF_BYTES)
    if b"\x00" in head:
        raise LayerscopeError(f"cannot read {path}: it looks binary (a NUL byte at byte {head.index(0)}), not a "
                              f"{path.suffix[1:]} text table; save it as UTF-8 {path.suffix[1:]}")
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=len(head) < _SNIFF_BYTES)
    except UnicodeDecodeError as error:
        raise LayerscopeError(f"cannot read {path}: not UTF-8 text (byte {error.start}); save it as UTF-8 "
                              f"{path.suffix[1:]}") from None


def _existing(path: Path, suffixes: tuple[str, ...]) -> Path:
    if not path.exists():
        raise LayerscopeError(f"file not found: {path}")
    if path.is_dir():
        raise LayerscopeError(f"{path} is a folder; give a file ({', '.join(suffixes)})")
    return path


def read_table(path: str | Path, suffixes: tuple[str, ...] = TABLE_SUFFIXES) -> pd.DataFrame:
    """Read a table file (``.jsonl``, ``.json``, ``.csv``, ``.tsv``, ``.parquet``) into a DataFrame.

    CSV and TSV cells are read as text (no type guessing); JSONL and parquet keep their types.

    Parameters
    ----------
    path : str or Path
        The file.
    suffixes : tuple of str
        The suffixes accepted here (a caller may accept fewer).

    Returns
    -------
    pandas.DataFrame
        The table, in file order.

    Raises
    ------
    LayerscopeError
        One line naming the file: missing, a folder, an unsupported type, binary or not UTF-8, a JSONL
        line that is not JSON (its number), or content the parser rejects.
    """
    path = _existing(Path(path).expanduser(), suffixes)
    suffix = path.suffix.lower()
    if suffix not in suffixes:
        raise LayerscopeError(f"unsupported file type '{suffix or path.name}' for {path}; use one of: {', '.join(suffixes)}")
    if suffix != ".parquet":
        _check_text(path)
    return _read_table(path)


def _read_table(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        records = []
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise LayerscopeError(f"cannot parse {path}: line {number} is not JSON ({error.msg}); "
                                          "fix or remove that line") from None
                if not isinstance(record, dict):
                    raise LayerscopeError(f"cannot parse {path}: line {number} is not a JSON object; "
                                          "write one object per line")
                records.append(record)
        return pd.DataFrame.from_records(records)
    if suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise LayerscopeError(f"cannot parse {path}: not JSON ({error.msg} at line {error.lineno})") from None
        if isinstance(data, list) and all(isinstance(item, str) for item in data):
            return pd.DataFrame({"text": data})
        if isinstance(data, list) and all(isinstance(item, dict) for item in data):
            return pd.DataFrame.from_records(data)
        raise LayerscopeError(f"cannot parse {path}: expected a JSON list of strings or of objects")
    try:
        if suffix in (".csv", ".tsv"):
            return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype=object)
        if suffix == ".parquet":
            return pd.read_parquet(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError, OSError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise LayerscopeError(f"cannot parse {path} as {suffix[1:]}: {first_line.rstrip('. ')}; check that it is a valid "
                              f"{suffix[1:]} file") from None
    raise LayerscopeError(f"unsupported file type '{suffix or path.name}'; use one of: {', '.join(SUFFIXES)}")


def read_texts(path: str | Path, column: str | None = None) -> list[str]:
    """Read texts from a user file (see :func:`read_rows`, which also gives each text's row id)."""
    return read_rows(path, column)[0]


def read_rows(path: str | Path, column: str | None = None, id_column: str | None = None) -> tuple[list[str], list[Any]]:
    """Read texts from a user file, with the id of each text's row.

    Parameters
    ----------
    path : str or Path
        ``.txt``: one text per line (blank lines are dropped). ``.jsonl`` (one JSON object per line),
        ``.json`` (a list of strings or of objects), ``.csv``, ``.tsv``, ``.parquet``: a table.
    column : str, optional
        Table column holding the texts. Default: ``text`` if present, else an error that lists
        the columns. Ignored for ``.txt``.
    id_column : str, optional
        Table column holding each row's id (default: the row's position among the file's data rows,
        from 0; for ``.txt`` the line number, from 0).

    Returns
    -------
    texts : list of str
        Texts in file order; blank lines and missing values in the column are dropped.
    ids : list
        The id of each text's row, so results can be joined back to the file.

    Raises
    ------
    LayerscopeError
        Missing file, unsupported type, unparseable content, or unknown column.
    """
    path = _existing(Path(path).expanduser(), SUFFIXES)
    if path.suffix.lower() == ".txt":
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as error:
            raise LayerscopeError(f"cannot read {path}: not UTF-8 text (byte {error.start})") from None
        if id_column is not None:
            raise LayerscopeError(f"{path} is a text file: it has no columns (no --id-column); its ids are line numbers")
        ids = [number for number, line in enumerate(lines) if line.strip()]
        if len(ids) < len(lines):
            logger.info("%s: dropped %d blank lines", path, len(lines) - len(ids))
        return [lines[number] for number in ids], ids

    table = read_table(path, SUFFIXES)
    if column is None:
        if "text" not in table.columns:
            columns = ", ".join(map(str, table.columns)) or "none"
            raise LayerscopeError(f"{path} has no 'text' column; choose one with --column (columns: {columns})")
        column = "text"
    elif column not in table.columns:
        columns = ", ".join(map(str, table.columns)) or "none"
        raise LayerscopeError(f"{path} has no column '{column}' (columns: {columns})")
    if id_column is not None and id_column not in table.columns:
        columns = ", ".join(map(str, table.columns)) or "none"
        raise LayerscopeError(f"{path} has no id column '{id_column}' (columns: {columns})")
    table = table.reset_index(drop=True)
    values = table[column].dropna()
    ids = table.loc[values.index, id_column].tolist() if id_column is not None else values.index.tolist()
    return [value if isinstance(value, str) else str(value) for value in values], ids
