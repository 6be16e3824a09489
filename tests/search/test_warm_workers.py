"""The local Ray hpsearch starts prestarts one worker per CPU that imports torch and the trainable
while the search is assembled (hpsearch.driver.runner.start_local_ray), and the search registers
its trainable so that a trial's actor can take such a worker: no runtime_env on the actor, the
variables Tune would put there inherited instead. How much of the fixed cost of a search that
saves is measured in benchmarks/overhead.py (a trial lands on a warm worker when one is idle as its
actor starts; Ray may start a fresh one instead, e.g. on a loaded machine, so no test here asserts
where it ran). The case runs in its own Python process, which starts and stops its own Ray."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hpsearch.driver.cluster import WORKER_MODULES, worker_modules
from tests.fixtures.cli import clean_env, write_config
from tests.fixtures.toy_models import MINIMAL

SCRIPT = textwrap.dedent("""
    import io, json, os, sys, time
    import psutil, ray
    from hpsearch.cli import _parser
    from hpsearch.driver import preflight, runner
    from hpsearch.results.report import read_run

    config, storage = sys.argv[1], sys.argv[2]
    plan = preflight.plan(_parser().parse_args(["run", config, "--name", "warm", "--storage", storage]))
    runner.start_ray(plan)

    def idle_workers():                        # this Ray's (its raylet is a child of this process)
        found = {}
        for process in psutil.Process().children(recursive=True):
            try:
                if (process.cmdline() or [""])[0] == "ray::IDLE":
                    found[process.pid] = process
            except (psutil.Error, OSError):    # gone while looked at
                continue
        return found

    cpus = os.cpu_count() or 1                 # hpsearch's local Ray: one CPU slot per core, a worker each
    deadline = time.monotonic() + 120          # prestarting them takes seconds; 120 s is a hang
    while len(idle_workers()) < cpus and time.monotonic() < deadline:
        time.sleep(0.2)
    idle = idle_workers()

    def maps_torch(process):
        try:
            return any("libtorch" in m.path for m in process.memory_maps())
        except (psutil.Error, OSError):        # the worker is gone
            return False

    def torch_loaded():                        # preloaded: torch's library mapped before any trial
        return {pid: maps_torch(process) for pid, process in idle.items()}

    while not all(torch_loaded().values()) and time.monotonic() < deadline:
        time.sleep(0.2)
    loaded = torch_loaded()
    from ray.tune.execution.class_cache import _ActorClassCache

    class Probe:
        pass

    plain = _ActorClassCache().get(Probe)._default_options.get("runtime_env")
    with runner.lean_fit(plan):
        lean = _ActorClassCache().get(Probe)._default_options.get("runtime_env")
    code = runner.run(plan, stream=io.StringIO())
    seen = ray.get(ray.remote(lambda: {k: os.environ.get(k) for k in ("RAY_CHDIR_TO_TRIAL_DIR", "PL_DISABLE_FORK")}).remote())
    ray.shutdown()
    print(json.dumps({"code": code, "cpus": cpus, "idle": sorted(idle), "torch": loaded, "plain": plain, "lean": lean,
                      "worker_env": seen}))
""")


def run_script(tmp_path: Path, raw: dict) -> dict:
    config = write_config(tmp_path / "search.yaml", raw)
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(config), str(tmp_path / "runs")], capture_output=True,
                          text=True, cwd=Path(__file__).resolve().parents[2], env=clean_env(), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_worker_modules_hold_a_built_in_models_module_and_import_nothing_here():
    # this process may hold torch already (other tests); a fresh one shows worker_modules imports none of it
    done = subprocess.run([sys.executable, "-c", "import sys; from hpsearch.driver.cluster import worker_modules; "
                           "worker_modules('triplet'); print('torch' in sys.modules)"],
                          capture_output=True, text=True, env=clean_env(), timeout=120)
    assert done.stdout.strip() == "False", done.stderr[-2000:]
    triplet = worker_modules("triplet")
    assert {"ray.tune", "torch", "hpsearch.tune.trainable"} <= set(triplet)     # installed wherever hpsearch is
    assert set(triplet) - set(WORKER_MODULES) == {"hpsearch.models.triplet.model"}
    assert worker_modules("symmetric")[-1] == "hpsearch.models.symmetric.model"
    # a user's module: imported once the worker joins the job, which puts the driver's sys.path on it
    assert set(worker_modules(MINIMAL)) <= set(WORKER_MODULES)


@pytest.mark.slow
def test_a_local_search_gets_warm_workers_and_a_trainable_that_fits_them(tmp_path):
    raw = {"model": MINIMAL, "objective": {"metric": "val_acc", "mode": "max"}, "seed": 0,
           "space": {"x": {"uniform": [0.1, 0.9]}},
           "budget": {"num_samples": 4, "max_epochs": 2}, "scheduler": {"grace_period": 2},
           "resources": {"cpu": 1, "gpu": 0}}
    seen = run_script(tmp_path, raw)
    assert seen["code"] == 0
    assert len(seen["idle"]) == seen["cpus"], f"Ray prestarted {len(seen['idle'])} workers, expected one per CPU"
    assert all(seen["torch"].values()), f"a prestarted worker had not imported torch: {seen['torch']}"
    # Tune's own registration carries a runtime_env (no prestarted worker fits it); hpsearch's does not
    assert seen["plain"] and seen["plain"]["env_vars"]["PL_DISABLE_FORK"] == "1"
    assert seen["lean"] is None
    # ... and the workers have those variables all the same, with the runtime env's own
    assert seen["worker_env"] == {"RAY_CHDIR_TO_TRIAL_DIR": "0", "PL_DISABLE_FORK": "1"}
