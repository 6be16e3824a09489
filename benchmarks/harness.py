"""Running real searches from a benchmark: one local Ray session, configs written on the fly, the
Tuner assembled by ``hpsearch.driver.runner.make_tuner`` (the same assembly ``hpsearch run`` uses), and an
event log of every result in the order Tune processed it.
"""

from __future__ import annotations

import contextlib
import io
import os
import time
import types
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from unittest import mock

import yaml

import benchmarks.common  # noqa: F401  (Ray's environment settings, before Ray is imported)
from benchmarks.common import ROOT
from hpsearch.driver.cluster import runtime_env


def start_ray(model: str = "triplet") -> float:
    """Start the local Ray hpsearch would start for a search of ``model`` (hpsearch.driver.runner.start_ray);
    seconds it took (0 when a session was already up)."""
    import ray

    from hpsearch.driver import runner

    if ray.is_initialized():
        return 0.0
    began = time.perf_counter()
    runner.start_ray(types.SimpleNamespace(address=None, runtime_env=runtime_env(),
                                          config=types.SimpleNamespace(model=model)))
    return time.perf_counter() - began


def ray_workers(named: str = "ray::") -> list[Any]:
    """The Ray worker processes (psutil) of the local Ray this process started whose name starts
    with ``named`` (``ray::IDLE`` for the idle ones); Ray's agents are not workers."""
    import psutil

    found = []
    for process in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error, OSError):
            name = (process.cmdline() or [""])[0]
            if name.startswith(named) and "Agent" not in name:
                found.append(process)
    return found


def idle_workers() -> list[Any]:
    """The idle Ray workers of the local Ray this process started (psutil processes)."""
    return ray_workers("ray::IDLE")


def idle_workers_ready(timeout_s: float = 120.0) -> int:
    """Wait until the workers Ray prestarted for this process are done importing: torch mapped and
    no CPU used for half a second (or none is left idle); how many there were."""
    import psutil

    def settled(process: Any) -> bool:
        try:
            if not any("libtorch" in m.path for m in process.memory_maps()):
                return False
            before = sum(process.cpu_times()[:2])
            time.sleep(0.5)
            return sum(process.cpu_times()[:2]) - before < 0.05
        except (psutil.Error, OSError):
            return True      # gone: nothing to wait for

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        workers = idle_workers()
        if workers and all(settled(p) for p in workers):
            return len(workers)
        time.sleep(0.2)
    return 0


def fresh_ray(model: str = "triplet") -> None:
    """A new local Ray as ``hpsearch run`` starts it, its prestarted workers done importing: what the
    next search finds when it starts (hpsearch.driver.runner.start_local_ray). Not timed."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    start_ray(model)
    idle_workers_ready()


def write_config(path: Path, raw: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def quickstart(**changes: Any) -> dict[str, Any]:
    """configs/quickstart.yaml as a mapping, with top-level sections replaced and ``params`` merged."""
    raw = yaml.safe_load((ROOT / "configs" / "quickstart.yaml").read_text(encoding="utf-8"))
    params = changes.pop("params", None)
    raw.update(changes)
    if params:
        raw["params"] = {**raw.get("params", {}), **params}
    return raw


def model_config(model: str, params: dict[str, Any], epochs: int, interval: int, cpu: float = 1.0) -> dict:
    """A search config with a one-point space (lr fixed to a hair): every trial trains the same."""
    from hpsearch import models

    full = models.validate_params(model, params)
    lr = float(full["lr"])
    return {"model": model, "seed": 0, "epochs": epochs, "params": params,
            "space": {"lr": {"uniform": [lr, lr * 1.0001]}},
            "budget": {"num_samples": 1, "max_epochs": epochs, "max_failures": 0},
            "scheduler": {"grace_period": epochs, "reduction_factor": 2},
            "resources": {"cpu": cpu, "gpu": 0}, "checkpoint": {"interval": interval}}


def plan_for(config: Path, storage: Path, name: str, sets: Sequence[str] = ()) -> Any:
    """The checked plan ``hpsearch run CONFIG --name NAME --storage STORAGE --set ...`` would run."""
    from hpsearch.cli import _parser
    from hpsearch.driver import preflight

    argv = ["run", str(config), "--name", name, "--storage", str(storage)]
    for s in sets:
        argv += ["--set", s]
    return preflight.plan(_parser().parse_args(argv))


@contextlib.contextmanager
def actor_reuse(enabled: bool) -> Iterator[None]:
    """Run the runner's Tuner with ``reuse_actors`` forced to ``enabled`` (it ships True)."""
    from ray import tune

    original = tune.TuneConfig

    def config(*args: Any, **kwargs: Any) -> Any:
        kwargs["reuse_actors"] = enabled
        return original(*args, **kwargs)

    with mock.patch.object(tune, "TuneConfig", config):
        yield


