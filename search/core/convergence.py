"""Knowing when to stop a whole search: the best objective has not moved for a while.

In the spirit of Ray's ``ExperimentPlateauStopper`` and Optuna's terminator, on the number that
matters to the user: the best of the values that rank the trials (``objective.rank``) among those
that can rank a search (finished, or stopped by ASHA; never a health-pruned or failed one), in the
order they ended. Pure: values in, a one-line
reason out. The searcher asks it before each new trial; a search that has converged starts no more
trials and lets the running ones end as they would.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from hpsearch.core.numbers import fmt
from hpsearch.core.objective import Rank, score, sign


@dataclass(frozen=True)
class Convergence:
    """Stop when the last ``after`` ranked trials did not raise the best ranking value by more than
    ``min_delta`` (relative to the best's size; 0: any gain counts). ``after`` 0 never stops.

    NaN policy: a non-finite (or missing) objective is no gain and never the best; it counts as a
    trial that did not improve. Until some trial before the last ``after`` has a finite objective,
    nothing stops.
    """

    after: int = 0
    min_delta: float = 0.0
    rank: Rank = "best"         # objective.rank / window: what a trial's value is (core.objective.trial_value)
    window: int = 5

    def check(self, values: Sequence[float | None], mode: str) -> str | None:
        """A one-line reason to stop, or None. ``values``: each ranked trial's value as
        ``objective.rank`` ranks it (``self.rank``, ``self.window``), in the order the trials ended."""
        if self.after <= 0 or len(values) <= self.after:
            return None
        scores = [score(v, mode) for v in values]
        before, now = max(scores[:-self.after]), max(scores)
        if before == -math.inf or now - before > self.min_delta * abs(before):
            return None
        return (f"the best objective ({fmt(before * sign(mode))}) did not improve by more than "
                f"{self.min_delta:.0%} over the last {self.after} ranked trials ({len(values)} in all)")


__all__ = ["Convergence"]
