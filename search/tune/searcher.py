"""Optuna TPE for Ray Tune, with a study kept in the run dir and honest trial states.

Ray's OptunaSearch tells Optuna that an ASHA-stopped trial COMPLETED with its last value, and a
NaN value leaves the Optuna trial RUNNING for good. ``HealthOptunaSearch`` tells Optuna what
happened instead, from the run's OutcomeLog and the trial's last result:

    outcome / last result                        Optuna state
    error                                        FAIL
    pruned_flatline / _exploding / _collapsed /  PRUNED, marked infeasible
    _nonfinite, or health != ok, or a final      (constraint "healthy" = 1: TPE ranks it below
    objective that is NaN / inf                   every feasible trial, so it steers away; also
                                                  in the list form optuna-dashboard reads)
    pruned_asha                                  PRUNED (Optuna ranks it by how far it got)
    no objective ever reported                   FAIL
    otherwise                                    COMPLETE with the LAST objective value

The last value, not the best: it is what the trial's parameters give after the full budget (the
config trained for max_epochs ends there). Ranking is another matter: the report and the export rank
by ``objective.rank`` (default: the best epoch), ASHA's rungs compare by ``scheduler.compare``, and
``ranked_values`` reads the study's intermediate values the report's way. So Optuna's own
``best_trial`` (and optuna-dashboard's) can differ from the report's first row; `rung-tpe` is
fitted on the intermediate values, not on this one.

Every epoch's finite objective is an intermediate value (step = ``training_iteration``), so
optuna-dashboard shows the curves while the search runs. Each Optuna trial carries user attributes
``trial_id`` (Ray's), ``hpsearch_trial`` (the trial's number N: ``#N`` in the live table and the
report, ``trial_NNNN_<trial_id>`` its folder; Optuna's own 0-based number is N - 1 only until a
resume or a retried point shifts it), ``outcome`` and ``reason``. ``close_open_trials`` fails
whatever is still RUNNING when a search ends early, so no trial is left RUNNING.
"""

from __future__ import annotations

import logging
import math
import pathlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState
from ray.air.constants import TRAINING_ITERATION
from ray.tune.search import ConcurrencyLimiter, Searcher, SearchGenerator
from ray.tune.search.optuna import OptunaSearch

from hpsearch.core.convergence import Convergence
from hpsearch.core.objective import score, trial_value
from hpsearch.core.outcomes import HEALTH_OUTCOMES
from hpsearch.core.rundir import STUDY_NAME, study_storage
from hpsearch.core.warm_start import filled_points
from hpsearch.models.config import ConfigError
from hpsearch.tune.compat import (
    searcher_finished,
    searcher_study,
    searcher_trials,
    set_listed_constraints,
    stored_trial,
)
from hpsearch.tune.samplers import make_sampler

if TYPE_CHECKING:
    from hpsearch.core.config import RunConfig
    from hpsearch.core.rundir import OutcomeLog

logger = logging.getLogger(__name__)

CONSTRAINT = "healthy"  # > 0: the trial was unhealthy (Optuna treats it as infeasible)
TRIAL_NUMBER = "hpsearch_trial"  # user attribute: the N of #N and of the folder trial_NNNN_<id>


