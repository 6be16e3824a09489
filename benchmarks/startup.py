"""The fixed cost of a search: from a local Ray being up to the end of a one-trial, one-epoch search of
trivial trials (benchmarks.toy.Trivial), each measurement in a fresh Python process that starts its
own Ray the way ``hpsearch run`` does (hpsearch.driver.runner.start_ray) and times ``runner.run``.

Two ways to start, measured alternately in the same run:

- ``warm``: as shipped. The workers Ray prestarts import torch and the trainable while the driver
  assembles the search, and the trial's actor can take one (hpsearch.driver.runner.start_local_ray,
  hpsearch.driver.runner.lean_fit).
- ``cold``: as before that change. The job has a runtime_env, workers import nothing ahead, Tune
  registers the trainable with its own runtime_env and counts its callbacks (importing every logger
  integration it knows) — the first trial waits for a worker of its own.

and two moments to start the search: at once when Ray is up (``hpsearch run``), and once the
prestarted workers have finished importing (Ray up for a while: a notebook, a second search).

    .venv/bin/python -m benchmarks.startup child warm|cold now|idle CONFIG STORAGE   # one measurement
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

from benchmarks import harness
from benchmarks.common import ROOT, fmt, log, table, verdict

VARIANTS = ("warm", "cold")
MOMENTS = {"now": "at once (`hpsearch run`)", "idle": "once the prestarted workers are idle"}
GOAL_S = 1.0


@contextlib.contextmanager
def cold_start() -> Iterator[None]:
    """hpsearch's local Ray and fit as they were before warm workers: the job's runtime_env, no
    preloaded modules, Tune's own trainable registration and callback count."""
    import ray

    from hpsearch.driver import runner

    def start_local_ray(plan: Any) -> None:
        ray.init(address="local", num_cpus=os.cpu_count() or 1, include_dashboard=False,
                 logging_level=logging.ERROR, log_to_driver=False, runtime_env=plan.runtime_env)

    with mock.patch.object(runner, "start_local_ray", start_local_ray), \
            mock.patch.object(runner, "lean_fit", lambda plan: contextlib.nullcontext()):
        yield


def child(variant: str, moment: str, config: str, storage: str) -> dict[str, float]:
    """One measurement in this (fresh) process: seconds to start Ray, and the search's wall."""
    import types

    import ray

    from hpsearch.driver import runner
    from hpsearch.results.report import read_run

    harness.cwd_root()
    plan = harness.plan_for(Path(config), Path(storage), f"{variant}-{moment}")
    with cold_start() if variant == "cold" else contextlib.nullcontext():
        began = time.perf_counter()
        runner.start_ray(plan)
        ray_s = time.perf_counter() - began
        if moment == "idle":
            harness.idle_workers_ready() if variant == "warm" else time.sleep(8.0)
        idle = {process.pid for process in harness.idle_workers()}
        began = time.perf_counter()
        code = runner.run(plan, interval_s=3600.0, stream=types.SimpleNamespace(write=lambda text: None,
                                                                               flush=lambda: None))
        search_s = time.perf_counter() - began
    ray.shutdown()
    if code != 0:
        raise RuntimeError(f"{variant}/{moment}: hpsearch run exited {code}")
    pids = {int(row["pid"]) for trial in read_run(plan.run_dir).trials for row in trial.rows}
    return {"ray_s": ray_s, "search_s": search_s, "prestarted": bool(pids) and pids <= idle}


def measure(work: Path, rounds: int) -> tuple[str, list]:
    """``rounds`` alternations of every (moment, variant), each in a fresh process."""
    config = harness.write_config(work / "startup.yaml", harness.trivial_config(1, 1))
    seen: dict[tuple[str, str], list[float]] = {}
    landed: dict[tuple[str, str], list[bool]] = {}
    ray_up: list[float] = []
    for r in range(rounds):
        for moment in MOMENTS:
            for variant in VARIANTS:
                storage = work / f"startup-{r}"
                done = subprocess.run([sys.executable, "-m", "benchmarks.startup", "child", variant, moment,
                                       str(config), str(storage)], capture_output=True, text=True, cwd=ROOT)
                if done.returncode != 0:
                    raise RuntimeError(f"startup {variant}/{moment}: {done.stderr[-2000:]}")
                figures = json.loads(done.stdout.strip().splitlines()[-1])
                seen.setdefault((moment, variant), []).append(figures["search_s"])
                landed.setdefault((moment, variant), []).append(figures["prestarted"])
                ray_up.append(figures["ray_s"])
                log(f"startup round {r}: {variant}, {moment}: search {figures['search_s']:.2f} s "
                    f"(Ray up in {figures['ray_s']:.1f} s)")
    rows, checks = [], []
    for moment, what in MOMENTS.items():
        warm, cold = statistics.median(seen[(moment, "warm")]), statistics.median(seen[(moment, "cold")])
        for variant in VARIANTS:
            values = seen[(moment, variant)]
            on = landed[(moment, variant)]
            rows.append([what, variant, fmt(statistics.median(values)), f"{min(values):.2f}-{max(values):.2f}",
                         fmt(statistics.median(values) / cold), f"{sum(on)} of {len(on)}"])
        if moment == "now":
            checks.append(["fixed cost of a search, Ray just up (`hpsearch run`)", f"{warm:.2f} s",
                           f"<= {GOAL_S} s", verdict(warm, GOAL_S)])
        else:
            checks.append(["fixed cost of a search, Ray up and its workers idle", f"{warm:.2f} s",
                           f"<= {GOAL_S} s", verdict(warm, GOAL_S)])
    text = table(["search starts", "workers", "search wall s (median)", "range", "x cold",
                  "trial on a prestarted worker"], rows)
    text += (f"\n\nA one-trial, one-epoch search of trivial trials, {rounds} rounds, each measurement in a fresh "
             f"process that started its own local Ray first (median {statistics.median(ray_up):.1f} s, not "
             "counted). `warm`: as shipped; `cold`: the start before it (job runtime_env, no preloaded "
             "modules, Tune's own trainable registration and callback count). With `cold` the idle "
             "moment waits 8 s (its workers import nothing ahead).")
    return text, checks


def main(argv: list[str]) -> int:
    if len(argv) == 5 and argv[0] == "child":
        print(json.dumps(child(*argv[1:])))
        return 0
    raise SystemExit(__doc__)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
