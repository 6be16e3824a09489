"""The Optuna samplers behind ``algorithm:``: random, TPE, and a portfolio of TPE fitted on rung results.

``RungTPESampler`` is multi-fidelity: trials that ASHA stopped at a rung teach it what they showed.
Each config comes from one of three, by a draw seeded with ``(seed, trial number)``:

- half at random, which keeps a search from settling on a plateau: quasi-random, the next point of a
  scrambled Sobol sequence (hpsearch.tune.draws), so the random configs cover the space evenly and
  a good config alone in a small corner is found in fewer draws;
- a quarter from TPE fitted on every usable trial's ``reach``: first how far it got (the last epoch it
  reported), then its value there, so a trial stopped at the first rung ranks below every trial that
  went on (the order Optuna's TPE gives pruned trials). Its bad examples include every config the
  rungs stopped, so it homes in quickly where early epochs rank configs as the full budget does;
- a quarter from TPE fitted on the values at the largest epoch that at least ``min_points`` usable
  trials reached, as BOHB (Falkner et al. 2018) does. Fitted on survivors only, it proposes more
  widely around them.

Replayed on the recorded grids (BENCHMARKS.md, "The parts of rung-tpe alone and together", 200
seeds, 2 and 8 trials at a time): against the largest-budget model alone with a third at random
(BOHB's share, the mix this sampler had before the portfolio; the same Sobol draws), the three
together took 0.60-0.63x the epochs on the triplet grid and reached its best in more seeds (182 /
181 of 200 against 167 / 172), and the symmetric grid's lone best in as many or more (153 / 156
against 153 / 137). The largest-budget model alone with half at random reached more (168 / 161
and 187 / 183) but took 1.4-1.5x the epochs on the triplet grid; the reach model alone reached
fewer. Sobol points in place of independent random draws (the same shares): 153 / 156 against
142 / 139 on the symmetric grid, 182 / 181 against 173 / 170 on the triplet grid, in about as
many epochs.

Each suggestion is computed from the study as it is stored (the intermediate values the searcher
reports every epoch) and from ``(seed, trial number)`` alone, so a resumed search samples exactly as
an uninterrupted one would: there is no sampler state to save. What it never learns from: a trial
that a health rule stopped or that failed (its values were not real), and a non-finite value (the
searcher never reports one).
"""

from __future__ import annotations

import bisect
import heapq
import math
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from hpsearch.core.config import ALGORITHMS as CONFIG_ALGORITHMS
from hpsearch.core.outcomes import HEALTH_OUTCOMES
from hpsearch.tune.draws import SobolDraws

ALGORITHMS = tuple(a for a in CONFIG_ALGORITHMS if a != "auto")
RANDOM_SHARE = 1 / 2        # the share of configs drawn at random
REACH_SHARE = 1 / 2         # of the configs the model draws, the share fitted on reach (the rest: largest budget)
REACH = "reach"             # the view of every usable trial by ``reach``
BUDGET = "budget"           # the view of the largest epoch enough usable trials reached
Entry = tuple[int, dict[str, Any], float]      # (position of the trial in the study, params, value: higher is better)
MAX_POINTS = 500            # observations one suggestion fits on, about (see ``Observed.bounded_points``)


