"""The curves of a real-curve corpus (benchmarks/record_real.py) as the health benchmarks replay
them, each broken curve's latency goal, and counts that compare two rules' stops on them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from benchmarks import record_real
from hpsearch.core.health import HealthConfig

FLATLINE_SPREAD_GOAL = 1


@dataclass(frozen=True)
class Replayed:
    curve: Mapping[str, Any]
    label: record_real.Label
    rows: list[dict[str, Any]]
    objective: str
    mode: str
    collapse: Mapping[str, float]


def corpus(data: Mapping[str, Any]) -> list[Replayed]:
    out = []
    for curve in data["curves"]:
        model = data["models"][curve["model"]]
        out.append(Replayed(curve, record_real.label_curve(curve, model), record_real.rows(curve, model),
                            model["objective"][0], model["objective"][1], model["collapse"]))
    return out


def goal(item: Replayed) -> int:
    """Epochs after onset within which a broken curve should be stopped."""
    if item.label.kind == "flatline":
        row = item.rows[item.label.onset - 1]
        if row.get("train_batch_loss_std") == 0 and row.get("train_batches", 2) > 1:
            return FLATLINE_SPREAD_GOAL
    return {"nonfinite": 0, "diverged": 2, "flatline": 3,
            "collapsed": HealthConfig().collapsed.patience}[item.label.kind]


def within(item: Replayed, stop: int | None) -> bool:
    """Was a broken curve stopped (at ``stop``, 1-based) within its latency goal?"""
    return stop is not None and stop - item.label.onset <= goal(item)


def later(old: int | None, new: int | None) -> bool:
    """Does a stop at ``new`` come after one at ``old`` (or never, where there was one)?"""
    return old is not None and (new is None or new > old)


def count_stopped(items: Sequence[Replayed], stops: Sequence[int | None]) -> int:
    return sum(stop is not None for item, stop in zip(items, stops) if item.label.status == "healthy")


def count_later(items: Sequence[Replayed], old: Sequence[int | None], new: Sequence[int | None]) -> int:
    """Broken curves ``new`` stops later than ``old`` (or no longer stops)."""
    return sum(item.label.status == "broken" and later(a, b) for item, a, b in zip(items, old, new))


def count_lost(items: Sequence[Replayed], old: Sequence[int | None], new: Sequence[int | None]) -> int:
    """Broken curves ``old`` stops within their latency goal and ``new`` does not."""
    return sum(item.label.status == "broken" and within(item, a) and not within(item, b)
               for item, a, b in zip(items, old, new))


def later_by_kind(items: Sequence[Replayed], old: Sequence[int | None], new: Sequence[int | None]) -> str:
    """``count_later``, split by label: "N (a diverged, b nonfinite, ...)"."""
    kinds = [item.label.kind for item, a, b in zip(items, old, new)
             if item.label.status == "broken" and later(a, b)]
    split = ", ".join(f"{kinds.count(kind)} {kind}" for kind in record_real.KINDS if kind in kinds)
    return f"{len(kinds)} ({split})" if kinds else "0"


def late_moved_later(items: Sequence[Replayed], old: Sequence[int | None], new: Sequence[int | None]) -> str:
    """The broken curves ``old`` already stopped after their latency goal that ``new`` stops later
    still, as a phrase."""
    moved = [f"{item.curve['model']} on {item.curve['dataset']} ({a - item.label.onset} -> "
             f"{'never' if b is None else b - item.label.onset} epochs after onset)"
             for item, a, b in zip(items, old, new)
             if item.label.status == "broken" and a is not None and not within(item, a) and later(a, b)]
    return ("of those already caught late, stopped later still: " + ", ".join(moved)) if moved else \
        "none of those already caught late is stopped later"