class HealthOptunaSearch(OptunaSearch):
    """OptunaSearch whose completions follow the table in this module's docstring.

    ``warm_start`` points are asked first, in order; a point may leave parameters out and TPE
    samples those. NaN policy: a non-finite objective is never reported to Optuna as a value
    (neither intermediate nor final); a trial whose final objective is non-finite is PRUNED and
    marked infeasible.
    """

    def __init__(self, space: Mapping[str, Any], metric: str, mode: str, *, storage: optuna.storages.BaseStorage,
                 seed: int, outcomes: "OutcomeLog | None" = None, study_name: str = STUDY_NAME,
                 warm_start: Sequence[Mapping[str, Any]] = (), algorithm: str = "tpe",
                 convergence: Convergence | None = None):
        if not space:
            raise ConfigError("space: empty; expected at least one parameter to search "
                              "(a single configuration is `hpsearch train`)")
        sampler = make_sampler(algorithm, space, seed)
        super().__init__(space=dict(space), metric=metric, mode=mode, sampler=sampler,
                         study_name=study_name, storage=storage)
        self.outcomes = outcomes
        self.convergence = convergence or Convergence()
        self.stopped_early = ""  # the convergence reason, once the search has stopped starting trials
        self._reported_steps: dict[str, set[int]] = {}
        self._numbered = 0      # configs handed out: Ray's SearchGenerator numbers its trials the same way
        if not self.study.trials:  # a fresh study: a resumed one has its points already
            for point in warm_start:
                self.study.enqueue_trial(dict(point))

    @property
    def study(self) -> optuna.Study:
        """The Optuna study this searcher asks and tells (stored in the run dir)."""
        return searcher_study(self)

    @property
    def asked(self) -> dict[str, optuna.Trial]:
        """Ray trial id -> the Optuna trial asked for it, for the trials not yet told (the searcher's
        own record; ``told`` keeps the ids of the others)."""
        return searcher_trials(self)

    @property
    def told(self) -> set[str]:
        """The Ray trial ids already told to Optuna, never told again (the searcher's own record)."""
        return searcher_finished(self)

    def suggest(self, trial_id: str) -> dict | None:
        """A config for Ray's trial ``trial_id``; its Optuna trial gets ``trial_id`` and
        ``hpsearch_trial``. Ray's SearchGenerator makes one trial of every config a searcher hands
        out and numbers it with its own count (the index at the head of the experiment tag, which
        ``hpsearch.tune.trainable.trial_name`` puts in the folder name); this searcher counts its
        configs the same way, and both counts are saved in the same snapshot, so they agree after
        a resume too. Once ``convergence`` says the search has converged, no more configs:
        ``Searcher.FINISHED`` (the running trials end as they would)."""
        convergence = self.convergence
        reason = convergence.after and convergence.check(
            ranked_values(self.study, self.mode, convergence.rank, convergence.window), self.mode)
        if reason:
            self.stopped_early = reason
            return Searcher.FINISHED
        config = super().suggest(trial_id)
        if config is None or config == Searcher.FINISHED:
            return config
        self._numbered += 1
        trial = self.asked[trial_id]
        trial.set_user_attr("trial_id", trial_id)
        trial.set_user_attr(TRIAL_NUMBER, self._numbered)
        return config

    def restore(self, checkpoint_path: str) -> None:
        """Ray's restore (this searcher as at Ray's last snapshot), keeping this run's OutcomeLog;
        a trial the study finished after that snapshot counts as completed (``_forget``), so it is
        neither told twice nor closed as failed."""
        outcomes, convergence = self.outcomes, self.convergence
        del self._numbered                      # the saved state holds the count at Ray's snapshot
        super().restore(checkpoint_path)
        self.outcomes, self.convergence = outcomes, convergence     # this run's, as search.yaml says
        self.stopped_early = ""                 # found again from the study at the next suggestion
        if not hasattr(self, "_numbered"):      # saved before trials were numbered: one per trial asked
            self._numbered = len(self.asked.keys() | self.told)
        for trial_id, ot_trial in list(self.asked.items()):
            if stored_trial(self.study, ot_trial).state.is_finished():
                self._forget(trial_id)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id not in self.asked:         # told already (or never asked)
            return
        self._report(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id not in self.asked:         # told already (or never asked)
            return
        if result:
            self._report(trial_id, result)
        state, value, outcome, reason = self.judge(trial_id, result, error)
        self._finish(trial_id, state, value, outcome, reason)

    def judge(self, trial_id: str, result: Mapping[str, Any] | None,
              error: bool) -> tuple[TrialState, float | None, str, str]:
        """(Optuna state, value, outcome, reason) for a finished trial; the table above, in order."""
        if error:
            return TrialState.FAIL, None, "error", "the trial raised an error"
        entry = self._outcome(trial_id)
        outcome = entry.get("outcome") if entry else None
        if outcome in HEALTH_OUTCOMES:
            return TrialState.PRUNED, None, outcome, entry.get("reason", "")
        health = result.get("health") if result else None
        if health not in (None, "ok"):
            return TrialState.PRUNED, None, f"pruned_{health}", str(result.get("health_reason", ""))
        if outcome == "pruned_asha":
            return TrialState.PRUNED, None, outcome, entry.get("reason", "")
        if not result or self.metric not in result:
            return TrialState.FAIL, None, "error", f"no {self.metric} was reported"
        value = result[self.metric]
        if score(value, self.mode) == -math.inf:
            return (TrialState.PRUNED, None, "pruned_nonfinite",
                    f"final {self.metric} is {value!r}, not a finite number")
        return TrialState.COMPLETE, float(value), "completed", ""

    def close_open_trials(self, reason: str = "the search ended before the trial finished") -> list[str]:
        """FAIL every trial this searcher asked for and never finished; returns their Ray ids."""
        closed = list(self.asked)               # told trials are no longer in it (``_forget``)
        for trial_id in closed:
            self._finish(trial_id, TrialState.FAIL, None, "error", reason)
        return closed

    # -- helpers --------------------------------------------------------------------------------

    def _report(self, trial_id: str, result: Mapping[str, Any]) -> None:
        """The objective as an intermediate value at step = training_iteration, when finite."""
        step = result.get(TRAINING_ITERATION)
        value = result.get(self.metric)
        if isinstance(step, bool) or not isinstance(step, int) or score(value, self.mode) == -math.inf:
            return
        steps = self._reported_steps.setdefault(trial_id, set())
        if step not in steps:
            self.asked[trial_id].report(float(value), step)
            steps.add(step)

    def _outcome(self, trial_id: str) -> dict[str, Any] | None:
        """The OutcomeLog's record of the trial; this copy of the log catches up with the file first
        when it has not seen the trial (a searcher restored by Ray holds its own copy)."""
        if self.outcomes is None:
            return None
        entry = self.outcomes.get(trial_id)
        if entry is None:
            self.outcomes.catch_up()
            entry = self.outcomes.get(trial_id)
        return entry

    def _forget(self, trial_id: str) -> optuna.Trial:
        """Marks the trial told and lets go of it (its Optuna trial and reported steps; ``told`` keeps
        the id), so the searcher, which Ray pickles into every snapshot, holds only the trials still
        running. Returns its Optuna trial."""
        self._reported_steps.pop(trial_id, None)
        self.told.add(trial_id)
        return self.asked.pop(trial_id)

    def _finish(self, trial_id: str, state: TrialState, value: float | None, outcome: str, reason: str) -> None:
        """Tells Optuna the trial's end, once."""
        ot_trial = self._forget(trial_id)
        stored = stored_trial(self.study, ot_trial)
        if stored.state != TrialState.RUNNING:  # already told (e.g. closed, then completed late)
            logger.warning("Optuna trial %s for %s is already %s; not told %s", stored.number, trial_id,
                           stored.state.name, state.name)
            return
        ot_trial.set_user_attr("outcome", outcome)
        ot_trial.set_user_attr("reason", reason)
        if state == TrialState.PRUNED and outcome != "pruned_asha":
            ot_trial.set_constraint(CONSTRAINT, 1.0)
            set_listed_constraints(self.study, ot_trial, [1.0])
        self.study.tell(ot_trial, value, state=state)


def ranked_values(study: optuna.Study, mode: str, rank: str = "best", window: int = 5) -> list[float]:
    """Each trial that can rank the search (COMPLETE, or PRUNED by ASHA), in the order it ended:
    its value as ``objective.rank`` ranks it (``trial_value``) over its reported objective, epoch by
    epoch. The searcher reports every finite value as an intermediate one and never a non-finite
    one, so a window that holds a NaN epoch here averages the others, where the report's ranking
    (which reads every epoch) gives that trial NaN."""
    ended = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
             if t.state == TrialState.COMPLETE or t.user_attrs.get("outcome") == "pruned_asha"]
    ended.sort(key=lambda t: t.datetime_complete or t.datetime_start)
    return [trial_value([t.intermediate_values[step] for step in sorted(t.intermediate_values)], mode, rank, window)[0]
            for t in ended]