class RungTPESampler(optuna.samplers.BaseSampler):
    """A ``random_share`` of configs at random; of the rest, a ``reach_share`` from TPE on every usable
    trial's ``reach`` and the others from TPE on the largest epoch at least ``min_points`` usable
    trials reached. Until ``min_points`` usable trials have reported, every config at random."""

    def __init__(self, space: Mapping[str, BaseDistribution], seed: int, min_points: int | None = None,
                 random_share: float = RANDOM_SHARE, reach_share: float = REACH_SHARE):
        self._space = dict(space)
        self._seed = int(seed)
        self._min_points = min_points if min_points is not None else len(self._space) + 1
        self._random_share = random_share
        self._reach_share = reach_share
        self._fit_studies = {REACH: FitStudy(), BUDGET: FitStudy()}
        self._observed = Observed()
        # configs at random: the random share's from one Sobol sequence, those drawn while the model
        # waits for ``min_points`` from another, each in trial order (``draw_index``)
        self._draws = self._sobol_draws()
        self._random_before = [0]       # [n]: how many of trials 0..n-1 the random share drew (a cache)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_random_before": [0]}     # a cache, counted again on demand

    def __setstate__(self, state: dict[str, Any]) -> None:
        """A sampler saved before the Sobol draws (a run dir resumed from then) gets them now; Ray's
        OptunaSearch.restore sets the saved attributes on the searcher's sampler the same way."""
        self.__dict__.update(state)
        if "_draws" not in state:
            self._draws = self._sobol_draws()
        self._random_before = [0]

    def _sobol_draws(self) -> tuple[SobolDraws, SobolDraws]:
        """The two sequences of random configs: the random share's, and the one read while a model
        waits for enough points (``draw_index``)."""
        return SobolDraws(self._space, [self._seed, 0]), SobolDraws(self._space, [self._seed, 1])

    def view(self, number: int) -> str | None:
        """What trial ``number``'s config comes from: REACH, BUDGET, or None (at random)."""
        u = np.random.default_rng([self._seed, number]).random()
        if u < self._random_share:
            return None
        return REACH if u < self._random_share + (1 - self._random_share) * self._reach_share else BUDGET

    def draw_index(self, number: int) -> tuple[int, int]:
        """Where trial ``number``'s config comes from when it is drawn at random: (0, i) for the i-th
        trial of the random share, (1, j) for the j-th of the others. A function of the number
        alone, like ``view``, so each sequence is read in trial order (an index is left unread where
        a warm-start point or TPE supplies that trial's config)."""
        counts = self._random_before
        while len(counts) <= number:
            counts.append(counts[-1] + (self.view(len(counts) - 1) is None))
        drawn = counts[number]
        return (0, drawn) if self.view(number) is None else (1, number - drawn)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return dict(self._space)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        """The whole config: from TPE on this trial's view, or quasi-random (``draw_index``) for the
        random share and while the view has fewer than ``min_points`` observations."""
        view = self.view(trial.number)
        if not search_space:
            return {}
        points = None if view is None else self._observed.bounded_points(
            study.get_trials(deepcopy=False), self._min_points, MAX_POINTS,
            study.direction == optuna.study.StudyDirection.MAXIMIZE, study.study_name, view=view)
        if points is None:
            stream, index = self.draw_index(trial.number)
            drawn = self._draws[stream].config(index)
            return {name: drawn[name] for name in search_space if name in drawn}
        points = [({k: p[k] for k in search_space}, value) for p, value in points if all(k in p for k in search_space)]
        shadow = self._fit_studies[view].holding(points, search_space, optuna.study.StudyDirection.MAXIMIZE)
        tpe_seed = int(np.random.default_rng([self._seed, trial.number, 1]).integers(2**31))
        shadow.sampler = optuna.samplers.TPESampler(seed=tpe_seed, multivariate=True, n_startup_trials=0)
        asked = shadow.ask(search_space)
        shadow.tell(asked, state=TrialState.FAIL)   # out of the next fit: TPE reads COMPLETE trials only
        return dict(asked.params)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        """A parameter outside the space this sampler was given: a random draw seeded by (seed, trial
        number, parameter), so it does not depend on which trials this sampler was asked for before."""
        seed = np.random.default_rng([self._seed, trial.number, zlib.crc32(param_name.encode())]).integers(2**31)
        random = optuna.samplers.RandomSampler(seed=int(seed))
        return random.sample_independent(study, trial, param_name, param_distribution)

    def reseed_rng(self) -> None:
        """Nothing to reseed: every draw is seeded by (seed, trial number)."""


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


def reach(trial: FrozenTrial, maximize: bool) -> float | None:
    """How far a trial got, as one number where higher is better: ``2 * epoch + squash(value)`` at the
    last epoch it reported, ``squash(v) = v / (1 + |v|)`` (of ``-v`` when minimizing) in (-1, 1), so
    every trial that reached a later epoch ranks above every one that stopped earlier, and trials at
    the same epoch rank by their value there. TPE reads only this order. Two values at one epoch tie
    only when they differ by less than about ``2e-16 * (2 * epoch + 1) * (1 + |value|)**2`` (1e-11
    for values near 10 at epoch 100). None: no finite value reported yet."""
    if not trial.intermediate_values:
        return None
    step = max(trial.intermediate_values)
    value = float(trial.intermediate_values[step])
    if not math.isfinite(value):
        return None
    value = value if maximize else -value
    return 2.0 * step + value / (1.0 + abs(value))


