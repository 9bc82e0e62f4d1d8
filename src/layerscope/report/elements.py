"""HTML primitives of the reports: escaping, numbers, tables, images, notes, sections and the page.

Every function that takes text from the data escapes it with :func:`escape` (SPEC section 9);
formatters passed to :func:`table` return *escaped* HTML. Images are embedded as base64 ``data:``
URIs and the page (``template.html``) carries its CSS inline and a Content-Security-Policy that
forbids any request, so a report reads the same offline and can be mailed around.
"""

from __future__ import annotations

import base64
import html
import logging
import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "MAX_EMBEDDED_BYTES",
    "Section",
    "duration",
    "escape",
    "formatter",
    "image",
    "is_missing",
    "key_value",
    "note",
    "number",
    "plain",
    "render_page",
    "section",
    "shade",
    "shorten",
    "signed",
    "table",
    "timestamp",
    "two_lines",
]

logger = logging.getLogger(__name__)

MAX_EMBEDDED_BYTES = 8 * 2**20

#: (anchor, navigation title, HTML) of one section of a page.
Section = tuple[str, str, str]


def escape(value: Any) -> str:
    """Escape any value for HTML text and attributes (None becomes the empty string)."""
    return html.escape("" if value is None else str(value), quote=True)


def is_missing(value: Any) -> bool:
    """Whether ``value`` is None, NaN, NaT or ``pd.NA`` (never raises on lists or strings)."""
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def number(value: Any, decimals: int = 3) -> str:
    """A number as text: NaN as an en dash, large magnitudes with fewer decimals."""
    if is_missing(value):
        return "\u2013"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    number_value = float(value)
    if not np.isfinite(number_value):
        return "\u2013"
    if abs(number_value) >= 1000:
        return f"{number_value:,.0f}"
    if abs(number_value) >= 100 and decimals > 1:
        return f"{number_value:.1f}"
    return f"{number_value:.{decimals}f}"


def formatter(decimals: int) -> Callable[[Any], str]:
    """A :func:`table` formatter writing numbers with ``decimals`` decimals."""
    return lambda value: escape(number(value, decimals))


def signed(value: float | None, decimals: int = 1) -> str:
    """A signed difference, green when clearly positive and red when clearly negative (HTML)."""
    if value is None or is_missing(value) or not np.isfinite(value):
        return "\u2013"
    css = "gain-pos" if value > 0.05 else "gain-neg" if value < -0.05 else ""
    text = f"{value:+.{decimals}f}"
    return f'<span class="{css}">{escape(text)}</span>' if css else escape(text)


def two_lines(first: str, second: str | None) -> str:
    """A table cell of escaped ``first`` with ``second`` below it in small muted type."""
    return escape(first) + (f'<br><span class="sub">{escape(second)}</span>' if second else "")


def image(path: Path, alt: str, caption: str | None = None) -> str:
    """``<figure>`` with the PNG embedded as a data URI (empty string when unreadable or too big).

    ``caption`` is HTML (escape data in it).
    """
    try:
        data = path.read_bytes()
    except OSError as error:
        logger.warning("cannot embed %s: %s", path, error)
        return ""
    if len(data) > MAX_EMBEDDED_BYTES:
        return f'<p class="note">Image {escape(path.name)} is too large to embed ({len(data) / 2**20:.1f} MiB).</p>'
    encoded = base64.b64encode(data).decode("ascii")
    caption_html = f"<figcaption>{caption}</figcaption>" if caption else ""
    return f'<figure><img alt="{escape(alt)}" src="data:image/png;base64,{encoded}">{caption_html}</figure>'


def _header(text: str) -> str:
    """Escaped header text; a second line (after a newline) is shown smaller."""
    first, _, second = text.partition("\n")
    return two_lines(first, second)


