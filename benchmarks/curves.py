"""Recorded learning curves: the file format, nearest-grid-point lookup and fixed health labels.

A curve file (``benchmarks/data/curves_<model>.json.gz``, written by record_curves.py) holds the
per-epoch results of one model over a grid of configs of its searched parameters:

    {"format": 1, "model": "triplet", "run": <RunConfig.to_dict() the grid was drawn from>,
     "grid": {name: [levels]}, "keys": [metric names], "configs": [[value per grid name], ...],
     "curves": [[[value per key] per epoch] per config], "epoch_s": [[seconds] per config],
     "build_s": [seconds per config], "recorded": {date, machine, versions, command, ...}}

Missing values are null; NaN and inf are written as JSON's NaN / Infinity (Python's json reads
them back). A searcher's suggestion maps to the nearest grid point: choices must match exactly,
numbers are compared on the space's own scale (log for loguniform and log ints) normalised to
[0, 1].
"""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import DATA
from hpsearch.core.config import RunConfig, build_config
from hpsearch.core.numbers import finite
from hpsearch.core.objective import score

FORMAT = 1
LABELS = ("healthy", "other", "flat", "collapsed", "diverged", "nonfinite")
FLAT_REL = 1e-3       # a loss whose whole-run relative range is below this learned nothing
DIVERGE_FACTOR = 3.0  # a loss that ever rises above this multiple of its first value diverged


def default_paths() -> list[Path]:
    return sorted(DATA.glob("curves_*.json.gz"))


def _round(value: Any) -> Any:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return float(f"{value:.6g}") if math.isfinite(value) else value


class CurveSet:
    def __init__(self, data: Mapping[str, Any]):
        if data.get("format") != FORMAT:
            raise ValueError(f"curve file format {data.get('format')!r}, expected {FORMAT}")
        self.data = data
        self.run: RunConfig = build_config(data["run"], source="curve file")
        self.model: str = self.run.model
        self.metric, self.mode = self.run.objective.metric, self.run.objective.mode
        self.names: list[str] = list(data["grid"])
        self.grid: dict[str, list[Any]] = {k: list(v) for k, v in data["grid"].items()}
        self.keys: list[str] = list(data["keys"])
        self.configs: list[dict[str, Any]] = [dict(zip(self.names, c)) for c in data["configs"]]
        self._curves = data["curves"]
        self.epoch_s: list[list[float]] = data.get("epoch_s") or [[] for _ in self.configs]
        self.build_s: list[float] = data.get("build_s") or [0.0 for _ in self.configs]
        self.epochs = min(len(c) for c in self._curves)
        from hpsearch import models

        self.collapse = models.declared(self.model, "collapse") or {}
        self.health = self.run.health
        self._rows_cache: dict[int, list[dict[str, Any]]] = {}
        self._labels: dict[int, str] = {}
        self._index()

    @classmethod
    def load(cls, path: str | Path) -> "CurveSet":
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            return cls(json.load(fh))

    def __len__(self) -> int:
        return len(self.configs)

    # -- nearest grid point -----------------------------------------------------------------

    def _coord(self, name: str, value: Any) -> float:
        spec = self.run.space[name]
        low, high = float(spec.low), float(spec.high)
        if spec.kind == "loguniform" or spec.log:
            return (math.log(float(value)) - math.log(low)) / (math.log(high) - math.log(low))
        return (float(value) - low) / (high - low)

    def _index(self) -> None:
        self._numeric = [n for n in self.names if self.run.space[n].kind != "choice"]
        self._choice = [n for n in self.names if self.run.space[n].kind == "choice"]
        self._coords = np.array([[self._coord(n, c[n]) for n in self._numeric] for c in self.configs])
        self._keys = [tuple(repr(c[n]) for n in self._choice) for c in self.configs]

    def lookup(self, config: Mapping[str, Any]) -> int:
        """The grid point nearest to ``config``: same choices (a full grid always has them; a partial
        one counts each differing choice as a distance of 10), then numbers on the space's scale."""
        key = tuple(repr(config[n]) for n in self._choice)
        mismatch = np.array([sum(a != b for a, b in zip(k, key)) for k in self._keys], dtype=float)
        point = np.array([self._coord(n, config[n]) for n in self._numeric])
        distances = ((self._coords - point) ** 2).sum(axis=1) if len(point) else np.zeros(len(self.configs))
        return int(np.argmin(distances + 10.0 * mismatch))

    # -- curves -----------------------------------------------------------------------------

    def rows(self, index: int) -> list[dict[str, Any]]:
        """The recorded results of one config, one dict per epoch (``epoch`` 1-based)."""
        cached = self._rows_cache.get(index)
        if cached is None:
            cached = []
            for epoch, values in enumerate(self._curves[index][: self.epochs], 1):
                row: dict[str, Any] = {"epoch": epoch}
                row.update({k: v for k, v in zip(self.keys, values) if v is not None})
                cached.append(row)
            self._rows_cache[index] = cached
        return cached

    def series(self, index: int, key: str) -> list[float]:
        return [float(r.get(key, math.nan)) for r in self.rows(index)]

    def final(self, index: int) -> float:
        return float(self.rows(index)[-1].get(self.metric, math.nan))

    def best_final(self, healthy_only: bool = True) -> tuple[int, float]:
        """(index, value) of the best final objective on the grid (broken configs left out)."""
        best_i, best_s = -1, -math.inf
        for i in range(len(self)):
            if healthy_only and self.broken(i):
                continue
            s = score(self.final(i), self.mode)
            if s > best_s:
                best_i, best_s = i, s
        return best_i, self.final(best_i)

    def mass(self, indices: Sequence[int]) -> float:
        """The chance that a uniform random draw from the space (on its own scale, as Optuna's
        RandomSampler draws) lands nearest to one of ``indices``: the product, over parameters, of
        the share of each level's cell (a choice: 1/len; a number: half-way to its neighbours)."""
        share: dict[str, dict[Any, float]] = {}
        for name in self.names:
            values = self.grid[name]
            if self.run.space[name].kind == "choice":
                share[name] = {repr(v): 1 / len(values) for v in values}
                continue
            coords = sorted((self._coord(name, v), v) for v in values)
            cells = {}
            for k, (c, v) in enumerate(coords):
                low = 0.0 if k == 0 else (c + coords[k - 1][0]) / 2
                high = 1.0 if k == len(coords) - 1 else (c + coords[k + 1][0]) / 2
                cells[repr(v)] = high - low
            share[name] = cells
        total = 0.0
        for i in indices:
            p = 1.0
            for name in self.names:
                p *= share[name][repr(self.configs[i][name])]
            total += p
        return total

    def describe(self, index: int) -> str:
        parts = []
        for name, value in self.configs[index].items():
            parts.append(f"{name}={value:.3g}" if isinstance(value, float) else f"{name}={value}")
        return " ".join(parts)

    # -- labels -----------------------------------------------------------------------------

    def label(self, index: int) -> str:
        """The fixed label of one recorded curve (``label_rows``)."""
        if index not in self._labels:
            self._labels[index] = label_rows(self.rows(index), self.metric, self.collapse, self.mode)
        return self._labels[index]

    def broken(self, index: int) -> bool:
        return self.label(index) in BROKEN


