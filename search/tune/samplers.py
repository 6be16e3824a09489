"""The Optuna samplers behind ``algorithm:``: random, TPE, and TPE fitted on rung results.

``RungTPESampler`` is multi-fidelity in the way BOHB (Falkner et al. 2018) is: it models the
objective at the largest budget (epoch) that enough trials have reached, not only at the full
budget, so trials that ASHA stopped early inform the model with what they showed; and a fixed share
of configs (a third, as in BOHB) is drawn at random, which keeps a search from settling on a plateau.

Each suggestion is computed from the study as it is stored (the intermediate values the searcher
reports every epoch) and from ``(seed, trial number)`` alone, so a resumed search samples exactly as
an uninterrupted one would: there is no sampler state to save. What it never learns from: a trial
that a health rule stopped or that failed (its values were not real), and a non-finite value (the
searcher never reports one).
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Mapping
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from hpsearch.core.config import ALGORITHMS as CONFIG_ALGORITHMS
from hpsearch.core.outcomes import HEALTH_OUTCOMES

ALGORITHMS = tuple(a for a in CONFIG_ALGORITHMS if a != "auto")
RANDOM_SHARE = 1 / 3        # BOHB's share of configs drawn at random
Entry = tuple[int, dict[str, Any], float]      # (position of the trial in the study, params, value)
MAX_POINTS = 500            # observations one suggestion fits on, about (see ``Observed.bounded_points``)


class RungTPESampler(optuna.samplers.BaseSampler):
    """TPE on the values trials showed at the largest epoch that at least ``min_points`` usable
    trials reached; a ``random_share`` of configs, and every config until then, at random."""

    def __init__(self, space: Mapping[str, BaseDistribution], seed: int, min_points: int | None = None,
                 random_share: float = RANDOM_SHARE):
        self._space = dict(space)
        self._seed = int(seed)
        self._min_points = min_points if min_points is not None else len(self._space) + 1
        self._random_share = random_share
        self._random = optuna.samplers.RandomSampler(seed=seed)
        self._fit_study = FitStudy()
        self._observed = Observed()

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return dict(self._space)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        """The whole config from TPE on the chosen budget, or {} to draw every parameter at random."""
        rng = np.random.default_rng([self._seed, trial.number])
        if not search_space or rng.random() < self._random_share:
            return {}
        points = self._observed.bounded_points(study.get_trials(deepcopy=False), self._min_points, MAX_POINTS,
                                               study.direction == optuna.study.StudyDirection.MAXIMIZE, study.study_name)
        if points is None:
            return {}
        points = [({k: p[k] for k in search_space}, value) for p, value in points if all(k in p for k in search_space)]
        shadow = self._fit_study.holding(points, search_space, study.direction)
        shadow.sampler = optuna.samplers.TPESampler(seed=int(rng.integers(2**31)), multivariate=True,
                                                    n_startup_trials=0)
        asked = shadow.ask(search_space)
        shadow.tell(asked, state=TrialState.FAIL)   # out of the next fit: TPE reads COMPLETE trials only
        return dict(asked.params)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._random.sample_independent(study, trial, param_name, param_distribution)

    def reseed_rng(self) -> None:
        self._random.reseed_rng()


class FitStudy:
    """The in-memory study TPE is fitted on: the observations as COMPLETE trials, in order. Kept
    between suggestions: when the new observations extend the last ones (the usual case while a
    search grows), only the new ones are added; otherwise it is built again. Trials are written
    through the storage API, which copies nothing (``Study.add_trials`` deep-copies each trial:
    75 ms for 500 observations against about 30 ms). TPE sees the same COMPLETE trials in the same
    order either way, so a suggestion does not depend on what was asked before."""

    def __init__(self) -> None:
        self._storage = optuna.storages.InMemoryStorage()
        self._study: optuna.Study | None = None
        self._study_id = -1
        self._held: list[tuple[tuple, float]] = []      # the observations the study holds, in order

    def __getstate__(self) -> dict[str, Any]:
        return {}       # a cache: a sampler saved with its searcher (Ray's snapshot) builds it again

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()

    def holding(self, points: list[tuple[dict[str, Any], float]], space: Mapping[str, BaseDistribution],
                direction: optuna.study.StudyDirection) -> optuna.Study:
        keys = [(tuple((name, p[name]) for name in space), float(v)) for p, v in points]
        if self._study is None or self._study.direction != direction or keys[:len(self._held)] != self._held:
            self._storage = optuna.storages.InMemoryStorage()
            self._study = optuna.create_study(storage=self._storage, direction=direction)
            self._study_id = self._storage.get_study_id_from_name(self._study.study_name)
            self._held = []
        for params, value in points[len(self._held):]:
            trial_id = self._storage.create_new_trial(self._study_id)
            for name, distribution in space.items():
                self._storage.set_trial_param(trial_id, name, distribution.to_internal_repr(params[name]), distribution)
            self._storage.set_trial_state_values(trial_id, TrialState.COMPLETE, [float(value)])
        self._held = keys
        return self._study


def usable(trial: FrozenTrial) -> bool:
    """Whether a trial's reported values may teach the model: it finished normally, was stopped by
    ASHA, or is still running; not health-pruned, not failed."""
    if trial.state == TrialState.FAIL or trial.user_attrs.get("outcome") in HEALTH_OUTCOMES:
        return False
    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)


class Observed:
    """What the model learns from, kept between suggestions of one study: (params, value at the
    budget) for every usable trial that reached the budget, the largest epoch at least
    ``min_points`` usable trials reached, in trial order. A finished trial never changes, so its
    values are read once and filed by epoch, in trial order and by value; each call reads only the
    trials from the first one that was still open at the last call. A cache, so not saved with the
    sampler (a restored sampler reads the study again)."""

    def __init__(self) -> None:
        self._study = ""
        self._maximize = True
        self._seen = 0                          # the length of the trials list at the last call
        self._open_from = 0                     # every trial before this index had finished
        self._done: set[int] = set()            # positions of the finished trials read
        self._by_step: dict[int, list[Entry]] = {}      # by position
        self._ranked: dict[int, list[tuple[float, int, dict[str, Any], float]]] = {}  # best first

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()

    def bounded_points(self, trials: list[FrozenTrial], min_points: int, limit: int, maximize: bool,
                       study: str = "", step: int | None = None) -> list[tuple[dict[str, Any], float]] | None:
        """About ``limit`` of those observations, oldest first (None when no epoch has
        ``min_points``): every one while there are at most ``limit``; past that, the best tenth of
        ``limit`` by value and the recent past, every observation from a start that moves forward in
        ``step``s (default a fifth of ``limit``), so at most ``limit + step``. TPE's good set is at
        most the best 25, so it is unchanged; its other set becomes the recent past. One suggestion
        then fits on as many points at trial 10,000 as at trial 1,000 (fitting on every point: 41 ms
        at 1,000, 350 ms at 10,000), and this read takes time that grows with ``limit`` and the
        running trials, not with the study. Between two moves of the start, new observations are
        appended at the end (unless an old one leaves the best tenth, a trial that reached the budget
        late lands before a later one, or the budget itself moves up), so ``FitStudy`` mostly extends
        its study instead of building it again at every suggestion."""
        read = self._read(trials, min_points, study, maximize)
        if read is None:
            return None
        budget, done, live = read
        count = len(done) + len(live)
        if count <= limit:
            return [(params, value) for _, params, value in heapq.merge(done, live, key=lambda e: e[0])]
        best, step = max(1, limit // 10), step or max(1, limit // 5)
        start = (count - (limit - best)) // step * step
        ranked = self._ranked.get(budget, [])
        top = heapq.nsmallest(best, [*ranked[:best], *((self._key(v), i, p, v) for i, p, v in live)])
        tail = count - start                    # 0 when limit is 1: the best point alone
        recent = list(heapq.merge(done[-tail:], live, key=lambda e: e[0]))[-tail:] if tail > 0 else []
        chosen = {i: (p, v) for _, i, p, v in top} | {i: (p, v) for i, p, v in recent}
        return [chosen[i] for i in sorted(chosen)]

    def _key(self, value: float) -> float:
        return -value if self._maximize else value

    def _read(self, trials: list[FrozenTrial], min_points: int, study: str, maximize: bool
              ) -> tuple[int, list[Entry], list[Entry]] | None:
        """(epoch, done, live) at the largest epoch that at least ``min_points`` usable trials reached, each
        as (position, params, value) in trial order; None when no epoch has that many."""
        if study != self._study or maximize != self._maximize or len(trials) < self._seen:
            self.__init__()                     # another study: read it from the start
            self._study, self._maximize = study, maximize
        self._seen = len(trials)
        open_trials: list[tuple[int, FrozenTrial]] = []
        for index in range(self._open_from, len(trials)):
            t = trials[index]
            if not t.state.is_finished():
                open_trials.append((index, t))
                continue
            if not open_trials:
                self._open_from = index + 1
            if index not in self._done:
                self._done.add(index)
                if usable(t):
                    for step, value in t.intermediate_values.items():
                        bisect.insort(self._by_step.setdefault(step, []), (index, t.params, value), key=lambda e: e[0])
                        bisect.insort(self._ranked.setdefault(step, []), (self._key(value), index, t.params, value),
                                      key=lambda e: e[:2])
        running = [(i, t) for i, t in open_trials if usable(t) and t.intermediate_values]
        for budget in sorted({*self._by_step, *(s for _, t in running for s in t.intermediate_values)}, reverse=True):
            done = self._by_step.get(budget, [])
            if len(done) + sum(budget in t.intermediate_values for _, t in running) < min_points:
                continue
            live = [(i, t.params, t.intermediate_values[budget]) for i, t in running if budget in t.intermediate_values]
            return budget, done, live
        return None


def make_sampler(algorithm: str, space: Mapping[str, BaseDistribution], seed: int) -> optuna.samplers.BaseSampler:
    """The sampler of one ``algorithm`` (one of ALGORITHMS; ``auto`` is resolved by the config)."""
    if algorithm == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if algorithm == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True)
    if algorithm == "rung-tpe":
        return RungTPESampler(space, seed)
    raise ValueError(f"algorithm: got {algorithm!r}, expected one of {', '.join(ALGORITHMS)}")


__all__ = ["ALGORITHMS", "MAX_POINTS", "RANDOM_SHARE", "FitStudy", "Observed", "RungTPESampler", "make_sampler",
           "usable"]
