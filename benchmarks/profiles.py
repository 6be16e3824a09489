"""Where the time of a search goes, for benchmarks.overhead: the driver under cProfile, grouped by
the part of the stack each function belongs to, and its trial workers sampled by py-spy
(benchmarks.worker_profile).
"""

from __future__ import annotations

import cProfile
import pstats
import time
from pathlib import Path
from typing import Any

from benchmarks import harness, worker_profile
from benchmarks.harness import trivial_config


def _group(filename: str, name: str) -> str:
    """Which part of the stack a profiled function belongs to."""
    if filename == "~" or filename.startswith("<"):
        waits = ("acquire", "sleep", "poll", "select", "wait", "recv", "read")
        return "waiting (locks, sleeps, polls)" if any(w in name for w in waits) else "builtins"
    if "site-packages/" in filename:
        package = filename.split("site-packages/", 1)[1].split("/", 1)[0]
        if package in ("sqlalchemy", "alembic"):
            return "SQLAlchemy"
        if package == "optuna":
            if "/samplers/" in filename:
                return "Optuna (TPE, trials)"
            return "Optuna journal storage" if "/storages/" in filename else "Optuna (study)"
        if package == "ray":
            return "Ray Tune" if "/tune/" in filename or "/train/" in filename else "Ray core"
        return package
    if "/search/" in filename or "/models/" in filename or "/benchmarks/" in filename:
        return "hpsearch (search/, models/)"
    if "sqlite3" in filename:
        return "SQLAlchemy"
    return "Python standard library"


def profiled_search(plan: Any) -> tuple[float, dict[str, float]]:
    """Run a search with the driver under cProfile: (wall seconds, own seconds by group)."""
    profiler = cProfile.Profile()
    began = time.perf_counter()
    profiler.enable()
    harness.run_search(plan)
    profiler.disable()
    wall = time.perf_counter() - began
    groups: dict[str, float] = {}
    for (filename, _, name), (_, _, tottime, _, _) in pstats.Stats(profiler).stats.items():
        key = _group(filename, name)
        groups[key] = groups.get(key, 0.0) + tottime
    return wall, groups


def driver(work: Path, trials: int) -> str:
    """Where the driver's own time goes in a search of trivial trials (cProfile of the main thread,
    which runs Tune's controller, the searcher, the scheduler and the callbacks)."""
    config = harness.write_config(work / f"profile-{trials}.yaml", trivial_config(trials, 1))
    wall, groups = profiled_search(harness.plan_for(config, work / "runs", f"profile-{trials}"))
    total = sum(groups.values())
    top = sorted(groups.items(), key=lambda kv: -kv[1])[:8]
    return (f"Where the driver's time goes ({trials} trivial trials under cProfile, {wall:.0f} s, "
            f"{wall / trials * 1000:.0f} ms per trial with the profiler on): "
            + ", ".join(f"{k} {v / total:.0%} ({v / trials * 1000:.0f} ms/trial)" for k, v in top) + ".")


def worker_and_driver(work: Path, smoke: bool) -> str:
    """A search of ~0.7 s quickstart trials with the driver under cProfile and its trial workers
    sampled by py-spy: where the time around the trials goes, on both sides."""
    params = harness.quickstart()["params"]
    if smoke:
        params = {**params, "samples_per_class": 20}
    raw = harness.model_config("triplet", params, 9, harness.quickstart()["checkpoint"]["interval"])
    raw["budget"]["num_samples"] = 4 if smoke else 24
    config = harness.write_config(work / "profile-quick.yaml", raw)
    harness.fresh_ray()
    with worker_profile.sampled(work) as workers:
        wall, groups = profiled_search(harness.plan_for(config, work / "runs", "profile-quick"))
    total = sum(groups.values())
    top = sorted(groups.items(), key=lambda kv: -kv[1])[:6]
    what = f"{raw['budget']['num_samples']} quickstart trials of 9 epochs ({wall:.0f} s)"
    return (f"The driver during {what}, cProfile: " + ", ".join(f"{k} {v / total:.0%}" for k, v in top) + ". "
            + worker_profile.describe(workers, what))
