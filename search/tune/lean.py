"""What the driver keeps of a finished trial, for as long as the search runs.

Tune holds every trial object in the driver until the search ends, with everything it computed from
the trial's results, and writes all of it into every experiment snapshot. Part of that serves only a
trial that still reports: per numeric metric, the last 5 and last 10 values behind Tune's running
averages (about 1.6 KB a metric; 21 KB a trial for the 13 numbers even a one-number model reports,
with Tune's own). ``CompactFinished`` frees them when a trial ends; what Tune reads of a finished
trial (its last result, the averages in ``metric_analysis``, its checkpoints) stays. Measured with
tracemalloc over trials 300 to 1,290 of a search of trivial trials (benchmarks/scaling.py's kind):
the driver's Python allocations grow by 38 KB a trial instead of 68 (0.6 KB of that is a leaner
sampler's), and each trial's share of an experiment snapshot falls from 15.4 to 9.8 KB.
"""

from __future__ import annotations

from typing import Any

from ray.tune import Callback

from hpsearch.tune.compat import drop_result_windows


class CompactFinished(Callback):
    """Drops a trial's running-average windows when Tune stops it for good (``on_trial_complete``,
    called once its last result is processed). A trial that failed keeps them (Tune calls
    ``on_trial_error`` instead): ``hpsearch resume`` may run it again, and its next result needs
    them."""

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        drop_result_windows(trial)
