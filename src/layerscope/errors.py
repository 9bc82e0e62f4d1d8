"""User-facing errors: one clear line, never a traceback (SPEC section 9)."""

from __future__ import annotations

import difflib
import errno
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any


class LayerscopeError(Exception):
    """An error caused by user input or the environment; the CLI prints its message as one line."""


def suggest(name: str, choices: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the nearest choice, or an empty string."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown(kind: str, name: str, choices: Iterable[str]) -> LayerscopeError:
    """Build the error for an unknown name, suggesting the nearest and listing what exists."""
    choices = sorted(choices)
    return LayerscopeError(f"unknown {kind} '{name}'{suggest(name, choices)}; available: {', '.join(choices)}")


def check_keywords(function: str, given: Mapping[str, Any], accepted: type) -> None:
    """Python's TypeError for a keyword ``function`` does not take, where it takes ``**kwargs`` typed by a
    TypedDict (``accepted``): Python checks their names only for a type checker, not when called."""
    for name in given:
        if name not in accepted.__annotations__:
            raise TypeError(f"{function}() got an unexpected keyword argument '{name}'")


class DiskFullError(LayerscopeError, OSError):
    """No space left on the device (``ENOSPC``) or the disk quota exceeded (``EDQUOT``) while writing.

    Its message is the one line the CLI prints (exit status :data:`EXIT_DISK_FULL`): the path being
    written and what it needed when known. Nothing complete-looking was left behind (every write goes
    through a temporary name), so the finished work is kept and a rerun resumes once space is freed.
    It is an :class:`OSError` too (``errno`` ENOSPC or EDQUOT, ``filename`` the path), so code that
    treats a failed write as a failed write still does.
    """

    def __init__(self, path: str | os.PathLike[str] | None, needed: int | None = None,
                 number: int = errno.ENOSPC) -> None:
        OSError.__init__(self, number, os.strerror(number), None if path is None else str(path))
        self.path = None if path is None else str(path)
        self.needed = needed

    def __str__(self) -> str:
        what = "disk quota exceeded" if self.errno == getattr(errno, "EDQUOT", None) else "no space left on device"
        where = f" writing {_shown_path(self.path)}" if self.path else ""
        needs = f" (needs {format_bytes(self.needed)})" if self.needed else ""
        return f"{what}{where}{needs}: free some space and rerun; finished work is kept"

    def __reduce__(self) -> tuple[Any, ...]:  # pickled across processes (sweeps) with its fields
        return type(self), (self.path, self.needed, self.errno)


#: Exit status of the CLI on a full disk (BSD sysexits' EX_IOERR): distinct from the usage errors' 2,
#: so a script can tell "free space and rerun" from "fix the command".
EXIT_DISK_FULL = 74

_DISK_FULL_ERRNOS = frozenset(number for number in (errno.ENOSPC, getattr(errno, "EDQUOT", None)) if number)
# what libraries that wrap ENOSPC say: DuckDB's IOException, pyarrow's and the OS's strerror, numpy's
# ndarray.tofile (np.save) when fallocate or fwrite comes up short
_DISK_FULL_TEXT = re.compile(r"no space left on device|disk quota exceeded", re.IGNORECASE)
_NUMPY_SHORT_WRITE = re.compile(r"^Not enough free space to write \d+ bytes|^\d+ requested and \d+ written$")
_QUOTED_PATH = re.compile(r"""file ["']([^"']+)["']""")


def disk_full(error: BaseException | None, path: str | os.PathLike[str] | None = None,
              needed: int | None = None) -> DiskFullError | None:
    """The :class:`DiskFullError` that ``error`` or an exception in its chain amounts to, else None.

    Recognised: an ``OSError`` with errno ENOSPC or EDQUOT, a message saying "No space left on device"
    or "Disk quota exceeded" (DuckDB's ``IOException``, a wrapping ``LayerscopeError``), numpy's short
    write of ``np.save``. ``path`` and ``needed`` (bytes) are used when the error does not name them.
    """
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, DiskFullError):
            return error
        number = getattr(error, "errno", None)
        text = str(error)
        short_write = isinstance(error, OSError) and number is None and _NUMPY_SHORT_WRITE.search(text)
        if number in _DISK_FULL_ERRNOS or short_write or _DISK_FULL_TEXT.search(text):
            quoted = _QUOTED_PATH.search(text)
            named = path or getattr(error, "filename", None) or (quoted.group(1) if quoted else None)
            quota = number == getattr(errno, "EDQUOT", None) or "quota" in text.lower()
            return DiskFullError(named, needed, getattr(errno, "EDQUOT", errno.ENOSPC) if quota else errno.ENOSPC)
        error = error.__cause__ or error.__context__
    return None


def format_bytes(count: int | float) -> str:
    """``21.5 MB``, ``3.0 kB``, ``12 bytes``: decimal units, as ``df -H`` shows free space."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{int(count)} bytes"


def _shown_path(path: str) -> str:
    """A path under the working directory relative to it (as the user typed ``--out``), else as given."""
    try:
        return os.path.relpath(path) if os.path.abspath(path).startswith(os.getcwd() + os.sep) else path
    except ValueError:  # another drive (Windows)
        return path
