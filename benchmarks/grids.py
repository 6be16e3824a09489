"""The grids the algorithms benchmark replays (benchmarks/algorithms.py): the recorded triplet and
symmetric grids, and finite candidate sets cut from the real-data corpus; what a random draw and
not searching are worth on each.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from benchmarks.curves import FORMAT, CurveSet
from benchmarks.figures import target_value
from hpsearch.core.objective import score

# the real-data grid: the recorder's sampling ranges (benchmarks.record_real.sample_byo) for the
# parameters that are numbers; every other parameter that varies is a choice of its recorded levels
BYO_NUMBERS = {"lr": {"loguniform": [1e-5, 10.0]}, "weight_decay": {"loguniform": [1e-6, 0.1]},
               "warmup": {"int": [0, 5]}}
ZERO_WEIGHT_DECAY = 1e-6        # weight_decay 0 sits at the bottom of its log range
REAL_DEFAULT = "mlp:digits"


def real_grid(model: str = "mlp", dataset: str = "digits", epochs: int = 15, corpus: Any = None) -> CurveSet:
    """A finite candidate set from the real-data corpus: every recorded ``model`` run on ``dataset``
    with at least ``epochs`` epochs, cut to its first ``epochs`` epochs, its objective the model's
    validation metric. A suggestion maps to the nearest candidate (CurveSet.lookup: the most choices
    in common, then the numbers on their own scale). A run's ``epochs`` parameter stays in the space:
    it is the horizon its lr schedule was planned for, so two runs cut to the same length differ."""
    from benchmarks import record_real
    from benchmarks.byo import Params  # the corpus's MLP and CNN read these defaults

    data = record_real.load(corpus or record_real.CORPUS)
    group = data["models"][model]
    curves = [c for c in data["curves"] if c["model"] == model and c["dataset"] == dataset and len(c["rows"]) >= epochs]
    if not curves:
        raise SystemExit(f"--real {model}:{dataset}: no curve of {epochs} epochs or more in the corpus")
    names = [k for k in curves[0]["params"] if k != "dataset" and len({repr(c["params"][k]) for c in curves}) > 1]

    def value(name: str, v: Any) -> Any:
        return ZERO_WEIGHT_DECAY if name == "weight_decay" and v == 0 else v

    levels = {n: sorted({value(n, c["params"][n]) for c in curves}, key=lambda v: (str(type(v)), v)) for n in names}
    space = {n: BYO_NUMBERS.get(n) or {"choice": levels[n]} for n in names}
    base = Params() if model in ("mlp", "cnn") else None
    default_point = {n: value(n, getattr(base, n)) for n in names if hasattr(base, n)} if base else {}
    metric, mode = group["objective"]
    run = {"model": record_real.FACTORIES[model], "epochs": epochs, "params": {"dataset": dataset},
           "objective": {"metric": metric, "mode": mode}, "space": space,
           "warm_start": [default_point] if default_point else [],
           "budget": {"max_epochs": epochs}, "checkpoint": {"interval": 1}}
    return CurveSet({
        "format": FORMAT, "run": run, "grid": levels, "keys": group["keys"],
        "configs": [[value(n, c["params"][n]) for n in names] for c in curves],
        "curves": [c["rows"][:epochs] for c in curves],
        "recorded": {**data["recorded"], "scale": f"{model} on {dataset}, {len(curves)} runs of {epochs}+ epochs "
                                                  f"cut to {epochs}"},
    })


_GRIDS: dict[str, CurveSet] = {}


def grid(name: str) -> CurveSet:
    """A grid by name: a curve file's path, or ``real:MODEL:DATASET`` (``real_grid``); cached per process."""
    if name not in _GRIDS:
        if name.startswith("real:"):
            _, model, dataset = name.split(":")
            _GRIDS[name] = real_grid(model, dataset)
        else:
            _GRIDS[name] = CurveSet.load(name)
    return _GRIDS[name]


def title(name: str) -> str:
    if name.startswith("real:"):
        _, model, dataset = name.split(":")
        return f"{model} on {dataset} (real data)"
    return grid(name).model


def is_full(curves: CurveSet) -> bool:
    """Whether the grid holds every combination of its levels (CurveSet.mass is exact then)."""
    return len(curves) == math.prod(len(v) for v in curves.grid.values())


def within(curves: CurveSet) -> list[int]:
    target = target_value(curves.best_final()[1], curves.mode)
    return [i for i in range(len(curves)) if score(curves.final(i), curves.mode) >= score(target, curves.mode)]


def hit_share(curves: CurveSet, draws: int = 20_000, seed: int = 0) -> tuple[float, str]:
    """The chance that one uniform draw from the space (as Optuna's RandomSampler draws) replays a
    config within 1% of the best, and how it was found: exactly on a full grid (CurveSet.mass), else
    from ``draws`` seeded draws mapped to their nearest candidate."""
    hits = within(curves)
    if is_full(curves):
        return curves.mass(hits), "exact"
    from optuna._transform import _SearchSpaceTransform  # what RandomSampler draws through

    transform = _SearchSpaceTransform({n: curves.run.space[n].to_optuna() for n in curves.names})
    bounds = transform.bounds
    rng = np.random.default_rng(seed)
    good = set(hits)
    landed = sum(curves.lookup(transform.untransform(row)) in good
                 for row in rng.uniform(bounds[:, 0], bounds[:, 1], size=(draws, len(bounds))))
    return landed / draws, f"{draws} seeded draws"


def warm_value(curves: CurveSet) -> float:
    """Not searching: the best of the grid's warm-start points (their nearest grid points), trained
    for the full budget; NaN when the grid names none."""
    points = simulate_points(curves)
    values = [curves.final(curves.lookup(p)) for p in points]
    finite = [v for v in values if score(v, curves.mode) > -math.inf]
    if not finite:
        return math.nan if not values else values[0]
    return max(finite, key=lambda v: score(v, curves.mode))


def simulate_points(curves: CurveSet) -> list[dict[str, Any]]:
    """The grid's warm-start points with the searched keys they leave out filled from its params, as
    the product fills them (hpsearch.tune.searcher.warm_start_points)."""
    from hpsearch.tune.searcher import warm_start_points

    return warm_start_points(curves.run)