def label_rows(rows: Sequence[Mapping[str, Any]], metric: str, collapse: Mapping[str, float],
               mode: str | None = None) -> str:
    """A fixed label for a whole curve, independent of the health rules:

    nonfinite  any loss (train_loss, train_loss_*, val_loss*) or the objective is NaN/inf
    diverged   train_loss rises above DIVERGE_FACTOR x its first value
    collapsed  a declared degeneracy metric (``collapse``) at or below its floor at the last epoch
    flat       train_loss's whole-run range <= FLAT_REL of its largest value (or 0 throughout)
    healthy    none of these, and it learned: the final train_loss is below the first, or the final
               objective is better than the first (a batch-all triplet loss averages over the
               active triplets only, so it need not fall while the embedding improves)
    other      finite, not broken, not learning
    """
    keys = {k for r in rows for k in r}
    watched = [k for k in keys if k == metric or k.startswith(("train_loss", "val_loss"))]
    losses = [r.get("train_loss") for r in rows]
    if any(k in r and not finite(r[k]) for r in rows for k in watched):
        return "nonfinite"
    if not rows or any(v is None for v in losses):
        return "other"
    if losses[0] > 0 and max(losses) > DIVERGE_FACTOR * losses[0]:
        return "diverged"
    if any(finite(rows[-1].get(m)) and rows[-1][m] <= floor for m, floor in collapse.items()):
        return "collapsed"
    top = max(abs(v) for v in losses)
    if top == 0 or (max(losses) - min(losses)) / top <= FLAT_REL:
        return "flat"
    objective = [r.get(metric) for r in rows]
    if losses[-1] < losses[0] or (mode is not None and score(objective[-1], mode) > score(objective[0], mode)):
        return "healthy"
    return "other"


BROKEN = ("flat", "collapsed", "diverged", "nonfinite")


def dump(path: str | Path, run: RunConfig, grid: Mapping[str, Sequence[Any]], keys: Sequence[str],
         configs: Sequence[Sequence[Any]], curves: Sequence[Sequence[Mapping[str, Any]]],
         epoch_s: Sequence[Sequence[float]], build_s: Sequence[float], recorded: Mapping[str, Any]) -> Path:
    """Write a curve file (see the module docstring)."""
    data = {
        "format": FORMAT, "run": run.to_dict(), "grid": {k: list(v) for k, v in grid.items()},
        "keys": list(keys), "configs": [list(c) for c in configs],
        "curves": [[[_round(row.get(k)) for k in keys] for row in curve] for curve in curves],
        "epoch_s": [[round(float(s), 4) for s in e] for e in epoch_s],
        "build_s": [round(float(s), 4) for s in build_s], "recorded": dict(recorded),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=9) as fh:
        json.dump(data, fh, separators=(",", ":"))
    return path
