"""Terminal output: progress bars and closing summary tables.

Progress bars show on an interactive terminal only (tqdm's ``disable=None``), so CI logs and
pipes get the summary table, not thousands of redrawn bar lines; only rank 0 draws.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from rich.console import Console
from rich.table import Table
from tqdm import tqdm

T = TypeVar("T")


def progress(iterable: Iterable[T], show: bool = True, **kwargs: Any) -> tqdm:
    """A tqdm bar over ``iterable`` that draws only when ``show`` and stderr is a terminal."""
    return tqdm(iterable, disable=None if show else True, leave=False, dynamic_ncols=True, **kwargs)


def print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Print a summary table to stdout (plain text when stdout is not a terminal)."""
    rows = [list(row) for row in rows]
    table = Table(title=title, title_justify="left")
    for index, column in enumerate(columns):
        numeric = bool(rows) and all(isinstance(row[index], (int, float)) for row in rows)
        table.add_column(column, justify="right" if numeric else "left", overflow="fold")
    for row in rows:
        table.add_row(*(format_cell(cell) for cell in row))
    Console(width=max(100, Console().width)).print(table)


def format_cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)
