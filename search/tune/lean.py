"""What the driver keeps, for as long as the search runs, of finished trials and of snapshots.

Tune holds every trial object in the driver until the search ends, with everything it computed from
the trial's results, and writes all of it into every experiment snapshot. Part of that serves only a
trial that still reports: per numeric metric, the last 5 and last 10 values behind Tune's running
averages (about 1.6 KB a metric; 21 KB a trial for the 13 numbers even a one-number model reports,
with Tune's own). ``LeanDriver`` frees them when a trial ends, with the averages themselves
(``metric_analysis``) of every metric but the objective and Tune's reference to the actor's first
answer; what Tune reads of a finished trial (its last result, the objective's averages, its
checkpoints) stays. Measured over trials 1,000 to 5,000 of a search of trivial trials
(benchmarks/scaling.py's kind, both on one host): the driver's USS grows by 36 KiB a trial where
it grew by 49 before (every metric's averages kept, the searcher holding every finished trial:
hpsearch.tune.searcher), and Ray's experiment snapshot at trial 5,000 is 37.7 MB instead of
50.6. Before the windows went (tracemalloc, trials 300 to 1,290) the driver's Python allocations
grew by 68 KB a trial.

Writing those windows into a snapshot leaves a second trace: Tune's JSON encoder pickles each one
and records its text in a set of Ray's that is never emptied (``compat.forget_encoded_objects``),
up to 13 strings a trial epoch, one per snapshot that caught the trial running (a search of 12
trials of 40 epochs left 6,403 of them, 1.3 MiB; at that rate 1,000 trials of 50 epochs would leave
up to 140 MB). ``LeanDriver`` empties them after each snapshot.

Checkpoints: Tune deleting a trial's surplus checkpoints itself (``num_to_keep``) forces an
experiment snapshot whenever a trial has saved that many since the last one, so that the snapshot
never names a checkpoint already deleted. A snapshot writes every trial of the search, so with a
checkpoint every epoch the driver's time per trial grew with the trial count: 31 -> 271 ms per
trivial trial of 4 epochs from the first 500 trials to the last of 5,000 (benchmarks/scaling.py).
hpsearch tells Tune to keep every checkpoint and deletes them itself (``KEEP_CHECKPOINTS`` best and
the latest, as Tune would), never the one the last published snapshot resumes a running trial
from, so snapshots keep their own pace.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from ray.tune import Callback

from hpsearch.tune.compat import (
    drop_averages,
    drop_default_result,
    drop_result_windows,
    forget_encoded_objects,
    latest_checkpoint_path,
    refill_result_windows,
    trim_checkpoints,
)

KEEP_CHECKPOINTS = 2       # a trial's best two by the objective stay, and always its latest


class LeanDriver(Callback):
    """When Tune stops a trial (``on_trial_complete``, called once its last result is processed, and
    ``on_trial_error``, for a failure Tune does not retry), drops its running-average windows, its
    averages of every metric but those in ``averages_of`` (None: keeps them all; a search keeps its
    objective's) and Tune's reference to its actor's first answer (``compat.drop_default_result``);
    gives any dropped windows back, empty, whenever Tune starts a trial (``on_trial_start``, before its
    first result; hpsearch itself never starts a stopped trial again, see
    ``compat.refill_result_windows``). After each experiment snapshot (Tune asks callbacks for their
    state right after writing it), forgets the texts Tune's encoder kept of the objects it pickled.

    Deletes a trial's surplus checkpoints (``compat.trim_checkpoints``: all but the ``keep`` best
    and the latest) each time Tune has registered a new one (``on_trial_save``), except the one a
    resume would start it from: its latest as of the last snapshot ``keeper``
    (hpsearch.tune.progress.SnapshotKeeper, which counts the snapshots it publishes) published,
    noted for every running trial after each one (and when Tune starts a trial, for one restored
    from a snapshot). When a trial ends they go without that exception: Tune calls
    ``on_trial_complete`` and ``on_trial_error`` before it records the end in the next snapshot,
    after hpsearch's OutcomeRecorder has written the outcome, and a resume never starts a trial
    that has one again. So a running trial keeps at most its best ``keep``, its latest and the one
    a resume starts from; a finished one, its best ``keep`` and its latest."""

    def __init__(self, keeper: Any = None, keep: int = KEEP_CHECKPOINTS, averages_of: Collection[str] | None = None):
        self.keeper = keeper
        self.keep = keep
        self.averages_of = averages_of
        self._running: dict[str, Any] = {}      # trial id -> trial, started and not ended
        self._resumable: dict[str, str] = {}    # trial id -> the checkpoint the last snapshot resumes it from
        self._published = getattr(keeper, "published", -1)   # keeper.published when those were noted

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        refill_result_windows(trial)
        self._running[trial.trial_id] = trial
        path = latest_checkpoint_path(trial)
        if path is not None:
            self._resumable.setdefault(trial.trial_id, path)

    def on_trial_save(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        kept = self._resumable.get(trial.trial_id)
        trim_checkpoints(trial, self.keep, () if kept is None else (kept,))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial)

    def get_state(self) -> None:
        forget_encoded_objects()
        published = getattr(self.keeper, "published", self._published + 1)
        if published != self._published:
            self._published = published
            for trial_id, trial in self._running.items():
                path = latest_checkpoint_path(trial)
                if path is not None:
                    self._resumable[trial_id] = path
        return None

    def _end(self, trial: Any) -> None:
        drop_result_windows(trial)
        if self.averages_of is not None:
            drop_averages(trial, self.averages_of)
        drop_default_result(trial)
        self._running.pop(trial.trial_id, None)
        self._resumable.pop(trial.trial_id, None)
        trim_checkpoints(trial, self.keep)
