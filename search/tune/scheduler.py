"""ASHA that also stops unhealthy trials, ranks non-finite objectives last and says why it stopped.

Plain ASHA (Ray's AsyncHyperBandScheduler) has three gaps this scheduler closes:

- a NaN objective compares False with any cutoff, so a NaN trial survives every rung to max_t;
  here a non-finite (or missing) objective is the worst value a rung can hold;
- a trial stuck at a constant loss whose objective happens to rank well survives every rung; here
  the trial's health verdict (``result["health"]``, computed by the trainable with
  ``hpsearch.core.health.assess``) stops it at the epoch the verdict fires, whatever its rank;
- nothing records why a trial stopped; here every stop is written to the run's OutcomeLog with a
  one-line reason.

Its rung state and every stop it decided are plain JSON (``state()`` / ``restore_state()``),
written atomically to ``state_path`` on every decision, so a resumed search carries them on (Ray
itself drops scheduler state on restore, ray#30838): a pruned trial stays pruned, and later rungs
compare against the full history. A resumed search also hands it the trials that finished after
Ray's last snapshot (``retire``): they are never started again.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from hpsearch.core.health import STATUSES
from hpsearch.core.objective import MODES, score, sign
from hpsearch.core.rundir import write_json_atomic
from hpsearch.models.config import ConfigError

if TYPE_CHECKING:
    from hpsearch.core.config import RunConfig
    from hpsearch.core.rundir import OutcomeLog

STATE_VERSION = 2          # 2 added "decided"; a version 1 state restores with no decisions


def rung_milestones(grace_period: int, max_t: int, reduction_factor: float) -> list[float]:
    """Epochs at which ASHA compares trials: grace_period x rf^k, below max_t (a trial at max_t is
    finished, not compared)."""
    milestones = []
    milestone = float(grace_period)
    while milestone < max_t:
        milestones.append(milestone)
        milestone *= reduction_factor
    return milestones


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default) that keeps -inf meaningful: any interpolation
    that gives weight to a -inf neighbour is -inf."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    weight = position - low
    a, b = ordered[low], ordered[high]
    if weight == 0 or a == b:
        return a
    if a == -math.inf:
        return -math.inf
    return a + (b - a) * weight


def _fmt(value: Any) -> str:
    if value is None:
        return "missing"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.4g}"
    return repr(value)


class HealthASHA(FIFOScheduler):
    """Asynchronous successive halving over one objective, plus health and NaN rules.

    For each result the decision is a ladder; the first rung of the ladder that applies decides:

    0. the trial was stopped by this scheduler before an interruption (a restored decision) and is
       back, re-running epochs from an older checkpoint -> STOP once it reaches the epoch of that
       decision (nothing is recorded again), CONTINUE before it.
    1. ``result["health"]`` is not "ok" -> STOP now, recorded as ``pruned_<verdict>`` with the
       trial's ``health_reason``; the trial's values are withdrawn from every rung (they were not
       real), whatever its rank.
    2. the result has no epoch (``time_attr``) -> CONTINUE (nothing to compare).
    3. epoch >= max_t -> STOP: the trial is complete (the runner records "completed", not us).
    4. no rung is due at this epoch -> CONTINUE.
    5. the objective is non-finite or missing and another trial is recorded at the rung -> STOP,
       ``pruned_asha`` ("ranks last").
    6. the objective is below the rung's cutoff (the 1 - 1/reduction_factor quantile of the trials
       recorded there before it) -> STOP, ``pruned_asha`` with value, cutoff, epoch, rung and count.
    7. CONTINUE.

    NaN policy: a NaN, +-inf or missing objective scores -inf (``hpsearch.core.objective.score``): it is
    recorded at its rung as the worst value, it never survives a rung that holds another trial, and
    it lowers no one else's bar beyond "better than nothing". A result without ``health`` counts as
    healthy (the trainable reports a verdict every epoch; a bare result has nothing to judge).
    """

    def __init__(self, metric: str, mode: str, max_t: int, grace_period: int = 1,
                 reduction_factor: float = 3.0, outcomes: "OutcomeLog | None" = None,
                 time_attr: str = "training_iteration", state_path: str | Path | None = None):
        if not isinstance(metric, str) or not metric:
            raise ConfigError(f"objective.metric: got {metric!r}, expected a metric name")
        if mode not in MODES:
            raise ConfigError(f"objective.mode: got {mode!r}, expected 'min' or 'max'")
        if isinstance(max_t, bool) or not isinstance(max_t, int) or max_t < 1:
            raise ConfigError(f"max_epochs: got {max_t!r}, expected an integer >= 1")
        if isinstance(grace_period, bool) or not isinstance(grace_period, int) or not 1 <= grace_period <= max_t:
            raise ConfigError(f"scheduler.grace_period: got {grace_period!r}, expected an integer "
                              f"from 1 to max_epochs ({max_t})")
        if isinstance(reduction_factor, bool) or not isinstance(reduction_factor, (int, float)) \
                or not reduction_factor > 1 or not math.isfinite(reduction_factor):
            raise ConfigError(f"scheduler.reduction_factor: got {reduction_factor!r}, expected a number > 1")
        super().__init__()
        self._metric = metric
        self._mode = mode
        self.max_t = max_t
        self.grace_period = grace_period
        self.reduction_factor = float(reduction_factor)
        self.time_attr = time_attr
        self.outcomes = outcomes
        self.milestones = rung_milestones(grace_period, max_t, self.reduction_factor)
        self.rungs: list[dict[str, float]] = [{} for _ in self.milestones]  # trial_id -> score
        self.stopped = {"health": 0, "asha": 0}
        self.decided: dict[str, dict[str, Any]] = {}   # trial_id -> {outcome, reason, epoch} of each STOP
        self.state_path = Path(state_path) if state_path is not None else None
        self._retire: dict[str, dict[str, Any]] = {}

    # -- Ray's TrialScheduler API -------------------------------------------------------------

    @property
    def mode(self) -> str:
        return self._mode

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        """Metric and mode are fixed at construction; Tune may repeat them, not change them."""
        return metric in (None, self._metric) and mode in (None, self._mode)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        trial_id = trial.trial_id
        epoch = self._epoch(result)
        decided = self.decided.get(trial_id)
        if decided is not None:
            due = decided.get("epoch")
            return TrialScheduler.STOP if epoch is None or due is None or epoch >= due else TrialScheduler.CONTINUE
        health = result.get("health")
        if health is not None and health != "ok":
            return self._stop_unhealthy(trial_id, health, result.get("health_reason", ""), epoch)
        if epoch is None:
            return TrialScheduler.CONTINUE
        if epoch >= self.max_t:
            return TrialScheduler.STOP
        index = self._due_rung(trial_id, epoch)
        if index is None:
            return TrialScheduler.CONTINUE
        rung = self.rungs[index]
        value = result.get(self._metric)
        mine = score(value, self._mode)
        cutoff = percentile(list(rung.values()), (1 - 1 / self.reduction_factor) * 100) if rung else None
        rung[trial_id] = mine      # on disk with the decision: _decide_stop or below
        where = f"at epoch {epoch} (rung {_fmt(self.milestones[index])}, {len(rung)} trials)"
        if mine == -math.inf and cutoff is not None:
            return self._stop_asha(trial_id, f"{self._metric} {_fmt(value)} is not a finite number, "
                                             f"so it ranks last {where}", epoch)
        if cutoff is not None and mine < cutoff:
            verb = "below" if self._mode == "max" else "above"
            return self._stop_asha(trial_id, f"{self._metric} {_fmt(value)} {verb} rung cutoff "
                                             f"{_fmt(cutoff * sign(self._mode))} {where}", epoch)
        self._persist()
        return TrialScheduler.CONTINUE

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        """A final result that bypassed ``on_trial_result`` (a Tune stop criterion) still takes its
        place at a due rung, as in Ray's ASHA; an unhealthy one does not."""
        if not result or result.get("health") not in (None, "ok"):
            return
        epoch = self._epoch(result)
        index = self._due_rung(trial.trial_id, epoch) if epoch is not None and epoch < self.max_t else None
        if index is not None:
            self.rungs[index][trial.trial_id] = score(result.get(self._metric), self._mode)
            self._persist()

    def retire(self, finished: dict[str, dict[str, Any]]) -> None:
        """Trials a resumed search must not run again: they finished after Ray's last snapshot, so
        Ray restores them as unfinished. ``finished``: trial_id -> {"outcome": ..., "result": the
        trial's last reported row}. Each is closed at the first scheduling step (below)."""
        self._retire.update(finished)

    def choose_trial_to_run(self, tune_controller: Any) -> Any:
        """Ray's pick of the next trial, after closing the retired trials Ray holds as pending: the
        searcher is told the trial's real end (its last row, or an error) and Tune stops it without
        starting it."""
        if self._retire:   # the first step after a restore: every restored trial is known by now
            retire, self._retire = self._retire, {}
            for trial in list(tune_controller.get_trials()):
                final = retire.get(trial.trial_id)
                if final is None or trial.status not in (Trial.PENDING, Trial.PAUSED):
                    continue
                tune_controller.search_alg.on_trial_complete(
                    trial.trial_id, result=final.get("result"), error=final.get("outcome") == "error")
                tune_controller.stop_trial(trial)
        return super().choose_trial_to_run(tune_controller)

    def debug_string(self) -> str:
        parts = []
        for milestone, rung in zip(self.milestones, self.rungs):
            cutoff = percentile(list(rung.values()), (1 - 1 / self.reduction_factor) * 100) if rung else None
            shown = "-" if cutoff is None else _fmt(cutoff * sign(self._mode))
            parts.append(f"epoch {_fmt(milestone)}: {len(rung)} trials, cutoff {shown}")
        return (f"HealthASHA on {self._metric} ({self._mode}): stopped {self.stopped['asha']} by rank, "
                f"{self.stopped['health']} by health | " + " | ".join(parts))

    def save(self, checkpoint_path: str) -> None:
        Path(checkpoint_path).write_text(json.dumps(self.state()), encoding="utf-8")

    def restore(self, checkpoint_path: str) -> None:
        self.restore_state(json.loads(Path(checkpoint_path).read_text(encoding="utf-8")))

    # -- JSON-safe state ------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Rung records and counters as plain JSON data (-inf scores are written as null)."""
        return {
            "version": STATE_VERSION, "metric": self._metric, "mode": self._mode, "max_t": self.max_t,
            "grace_period": self.grace_period, "reduction_factor": self.reduction_factor,
            "time_attr": self.time_attr, "stopped": dict(self.stopped),
            "decided": {t: dict(d) for t, d in self.decided.items()},
            "rungs": [{"milestone": m, "scores": {t: (None if s == -math.inf else s) for t, s in rung.items()}}
                      for m, rung in zip(self.milestones, self.rungs)],
        }

    def restore_state(self, state: dict[str, Any]) -> None:
        """Load what ``state()`` wrote; refuses state from a scheduler with other settings."""
        version = state.get("version") if isinstance(state, dict) else None
        if version not in (1, STATE_VERSION):
            raise ValueError(f"scheduler state: got version {version!r}, expected {STATE_VERSION}")
        mine = self.state()
        for key in ("metric", "mode", "max_t", "grace_period", "reduction_factor", "time_attr"):
            if state.get(key) != mine[key]:
                raise ValueError(f"scheduler state: {key} is {state.get(key)!r}, this search has {mine[key]!r}")
        milestones = [r["milestone"] for r in state["rungs"]]
        if milestones != self.milestones:
            raise ValueError(f"scheduler state: rungs at {milestones}, this search has {self.milestones}")
        self.rungs = [{t: (-math.inf if s is None else float(s)) for t, s in r["scores"].items()}
                      for r in state["rungs"]]
        self.stopped = {"health": int(state["stopped"]["health"]), "asha": int(state["stopped"]["asha"])}
        self.decided = {str(t): dict(d) for t, d in (state.get("decided") or {}).items()}

    # -- helpers --------------------------------------------------------------------------------

    def _epoch(self, result: dict) -> int | None:
        value = result.get(self.time_attr)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return None
        return int(value)

    def _due_rung(self, trial_id: str, epoch: int) -> int | None:
        """The highest rung at or below ``epoch`` that has not seen this trial yet (as Ray's ASHA:
        a trial that skipped a rung is compared at the highest one it reached)."""
        for index in reversed(range(len(self.milestones))):
            if epoch < self.milestones[index]:
                continue
            if trial_id in self.rungs[index]:
                return None
            return index
        return None

    def _persist(self) -> None:
        """The state, on disk before the decision takes effect (no-op without ``state_path``)."""
        if self.state_path is not None:
            write_json_atomic(self.state_path, self.state())

    def _decide_stop(self, trial_id: str, outcome: str, reason: str, epoch: int | None) -> str:
        """A STOP: kept in the state (persisted first: a crash between the two writes leaves the
        decision on disk, and a resumed search records it), then written to the OutcomeLog."""
        self.decided[trial_id] = {"outcome": outcome, "reason": reason, "epoch": epoch}
        self._persist()
        if self.outcomes is not None:
            self.outcomes.record(trial_id, outcome, reason, epoch)
        return TrialScheduler.STOP

    def _stop_unhealthy(self, trial_id: str, health: Any, reason: Any, epoch: int | None) -> str:
        if health not in STATUSES:
            raise ValueError(f"result['health']: got {health!r}, expected one of {', '.join(STATUSES)}")
        for rung in self.rungs:
            rung.pop(trial_id, None)
        reason = str(reason) if reason else f"health verdict {health} at epoch {epoch}"
        self.stopped["health"] += 1
        return self._decide_stop(trial_id, f"pruned_{health}", reason, epoch)

    def _stop_asha(self, trial_id: str, reason: str, epoch: int) -> str:
        self.stopped["asha"] += 1
        return self._decide_stop(trial_id, "pruned_asha", reason, epoch)


def make_scheduler(config: "RunConfig", outcomes: "OutcomeLog", state_path: str | Path | None = None) -> HealthASHA:
    """The search's scheduler: ASHA over ``config.objective`` with the config's rungs, writing every
    stop to ``outcomes`` and its state to ``state_path`` (when given)."""
    return HealthASHA(metric=config.objective.metric, mode=config.objective.mode, max_t=config.max_epochs,
                      grace_period=config.scheduler.grace_period,
                      reduction_factor=config.scheduler.reduction_factor, outcomes=outcomes,
                      state_path=state_path)


__all__ = ["HealthASHA", "make_scheduler", "percentile", "rung_milestones"]
