"""What a replayed search leaves: its trials and, after each finished trial, the config it would
hand back by its own rule (``export_rule``: hpsearch's export; ``ray_rule``: Ray's
``get_best_result``). benchmarks.simulate fills them; benchmarks.live fills them from real searches.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from benchmarks.curves import CurveSet
from hpsearch.core.objective import score, trial_value
from hpsearch.core.warm_start import config_points, kept_warm_start

FINISHED = ("completed", "pruned_asha")  # hpsearch.results.report.FINISHED: the trials export picks from


@dataclass
class TrialRecord:
    trial_id: str
    index: int                 # grid point replayed
    epochs: int = 0            # epochs it trained
    outcome: str = "running"
    values: list[float] = field(default_factory=list)  # its objective, epoch by epoch

    @property
    def last_value(self) -> float:
        return self.values[-1] if self.values else math.nan


@dataclass
class Trace:
    strategy: str
    seed: int
    budget: int
    # (epochs spent, grid index, epoch of the returned result, its objective value): the returned
    # config after every finished trial, when it changed
    incumbents: list[tuple[int, int, int, float]] = field(default_factory=list)
    trials: list[TrialRecord] = field(default_factory=list)
    spent: int = 0

    def returned_at(self, budget: int) -> tuple[int, int, float] | None:
        found = [(index, epoch, value) for spent, index, epoch, value in self.incumbents if spent <= budget]
        return found[-1] if found else None     # incumbents come in the order the epochs were spent

    def epochs_to(self, target: float, mode: str) -> float:
        """Epochs spent when the returned config first scored at least ``target`` (inf: never)."""
        for spent, _, _, value in self.incumbents:
            if spent > self.budget:
                break
            if score(value, mode) >= score(target, mode):
                return float(spent)
        return math.inf


def _pick(trials: list[TrialRecord], mode: str, candidates: Callable, window: int = 5, margin: float = 0.0,
          warm: frozenset[int] = frozenset()) -> tuple[int, int, float] | None:
    """(grid index, epoch, value) of the best of every trial's ``candidates(t)``: (epoch, value) pairs;
    the best warm-start trial's (grid index in ``warm``) when the first does not beat it by more than
    the noise allows (``margin``: objective.warm_start_margin; hpsearch.core.warm_start)."""
    per_trial = []
    for t in trials:
        found = None
        for epoch, value in candidates(t):
            if score(value, mode) > -math.inf and (found is None or score(value, mode) > score(found[2], mode)):
                found = (t.index, epoch, value)
        if found is not None:
            per_trial.append((found, t))
    if not per_trial:
        return None
    ordered = sorted(per_trial, key=lambda pair: -score(pair[0][2], mode))   # stable: the first reached stays first
    kept = kept_warm_start([t.values for _, t in ordered], [t.index in warm for _, t in ordered], mode, window, margin)
    return ordered[kept.position if kept is not None else 0][0]


def warm_indices(curves: CurveSet, run: Any) -> frozenset[int]:
    """The grid points of ``run``'s warm-start points (those naming every searched parameter, as
    hpsearch.tune.scheduler.exempt_points). A sampled config that lands on one of them replays the
    same curve, so the replay counts it as that warm-start point, where the product matches the
    exact values."""
    return frozenset(curves.lookup(p) for p in config_points(run.warm_start, run.space, run.params))


def export_rule(interval: int, max_t: int, rank: str = "best", window: int = 5, margin: float = 0.0,
                warm: frozenset[int] = frozenset()) -> Callable:
    """hpsearch export: among completed / pruned_asha trials, the checkpointed epoch (every
    ``interval`` epochs and the last) with the best objective; under ``objective.rank`` last or
    mean, its latest checkpointed epoch valued as that ranking values it (core.objective.trial_value);
    the best warm-start trial's (grid indices ``warm``) unless the first beats it by more than the
    noise allows (``margin``, objective.warm_start_margin)."""
    def candidates(t: TrialRecord, mode: str) -> list[tuple[int, float]]:
        if rank != "best":      # the latest checkpointed epoch whose ranking value is finite
            found = ((e, trial_value(t.values[:e], mode, rank, window)[0]) for e in range(len(t.values), 0, -1)
                     if e % interval == 0 or e >= max_t)
            return next(([pair] for pair in found if math.isfinite(pair[1])), [])
        return [(e, v) for e, v in enumerate(t.values, 1) if e % interval == 0 or e >= max_t]

    return lambda trials, mode: _pick(trials, mode, lambda t: candidates(t, mode) if t.outcome in FINISHED else [],
                                      window, margin, warm)


def ray_rule(trials: list[TrialRecord], mode: str) -> tuple[int, int, float] | None:
    """Ray's ``ResultGrid.get_best_result()`` (scope "last", NaN and inf filtered): every trial,
    early-stopped or not, by its last reported objective."""
    return _pick(trials, mode, lambda t: [(t.epochs, t.last_value)] if t.epochs else [])