def inner_searcher(search_alg: Any) -> HealthOptunaSearch | None:
    """The HealthOptunaSearch inside a ConcurrencyLimiter / SearchGenerator, if any."""
    while isinstance(search_alg, (ConcurrencyLimiter, SearchGenerator)):
        search_alg = search_alg.searcher
    return search_alg if isinstance(search_alg, HealthOptunaSearch) else None


def close_open_trials(search_alg: Any, reason: str = "the search ended before the trial finished") -> list[str]:
    """Call after ``Tuner.fit()`` returns or raises: no Optuna trial is left RUNNING."""
    searcher = inner_searcher(search_alg)
    return searcher.close_open_trials(reason) if searcher is not None else []


def warm_start_points(config: "RunConfig") -> list[dict[str, Any]]:
    """``config.warm_start`` with the searched keys a point leaves out filled from ``config.params``
    when the params value lies in the space; keys still missing are left to TPE."""
    return filled_points(config.warm_start, config.space, config.params)


def make_searcher(config: "RunConfig", run_dir: pathlib.Path, outcomes: "OutcomeLog",
                  max_concurrent: int | None = None) -> Searcher:
    """``config.algorithm``'s sampler (hpsearch.tune.samplers, seeded with ``config.seed``) over
    ``config.space``, its study stored at ``study_storage(run_dir)`` as ``STUDY_NAME``; wrapped in a
    ConcurrencyLimiter of ``max_concurrent`` (default ``budget.max_concurrent``; 0 means no limiter)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # hpsearch prints its own trial lines
    pathlib.Path(run_dir).mkdir(parents=True, exist_ok=True)
    searcher = HealthOptunaSearch(
        {name: spec.to_optuna() for name, spec in config.space.items()},
        metric=config.objective.metric, mode=config.objective.mode, storage=study_storage(run_dir),
        seed=config.seed, outcomes=outcomes, warm_start=warm_start_points(config),
        algorithm=config.sampler, convergence=config.convergence)
    limit = config.budget.max_concurrent if max_concurrent is None else max_concurrent
    if limit > 0:
        return ConcurrencyLimiter(searcher, max_concurrent=limit)
    return searcher


__all__ = ["CONSTRAINT", "TRIAL_NUMBER", "HealthOptunaSearch", "close_open_trials", "inner_searcher", "make_searcher",
           "warm_start_points"]
