"""A griffe extension for the API reference: the reStructuredText bits of layerscope's docstrings as Markdown.

The docstrings are numpydoc, written to read well in a terminal and in ``help()``; a few of their
constructs are reStructuredText, which Markdown would show verbatim or misread:

- cross-reference roles (``:func:`measure```, ``:class:`~layerscope.config.ModelConfig```) become
  optional autorefs: a link where the target is rendered in the reference, plain code where it is not
  (never a broken link, so ``mkdocs build --strict`` stays meaningful for the pages' own links);
- simple tables (``=====  =====`` borders) become Markdown tables;
- doctest lines (``>>> ...``) outside a numpydoc ``Examples`` section become a fenced ``pycon`` block
  (Markdown reads ``>`` as a quote);
- a paragraph ending in ``::`` (an RST literal block follows) ends in ``:``.

The source files are not changed: this runs on the text griffe reads (``allow_inspection: false``, so
nothing of layerscope is imported to build the docs).
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:func|class|meth|mod|attr|data|exc|obj|const):`(?P<tilde>~?)(?P<target>[^`]+)`")
BORDER = re.compile(r"^\s*=+(?: +=+)+\s*$")
DOCTEST = re.compile(r"^\s*(?:>>>|\.\.\.)(?: |$)")


def _columns(border: str) -> list[tuple[int, int]]:
    """(start, end) of each column, from a simple table's ``====  ====`` border line."""
    return [(m.start(), m.end()) for m in re.finditer(r"=+", border)]


def _cells(line: str, columns: list[tuple[int, int]]) -> list[str]:
    cells = []
    for index, (start, _) in enumerate(columns):
        end = columns[index + 1][0] if index + 1 < len(columns) else len(line)
        cells.append(line[start:end].strip())
    return cells


def _table(lines: list[str]) -> list[str]:
    """A simple RST table (its lines, borders included) as Markdown table lines."""
    columns = _columns(lines[0])
    borders = [index for index, line in enumerate(lines) if BORDER.match(line)]
    has_header = len(borders) >= 3
    rows: list[list[str]] = []
    header: list[str] = [""] * len(columns)
    for index, line in enumerate(lines):
        if BORDER.match(line) or not line.strip():
            continue
        cells = _cells(line, columns)
        if has_header and index < borders[1]:
            header = [" ".join(part for part in pair if part) for pair in zip(header, cells, strict=True)]
        elif rows and not cells[0]:  # a continuation line: its text belongs to the row above
            rows[-1] = [" ".join(part for part in pair if part) for pair in zip(rows[-1], cells, strict=True)]
        else:
            rows.append(cells)
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return ["", *out, ""]


def _tables(lines: list[str]) -> list[str]:
    out: list[str] = []
    index = 0
    while index < len(lines):
        if not BORDER.match(lines[index]):
            out.append(lines[index])
            index += 1
            continue
        end = index + 1  # the closing border: a border followed by a blank line or the end
        while end < len(lines) and not (BORDER.match(lines[end])
                                        and (end + 1 == len(lines) or not lines[end + 1].strip())):
            end += 1
        out += _table(lines[index:end + 1])
        index = end + 1
    return out


def _doctests(lines: list[str]) -> list[str]:
    out: list[str] = []
    in_examples = False
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.strip() in ("Examples", "Example") and index + 1 < len(lines) and set(lines[index + 1].strip()) == {"-"}:
            in_examples = True
        elif index + 1 < len(lines) and lines[index + 1].strip() and set(lines[index + 1].strip()) == {"-"}:
            in_examples = False  # another numpydoc section begins
        if in_examples or not DOCTEST.match(line) or not line.lstrip().startswith(">>>"):
            out.append(line)
            index += 1
            continue
        indent = line[: len(line) - len(line.lstrip())]
        block = []
        while index < len(lines) and DOCTEST.match(lines[index]):
            block.append(lines[index][len(indent):])
            index += 1
        out += ["", indent + "```pycon", *(indent + text for text in block), indent + "```", ""]
    return out


class RstDocstrings(griffe.Extension):
    """Rewrites each docstring's RST constructs as Markdown before mkdocstrings parses it."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:  # noqa: ARG002
        if obj.docstring is None:
            return
        lines = _doctests(_tables(obj.docstring.value.splitlines()))
        text = "\n".join(lines)
        text = re.sub(r"(\S)::$", r"\1:", text, flags=re.MULTILINE)
        module = obj.module.path
        owner = obj.path if obj.is_class else (obj.parent.path if obj.parent is not None and obj.parent.is_class
                                                 else None)

        def link(match: re.Match[str]) -> str:
            target = match["target"].lstrip(".")
            shown = target.rsplit(".", 1)[-1] if match["tilde"] else target
            identifier = target if target.startswith("layerscope") else f"{module}.{target}"
            slug = f' slug="{html.escape(owner + "." + target)}"' if owner and not target.startswith("layerscope") else ""
            return f'<autoref identifier="{html.escape(identifier)}"{slug} optional><code>{html.escape(shown)}</code></autoref>'

        obj.docstring.value = ROLE.sub(link, text)
