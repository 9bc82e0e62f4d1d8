"""Sizes of the files and functions of ``src/layerscope``, read with :mod:`ast` (nothing is imported).

Used by ``tests/test_architecture.py`` (the size limits) and ``benchmarks/bench_architecture.py``
(the numbers of the architecture page), so both count the same way:

- a file's size is its number of lines (``len(text.splitlines())``), everything included;
- a function's size is the number of lines from the first statement of its body after the
  docstring to the function's last line (:func:`body_lines`): its signature, decorators and
  docstring do not count, blank lines and comments inside the body do. Nested functions count
  inside the function that holds them and on their own too.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from import_graph import PACKAGE, SRC


@dataclass(frozen=True)
class Sized:
    """A file or a function and its size in lines."""

    lines: int
    name: str  # "layerscope/cli/options.py" or "layerscope/cli/options.py:configured"


def body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines from the first statement after the docstring to the function's last line."""
    body = node.body
    if len(body) > 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]
    return node.end_lineno - body[0].lineno + 1


def files_and_functions(src: Path = SRC) -> tuple[list[Sized], list[Sized]]:
    """Every file and every function (methods and nested functions included), largest first."""
    files, functions = [], []
    for path in sorted((src / PACKAGE).rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        name = path.relative_to(src).as_posix()
        files.append(Sized(len(text.splitlines()), name))
        for node in ast.walk(ast.parse(text, filename=str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                functions.append(Sized(body_lines(node), f"{name}:{node.name}"))
    return sorted(files, key=_largest_first), sorted(functions, key=_largest_first)


def _largest_first(item: Sized) -> tuple[int, str]:
    return -item.lines, item.name
