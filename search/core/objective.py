"""Direction, normalised once: ``mode`` becomes a sign here, and nowhere else.

The scheduler, the searcher, the report and the export all rank trials through these helpers, so
"better" means the same thing everywhere and a non-finite value is always the worst.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from typing import Any, Literal, get_args

from hpsearch.core.numbers import as_float

MODES = ("min", "max")
Rank = Literal["best", "last", "mean"]     # objective.rank (hpsearch.core.sections.Objective)
RANKS: tuple[str, ...] = get_args(Rank)


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
    """Larger-is-better score of a metric value; NaN, inf, None and non-numbers (a bool or a string
    among them, as ``as_float`` reads them) score -inf."""
    number = as_float(value)
    if number is None or not math.isfinite(number):
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


def trial_value(values: list[Any], mode: str, rank: str = "best", window: int = 5) -> tuple[float, int | None]:
    """(value, position) that ranks one trial from its objective, epoch by epoch (``objective.rank``).

    - ``best``: its best finite value, at the first epoch that reached it;
    - ``last``: its value at the last epoch;
    - ``mean``: the mean of its last ``window`` values (all of them when it has fewer), at the
      last epoch: the model a retrain of ``epochs = last epoch`` ends with.

    NaN policy: a non-finite value at the last epoch (``last``) or anywhere in the window
    (``mean``) makes the trial's value NaN, so it ranks last; ``best`` skips non-finite epochs.
    Position is an index into ``values``; None when the trial has no value to rank by.
    """
    if rank not in RANKS:
        raise ValueError(f"objective.rank: got {rank!r}, expected one of {', '.join(RANKS)}")
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"objective.window: got {window!r}, expected an integer >= 1")
    if not values:
        return math.nan, None
    if rank == "best":
        top = best(values, mode)
        if math.isnan(top):
            return math.nan, None
        return top, next(i for i, v in enumerate(values) if score(v, mode) > -math.inf and float(v) == top)
    tail = values[-window:] if rank == "mean" else values[-1:]
    if any(score(v, mode) == -math.inf for v in tail):
        return math.nan, None
    return sum(float(v) for v in tail) / len(tail), len(values) - 1


def rank_phrase(rank: str, window: int) -> str:
    """``objective.rank`` in words, for the text a user reads: ``its best epoch``, ``its last
    epoch`` or ``the mean of its last N epochs``."""
    if rank == "mean":
        return f"the mean of its last {window} epochs"
    return f"its {rank} epoch"


def epoch_noise(curves: Iterable[Sequence[Any]], window: int = 5) -> float:
    """The spread of one epoch's measurement of the objective, read from the trials' own curves.

    The span read is ``window + 1`` values, or the longest curve's length when every curve is
    shorter, and at least 3. Per curve that holds the span, its last that many values: the standard
    deviation of their successive differences over sqrt(2) (a steady trend shifts every difference
    alike and adds nothing; independent noise of spread s puts s * sqrt(2) into each difference).
    The median over those curves; 0.0 when none qualifies. A shorter curve (a trial a rung stopped
    early, still on the steep start of its learning curve) would read its learning as noise, so it
    is left out. NaN policy: a curve with a non-finite or non-numeric value in its tail is left out
    (its tail measures a failure, not noise).
    """
    curves = [list(values) for values in curves]
    span = max(3, min(window + 1, max((len(values) for values in curves), default=0)))
    spreads = []
    for values in curves:
        tail = values[-span:]
        if len(tail) == span and all(score(v, "max") > -math.inf for v in tail):
            steps = [float(b) - float(a) for a, b in zip(tail, tail[1:])]
            spreads.append(statistics.stdev(steps) / math.sqrt(2))
    return statistics.median(spreads) if spreads else 0.0
