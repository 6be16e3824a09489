"""ASHA that also stops unhealthy trials, ranks non-finite objectives last and says why it stopped.

``HealthASHA`` is Ray Tune's side of hpsearch.core.rungs: the rung arithmetic, the NaN rule and
the kept stops live there (``Bracket``); here a Tune result becomes a decision, every stop is
written to the run's OutcomeLog with its one-line reason, and the bracket's changes are on disk
(``state_path`` and the log of changes beside it, hpsearch.core.rundir.StateLog) before a decision
takes effect, so a resumed search carries it on (Ray itself drops scheduler state on restore,
ray#30838): a pruned trial stays pruned, and later rungs compare against the full history.

Plain ASHA (Ray's AsyncHyperBandScheduler) lets a trial stuck at a constant loss whose objective
happens to rank well survive every rung; here the trial's health verdict (``result["health"]``,
computed by the trainable with ``hpsearch.core.health.assess``) stops it at the epoch the verdict
fires, whatever its rank.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from hpsearch.core.health import STATUSES
from hpsearch.core.numbers import as_float, fmt
from hpsearch.core.objective import sign
from hpsearch.core.outcomes import VERDICT_OUTCOME
from hpsearch.core.rundir import scheduler_log, write_json_atomic
from hpsearch.core.rungs import Bracket, Stop, cutoff
from hpsearch.core.warm_start import config_points, is_point

if TYPE_CHECKING:
    from hpsearch.core.config import RunConfig
    from hpsearch.core.rundir import OutcomeLog

STOP, CONTINUE = TrialScheduler.STOP, TrialScheduler.CONTINUE
COMPACT_AFTER = 1000    # changes the log may hold before the whole state replaces them, at least


def epoch_of(result: dict, time_attr: str) -> int | None:
    """The result's epoch (``time_attr``) as an integer; None when it has no finite one."""
    value = as_float(result.get(time_attr))
    return int(value) if value is not None and math.isfinite(value) else None


def health_outcome(verdict: Any) -> str:
    """The outcome a health verdict other than "ok" stops a trial with; ValueError for a verdict
    hpsearch.core.health never gives."""
    if verdict not in VERDICT_OUTCOME:
        raise ValueError(f"result['health']: got {verdict!r}, expected one of {', '.join(STATUSES)}")
    return VERDICT_OUTCOME[verdict]


NOT_ADDED = object()


def first_waiting(live: Iterable[Any], added: Mapping[str, int]) -> Any:
    """The trial Ray's FIFO order starts next: of the ``live`` trials (not yet stopped), the
    PENDING one added first (``added``: trial id -> order), else the PAUSED one added first; None
    when no trial waits; NOT_ADDED when a waiting trial has no order. Ray's FIFOScheduler finds the
    same trial by reading every trial of the search, at every scheduling step: a cost that grows
    with the trial count. Tune's live trials are the running, pending and paused ones (and, in Ray
    2.60, failed ones and some stopped ones: only the status counts here)."""
    for status in ("PENDING", "PAUSED"):
        waiting = [trial for trial in live if trial.status == status]
        if any(trial.trial_id not in added for trial in waiting):
            return NOT_ADDED
        if waiting:
            return min(waiting, key=lambda trial: added[trial.trial_id])
    return None


