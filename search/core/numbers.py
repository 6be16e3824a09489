"""Reported values as numbers, numbers as short text, and an error as one line: the one home of
each, used by every layer.

A reported value is whatever a trial put in its results: a float, an int, None, a string, a 0-d
array. ``as_float`` is the single reading of it; ``number`` the same with NaN for "not a number", for
tables; ``finite`` asks whether it is a usable number at all. ``bool`` is never a number here:
``True`` in a metric is a mistake, not 1.0.
"""

from __future__ import annotations

import math
from typing import Any


def as_float(value: Any) -> float | None:
    """``value`` as a float; None when missing or not a number. NaN and inf stay as they are; a
    0-d array or tensor that slipped through is read as its number."""
    if value is None or isinstance(value, (bool, str)):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def number(value: Any) -> float:
    """``as_float``, with NaN where that gives None (a table's empty cell)."""
    out = as_float(value)
    return math.nan if out is None else out


def finite(value: Any) -> bool:
    """True for a number that is neither NaN nor infinite."""
    out = as_float(value)
    return out is not None and math.isfinite(out)


def fmt(value: Any, digits: int = 4) -> str:
    """A number as short text: integers as they are, floats to ``digits`` significant digits (in
    exponent form when very large or small), None as ``-``, anything else as ``str``."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) or (math.isfinite(value) and value.is_integer() and abs(value) < 1e15):
        return str(int(value))
    if not math.isfinite(value):
        return str(value)
    if abs(value) >= 10 ** (digits + 1) or abs(value) < 1e-3:
        return f"{value:.{digits - 1}e}"
    return f"{value:.{digits}g}"


def one_line(error: BaseException | str, limit: int = 200, last: bool = False) -> str:
    """An error's first (``last``: last) non-empty line, at most ``limit`` characters; the
    exception's type name when it has no message. What a user sees of an exception in a one-line
    refusal or outcome reason (a traceback's last line names the exception; a message's first line
    says what went wrong)."""
    text = str(error) if not isinstance(error, str) else error
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return type(error).__name__ if isinstance(error, BaseException) else ""
    line = lines[-1] if last else lines[0]
    return line if len(line) <= limit else line[: limit - 1] + "…"


__all__ = ["as_float", "finite", "fmt", "number", "one_line"]