class Observed:
    """What the model learns from, kept between suggestions of one study, in two views (``view``):

    - REACH: (params, ``reach``) of every usable trial that reported;
    - BUDGET: (params, value) of every usable trial at the largest epoch at least ``min_points``
      usable trials reached (the value negated when minimizing: higher is better in both views).

    Both in trial order. A finished trial never changes, so it is read once and filed under every
    epoch it reported and under REACH, each in trial order and by value; each call reads only the
    trials from the first one that was still open at the last call. A cache, so not saved with the
    sampler (a restored sampler reads the study again)."""

    def __init__(self) -> None:
        self._study = ""
        self._maximize = True
        self._seen = 0                          # the length of the trials list at the last call
        self._open_from = 0                     # every trial before this index had finished
        self._done: set[int] = set()            # positions of the finished trials read
        self._filed: dict[int | str, list[Entry]] = {}      # by epoch, and REACH; by position
        self._ranked: dict[int | str, list[tuple[float, int, dict[str, Any], float]]] = {}  # the same, best first

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()

    def bounded_points(self, trials: list[FrozenTrial], min_points: int, limit: int, maximize: bool,
                       study: str = "", step: int | None = None, view: str = REACH
                       ) -> list[tuple[dict[str, Any], float]] | None:
        """About ``limit`` of the observations of ``view``, oldest first (None while fewer than
        ``min_points`` usable trials reported, or reached any one epoch): every one while there are
        at most ``limit``; past that, the best tenth of ``limit`` and the recent past, every
        observation from a start that moves forward in ``step``s (default a fifth of ``limit``), so
        at most ``limit + step``. TPE's good set is at most the best 25, so it is unchanged; its
        other set becomes the recent past. One suggestion then fits on as many points at trial
        10,000 as at trial 1,000 (fitting on every point: 41 ms at 1,000, 350 ms at 10,000), and
        this read takes time that grows with ``limit`` and the running trials, not with the study.
        Between two moves of the start, finished trials' observations are appended at the end
        (unless an old one leaves the best tenth, a trial that finished late lands before a later
        one, or the budget itself moves up), so ``FitStudy`` mostly extends its study instead of
        building it again at every suggestion."""
        read = self._read(trials, min_points, study, maximize, view)
        if read is None:
            return None
        key, done, live = read
        count = len(done) + len(live)
        if count <= limit:
            return [(params, value) for _, params, value in heapq.merge(done, live, key=lambda e: e[0])]
        best, step = max(1, limit // 10), step or max(1, limit // 5)
        start = (count - (limit - best)) // step * step
        ranked = self._ranked.get(key, [])
        top = heapq.nsmallest(best, [*ranked[:best], *((-v, i, p, v) for i, p, v in live)])
        tail = count - start                    # 0 when limit is 1: the best point alone
        recent = list(heapq.merge(done[-tail:], live, key=lambda e: e[0]))[-tail:] if tail > 0 else []
        chosen = {i: (p, v) for _, i, p, v in top} | {i: (p, v) for i, p, v in recent}
        return [chosen[i] for i in sorted(chosen)]

    def _file(self, key: int | str, index: int, params: dict[str, Any], value: float) -> None:
        bisect.insort(self._filed.setdefault(key, []), (index, params, value), key=lambda e: e[0])
        bisect.insort(self._ranked.setdefault(key, []), (-value, index, params, value), key=lambda e: e[:2])

    def _read(self, trials: list[FrozenTrial], min_points: int, study: str, maximize: bool, view: str
              ) -> tuple[int | str, list[Entry], list[Entry]] | None:
        """(key, done, live) of ``view``: the usable finished trials and the running ones, each as
        (position, params, value) in trial order; None when the view has fewer than ``min_points``."""
        if study != self._study or maximize != self._maximize or len(trials) < self._seen:
            self.__init__()                     # another study: read it from the start
            self._study, self._maximize = study, maximize
        self._seen = len(trials)
        sign = 1.0 if maximize else -1.0
        running: list[tuple[int, FrozenTrial]] = []
        for index in range(self._open_from, len(trials)):
            t = trials[index]
            if not t.state.is_finished():
                if usable(t) and t.intermediate_values:
                    running.append((index, t))
                continue
            if index == self._open_from:
                self._open_from = index + 1
            if index not in self._done:
                self._done.add(index)
                if usable(t):
                    value = reach(t, maximize)
                    if value is not None:
                        self._file(REACH, index, t.params, value)
                    for epoch, v in t.intermediate_values.items():
                        self._file(epoch, index, t.params, sign * v)
        if view == REACH:
            live = [(i, t.params, v) for i, t in running if (v := reach(t, maximize)) is not None]
            done = self._filed.get(REACH, [])
            return (REACH, done, live) if len(done) + len(live) >= min_points else None
        epochs = {*(k for k in self._filed if k != REACH), *(s for _, t in running for s in t.intermediate_values)}
        for budget in sorted(epochs, reverse=True):
            done = self._filed.get(budget, [])
            live = [(i, t.params, sign * t.intermediate_values[budget]) for i, t in running
                    if budget in t.intermediate_values]
            if len(done) + len(live) >= min_points:
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


__all__ = ["ALGORITHMS", "BUDGET", "MAX_POINTS", "RANDOM_SHARE", "REACH", "REACH_SHARE", "FitStudy", "Observed",
           "RungTPESampler", "make_sampler", "reach", "usable"]
