"""Edge-of-range advice: when a search's best trials sit at one end of a searched range, the range
probably cut the search short, and a wider one is worth a try.

Pure: searched specs (hpsearch.core.space) and the ranked trials' values in, one line per
parameter out. A parameter is at an edge when the best trial and at least half of the top trials lie
in the outer ``EDGE_SHARE`` of its range, at the same end, measured on the spec's own scale (log for
``loguniform`` and ``int`` with ``log: true``). Choices have no edge. A range is widened by
``WIDEN`` of its width on that side; on a log scale by as many decades as it spans, at most
``MAX_DECADES`` (lr in [0.01, 3] at its top: [0.01, 30], not 300 times its bound, where trials of
most models diverge); an integer range keeps integers and never crosses 1 on a log scale, and a
range of non-negative values is not widened below 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from hpsearch.core.numbers import fmt
from hpsearch.core.space import Spec

EDGE_SHARE = 0.1        # the outer tenth of a range, at either end
TOP_SHARE = 0.2         # the top fifth of the ranked trials (at least MIN_TOP) are "the best trials"
MIN_TOP = 3
MIN_TRIALS = 4          # fewer ranked trials than this say nothing about a range
WIDEN = 1.0             # widen by the range's own width (or decades) on the side it hit ...
MAX_DECADES = 1.0       # ... on a log scale, by at most a factor of 10


def _position(spec: Spec, value: float) -> float:
    """Where ``value`` lies in the range, 0 at low and 1 at high, on the spec's scale."""
    low, high = float(spec.low), float(spec.high)
    if spec.log or spec.kind == "loguniform":
        low, high, value = math.log(low), math.log(high), math.log(value)
    return 0.5 if high == low else (value - low) / (high - low)


def _widened(spec: Spec, side: str) -> tuple[float, float]:
    low, high = float(spec.low), float(spec.high)
    logscale = spec.log or spec.kind == "loguniform"
    if logscale:
        span = min(math.log(high) - math.log(low), MAX_DECADES * math.log(10))
        low, high = ((low / math.exp(WIDEN * span), high) if side == "lower"
                     else (low, high * math.exp(WIDEN * span)))
    else:
        span = high - low
        floor = 0.0 if low >= 0 else -math.inf      # a range of non-negative values stays so
        low, high = (max(floor, low - WIDEN * span), high) if side == "lower" else (low, high + WIDEN * span)
    if spec.kind == "int":
        low, high = math.floor(low), math.ceil(high)
        if logscale:
            low = max(low, 1)
    return low, high


def edge_of_range(space: Mapping[str, Spec], best_first: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per searched parameter whose best values sit at an edge of its range, naming the
    edge, the best value and a widened range to try. ``best_first``: the searched values of the
    trials whose objective can rank them, best first (health-pruned and failed trials left out)."""
    if len(best_first) < MIN_TRIALS:
        return []
    top = list(best_first[:max(MIN_TOP, math.ceil(TOP_SHARE * len(best_first)))])
    lines = []
    for name, spec in space.items():
        if spec.kind == "choice":
            continue
        values = [float(t[name]) for t in top if isinstance(t.get(name), (int, float))
                  and not isinstance(t.get(name), bool)]
        if not values or len(values) != len(top):
            continue
        positions = [_position(spec, v) for v in values]
        for side, near in (("lower", lambda p: p <= EDGE_SHARE), ("upper", lambda p: p >= 1 - EDGE_SHARE)):
            if near(positions[0]) and sum(map(near, positions)) * 2 >= len(positions):
                low, high = _widened(spec, side)
                bound = spec.low if side == "lower" else spec.high
                hint = (f"try [{fmt(low)}, {fmt(high)}]" if (low, high) != (spec.low, spec.high)
                        else "0 is as low as it goes: the parameter may be best left out")
                lines.append(f"{name}: the best trials sit at the {side} edge of its range ({sum(map(near, positions))} "
                             f"of the top {len(top)}, the best at {fmt(values[0])}, the bound {fmt(bound)}); {hint}")
    return lines


__all__ = ["EDGE_SHARE", "MAX_DECADES", "MIN_TRIALS", "TOP_SHARE", "edge_of_range"]
