"""What the driver keeps, for as long as the search runs, of finished trials and of snapshots.

Tune holds every trial object in the driver until the search ends, with everything it computed from
the trial's results, and writes all of it into every experiment snapshot. Part of that serves only a
trial that still reports: per numeric metric, the last 5 and last 10 values behind Tune's running
averages (about 1.6 KB a metric; 21 KB a trial for the 13 numbers even a one-number model reports,
with Tune's own). ``LeanDriver`` frees them when a trial ends; what Tune reads of a finished
trial (its last result, the averages in ``metric_analysis``, its checkpoints) stays. Measured with
tracemalloc over trials 300 to 1,290 of a search of trivial trials (benchmarks/scaling.py's kind):
the driver's Python allocations grow by 38 KB a trial instead of 68 (0.6 KB of that is a leaner
sampler's), and each trial's share of an experiment snapshot falls from 15.4 to 9.8 KB.

Writing those windows into a snapshot leaves a second trace: Tune's JSON encoder pickles each one
and records its text in a set of Ray's that is never emptied (``compat.forget_encoded_objects``),
up to 13 strings a trial epoch, one per snapshot that caught the trial running (a search of 12
trials of 40 epochs left 6,403 of them, 1.3 MiB; at that rate 1,000 trials of 50 epochs would leave
up to 140 MB). ``LeanDriver`` empties them after each snapshot.
"""

from __future__ import annotations

from typing import Any

from ray.tune import Callback

from hpsearch.tune.compat import drop_result_windows, forget_encoded_objects, refill_result_windows


class LeanDriver(Callback):
    """Drops a trial's running-average windows when Tune stops it (``on_trial_complete``, called once
    its last result is processed, and ``on_trial_error``, for a failure Tune does not retry), and
    gives any dropped ones back, empty, whenever Tune starts a trial (``on_trial_start``, before its
    first result; hpsearch itself never starts a stopped trial again, see
    ``compat.refill_result_windows``). After each experiment snapshot (Tune asks callbacks for their
    state right after writing it), forgets the texts Tune's encoder kept of the objects it
    pickled."""

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        refill_result_windows(trial)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        drop_result_windows(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        drop_result_windows(trial)

    def get_state(self) -> None:
        forget_encoded_objects()
        return None
