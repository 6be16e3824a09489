"""Direction, normalised once: ``mode`` becomes a sign here, and nowhere else.

The scheduler, the searcher, the report and the export all rank trials through these helpers, so
"better" means the same thing everywhere and a non-finite value is always the worst.
"""

from __future__ import annotations

import math
from typing import Any

MODES = ("min", "max")


def sign(mode: str) -> float:
    """+1 for ``max``, -1 for ``min``: ``sign(mode) * value`` is larger-is-better."""
    if mode == "max":
        return 1.0
    if mode == "min":
        return -1.0
    raise ValueError(f"objective.mode: got {mode!r}, expected 'min' or 'max'")


def direction(mode: str) -> str:
    """Optuna's name for ``mode``: ``maximize`` or ``minimize``."""
    return "maximize" if sign(mode) > 0 else "minimize"


def score(value: Any, mode: str) -> float:
    """Larger-is-better score of a metric value; NaN, inf, None and non-numbers score -inf."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return -math.inf
    if not math.isfinite(number):
        return -math.inf
    return sign(mode) * number


def is_better(a: Any, b: Any, mode: str) -> bool:
    """True when value ``a`` is strictly better than ``b``."""
    return score(a, mode) > score(b, mode)


def best(values: list[Any], mode: str) -> float:
    """The best finite value of a sequence (NaN if there is none)."""
    finite = [float(v) for v in values if score(v, mode) > -math.inf]
    if not finite:
        return math.nan
    return max(finite) if mode == "max" else min(finite)