def table(
    frame: pd.DataFrame,
    columns: Sequence[tuple[str, str, Callable[[Any], str]]],
    *,
    row_class: Callable[[pd.Series], str] | None = None,
    cell_style: Callable[[str, Any], str] | None = None,
    text_columns: Iterable[str] = (),
    group: Callable[[pd.Series], str] | None = None,
    header_groups: Sequence[tuple[str, int]] | None = None,
) -> str:
    """An HTML table.

    Parameters
    ----------
    frame : pandas.DataFrame
        One table row per frame row.
    columns : sequence of (column, header, formatter)
        The formatter returns *escaped* HTML; headers are plain text (a newline starts a smaller
        second line).
    row_class : callable, optional
        CSS class of a row.
    cell_style : callable, optional
        Inline style of a cell, from (column, value).
    text_columns : iterable of str
        Left-aligned columns.
    group : callable, optional
        Labels rows: a label row is inserted where it changes.
    header_groups : sequence of (label, number of columns), optional
        Labels spanning the header's columns.
    """
    text = set(text_columns)
    head = "".join(
        f'<th class="text">{_header(header)}</th>' if column in text else f"<th>{_header(header)}</th>"
        for column, header, _ in columns
    )
    top = ""
    if header_groups:
        top = "<tr>" + "".join(
            f'<th class="span" colspan="{int(span)}">{escape(label)}</th>' for label, span in header_groups
        ) + "</tr>"
    body: list[str] = []
    current: str | None = None
    for _, row in frame.iterrows():
        if group is not None:
            label = group(row)
            if label != current:
                body.append(f'<tr class="group"><td colspan="{len(columns)}">{escape(label)}</td></tr>')
                current = label
        css = row_class(row) if row_class else ""
        cells = []
        for column, _, render in columns:
            value = row[column] if column in row.index else None
            classes = ' class="text"' if column in text else ""
            style = cell_style(column, value) if cell_style else ""
            style_attr = f' style="{escape(style)}"' if style else ""
            cells.append(f"<td{classes}{style_attr}>{render(value)}</td>")
        class_attr = f' class="{escape(css)}"' if css else ""
        body.append(f"<tr{class_attr}>{''.join(cells)}</tr>")
    return (
        f'<div class="table-scroll"><table><thead>{top}<tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def shade(values: pd.Series, higher_is_better: bool) -> Callable[[Any], str]:
    """Background shading of a table column: darker blue = better (by the metric's direction)."""
    finite = values[np.isfinite(values.to_numpy(dtype=float))]
    low = float(finite.min()) if len(finite) else 0.0
    high = float(finite.max()) if len(finite) else 1.0
    span = high - low

    def style(value: Any) -> str:
        if is_missing(value) or not np.isfinite(float(value)) or span <= 0:
            return ""
        goodness = (float(value) - low) / span
        if not higher_is_better:
            goodness = 1.0 - goodness
        return f"background-color: rgba(0, 114, 178, {0.03 + 0.32 * goodness:.2f})"

    return style


def key_value(rows: Sequence[tuple[str, str]]) -> str:
    """Two-column table; keys are plain text, values are already escaped HTML."""
    body = "".join(f"<tr><td>{escape(key)}</td><td>{value}</td></tr>" for key, value in rows)
    return f'<table class="kv"><tbody>{body}</tbody></table>'


def note(text: str) -> str:
    """A highlighted remark (plain text)."""
    return f'<p class="note">{escape(text)}</p>'


def section(anchor: str, title: str, body: str) -> Section:
    """A page section: its anchor, its navigation title and its HTML (``body`` is HTML)."""
    return anchor, title, f'<section id="{escape(anchor)}"><h2>{escape(title)}</h2>{body}</section>'


def render_page(title: str, heading: str, subheading: str, sections: Sequence[Section]) -> str:
    """The whole page from ``template.html``: ``subheading`` is HTML, the titles are plain text."""
    from layerscope import __version__

    template = string.Template(resources.files("layerscope.report").joinpath("template.html").read_text("utf-8"))
    nav = "".join(f'<a href="#{escape(anchor)}">{escape(name)}</a>' for anchor, name, _ in sections)
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    footer = (
        f"Generated by layerscope {escape(__version__)} on {escape(now)}. Implements Skean et al., "
        "<i>Layer by Layer: Uncovering Hidden Representations in Language Models</i> (ICML 2025)."
    )
    return template.substitute(
        version=escape(__version__),
        title=escape(title),
        heading=escape(heading),
        subheading=subheading,
        nav=nav,
        body="\n".join(html_text for _, _, html_text in sections),
        footer=footer,
    )


def timestamp(value: Any) -> datetime | None:
    """A stored time as a datetime (None when missing or unreadable)."""
    if is_missing(value):
        return None
    try:
        return pd.Timestamp(value).to_pydatetime()
    except (TypeError, ValueError):
        return None


def duration(seconds: float) -> str:
    """``"12.5 s"``, ``"3 min 5 s"``, ``"1 h 2 min"``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(seconds, 60)
    if minutes < 60:
        return f"{int(minutes)} min {rest:.0f} s"
    hours, minutes = divmod(minutes, 60)
    return f"{int(hours)} h {int(minutes)} min"


def shorten(values: Sequence[Any], limit: int = 12) -> str:
    """At most ``limit`` values joined by commas, then how many there are in all."""
    values = [str(value) for value in values]
    if not values:
        return "\u2013"
    if len(values) <= limit:
        return ", ".join(values)
    return ", ".join(values[:limit]) + f", \u2026 ({len(values)} in all)"


def plain(value: Any) -> str:
    """A configuration value as plain text (lists and mappings joined; nested mappings braced)."""
    if isinstance(value, (list, tuple)):
        return ", ".join(plain(item) for item in value)
    if isinstance(value, Mapping):
        return ", ".join(f"{key}: {plain(item) if not isinstance(item, Mapping) else '{' + plain(item) + '}'}"
                         for key, item in value.items())
    return str(value)
