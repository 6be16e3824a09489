"""The warm-start points of a search as one config each: what the searcher asks first, which trials
the rungs never stop (``scheduler.keep_warm_start``) and which trial the search returns unless
another measurably beats it (``objective.warm_start_margin``, ``keeps_warm_start``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hpsearch.core.numbers import fmt
from hpsearch.core.objective import epoch_noise, score, trial_value
from hpsearch.core.space import Spec


def filled_points(warm_start: Sequence[Mapping[str, Any]], space: Mapping[str, Spec],
                  params: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each point with the searched keys it leaves out filled from ``params`` when the params value
    lies in the space; keys still missing are left to the sampler."""
    points = []
    for point in warm_start:
        full = dict(point)
        for name, spec in space.items():
            if name not in full and name in params and spec.contains(params[name]):
                full[name] = params[name]
        points.append(full)
    return points


def exact_points(points: Sequence[Mapping[str, Any]], space: Mapping[str, Spec]) -> list[dict[str, Any]]:
    """The points that name every searched parameter, on those parameters: one config each. A point
    that leaves a parameter to the sampler is not one config, so no trial is one of it."""
    if not space:
        return []
    return [{name: point[name] for name in space} for point in points if all(name in point for name in space)]


def config_points(warm_start: Sequence[Mapping[str, Any]], space: Mapping[str, Spec],
                  params: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The warm-start points as the searcher asks them (``filled_points``) that are one config each
    (``exact_points``): the trials the rungs never stop and the report can return."""
    return exact_points(filled_points(warm_start, space, params), space)


def is_point(config: Mapping[str, Any], points: Sequence[Mapping[str, Any]]) -> bool:
    """Whether a trial's searched values are one of ``points`` (``exact_points``)."""
    return any({name: config.get(name) for name in point} == point for point in points)


def _window_mean(values: Sequence[Any], mode: str, window: int) -> tuple[float, int]:
    """(the mean of the last ``window`` values, how many it averages); NaN when one is not finite."""
    return trial_value(list(values), mode, "mean", window)[0], min(window, len(values))


def allowed_lead(noise: float, margin: float, counts: tuple[int, int]) -> float:
    """The lead over the warm-start trial a trial must exceed: ``margin`` standard errors of the
    difference of two means of ``counts`` epochs each, one epoch's spread being ``noise``."""
    return margin * noise * math.sqrt(1 / max(counts[0], 1) + 1 / max(counts[1], 1))


def keeps_warm_start(first: Sequence[Any], warm: Sequence[Any], mode: str, noise: float, window: int = 5,
                     margin: float = 1.0) -> bool:
    """Whether the best warm-start trial (objective values ``warm``) is returned in place of the
    trial the ranking puts first (``first``): unless the first beats it, over the mean of their last
    ``window`` epochs (fewer when a trial has fewer), by more than ``margin`` standard errors of that
    difference (``allowed_lead``; ``noise``: one epoch's spread, hpsearch.core.objective.epoch_noise),
    the config the user started from stands. ``margin`` 0: never (the ranking alone decides).

    NaN policy: a warm-start trial with a non-finite value in its window is not kept; a first trial
    with one does not beat the warm-start trial.
    """
    if margin < 0 or noise < 0:
        raise ValueError(f"keeps_warm_start: margin and noise must be >= 0, got {margin!r} and {noise!r}")
    held, held_n = _window_mean(warm, mode, window)
    if margin == 0 or not math.isfinite(held):
        return False
    challenger, challenger_n = _window_mean(first, mode, window)
    return _not_beaten(challenger, held, allowed_lead(noise, margin, (challenger_n, held_n)), mode)


def _not_beaten(challenger: float, held: float, allowed: float, mode: str) -> bool:
    """A challenger's window mean does not beat a finite ``held`` one by more than ``allowed``."""
    return not math.isfinite(challenger) or score(challenger, mode) - score(held, mode) <= allowed


@dataclass(frozen=True)
class Kept:
    """The best warm-start trial, returned in place of the trial the ranking put first."""
    position: int      # its place in the ranking (0 is the first)
    held: float        # the mean of its last `window` values
    challenger: float  # the same of the first trial (NaN when one of them is not finite)
    allowed: float     # the lead the first would have needed to exceed (allowed_lead)
    mode: str
    window: int        # objective.window: the epochs each mean averages
    shorter: bool = False   # one of the two has fewer epochs than that: its mean averages them all

    def phrase(self, first: str, warm: str) -> str:
        """Why ``warm`` (a label) is returned rather than ``first``, in words."""
        head = (f"{warm}, a warm-start point, is returned ahead of {first}: over the mean of their last "
                f"{self.window} epochs{' (all of a shorter one)' if self.shorter else ''},")
        if not math.isfinite(self.challenger):
            return f"{head} {first} has a non-finite value"
        lead = score(self.challenger, self.mode) - score(self.held, self.mode)
        if lead <= 0:
            return f"{head} {warm} is as good or better ({fmt(self.held)} against {fmt(self.challenger)})"
        return (f"{head} {first} leads by {fmt(lead)} ({fmt(self.challenger)} against {fmt(self.held)}), within the "
                f"objective's noise ({fmt(self.allowed)}; objective.warm_start_margin)")


def kept_warm_start(curves: Sequence[Sequence[Any]], warm: Sequence[bool], mode: str, window: int = 5,
                    margin: float = 1.0) -> Kept | None:
    """Among trials in ranking order, best first (their objective ``curves``, epoch by epoch;
    ``warm``: whether each is a warm-start point), the warm-start trial the search returns rather
    than the first, if any: of the warm-start trials, the one with the best mean over its last
    ``window`` epochs, unless the first beats it by more than the noise of these curves allows
    (``keeps_warm_start``; hpsearch.core.objective.epoch_noise). None when the first stands: it is a
    warm-start point itself, no trial is one (or none has a finite window), ``margin`` is 0, or it
    beats the warm-start trial."""
    if len(warm) != len(curves):
        raise ValueError(f"kept_warm_start: {len(curves)} curves but {len(warm)} warm-start flags")
    if margin == 0 or not curves or warm[0]:
        return None
    means = {i: _window_mean(curves[i], mode, window) for i, is_warm in enumerate(warm) if is_warm}
    finite = [i for i, (mean, _) in means.items() if math.isfinite(mean)]
    if not finite:
        return None
    at = max(finite, key=lambda i: (score(means[i][0], mode), -i))
    (first, first_n), (held, held_n) = _window_mean(curves[0], mode, window), means[at]
    allowed = allowed_lead(epoch_noise(curves, window), margin, (first_n, held_n))
    if not _not_beaten(first, held, allowed, mode):
        return None
    return Kept(at, held, first, allowed, mode, window, min(first_n, held_n) < window)


def margin_as_run(written: Any, configured: float) -> float:
    """objective.warm_start_margin as a search ran it, from its search.yaml's ``objective`` section
    as written (``written``) and the value the parsed config holds (``configured``): a run dir
    written before the key existed (its objective section holds every other key but not this one)
    returned the first-ranked trial, so it reads as 0."""
    return configured if not isinstance(written, Mapping) or "warm_start_margin" in written else 0.0


__all__ = ["Kept", "allowed_lead", "config_points", "exact_points", "filled_points", "is_point",
           "keeps_warm_start", "kept_warm_start", "margin_as_run"]
