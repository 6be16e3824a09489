"""ASHA's rungs as plain data and small functions: no Ray, no torch.

Asynchronous successive halving compares trials at a ladder of epochs, the *milestones*
grace_period x rf^k below max_t. At each milestone (a *rung*) a trial is recorded once, and it
goes on only if its value reaches the rung's *cutoff*: the 1 - 1/rf quantile of the values
recorded there before it, so about 1/rf of the trials pass each rung. A trial that skipped a rung
(it reported no result at that epoch) is compared at the highest rung it reached. This is the
arithmetic of one bracket of Ray's ``AsyncHyperBandScheduler`` (``_Bracket``), with two changes:

- values are held as larger-is-better scores (``hpsearch.core.objective.score``): a NaN, +-inf or
  missing objective scores -inf, the worst value a rung can hold. In Ray's bracket a NaN compares
  False with any cutoff, so a NaN trial passes every rung;
- every stop is kept with its outcome, one-line reason and epoch (``Bracket.decided``), and the
  whole bracket is plain JSON (``to_json`` / ``load``), so a resumed search carries its rungs and
  stops on (Ray drops scheduler state on restore, ray#30838). Each change is also noted as a small
  JSON object (``Bracket.changes``: a record, a stop, an exempt trial) that ``apply`` replays, so
  the state can be kept on disk as a whole file plus the changes since (``fold``), at a cost per
  decision that does not grow with the number of trials.

Three settings make a rung's decision hold up on a noisy objective (chosen by the replay with noise,
benchmarks/rung_noise.py): ``min_trials`` (a rung stops nobody until that many other trials are
recorded there: a cutoff from one or two values is mostly their noise), ``compare`` ("best": a trial
is recorded with its best value so far instead of its last, so one noisy epoch does not decide it)
and ``exempt`` (trials no rung stops: the warm-start points, the configs the user already trusts;
health rules still apply to them).

The Tune side (when to ask, what STOP means, the health verdict, the OutcomeLog, the state file)
is hpsearch.tune.scheduler.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from hpsearch.core.numbers import fmt
from hpsearch.core.objective import score, sign
from hpsearch.core.outcomes import HEALTH_OUTCOMES, Outcome

STATE_VERSION = 3          # 2 added "decided", 3 "best", "exempt" and the settings min_trials and compare
# what a state must agree on with the search that loads it (an older state lacks the last two)
SETTINGS = ("metric", "mode", "max_t", "grace_period", "reduction_factor", "time_attr", "min_trials", "compare")
LEGACY = {"min_trials": 1, "compare": "last"}   # the rules a state from before version 3 was decided by


def rung_milestones(grace_period: int, max_t: int, reduction_factor: float) -> list[float]:
    """Epochs at which trials are compared: grace_period x rf^k, below max_t (a trial at max_t is
    finished, not compared). Each is the previous one times rf, the same floats a saved state holds."""
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


def cutoff(scores: Iterable[float], reduction_factor: float) -> float | None:
    """The score a trial must reach at a rung holding ``scores``: their 1 - 1/rf quantile. None for
    an empty rung: the first trial at a rung has nothing to be compared with."""
    values = list(scores)
    return percentile(values, (1 - 1 / reduction_factor) * 100) if values else None


@dataclass
class Rung:
    """One milestone and the score of each trial recorded there (trial_id -> score)."""
    milestone: float
    scores: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Stop:
    """A stop a search decided: the trial's outcome, the one-line reason, and the epoch of the
    result it was decided on (None when that result had no epoch)."""
    outcome: str
    reason: str
    epoch: int | None

    def reached(self, epoch: int | None) -> bool:
        """Whether a trial stopped before an interruption, back and re-running epochs from an older
        checkpoint, is at this stop again (without an epoch on either side: at once)."""
        return epoch is None or self.epoch is None or epoch >= self.epoch


class Bracket:
    """One search's rungs over one objective, and every stop it decided.

    ``due`` says at which rung a trial's result is compared, ``rank`` records it there and decides
    by rank, ``record`` only records it, and ``decide`` keeps any other stop (a health verdict).
    The settings are taken as given: hpsearch.core.config validated them (grace_period from 1 to
    max_t, reduction_factor > 1, mode "min" or "max").
    """

    def __init__(self, metric: str, mode: str, max_t: int, grace_period: int = 1, reduction_factor: float = 3.0,
                 time_attr: str = "training_iteration", min_trials: int = 1, compare: str = "last"):
        self.metric = metric
        self.mode = mode
        self.max_t = max_t
        self.grace_period = grace_period
        self.reduction_factor = float(reduction_factor)
        self.time_attr = time_attr
        self.min_trials = min_trials
        self.compare = compare
        self.rungs = [Rung(m) for m in rung_milestones(grace_period, max_t, self.reduction_factor)]
        self.decided: dict[str, Stop] = {}
        self.stopped = {"health": 0, "asha": 0}
        self.best: dict[str, float] = {}        # each trial's best score so far ("best" only)
        self.exempt: set[str] = set()           # trials no rung stops
        self.changes: list[dict[str, Any]] = []  # what record/decide/make_exempt changed, for ``apply``
        self.legacy = False                     # decided by ASHA's rule (a state from before version 3)

    @property
    def milestones(self) -> list[float]:
        return [rung.milestone for rung in self.rungs]

    # -- deciding ----------------------------------------------------------------------------------

    def due(self, trial_id: str, epoch: int) -> Rung | None:
        """The rung that compares this trial's result at ``epoch``: the highest rung at or below it,
        unless the trial is recorded there already (then none, as in Ray's ASHA). None at max_t
        and beyond: the trial is finished, not compared."""
        if epoch >= self.max_t:
            return None
        for rung in reversed(self.rungs):
            if epoch >= rung.milestone:
                return None if trial_id in rung.scores else rung
        return None

    def observe(self, trial_id: str, value: Any) -> float:
        """Note a healthy result's objective ``value``; return the score a rung records for it: the
        value's own (-inf when it is not a finite number), or with ``compare`` "best" the trial's
        best so far (a non-finite value is -inf all the same: it ranks last)."""
        return self._best_so_far(trial_id, score(value, self.mode))

    def _best_so_far(self, trial_id: str, mine: float) -> float:
        """``mine``, or with ``compare`` "best" the trial's best score so far, which it updates."""
        if self.compare == "best" and mine > -math.inf:
            mine = max(mine, self.best.get(trial_id, -math.inf))
            self.best[trial_id] = mine
        return mine

    def record(self, rung: Rung, trial_id: str, value: Any) -> float:
        """Put the trial's objective ``value`` at ``rung`` (as ``observe`` scores it) and return that score."""
        mine = rung.scores[trial_id] = self.observe(trial_id, value)
        self.changes.append({"trial": trial_id, "rung": rung.milestone, "score": None if mine == -math.inf else mine})
        return mine

    def rank(self, rung: Rung, trial_id: str, epoch: int, value: Any) -> Stop | None:
        """Record ``value`` at ``rung`` and decide on it against the trials recorded there before:
        a ``pruned_asha`` stop when it is not a finite number or falls below the cutoff, with a reason
        naming value, cutoff, epoch, rung and count; None to go on: always for an exempt trial, and
        while fewer than ``min_trials`` others are recorded at the rung (at least one)."""
        others = list(rung.scores.values())
        mine = self.record(rung, trial_id, value)
        if trial_id in self.exempt or len(others) < max(1, self.min_trials):
            return None
        bar = cutoff(others, self.reduction_factor)
        where = f"at epoch {epoch} (rung {fmt(rung.milestone)}, {len(rung.scores)} trials)"
        if mine == -math.inf:
            what = "is missing" if value is None else f"{fmt(value)} is not a finite number"
            return self.decide(trial_id, Outcome.PRUNED_ASHA.value, f"{self.metric} {what}, so it ranks last {where}",
                               epoch)
        if mine < bar:
            verb = "below" if self.mode == "max" else "above"
            shown = fmt(value)
            if mine != score(value, self.mode):                # compared on a better value before this one
                shown += f" (best so far {fmt(mine * sign(self.mode))})"
            return self.decide(trial_id, Outcome.PRUNED_ASHA.value, f"{self.metric} {shown} {verb} rung cutoff "
                               f"{fmt(bar * sign(self.mode))} {where}", epoch)
        return None

    def decide(self, trial_id: str, outcome: str, reason: str, epoch: int | None) -> Stop:
        """Keep a stop and count it. A health stop also withdraws the trial's values from every rung:
        they were not real, and must not raise anyone's bar."""
        if outcome in HEALTH_OUTCOMES:
            for rung in self.rungs:
                rung.scores.pop(trial_id, None)
            self.stopped["health"] += 1
        else:
            self.stopped["asha"] += 1
        self.decided[trial_id] = Stop(outcome, reason, epoch)
        self.changes.append({"trial": trial_id, "stop": asdict(self.decided[trial_id])})
        return self.decided[trial_id]

    def make_exempt(self, trial_id: str) -> None:
        """No rung stops this trial (a warm-start point); health rules still do."""
        self.exempt.add(trial_id)
        self.changes.append({"trial": trial_id, "exempt": True})

    # -- changes -----------------------------------------------------------------------------------

    def apply(self, change: Mapping[str, Any]) -> None:
        """Replay one of ``changes`` (read back from JSON) on this bracket: a score at a rung (and,
        with ``compare`` "best", the trial's best so far), a stop (counted, and a health stop
        withdrawn from the rungs, as ``decide`` does) or an exempt trial. ValueError for a change
        this bracket cannot hold (a rung it does not have, an unknown kind)."""
        trial_id = str(change.get("trial"))
        if isinstance(change.get("stop"), Mapping):
            stop = change["stop"]
            self.decide(trial_id, str(stop.get("outcome")), str(stop.get("reason", "")), stop.get("epoch"))
        elif "rung" in change:
            rung = next((r for r in self.rungs if r.milestone == change["rung"]), None)
            if rung is None:
                raise ValueError(f"scheduler change: rung {change['rung']!r}, this search has {self.milestones}")
            rung.scores[trial_id] = -math.inf if change.get("score") is None else float(change["score"])
            self._best_so_far(trial_id, rung.scores[trial_id])
        elif change.get("exempt") is True:
            self.exempt.add(trial_id)
        else:
            raise ValueError(f"scheduler change: got {dict(change)!r}, expected a rung score, a stop or an exempt trial")

    def size(self) -> int:
        """How many entries ``to_json`` writes (rung scores, stops, bests, exempt trials)."""
        return sum(len(rung.scores) for rung in self.rungs) + len(self.decided) + len(self.best) + len(self.exempt)

    # -- JSON --------------------------------------------------------------------------------------

    def settings(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in SETTINGS}

    def to_json(self) -> dict[str, Any]:
        """Settings, counters, stops and rung records as plain JSON data (a -inf score is null)."""
        return {
            "version": STATE_VERSION, **self.settings(), **({"legacy": True} if self.legacy else {}),
            "stopped": dict(self.stopped),
            "decided": {trial_id: asdict(stop) for trial_id, stop in self.decided.items()},
            "best": dict(self.best), "exempt": sorted(self.exempt),
            "rungs": [{"milestone": rung.milestone,
                       "scores": {t: (None if s == -math.inf else s) for t, s in rung.scores.items()}}
                      for rung in self.rungs],
        }

    def load(self, state: Mapping[str, Any]) -> None:
        """Take over what ``to_json`` wrote (version 1, from before stops were kept, loads with no
        stops; a state from before version 3 was decided by ASHA's rule, which it keeps: min_trials
        1 and compare "last", whatever this search's config says, so a resumed search decides as it
        began, and written again it says so, ``legacy``, for every resume after). ValueError for
        another version or a state from other settings."""
        version = state.get("version") if isinstance(state, Mapping) else None
        if version not in (1, 2, STATE_VERSION):
            raise ValueError(f"scheduler state: got version {version!r}, expected {STATE_VERSION}")
        legacy = version != STATE_VERSION or state.get("legacy") is True
        for key, mine in self.settings().items():
            expected = LEGACY[key] if legacy and key in LEGACY else mine
            if (key in state or version == STATE_VERSION) and state.get(key) != expected:
                raise ValueError(f"scheduler state: {key} is {state.get(key)!r}, this search has {mine!r}")
        milestones = [rung["milestone"] for rung in state["rungs"]]
        if milestones != self.milestones:
            raise ValueError(f"scheduler state: rungs at {milestones}, this search has {self.milestones}")
        self.rungs = [Rung(rung["milestone"], {str(t): -math.inf if s is None else float(s)
                                               for t, s in rung["scores"].items()})
                      for rung in state["rungs"]]
        self.stopped = {"health": int(state["stopped"]["health"]), "asha": int(state["stopped"]["asha"])}
        self.decided = {str(t): Stop(str(d["outcome"]), str(d.get("reason", "")), d.get("epoch"))
                        for t, d in (state.get("decided") or {}).items()}
        self.best = {str(t): float(s) for t, s in (state.get("best") or {}).items()}
        self.exempt = {str(t) for t in state.get("exempt") or ()}
        if legacy:       # so it says "legacy" when written again, and loads again as it began
            self.min_trials, self.compare, self.legacy = LEGACY["min_trials"], LEGACY["compare"], True


def fold(state: Mapping[str, Any], changes: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """What ``to_json`` says after the bracket ``state`` holds went through ``changes`` (its
    ``changes``, in order): the state a search kept as a whole file plus the changes since.
    ``state`` unchanged when there are none (a state from an older hpsearch never has any).
    ChangeError for a change that does not apply; KeyError, TypeError or ValueError for a state
    that does not load."""
    changes = list(changes)
    if not changes:
        return dict(state)
    bracket = Bracket(*(state[key] for key in SETTINGS))
    bracket.load(state)
    for change in changes:
        try:
            bracket.apply(change)
        except (KeyError, TypeError, ValueError) as err:
            raise ChangeError(f"scheduler change {dict(change)!r}: {err}") from None
    return bracket.to_json()


class ChangeError(ValueError):
    """A logged change that does not apply to the state before it (``fold``)."""


__all__ = ["LEGACY", "SETTINGS", "STATE_VERSION", "Bracket", "ChangeError", "Rung", "Stop", "cutoff", "fold", "percentile",
           "rung_milestones"]