@contextlib.contextmanager
def more_callbacks(callbacks: Sequence[Any]) -> Iterator[None]:
    """The runner's Tuner with ``callbacks`` after its own."""
    from hpsearch.driver import runner

    original = runner.make_tuner

    def make_tuner(plan: Any, searcher: Any, scheduler: Any, own: list, **kwargs: Any) -> Any:
        return original(plan, searcher, scheduler, [*own, *callbacks], **kwargs)

    with mock.patch.object(runner, "make_tuner", make_tuner):
        yield


def run_search(plan: Any, reuse: bool = True, callbacks: Sequence[Any] = ()) -> tuple[float, int]:
    """``hpsearch run`` on a started Ray (hpsearch.driver.runner.run), with extra Tune ``callbacks``;
    (wall seconds, exit code). A trial that ended in an error makes the measurement meaningless:
    that raises, with the trial's reason."""
    from hpsearch.core.rundir import read_outcomes
    from hpsearch.driver import runner

    began = time.perf_counter()
    with actor_reuse(reuse), more_callbacks(callbacks):
        code = runner.run(plan, interval_s=3600.0, stream=io.StringIO())
    wall = time.perf_counter() - began
    errors = [e for e in read_outcomes(plan.run_dir).values() if e["outcome"] == "error"]
    if errors:
        raise RuntimeError(f"{plan.name}: {len(errors)} trial(s) failed, e.g. {errors[0]['reason']}")
    return wall, code


class Counter:
    def __init__(self) -> None:
        self.value = 0


class BudgetedSuggest:
    """Stands in for a searcher's ``suggest``: no new trial once ``counter`` reaches ``budget``
    (a module-level class, so Tune can pickle the searcher with it)."""

    def __init__(self, suggest: Any, counter: Counter, budget: int):
        self.suggest, self.counter, self.budget = suggest, counter, budget

    def __call__(self, trial_id: str) -> Any:
        from ray.tune.search import Searcher

        return Searcher.FINISHED if self.counter.value >= self.budget else self.suggest(trial_id)


class EventLog:
    """A Tune callback that keeps (kind, trial_id, result) in the order Tune processed them."""

    def __new__(cls) -> Any:
        from ray.tune import Callback

        class _Log(Callback):
            def __init__(self) -> None:
                self.events: list[tuple[str, str, dict]] = []
                self.results = Counter()

            def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
                self.results.value += 1
                self.events.append(("result", trial.trial_id, dict(result)))

            def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
                self.events.append(("complete", trial.trial_id, {}))

            def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
                self.events.append(("error", trial.trial_id, {}))

        return _Log()


def pss_tree(pid: int) -> tuple[int, dict[str, int]]:
    """PSS bytes of a process and all its descendants (total, by process name)."""
    import psutil

    total, names = 0, {}
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, {}
    for proc in procs:
        try:
            pss = proc.memory_full_info().pss
            name = proc.name()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        total += pss
        names[name] = names.get(name, 0) + pss
    return total, names


def cwd_root() -> None:
    """Trials run in the driver's working directory: the repository root (benchmarks.toy imports)."""
    os.chdir(ROOT)


def trivial_config(trials: int, reports: int) -> dict:
    return {"model": "benchmarks.toy:Trivial", "seed": 0, "epochs": reports, "params": {},
            "space": {"x": {"uniform": [0.0, 1.0]}},
            "budget": {"num_samples": trials, "max_epochs": reports, "max_failures": 0},
            "scheduler": {"grace_period": reports, "reduction_factor": 2},
            "resources": {"cpu": 1, "gpu": 0}, "checkpoint": {"interval": 1}}
