"""Self-contained HTML reports: one file that opens offline, anywhere.

A report is a title and sections; a section holds paragraphs (:class:`Text`),
tables (:class:`Table`) and pictures (:class:`Picture`). Pictures are PNGs
embedded as base64 ``data:`` URIs, the style sheet is inline, and there are no
scripts, links or references to other files, so the HTML file can be mailed,
archived or opened on a machine without network. Every text is HTML-escaped.

What goes into a report is the caller's choice: keep patient identifiers
(names, IDs, birth dates, file paths that may hold them) out of it.
"""

from __future__ import annotations

import base64
import html
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sirtreg.errors import InputError
from sirtreg.io import prepare_output
from sirtreg.output_folder import write_atomically

Cell = str | int | float | None
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MISSING = "\u2013"  # en dash for a cell without value

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #1d1d1f; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; border-bottom: 1px solid #d2d2d7; padding-bottom: 0.2em; margin-top: 2em; }
h3 { font-size: 1.05em; margin-top: 1.4em; }
p.subtitle { color: #6e6e73; margin-top: 0; }
p.note, figcaption { color: #6e6e73; font-size: 0.9em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #d2d2d7; padding: 0.25em 0.6em; }
th { background: #f5f5f7; text-align: left; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0; }
img { max-width: 100%; height: auto; border: 1px solid #d2d2d7; }
"""


@dataclass(frozen=True)
class Text:
    """A paragraph of plain text (escaped); ``note`` sets it in smaller grey type."""

    text: str
    note: bool = False


@dataclass(frozen=True)
class Table:
    """A table of rows of cells; floats are shown with ``formats[column]`` (a format spec, default ``.4g``).

    Parameters
    ----------
    columns : column headings.
    rows : one sequence of cells per row, as many cells as columns; None shows as a dash.
    title : heading above the table (empty: none).
    note : text below the table (empty: none).
    formats : column heading -> format spec for float cells, e.g. ``".1f"``.
    """

    columns: Sequence[str]
    rows: Sequence[Sequence[Cell]]
    title: str = ""
    note: str = ""
    formats: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        widths = {len(row) for row in self.rows}
        if widths - {len(self.columns)}:
            raise InputError(f"table {self.title!r}: every row needs {len(self.columns)} cells, got {sorted(widths)}")


@dataclass(frozen=True)
class Picture:
    """A PNG picture, embedded in the page.

    Parameters
    ----------
    png : the PNG file's bytes (see :meth:`from_file`).
    title : heading above the picture (empty: none).
    caption : text below the picture (empty: none).
    alt : alternative text (default: the title).
    """

    png: bytes
    title: str = ""
    caption: str = ""
    alt: str = ""

    def __post_init__(self) -> None:
        if not self.png.startswith(PNG_SIGNATURE):
            raise InputError(f"picture {self.title!r} is not a PNG")

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, title: str = "", caption: str = "",
                  alt: str = "") -> Picture:
        """A picture from a PNG file (read now: the report does not refer to the file)."""
        return cls(Path(path).read_bytes(), title=title, caption=caption, alt=alt)


Item = Text | Table | Picture


@dataclass(frozen=True)
class Section:
    """A heading and its items; ``level`` 2 for a top section, 3 for a sub-section."""

    title: str
    items: Sequence[Item]
    level: int = 2


def _escape(text: object) -> str:
    return html.escape(str(text), quote=True)


def _cell(value: Cell, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return f"<td>{MISSING}</td>"
    if isinstance(value, (bool, str)):
        return f"<td>{_escape(value)}</td>"
    text = format(value, spec) if isinstance(value, float) else str(value)
    return f'<td class="number">{_escape(text)}</td>'


def _table(table: Table) -> list[str]:
    lines = [f"<h3>{_escape(table.title)}</h3>"] if table.title else []
    lines.append("<table>")
    lines.append("<tr>" + "".join(f"<th>{_escape(name)}</th>" for name in table.columns) + "</tr>")
    for row in table.rows:
        cells = (_cell(value, table.formats.get(name, ".4g")) for name, value in zip(table.columns, row))
        lines.append("<tr>" + "".join(cells) + "</tr>")
    lines.append("</table>")
    if table.note:
        lines.append(f'<p class="note">{_escape(table.note)}</p>')
    return lines


def _picture(picture: Picture) -> list[str]:
    lines = [f"<h3>{_escape(picture.title)}</h3>"] if picture.title else []
    data = base64.b64encode(picture.png).decode("ascii")
    lines.append(f'<figure><img src="data:image/png;base64,{data}" alt="{_escape(picture.alt or picture.title)}">')
    if picture.caption:
        lines.append(f"<figcaption>{_escape(picture.caption)}</figcaption>")
    lines.append("</figure>")
    return lines


def _item(item: Item) -> list[str]:
    if isinstance(item, Table):
        return _table(item)
    if isinstance(item, Picture):
        return _picture(item)
    return [f'<p class="note">{_escape(item.text)}</p>' if item.note else f"<p>{_escape(item.text)}</p>"]


def render_html(title: str, sections: Sequence[Section], *, subtitle: str = "") -> str:
    """The report as one HTML document (UTF-8 text), with no reference to anything outside it."""
    lines = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{_escape(title)}</title>", f"<style>{_STYLE}</style>", "</head>", "<body>",
             f"<h1>{_escape(title)}</h1>"]
    if subtitle:
        lines.append(f'<p class="subtitle">{_escape(subtitle)}</p>')
    for section in sections:
        if section.level not in (2, 3):
            raise InputError(f"section {section.title!r}: level must be 2 or 3, got {section.level}")
        lines += ["<section>", f"<h{section.level}>{_escape(section.title)}</h{section.level}>"]
        for item in section.items:
            lines.extend(_item(item))
        lines.append("</section>")
    lines += ["</body>", "</html>", ""]
    return "\n".join(lines)


def write_html(path: str | os.PathLike[str], title: str, sections: Sequence[Section], *, subtitle: str = "",
               overwrite: bool = False) -> Path:
    """Write :func:`render_html` to ``path`` under a temporary name, then rename; returns the path.

    Refuses an existing file unless ``overwrite`` (:class:`~sirtreg.errors.OutputExistsError`).
    """
    path = prepare_output(path, overwrite=overwrite)
    return write_atomically(path, render_html(title, sections, subtitle=subtitle), overwrite=True)
