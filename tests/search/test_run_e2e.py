"""`hpsearch run` end to end, with real Ray (all slow): searches over scripted toy curves
(tests/fixtures/toy_models.py) and the built-in models in one local Ray session shared by the
module; a user model from the working directory through the real CLI; and `--address` against a
Ray head this module starts on loopback and stops again. Bad input: test_run_cli.py.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import optuna
import psutil
import pytest
import torch
import yaml

from hpsearch.core.config import load_config
from hpsearch.core.rundir import CHECKPOINT_FILE, read_outcomes, read_run_info, read_trial_results, study_storage
from hpsearch.driver import preflight
from hpsearch.tune.trainable import index_from_name, trial_seed

REPO = Path(__file__).resolve().parents[2]
HPSEARCH = Path(sys.executable).with_name("hpsearch")
RAY = Path(sys.executable).with_name("ray")
SCRIPTED = "tests.fixtures.toy_models:Scripted"

USER_MODEL = '''\
"""A user's own model, outside any package hpsearch knows."""


class Model:
    def __init__(self, params, device, seed):
        self.x = float(params.get("x", 0.5))
        self.epoch = 0

    def train_epoch(self):
        self.epoch += 1
        return {"train_loss": 1.0 / (self.epoch + self.x), "train_batch_loss_std": 0.01,
                "train_from_runtime_env": float("runtime_resources" in __file__)}

    def evaluate(self, split="val"):
        return {f"{split}_acc": self.x * (1 - 0.5 ** self.epoch)}

    def state_dict(self):
        return {"epoch": self.epoch}

    def load_state_dict(self, state):
        self.epoch = int(state["epoch"])
