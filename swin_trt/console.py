"""Terminal output: progress, log lines and closing summary tables.

On an interactive terminal a loop shows a tqdm bar. When stderr is not a terminal (CI, nohup,
a pipe) redrawn bars would either be dropped or fill the log with carriage returns, and a silent
ten-minute calibration looks hung: there a loop logs one line every ``LOG_INTERVAL_S`` seconds
(progress, images/s, ETA and whatever the loop reports, such as loss and lr) and one when it
ends. Only rank 0 reports (``show``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Generic, TypeVar

from rich.console import Console
from rich.table import Table
from tqdm import tqdm

T = TypeVar("T")

LOG_INTERVAL_S = 30.0


def progress(
    iterable: Iterable[T],
    show: bool = True,
    total: int | None = None,
    desc: str = "",
    unit: str = "batch",
    interval: float = LOG_INTERVAL_S,
    final: bool = True,
) -> tqdm | LineProgress:
    """Iterate ``iterable`` with a bar on a terminal, log lines elsewhere, nothing unless ``show``.

    Both kinds take ``set_postfix(name=value, ...)`` and ``close()``. ``final=False`` drops the
    closing log line, for loops whose caller prints its own summary (the training epochs).
    """
    if show and not sys.stderr.isatty():
        return LineProgress(iterable, total=total, desc=desc, unit=unit, interval=interval, final=final)
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not show, leave=False, dynamic_ncols=True)


class LineProgress(Generic[T]):
    """Progress as plain log lines on stderr (see the module notes for when it is used).

    Images are counted as the length of each batch's first element, since every loop here
    iterates ``(images, targets)`` batches; for anything else the rate is in batches.
    """

    def __init__(self, iterable: Iterable[T], total: int | None, desc: str, unit: str = "batch",
                 interval: float = LOG_INTERVAL_S, final: bool = True) -> None:
        self.iterable = iterable
        self.total = total if total is not None else _length(iterable)
        self.desc, self.interval, self.final = desc, interval, final
        self.unit, self.units = unit, unit + ("es" if unit.endswith(("s", "x", "ch", "sh")) else "s")
        self.steps = self.images = 0
        self.postfix = ""
        self.start = self.last = time.perf_counter()
        self.closed = False

    def __iter__(self) -> Iterator[T]:
        self.start = self.last = time.perf_counter()
        for item in self.iterable:
            yield item
            self.steps += 1
            self.images += _images_in(item)
            now = time.perf_counter()
            if now - self.last >= self.interval:
                self.last = now
                log(self.status(now))

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(f"{name} {value}" for name, value in values.items())

    def status(self, now: float) -> str:
        """``desc: 12/40 batches, 96 images, 31 images/s, ETA 0:09, loss 0.41``."""
        elapsed = max(now - self.start, 1e-9)
        parts = [f"{self.steps}/{self.total} {self.units}" if self.total else f"{self.steps} {self.units}"]
        parts.append(_rate(self.images, self.steps, elapsed, self.units))
        if self.total and self.steps:
            parts.append(f"ETA {format_duration(elapsed / self.steps * max(self.total - self.steps, 0))}")
        return self._line(parts)

    def close(self) -> None:
        """Log the closing line: how much was done, in how long."""
        if self.closed:
            return
        self.closed = True
        if self.final and self.steps:
            elapsed = max(time.perf_counter() - self.start, 1e-9)
            done = f"{self.steps} {self.unit if self.steps == 1 else self.units} in {format_duration(elapsed)}"
            log(self._line([done, _rate(self.images, self.steps, elapsed, self.units)]))

    def _line(self, parts: list[str]) -> str:
        if self.postfix:
            parts.append(self.postfix)
        return f"{self.desc}: {', '.join(parts)}" if self.desc else ", ".join(parts)


def _length(iterable: Iterable[Any]) -> int | None:
    try:
        return len(iterable)  # type: ignore[arg-type]
    except TypeError:
        return None


def _images_in(item: Any) -> int:
    if isinstance(item, (tuple, list)) and item and hasattr(item[0], "__len__"):
        return len(item[0])
    return 0


def _rate(images: int, steps: int, seconds: float, units: str) -> str:
    if images:
        return f"{images} images, {images / seconds:.1f} images/s"
    return f"{steps / seconds:.2f} {units}/s"


def format_duration(seconds: float) -> str:
    """``7.3 s`` below a minute, else ``h:mm:ss`` / ``m:ss``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def log(message: str) -> None:
    """One line on stderr, flushed at once (a log must show it when it happens)."""
    print(message, file=sys.stderr, flush=True)


LOG_WIDTH = 10_000  # columns a table may take in a log: never reached, so no cell is folded


def print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Print a summary table to stdout (plain text when stdout is not a terminal). In a log (stdout
    redirected) the table is as wide as its content: rich would otherwise fold cells at 80 columns,
    breaking paths and words mid-way (``passe d``); on a terminal it fits the window."""
    rows = [list(row) for row in rows]
    table = Table(title=title, title_justify="left")
    for index, column in enumerate(columns):
        numeric = bool(rows) and all(isinstance(row[index], (int, float)) for row in rows)
        table.add_column(column, justify="right" if numeric else "left", overflow="fold")
    for row in rows:
        table.add_row(*(format_cell(cell) for cell in row))
    terminal = Console()
    Console(width=max(100, terminal.width) if terminal.is_terminal else LOG_WIDTH).print(table)


def format_cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)
