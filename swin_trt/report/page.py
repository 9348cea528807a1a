"""The report as one HTML page: tables whose every number carries the file and key it came from
(``data-source``, ``data-key``), and the figures inlined as PNG data URIs.

Hand-written HTML rather than a template engine: a dozen tables and images do not justify a new
dependency, and :func:`html.escape` covers what a template engine would add here.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

STYLE = """
body { font-family: sans-serif; margin: 2em; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; }
th { background: #f0f0f0; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.failed { color: #b00; font-weight: bold; }
img { max-width: 100%; border: 1px solid #ddd; }
.note { color: #666; font-size: 0.9em; }
"""

# Records each figure's decoded width once the page has loaded, so a headless browser's DOM dump
# shows whether every image really decoded (a broken data URI leaves naturalWidth 0).
LOADED_SCRIPT = """
window.addEventListener("load", function () {
  document.querySelectorAll("img").forEach(function (img) { img.dataset.naturalWidth = img.naturalWidth; });
  document.body.dataset.loaded = "yes";
});
"""


class Cell:
    """A table cell: text, or a number traced to ``source`` (a file label) and ``key`` (a ``/`` path into it)."""

    def __init__(self, value: Any, source: str | None = None, key: str | None = None, fmt: str | None = None, failed: bool = False):
        self.value, self.source, self.key, self.fmt, self.failed = value, source, key, fmt, failed

    def html(self) -> str:
        if self.value is None:
            return "<td>-</td>"
        if isinstance(self.value, bool):
            text = "passed" if self.value else "FAILED"
        elif isinstance(self.value, (int, float)):
            text = format(self.value, self.fmt or ("d" if isinstance(self.value, int) else ".2f"))
        else:
            text = str(self.value)
        classes = " ".join(c for c in ("num" if isinstance(self.value, (int, float)) and not isinstance(self.value, bool) else "",
                                       "failed" if self.failed or self.value is False else "") if c)
        attributes = f' class="{classes}"' if classes else ""
        if self.source is not None:
            attributes += f' data-source="{escape(self.source)}" data-key="{escape(self.key or "")}"'
        return f"<td{attributes}>{escape(text)}</td>"


def table(columns: Sequence[str], rows: Sequence[Sequence[Cell | Any]]) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join((c if isinstance(c, Cell) else Cell(c)).html() for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def figure(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{escape(caption)}" data-file="{escape(path.name)}">'
            f"<figcaption class=\"note\">{escape(caption)} ({escape(path.name)})</figcaption></figure>")


def group(machine: str, *parts: str) -> str:
    """Figures and tables of one kind of machine, marked as such (``data-machine``): the page never
    puts two kinds in one group, and the browser test checks it."""
    return f'<div class="machine" data-machine="{escape(machine)}">{"".join(parts)}</div>'


def section(title: str, *parts: str) -> str:
    return f"<section><h2>{escape(title)}</h2>{''.join(parts)}</section>"


def note(text: str) -> str:
    return f'<p class="note">{escape(text)}</p>'


def page(title: str, sections: Sequence[str]) -> str:
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title><style>{STYLE}</style>'
            f"<script>{LOADED_SCRIPT}</script></head><body><h1>{escape(title)}</h1>{''.join(sections)}</body></html>")