'''

USER_CONFIG = """\
model: my_user_model:Model
epochs: 3
objective: {metric: val_acc, mode: max}
space:
  x: {uniform: [0.1, 0.9]}
budget: {num_samples: 2, max_failures: 0}
scheduler: {grace_period: 3}   # no rung before the last epoch: both trials run to the end
"""


def write_yaml(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------------------------
# Real Ray.

@pytest.fixture(scope="module")
def ray_session():
    """One local Ray for the in-process searches of this module (hpsearch uses a session that
    already exists and leaves it running)."""
    import ray

    import hpsearch.driver.runner  # noqa: F401  (sets Ray's environment before Ray starts)

    torch.set_num_threads(1)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level="ERROR")
    yield
    ray.shutdown()


def run_search(tmp_path: Path, raw: dict, name: str, *extra: str) -> tuple[int, str, Path]:
    config = write_yaml(tmp_path / f"{name}.yaml", raw)
    storage = tmp_path / "runs"
    out = tmp_path / f"{name}.out"
    with out.open("w", encoding="utf-8") as stream:
        import hpsearch.driver.runner as runner

        args = types.SimpleNamespace(config=str(config), name=name, storage=str(storage), address=None,
                                     num_samples=None, max_epochs=None, set=list(extra))
        code = runner.run(preflight.plan(args), interval_s=0.5, stream=stream)
    return code, out.read_text(encoding="utf-8"), storage / name


def trials(run_dir: Path) -> dict[str, dict]:
    """trial_id -> {dir, index, params, rows} from Ray's trial dirs."""
    found = {}
    for trial_dir in sorted(run_dir.glob("trial_*")):
        rows = read_trial_results(trial_dir)
        params = json.loads((trial_dir / "params.json").read_text(encoding="utf-8"))
        found[rows[0]["trial_id"]] = {"dir": trial_dir, "index": index_from_name(trial_dir.name),
                                      "params": params, "rows": rows}
    return found


TOY_SEARCH = {
    "model": SCRIPTED,
    "seed": 5,
    "epochs": 6,
    "params": {"quality": 0.8, "onset": 3},
    "space": {"curve": {"choice": ["healthy", "constant", "floor", "nan", "explode"]},
              "quality": {"uniform": [0.2, 0.9]},
              "epoch_sleep": {"choice": [0.0, 0.4]}},
    # The first healthy trial sets the rung; the slow, poor one meets it and is cut by ASHA.
    "warm_start": [{"curve": "healthy", "quality": 0.9, "epoch_sleep": 0.0},
                   {"curve": "constant", "epoch_sleep": 0.0},
                   {"curve": "floor", "epoch_sleep": 0.0},
                   {"curve": "nan", "epoch_sleep": 0.0},
                   {"curve": "explode", "epoch_sleep": 0.0},
                   {"curve": "healthy", "quality": 0.3, "epoch_sleep": 0.4}],
    "budget": {"num_samples": 8, "max_failures": 0},
    "scheduler": {"grace_period": 4, "reduction_factor": 2},
    "checkpoint": {"interval": 2},
}


@pytest.mark.slow
def test_toy_search_prunes_each_failure_for_its_reason_and_records_everything(ray_session, tmp_path):
    code, out, run_dir = run_search(tmp_path, TOY_SEARCH, "toy")
    assert code == 0, out
    found = trials(run_dir)
    outcomes = read_outcomes(run_dir)
    assert len(found) == 8 and set(outcomes) == set(found)
    by_point = {}
    for trial_id, t in found.items():
        by_point.setdefault((t["params"]["curve"], t["params"]["quality"]), trial_id)

    def outcome(curve, quality=0.8):
        entry = outcomes[by_point[(curve, quality)]]
        return entry["outcome"], entry["epoch"], entry["reason"]

    # constant 0.1 and the 0.05 floor rank first on the objective, yet are pruned within 3 epochs
    for curve in ("constant", "floor"):
        kind, epoch, reason = outcome(curve)
        assert kind == "pruned_flatline" and epoch <= 3 and "train_" in reason, (curve, kind, epoch, reason)
    assert outcome("nan")[:2] == ("pruned_nonfinite", 3)                 # NaN at epoch k=3: pruned at 3
    kind, epoch, _ = outcome("explode")
    assert kind == "pruned_exploding" and 3 <= epoch <= 4                # x3 from epoch 3: within 2 epochs
    assert outcome("healthy", 0.9)[:2] == ("completed", 6)
    assert outcome("healthy", 0.3)[:2] == ("pruned_asha", 4)
    for trial_id, t in found.items():                                    # healthy never health-pruned
        if t["params"]["curve"] == "healthy":
            assert outcomes[trial_id]["outcome"] in ("completed", "pruned_asha")

    # every epoch's report: floats for every metric, the trial's own seed, the health verdict
    seeds = set()
    for t in found.values():
        for row in t["rows"]:
            assert {"train_loss", "train_grad_norm", "train_batch_loss_std", "val_score", "val_loss",
                    "epoch", "epoch_s", "seed", "health", "health_reason"} <= set(row)
            assert all(isinstance(row[k], float) for k in row if k.startswith(("train_", "val_")))
        assert [r["epoch"] for r in t["rows"]] == list(range(1, len(t["rows"]) + 1))
        seeds.add(t["rows"][0]["seed"])
        assert t["rows"][0]["seed"] == trial_seed(5, t["index"])
    assert len(seeds) == 8
    last = found[by_point[("nan", 0.8)]]["rows"][-1]
    assert last["health"] == "nonfinite" and "epoch 3" in last["health_reason"]

    # the completed trial's checkpoint holds the weights and the whole history
    best = found[by_point[("healthy", 0.9)]]["dir"]
    newest = sorted(best.glob("checkpoint_*"))[-1]
    state = torch.load(newest / CHECKPOINT_FILE, weights_only=True)
    assert [r["epoch"] for r in state["history"]] == [1, 2, 3, 4, 5, 6]

    # the Optuna study: health-pruned trials PRUNED or FAIL, never a value; none RUNNING
    study = optuna.load_study(study_name="hpsearch", storage=study_storage(run_dir))
    states = {t.user_attrs.get("trial_id"): t.state for t in study.trials}
    assert set(states) == set(found)
    assert optuna.trial.TrialState.RUNNING not in states.values()
    for trial_id, entry in outcomes.items():
        if entry["outcome"].startswith("pruned_") and entry["outcome"] != "pruned_asha":
            assert states[trial_id] in (optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
        if entry["outcome"] == "completed":
            assert states[trial_id] == optuna.trial.TrialState.COMPLETE

    # run dir files, and what the user read
    assert read_run_info(run_dir)["state"] == "finished"
    assert load_config(run_dir / "search.yaml") == load_config(tmp_path / "toy.yaml")
    for kind in ("pruned_asha", "pruned_flatline", "pruned_exploding", "pruned_nonfinite"):
        assert any(line.strip().startswith(f"{kind} ") and "e.g. #" in line for line in out.splitlines()), out
    assert "trial  status" in out and f"run dir: {run_dir}" in out


@pytest.mark.slow
def test_a_crashed_trial_resumes_from_its_checkpoint_and_a_lasting_error_is_recorded(ray_session, tmp_path):
    raw = {"model": SCRIPTED, "seed": 1, "epochs": 5,
           "params": {"crash_at": 4, "marker_dir": str(tmp_path)},
           "space": {"crash_times": {"choice": [1, 3]}},
           "warm_start": [{"crash_times": 1}, {"crash_times": 3}],
           "budget": {"num_samples": 2, "max_failures": 1},
           "scheduler": {"grace_period": 5}, "checkpoint": {"interval": 1}}
    code, out, run_dir = run_search(tmp_path, raw, "crash")
    assert code == 0, out
    outcomes = read_outcomes(run_dir)
    for trial_id, t in trials(run_dir).items():
        if t["params"]["crash_times"] == 1:      # crashed once in epoch 4, retried from epoch 3's checkpoint
            assert outcomes[trial_id]["outcome"] == "completed"
            assert [r["epoch"] for r in t["rows"]] == [1, 2, 3, 4, 5]
            assert t["rows"][-1]["iterations_since_restore"] < t["rows"][-1]["training_iteration"]
        else:                                    # crashes on every attempt: an error, with its last line
            assert outcomes[trial_id]["outcome"] == "error"
            assert outcomes[trial_id]["reason"] == "RuntimeError: scripted crash at epoch 4"
    assert "error             e.g. #2: RuntimeError: scripted crash at epoch 4" in out


@pytest.mark.slow
def test_a_user_model_that_does_not_report_the_objective_fails_naming_it(ray_session, tmp_path):
    raw = {"model": "tests.fixtures.toy_models:Minimal", "epochs": 3, "params": {"metric": "acc"},
           "space": {"x": {"uniform": [0.1, 0.9]}},
           "objective": {"metric": "val_f1", "mode": "max"}, "budget": {"num_samples": 1, "max_failures": 0},
           "scheduler": {"grace_period": 1}}
    code, out, run_dir = run_search(tmp_path, raw, "nof1")
    assert code == 1
    (entry,) = read_outcomes(run_dir).values()
    assert entry["outcome"] == "error"
    assert "'val_f1' was not reported" in entry["reason"] and "val_acc" in entry["reason"]
    study = optuna.load_study(study_name="hpsearch", storage=study_storage(run_dir))
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL]


@pytest.mark.slow
def test_the_quickstart_shows_every_kind_of_pruning_with_its_reason(ray_session, tmp_path):
    raw = yaml.safe_load((REPO / "configs" / "quickstart.yaml").read_text(encoding="utf-8"))
    started = time.monotonic()
    code, out, run_dir = run_search(tmp_path, raw, "quickstart")
    elapsed = time.monotonic() - started
    assert code == 0, out
    outcomes = read_outcomes(run_dir)
    kinds = {e["outcome"] for e in outcomes.values()}
    assert {"pruned_asha", "pruned_flatline", "completed"} <= kinds, kinds
    assert kinds & {"pruned_exploding", "pruned_nonfinite"}, kinds
    assert all(e["reason"] for e in outcomes.values() if e["outcome"] != "completed")
    for kind in kinds - {"completed"}:
        assert any(line.strip().startswith(f"{kind} ") and "e.g. #" in line for line in out.splitlines()), kind
    sound = next(t for t in trials(run_dir).values() if t["index"] == 1)   # the first warm-start point
    assert outcomes[sound["rows"][0]["trial_id"]]["outcome"] in ("completed", "pruned_asha")
    assert elapsed < 180, f"{elapsed:.0f}s"


@pytest.mark.slow
def test_healthy_trials_of_the_built_in_models_are_never_health_pruned(ray_session, tmp_path):
    searches = {
        "triplet": {"model": "triplet", "epochs": 3,
                    "params": {"samples_per_class": 100, "data_seed": 0, "hidden_dim": 64, "embedding_dim": 16},
                    "space": {"lr": {"loguniform": [1e-3, 1e-2]}, "mining": {"choice": ["batch_all", "batch_hard"]}}},
        "symmetric": {"model": "symmetric", "epochs": 3, "params": {"num_stories": 100},
                      "space": {"lr": {"loguniform": [1e-4, 1e-3]}, "w_cycle": {"uniform": [0.25, 1.0]}}},
    }
    for name, raw in searches.items():
        raw.update(budget={"num_samples": 2, "max_failures": 0}, scheduler={"grace_period": raw["epochs"]})
        code, out, run_dir = run_search(tmp_path, raw, name)
        assert code == 0, out
        outcomes = read_outcomes(run_dir)
        assert len(outcomes) == 2 and {e["outcome"] for e in outcomes.values()} == {"completed"}, (name, outcomes)


def user_project(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    (project / "my_user_model.py").write_text(USER_MODEL, encoding="utf-8")
    (project / "search.yaml").write_text(USER_CONFIG, encoding="utf-8")
    return project


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAY_ADDRESS")}
    env.update(RAY_USAGE_STATS_ENABLED="0", **extra)
    return env


def assert_user_run(run_dir: Path, done: subprocess.CompletedProcess) -> list[dict]:
    assert done.returncode == 0, done.stdout + done.stderr
    outcomes = read_outcomes(run_dir)
    assert len(outcomes) == 2 and {e["outcome"] for e in outcomes.values()} == {"completed"}
    rows = [row for t in trials(run_dir).values() for row in t["rows"]]
    assert len(rows) == 6 and all(isinstance(r["val_acc"], float) for r in rows)
    return rows


@pytest.mark.slow
def test_a_user_model_in_the_working_directory_runs_through_the_cli(tmp_path):
    project = user_project(tmp_path)
    done = subprocess.run([str(HPSEARCH), "run", "search.yaml", "--name", "mine"], capture_output=True,
                          text=True, cwd=project, env=clean_env(), timeout=300)
    assert_user_run(project / "runs" / "mine", done)
    assert "outcomes: completed 2" in done.stdout


class RayHead:
    """`ray start --head --block` on loopback, in its own process group and temp dir, with token
    auth; stopped by signalling that group only, so no other Ray on this machine is touched."""

    def __init__(self, tmp: Path):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.temp_dir = tempfile.mkdtemp(prefix="hps-ray-", dir="/tmp")   # short: Unix socket paths
        self.env = clean_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16),
                             RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0")
        self.log = (tmp / "ray-head.log").open("w")
        self.process = subprocess.Popen(
            [str(RAY), "start", "--head", f"--port={self.port}", "--num-cpus=2", "--include-dashboard=false",
             "--node-ip-address=127.0.0.1", f"--temp-dir={self.temp_dir}", "--disable-usage-stats", "--block"],
            cwd=tmp, env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                assert self.process.poll() is None, "ray start exited"
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("the Ray head did not open its port within 60s")

    def members(self) -> list[psutil.Process]:
        out = []
        for p in psutil.process_iter(["pid", "cmdline"]):
            try:
                if p.pid == self.process.pid or os.getpgid(p.pid) == self.process.pid or \
                        any(self.temp_dir in part for part in (p.info["cmdline"] or [])):
                    out.append(p)
            except (psutil.Error, ProcessLookupError):
                pass
        return out

    def stop(self) -> list[psutil.Process]:
        """SIGTERM the head's group, then SIGKILL whatever of it is left; returns survivors."""
        members = self.members()
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        _, alive = psutil.wait_procs(members, timeout=15)
        for p in alive:
            p.kill()
        _, alive = psutil.wait_procs(alive, timeout=5)
        self.log.close()
        survivors = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        if not survivors:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
        return survivors


@pytest.mark.slow
def test_address_runs_the_search_on_a_ray_head_and_ships_the_user_module(tmp_path):
    """The head's workers cannot import the user's module on their own: the driver finds it on its
    PYTHONPATH (a directory the head never heard of), so it must travel in the runtime env."""
    head = RayHead(tmp_path)
    try:
        project = user_project(tmp_path)
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        env = dict(head.env, PYTHONPATH=str(project))
        done = subprocess.run(
            [str(HPSEARCH), "run", str(project / "search.yaml"), "--name", "remote",
             "--storage", str(tmp_path / "runs"), "--address", f"127.0.0.1:{head.port}"],
            capture_output=True, text=True, cwd=elsewhere, env=env, timeout=300)
        rows = assert_user_run(tmp_path / "runs" / "remote", done)
        without_token = {k: v for k, v in env.items() if not k.startswith("RAY_AUTH")}
        refused = subprocess.run(
            [str(HPSEARCH), "run", str(project / "search.yaml"), "--storage", str(tmp_path / "runs"),
             "--address", f"127.0.0.1:{head.port}"], capture_output=True, text=True, cwd=elsewhere,
            env=without_token, timeout=120)
        assert refused.returncode == 2
        assert refused.stderr.splitlines()[-1].startswith("hpsearch run: error: --address: the Ray head at ")
        assert "RAY_AUTH_MODE=token" in refused.stderr
        assert {r["train_from_runtime_env"] for r in rows} == {1.0}
        assert f"Ray cluster at 127.0.0.1:{head.port}" in done.stdout
        assert read_run_info(tmp_path / "runs" / "remote")["address"] == f"127.0.0.1:{head.port}"
    finally:
        survivors = head.stop()
    assert survivors == [] and head.members() == []
