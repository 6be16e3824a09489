"""Bookkeeping as a search grows: a search of many trivial trials (benchmarks.toy.Trivial, one report
each), the wall per trial in each window of consecutive trial ends and the driver's memory at the
end of each window, for the shipped default (``auto``: rung-tpe, which fits on at most
hpsearch.tune.samplers.MAX_POINTS observations) and, with ``algorithms``, any other (``random``
isolates what Tune, the journal-backed Optuna study, the scheduler and hpsearch's callbacks cost).
One report per trial never reaches a rung, so the same search runs again with ``RUNG_REPORTS``
reports per trial and rungs at epochs 1 and 2 (grace period 1, reduction factor 2): about half the
trials are stopped at each, and every rung decision is written to the run dir before it takes
effect.

Also what one suggestion of each model-based sampler costs against the size of the study, in
Optuna alone (in memory, ``ask`` + ``tell``): the growth a sampler brings to any search using it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from benchmarks import harness
from benchmarks.common import fmt, log, table, verdict

GOAL_TIME, GOAL_MEMORY = 1.2, 1.2
RUNG_REPORTS = 4        # rungs at epochs 1 and 2 of 4


class Pace:
    """A Tune callback keeping the time of every trial end and the driver's memory every ``window``
    ends (RSS and USS of this process, MiB)."""

    def __new__(cls, window: int) -> Any:
        import psutil
        from ray.tune import Callback

        class _Pace(Callback):
            def __init__(self) -> None:
                self.ends: list[float] = []
                self.memory: list[tuple[int, float, float]] = []

            def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
                self.ends.append(time.perf_counter())
                if len(self.ends) % window == 0:
                    full = psutil.Process().memory_full_info()   # (Tune pickles callbacks: no handle kept)
                    self.memory.append((len(self.ends), full.rss / 2**20, full.uss / 2**20))

        return _Pace()


def suggestion_ms(sizes: tuple[int, ...], repeats: int = 20) -> dict[str, list[tuple[int, float]]]:
    """ms per ``ask`` + ``tell`` of each model-based sampler hpsearch offers (hpsearch.tune.samplers)
    on an in-memory study already holding ``n`` finished trials of one float (value reported at
    epoch 1 as well, which rung-tpe fits on)."""
    import numpy as np
    import optuna
    from optuna.distributions import FloatDistribution

    from hpsearch.tune.samplers import make_sampler

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    space = {"x": FloatDistribution(0.0, 1.0)}
    out: dict[str, list[tuple[int, float]]] = {}
    for algorithm in ("tpe", "rung-tpe"):
        rng = np.random.default_rng(0)
        for n in sizes:
            study = optuna.create_study(direction="maximize", sampler=make_sampler(algorithm, space, 0))
            study.add_trials([optuna.trial.create_trial(params={"x": float(x)}, distributions=space, value=float(v),
                                                        intermediate_values={1: float(v)})
                              for x, v in rng.random((n, 2))])
            began = time.perf_counter()
            for _ in range(repeats):
                trial = study.ask(space)
                study.tell(trial, 0.5)
            out.setdefault(algorithm, []).append((n, (time.perf_counter() - began) / repeats * 1000))
    return out


def one_search(work: Path, algorithm: str, trials: int, window: int,
               rungs: bool = False) -> tuple[list[list], float, float, float]:
    """Rows per window, and (time ratio last / first window, USS ratio, wall s). ``rungs``: trials of
    ``RUNG_REPORTS`` reports, ranked at epochs 1 and 2."""
    raw = harness.trivial_config(trials, RUNG_REPORTS if rungs else 1)
    raw["algorithm"] = algorithm
    if rungs:
        raw["scheduler"] = {"grace_period": 1, "reduction_factor": 2}
    tag = f"scaling-{algorithm}-{trials}" + ("-rungs" if rungs else "")
    config = harness.write_config(work / f"{tag}.yaml", raw)
    pace = Pace(window)
    wall, code = harness.run_search(harness.plan_for(config, work / "runs", tag), callbacks=[pace])
    if code != 0:
        raise RuntimeError(f"scaling {algorithm}: hpsearch run exited {code}")
    ends = pace.ends
    rows, per_trial = [], []
    for k, (count, rss, uss) in enumerate(pace.memory):
        start = ends[k * window - 1] if k else ends[0]
        span = window if k else window - 1            # the first window: from the first end on
        ms = (ends[count - 1] - start) / span * 1000
        per_trial.append(ms)
        rows.append([search_name(algorithm, rungs), f"{k * window + 1}-{count}", f"{ms:.1f}", f"{rss:.0f}",
                     f"{uss:.0f}"])
    time_ratio = per_trial[-1] / per_trial[0]
    memory_ratio = pace.memory[-1][2] / pace.memory[0][2]
    log(f"scaling {search_name(algorithm, rungs)}: {trials} trials in {wall:.0f} s; last/first window "
        f"{time_ratio:.2f}, USS {memory_ratio:.2f}")
    return rows, time_ratio, memory_ratio, wall


def search_name(algorithm: str, rungs: bool) -> str:
    return f"{algorithm}, {RUNG_REPORTS} reports, rungs at 1 and 2" if rungs else algorithm


def measure(work: Path, trials: int, window: int, algorithms: tuple[str, ...] = ("auto",),
            tpe_sizes: tuple[int, ...] = (1000, 5000, 10000)) -> tuple[str, list]:
    rows, checks, walls = [], [], []
    for index, (algorithm, rungs) in enumerate([(a, False) for a in algorithms] + [(algorithms[0], True)]):
        got, time_ratio, memory_ratio, wall = one_search(work, algorithm, trials, window, rungs)
        if index:        # this process's heap is what the searches before left: no memory figure
            got = [row[:3] + ["-", "-"] for row in got]
        rows += got
        name = search_name(algorithm, rungs)
        walls.append(f"{name} {wall:.0f} s")
        last = f"trials {trials - window + 1}-{trials}"
        checks.append([f"wall per trivial trial, {last} / trials 1-{window} (`algorithm: {name}`)",
                       fmt(time_ratio), f"<= {GOAL_TIME}", verdict(time_ratio, GOAL_TIME)])
        if not index:
            checks.append([f"driver memory (USS) after {trials} trials / after {window} (`algorithm: {name}`)",
                           fmt(memory_ratio), f"<= {GOAL_MEMORY}", verdict(memory_ratio, GOAL_MEMORY)])
    text = table(["search", "trials ended", "ms per trial (wall, 2 slots)", "driver RSS MiB", "driver USS MiB"],
                 rows)
    costs = suggestion_ms(tpe_sizes)
    text += (f"\n\nSearches of {trials} trivial trials, one report each (and {RUNG_REPORTS} with rungs), 2 at a "
             "time, actor reuse (wall: "
             + ", ".join(walls) + "). The first window is timed from the first trial's end, so the fixed "
             "cost of the search is not in it. Memory is shown for the first search only: the others run in "
             "the same process, on the heap the searches before them left.\n\nOne suggestion of each "
             "model-based sampler (Optuna alone, in memory, `ask` + `tell`) against the trials already in the "
             "study: "
             + "; ".join(f"{algorithm}: " + ", ".join(f"{n} trials {ms:.1f} ms" for n, ms in rows)
                         for algorithm, rows in costs.items()) + ".")
    return text, checks
