"""A floor under the healthy curves a health rule stops: what any scale-free, monotone rule must
stop to catch given divergences within their latency goal (benchmarks.corpus_detection's sections)."""

from __future__ import annotations

from collections.abc import Sequence

from benchmarks.corpus_replay import Replayed, goal, within
from hpsearch.core.numbers import as_float


def relative(item: Replayed) -> list[float] | None:
    """train_loss over its first value, epoch by epoch (None when a value is missing or the first
    is not positive): all a scale-free rule can see of the loss."""
    losses = [as_float(row.get("train_loss")) for row in item.rows]
    if not losses or any(v is None for v in losses) or losses[0] <= 0:
        return None
    return [v / losses[0] for v in losses]


def dominates(curve: Sequence[float], other: Sequence[float], epochs: int) -> bool:
    """Is ``curve`` at or above ``other`` at each of the first ``epochs`` epochs (both that long)?"""
    return len(curve) >= epochs and len(other) >= epochs and \
        all(a >= b for a, b in zip(curve[:epochs], other[:epochs]))


def forced(items: Sequence[Replayed], divergences: Sequence[Replayed]) -> list[Replayed]:
    """The healthy curves any scale-free, monotone rule must stop if it stops each of
    ``divergences`` within its latency goal (``goal``: 2 epochs after onset). Monotone: a curve at or above another (relative to
    its first loss) at every epoch so far is stopped no later. A healthy curve at or above a
    divergence at every epoch up to that divergence's deadline is stopped by then."""
    targets = [(relative(d), d.label.onset + goal(d)) for d in divergences]
    out = []
    for item in items:
        mine = relative(item) if item.label.status == "healthy" else None
        if mine is not None and any(r is not None and dominates(mine, r, min(deadline, len(r)))
                                    for r, deadline in targets):
            out.append(item)
    return out


def floor_text(items: Sequence[Replayed], stops: Sequence[int | None]) -> str:
    """The floor ``forced`` puts under the healthy curves stopped, for every divergence and for
    those the shipped rules catch within goal."""
    every = [item for item in items if item.label.kind == "diverged"]
    caught = [item for item, stop in zip(items, stops) if item.label.kind == "diverged"
              and within(item, stop)]
    all_forced, caught_forced = forced(items, every), forced(items, caught)
    stopped = {id(item) for item, stop in zip(items, stops) if stop is not None}
    spared = sum(id(item) not in stopped for item in caught_forced)
    others = (f", {spared} spared by its spike, growth and climbing-back tests, which are not monotone"
              if spared else "")
    return (f"A floor for any rule that reads the loss relative to its first value (scale-free) and stops "
            f"a curve no later than one below it at every epoch so far (monotone): catching all {len(every)} "
            f"divergences within 2 epochs of onset forces it to stop {len(all_forced)} healthy curves (each "
            f"at or above a divergence, relative to its first loss, at every epoch up to that divergence's "
            f"deadline); catching the {len(caught)} the shipped rules catch in time forces "
            f"{len(caught_forced)} ({len(caught_forced) - spared} of them stopped by the shipped rules{others}). So "
            f"the two goals, 0 healthy curves stopped and every explosion within 2 epochs, cannot both be "
            f"met on these curves by such a rule (benchmarks.corpus_floor.forced).")
