"""Text that fits a terminal: the width to fit, lines wrapped to it, and a table that keeps the
columns that fit in the order of their priority.

Nothing here knows about runs or trials: ``hpsearch.results.summary`` decides which columns matter
most and what their cells say; this module only measures and lays them out.
"""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

MIN_WIDTH = 20          # below this no table or sentence is readable; lines are laid out for 20
GAP = 2                 # spaces between two table columns


def terminal_width() -> int:
    """The width to fit: ``shutil.get_terminal_size().columns``, which is ``COLUMNS`` when that is
    set, the terminal's width when stdout is one, else 80 (its fallback); at least MIN_WIDTH."""
    return max(MIN_WIDTH, shutil.get_terminal_size().columns)


def wrap(line: str, width: int, indent: str = "  ") -> list[str]:
    """``line`` as lines of at most ``width`` characters, broken between words (a word longer than
    the width is broken too). A continuation line starts with the line's own leading spaces plus
    ``indent``, so it reads as part of the line above."""
    body = line.lstrip(" ")
    if not body:
        return [""]
    lead = " " * (len(line) - len(body))
    width = max(width, len(lead + indent) + 1)
    return textwrap.wrap(body, width, initial_indent=lead, subsequent_indent=lead + indent,
                         break_on_hyphens=False)


def wrap_all(lines: Sequence[str], width: int, indent: str = "  ") -> str:
    """Every line of ``lines`` wrapped (``wrap``), joined by newlines."""
    return "\n".join(out for line in lines for out in wrap(line, width, indent))


@dataclass(frozen=True)
class Column:
    """One column of a text table: its header, its cells as text, and its alignment."""
    header: str
    cells: tuple[str, ...]
    right: bool = False           # numbers align right, text left

    @property
    def width(self) -> int:
        return max([len(self.header), *(len(c) for c in self.cells)])


def fit(columns: Sequence[Column], width: int) -> list[Column]:
    """The columns that fit in ``width`` taken in the given order (most useful first): each is kept
    when it still fits beside those kept before it, so a wide column leaves room for narrower ones
    after it. The first column is always kept."""
    kept: list[Column] = []
    used = 0
    for column in columns:
        need = column.width + (GAP if kept else 0)
        if not kept or used + need <= width:
            kept.append(column)
            used += need
    return kept


def grid(columns: Sequence[Column]) -> list[str]:
    """The columns side by side, a header line then one line per row, each without trailing spaces."""
    widths = [c.width for c in columns]

    def line(texts: Sequence[str]) -> str:
        parts = [t.rjust(w) if c.right else t.ljust(w) for t, w, c in zip(texts, widths, columns)]
        return (" " * GAP).join(parts).rstrip()

    rows = len(columns[0].cells) if columns else 0
    return [line([c.header for c in columns]), *(line([c.cells[i] for c in columns]) for i in range(rows))]


def listing(prefix: str, names: Sequence[str], suffix: str, width: int) -> str:
    """``prefix`` + the names, comma-separated, + ``suffix`` as one line of at most ``width``
    characters when it can be: names that do not fit are counted as "+N more"."""
    candidates = []
    for shown in range(len(names), -1, -1):
        more = len(names) - shown
        listed = ", ".join([*names[:shown], *([f"+{more} more"] if more else [])])
        candidates.append(f"{prefix}{listed}{suffix}")
    return next((text for text in candidates if len(text) <= width), candidates[-1])


__all__ = ["GAP", "MIN_WIDTH", "Column", "fit", "grid", "listing", "terminal_width", "wrap", "wrap_all"]
