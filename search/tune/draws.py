"""Quasi-random configs: a scrambled Sobol sequence mapped onto a search space.

A random search draws each config independently, so two draws can land close together while a
corner stays empty. The points of a scrambled Sobol sequence (``scipy.stats.qmc.Sobol``: linear
matrix scrambling and a digital shift) fill the unit cube evenly: the first 2^m points split
evenly over each parameter's 2^m equal intervals, and over each pair of the first two parameters'
grid cells, and each point is still uniform on its own. Mapped onto the space, a
config alone in a small corner of it is found in fewer draws: `rung-tpe` with these draws reached
the recorded grids' best configs in more seeds than with independent ones (BENCHMARKS.md, "The
parts of rung-tpe alone and together").

``SobolDraws.config(i)`` is the i-th point of one seeded scramble, the same whatever was asked
before, so a resumed search that asks again for index i gets the same config.

Each dimension is one parameter, in the order of the space; a unit value ``u`` becomes (``value_at``):
a choice by equal shares; a float uniform on its range or, for a log range, on its logarithm; an
int as Optuna's RandomSampler draws it (each integer n the mass of [n - 0.5, n + 0.5], in log space
for a log range); a float with a step, one of its levels by equal shares.
"""

from __future__ import annotations

import importlib
import math
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution


def value_at(distribution: BaseDistribution, u: float) -> Any:
    """The value of ``distribution`` at ``u`` in [0, 1): the inverse of its cumulative distribution
    under a random draw."""
    if isinstance(distribution, CategoricalDistribution):
        return distribution.choices[_level(u, len(distribution.choices))]
    if isinstance(distribution, IntDistribution):
        low, high = distribution.low, distribution.high
        if distribution.log:
            value = round(_log_uniform(u, low - 0.5, high + 0.5))
            return int(min(max(value, low), high))
        return int(low + _level(u, (high - low) // distribution.step + 1) * distribution.step)
    if isinstance(distribution, FloatDistribution):
        low, high = distribution.low, distribution.high
        if distribution.log:
            return float(min(max(_log_uniform(u, low, high), low), high))
        if distribution.step is not None:
            levels = int(round((high - low) / distribution.step)) + 1
            return float(min(low + _level(u, levels) * distribution.step, high))
        return float(low + u * (high - low))
    raise TypeError(f"no quasi-random draw for {type(distribution).__name__}")


def _level(u: float, count: int) -> int:
    return min(int(u * count), count - 1)


def _log_uniform(u: float, low: float, high: float) -> float:
    return math.exp(math.log(low) + u * (math.log(high) - math.log(low)))


def preload() -> threading.Thread:
    """Import scipy.stats (0.5-1 s of CPU on 2 cores) in a daemon thread, started as Ray starts so the
    two overlap; a search's first random config then finds it imported, or waits for the rest
    (Python's import lock)."""
    thread = threading.Thread(target=importlib.import_module, args=("scipy.stats",), daemon=True,
                              name="hpsearch-import-scipy")
    thread.start()
    return thread


class SobolDraws:
    """Configs from one scrambled Sobol sequence over ``space``, seeded by ``seed`` (an int or a
    sequence of ints, as numpy's ``default_rng`` takes it)."""

    def __init__(self, space: Mapping[str, BaseDistribution], seed: int | Sequence[int]):
        self._space = dict(space)
        self._seed = seed if isinstance(seed, int) else tuple(seed)
        self._points = np.empty((0, len(self._space)))

    def __getstate__(self) -> dict[str, Any]:
        return {"space": self._space, "seed": self._seed}      # the points are made again on demand

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["space"], state["seed"])

    def config(self, index: int) -> dict[str, Any]:
        """The config at ``index`` (from 0) of the sequence."""
        if index < 0:
            raise ValueError(f"index: got {index}, expected 0 or more")
        if index >= len(self._points):
            # scipy.stats takes 0.5-1 s to import (2 cores): not paid by every process that imports
            # the samplers (a `tpe` search, the report); a search starts it early (``preload``)
            from scipy.stats import qmc

            # the first 2^m points of a scramble are the first points of its 2^(m+1)
            engine = qmc.Sobol(len(self._space), scramble=True, rng=np.random.default_rng(self._seed))
            self._points = engine.random_base2(max(4, math.ceil(math.log2(index + 1))))
        row = self._points[index]
        return {name: value_at(d, float(u)) for (name, d), u in zip(self._space.items(), row)}


__all__ = ["SobolDraws", "preload", "value_at"]