class HealthASHA(FIFOScheduler):
    """Asynchronous successive halving over one objective, plus health and NaN rules.

    For each result the decision is a ladder; the first rung of the ladder that applies decides:

    0. the trial was stopped by this scheduler before an interruption (a restored stop) and is
       back, re-running epochs from an older checkpoint -> STOP once it reaches the epoch of that
       stop (nothing is recorded again), CONTINUE before it.
    1. ``result["health"]`` is not "ok" -> STOP now, recorded as ``pruned_<verdict>`` with the
       trial's ``health_reason``; the trial's values are withdrawn from every rung (they were not
       real), whatever its rank.
    2. the result has no epoch (``time_attr``) -> CONTINUE (nothing to compare).
    3. epoch >= max_t -> STOP: the trial is complete (the runner records "completed", not us).
    4. no rung is due at this epoch -> CONTINUE (the value is noted: with ``compare: best`` a rung
       records each trial's best value so far).
    5. the bracket ranks the objective at the due rung (``Bracket.rank``): unless the trial is exempt
       (a warm-start point, with ``keep_warm_start``) or fewer than ``min_trials`` others are
       recorded there, not a finite number, or below the rung's cutoff -> STOP, ``pruned_asha``.
    6. CONTINUE.

    A result without ``health`` counts as healthy (the trainable reports a verdict every epoch; a
    bare result has nothing to judge). The settings are taken as given: ``make_scheduler`` builds
    it from a validated RunConfig.
    """

    def __init__(self, metric: str, mode: str, max_t: int, grace_period: int = 1,
                 reduction_factor: float = 3.0, outcomes: OutcomeLog | None = None,
                 time_attr: str = "training_iteration", state_path: str | Path | None = None,
                 min_trials: int = 1, compare: str = "last", exempt_points: Sequence[Mapping[str, Any]] = ()):
        super().__init__()
        self._metric = metric
        self._mode = mode
        self.bracket = Bracket(metric, mode, max_t, grace_period, reduction_factor, time_attr, min_trials, compare)
        self.exempt_points = [dict(point) for point in exempt_points]
        self.outcomes = outcomes
        self.store = scheduler_log(state_path) if state_path is not None else None
        self._whole_size: int | None = None     # entries of the state this scheduler last wrote whole
        self._next_step: list[Callable[[Any], None]] = []
        self._added: dict[str, int] = {}        # trial id -> when Tune last added it (FIFO order)
        self._adds = 0

    @property
    def mode(self) -> str:
        return self._mode

    # -- Ray's TrialScheduler API -------------------------------------------------------------

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        """Metric and mode are fixed at construction; Tune may repeat them, not change them."""
        return metric in (None, self._metric) and mode in (None, self._mode)

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        """A trial whose config is one of ``exempt_points`` (each names every searched parameter) is
        exempt from the rungs: it runs to the end unless a health rule stops it."""
        super().on_trial_add(tune_controller, trial)
        self._adds += 1
        self._added[trial.trial_id] = self._adds        # a retried trial is added again, last
        config = getattr(trial, "config", None) or {}
        if is_point(config, self.exempt_points):
            self.bracket.make_exempt(trial.trial_id)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        trial_id, epoch = trial.trial_id, epoch_of(result, self.bracket.time_attr)
        restored = self.bracket.decided.get(trial_id)
        if restored is not None:
            if not restored.reached(epoch):
                return CONTINUE
            if self.outcomes is not None and self.outcomes.get(trial_id) is None:
                # persisted before a crash that lost its outcome (``_take``): recorded now, or the
                # trial would end as "completed"
                self.outcomes.record(trial_id, restored.outcome, restored.reason, restored.epoch)
            return STOP
        verdict = result.get("health")
        if verdict not in (None, "ok"):
            outcome = health_outcome(verdict)
            reason = str(result.get("health_reason") or f"health verdict {verdict} at epoch {epoch}")
            return self._take(trial_id, self.bracket.decide(trial_id, outcome, reason, epoch))
        if epoch is None:
            return CONTINUE
        if epoch >= self.bracket.max_t:
            return STOP
        rung = self.bracket.due(trial_id, epoch)
        if rung is None:
            self.bracket.observe(trial_id, result.get(self._metric))
            return CONTINUE
        stop = self.bracket.rank(rung, trial_id, epoch, result.get(self._metric))
        if stop is not None:
            return self._take(trial_id, stop)
        self._persist()
        return CONTINUE

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        """A final result that bypassed ``on_trial_result`` (a Tune stop criterion) still takes its
        place at a due rung, as in Ray's ASHA; an unhealthy one does not."""
        self._added.pop(trial.trial_id, None)
        if not result or result.get("health") not in (None, "ok"):
            return
        epoch = epoch_of(result, self.bracket.time_attr)
        rung = self.bracket.due(trial.trial_id, epoch) if epoch is not None else None
        if rung is not None:
            self.bracket.record(rung, trial.trial_id, result.get(self._metric))
            self._persist()

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        self._added.pop(trial.trial_id, None)       # a retried trial is added again

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self._added.pop(trial.trial_id, None)

    def on_next_step(self, hook: Callable[[Any], None]) -> None:
        """Run ``hook(tune_controller)`` once, at the next scheduling step, before Ray picks a trial.
        At the first step after a restore Tune knows every restored trial: a resumed search closes
        the trials that ended after Ray's last snapshot there (hpsearch.driver.resume)."""
        self._next_step.append(hook)

    def choose_trial_to_run(self, tune_controller: Any) -> Any:
        hooks, self._next_step = self._next_step, []
        for hook in hooks:
            hook(tune_controller)
        chosen = first_waiting(tune_controller.get_live_trials(), self._added)
        return super().choose_trial_to_run(tune_controller) if chosen is NOT_ADDED else chosen

    def debug_string(self) -> str:
        parts = []
        for rung in self.bracket.rungs:
            bar = cutoff(rung.scores.values(), self.bracket.reduction_factor)
            shown = "-" if bar is None else fmt(bar * sign(self._mode))
            parts.append(f"epoch {fmt(rung.milestone)}: {len(rung.scores)} trials, cutoff {shown}")
        stopped = self.bracket.stopped
        return (f"HealthASHA on {self._metric} ({self._mode}): stopped {stopped['asha']} by rank, "
                f"{stopped['health']} by health | " + " | ".join(parts))

    def save(self, checkpoint_path: str) -> None:
        write_json_atomic(checkpoint_path, self.state())

    def restore(self, checkpoint_path: str) -> None:
        self.restore_state(json.loads(Path(checkpoint_path).read_text(encoding="utf-8")))

    # -- JSON-safe state ------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """The bracket as plain JSON data (hpsearch.core.rungs.Bracket.to_json)."""
        return self.bracket.to_json()

    def restore_state(self, state: dict[str, Any]) -> None:
        """Load what ``state()`` wrote; ValueError for state from a scheduler with other settings. A
        state from before warm-start points could be exempt keeps none exempt (Bracket.load keeps
        its other rules too)."""
        self.bracket.load(state)
        if self.bracket.legacy:
            self.exempt_points = []

    def observe_history(self, rows: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
        """Note every healthy result a resumed search's trials reported before (trial_id -> the run
        dir's rows): the best value so far a rung compares is then the uninterrupted search's, also
        for the epochs after the last saved state."""
        for trial_id, results in rows.items():
            for result in results:
                if result.get("health") in (None, "ok") and epoch_of(result, self.bracket.time_attr) is not None:
                    self.bracket.observe(trial_id, result.get(self._metric))

    # -- taking a decision ------------------------------------------------------------------------

    def _persist(self) -> None:
        """What changed since the last call, on disk before the decision takes effect (no-op without
        ``state_path``): appended to the log of changes, or, once the log would hold more changes
        than the whole state last written had entries (and at least ``COMPACT_AFTER``), the whole
        state written in their place. Each whole write thus follows as many appends as it writes
        entries, and a decision costs the same at trial 10,000 as at trial 10 (rewriting the whole
        state at every decision took 10 ms at 1,000 trials, 235 KB, and grew with every trial). The
        first call writes the whole state, so a resumed search's log extends a state in this
        version's form, whatever version it resumed from."""
        changes, self.bracket.changes = self.bracket.changes, []
        if self.store is None or not changes:
            return
        if self._whole_size is None or self.store.pending + len(changes) > max(COMPACT_AFTER, self._whole_size):
            self.store.write(self.state())
            self._whole_size = self.bracket.size()
        else:
            self.store.append(changes)

    def _take(self, trial_id: str, stop: Stop) -> str:
        """A STOP the bracket keeps: persisted first (a crash between the two writes leaves the stop
        on disk, and a resumed search records it), then written to the OutcomeLog."""
        self._persist()
        if self.outcomes is not None:
            self.outcomes.record(trial_id, stop.outcome, stop.reason, stop.epoch)
        return STOP


def exempt_points(config: RunConfig) -> list[dict[str, Any]]:
    """The warm-start points as the searcher asks them (``warm_start_points``: searched keys a point
    leaves out filled from ``params`` where they lie in the space) that name every searched
    parameter, on those parameters (hpsearch.core.warm_start.config_points)."""
    return config_points(config.warm_start, config.space, config.params)


def make_scheduler(config: RunConfig, outcomes: OutcomeLog, state_path: str | Path | None = None) -> HealthASHA:
    """The search's scheduler: ASHA over ``config.objective`` with the config's rungs and noise
    settings (``scheduler.min_trials``, ``compare``, and ``keep_warm_start``: the warm-start points
    exempt from the rungs), writing every stop to ``outcomes`` and its state to ``state_path`` (when
    given)."""
    rungs = config.scheduler
    return HealthASHA(metric=config.objective.metric, mode=config.objective.mode, max_t=config.max_epochs,
                      grace_period=rungs.grace_period, reduction_factor=rungs.reduction_factor, outcomes=outcomes,
                      state_path=state_path, min_trials=rungs.min_trials, compare=rungs.compare,
                      exempt_points=exempt_points(config) if rungs.keep_warm_start else ())


__all__ = ["HealthASHA", "epoch_of", "exempt_points", "health_outcome", "make_scheduler"]
