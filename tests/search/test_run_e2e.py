"""`hpsearch run` end to end, with real Ray (all slow): searches over scripted toy curves
(tests/fixtures/toy_models.py) and the built-in models in one local Ray session shared by the
module; a user model from the working directory through the real CLI; and `--address` against a
Ray head this module starts on loopback and stops again. Bad input: test_run_cli.py; trials that
fail: test_faults.py; user packages named like hpsearch's own: test_user_packages.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import torch
import yaml

from hpsearch.core.config import load_config
from hpsearch.core.rundir import CHECKPOINT_FILE, read_outcomes, read_run_info, read_trial_results, study_storage
from hpsearch.tune.snapshot import read_snapshot
from hpsearch.tune.trainable import index_from_name, trial_seed
from tests.fixtures.cli import REPO, hpsearch
from tests.fixtures.cluster import LocalCluster, marked
from tests.fixtures.toy_models import SCRIPTED

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
    "scheduler": {"grace_period": 4, "reduction_factor": 2, "keep_warm_start": False},   # the points script trials
    "checkpoint": {"interval": 2},
}


@pytest.mark.slow
def test_toy_search_prunes_each_failure_for_its_reason_and_records_everything(run_search, tmp_path):
    code, out, run_dir = run_search(TOY_SEARCH, "toy")
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

    # the completed trial's checkpoint holds the weights and the whole history; of the three it
    # saved (epochs 2, 4, 6), its best two by the objective stay, the latest among them
    best = found[by_point[("healthy", 0.9)]]["dir"]
    kept = sorted(best.glob("checkpoint_*"))
    state = torch.load(kept[-1] / CHECKPOINT_FILE, weights_only=True)
    assert [r["epoch"] for r in state["history"]] == [1, 2, 3, 4, 5, 6]
    assert [torch.load(k / CHECKPOINT_FILE, weights_only=True)["epoch"] for k in kept] == [4, 6]

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

    # Ray's last snapshot: a stopped trial keeps Tune's averages of the objective only, not the
    # windows of last values behind them (hpsearch.tune.lean)
    files, kept, _ = read_snapshot(run_dir)
    stopped = [json.loads(metadata) for state, metadata in json.loads(files[0].read_text())["trial_data"]
               if json.loads(state)["status"] == "TERMINATED"]
    assert kept and stopped
    assert all(m["metric_n_steps"] == {} and set(m["metric_analysis"]) == {"val_score"} for m in stopped)

    # run dir files, and what the user read
    assert read_run_info(run_dir)["state"] == "finished"
    assert load_config(run_dir / "search.yaml") == load_config(tmp_path / "toy.yaml")
    for kind in ("pruned_asha", "pruned_flatline", "pruned_exploding", "pruned_nonfinite"):
        assert any(line.strip().startswith(f"{kind} ") and "e.g. #" in line for line in out.splitlines()), out
    assert "trial  status" in out and f"run dir: {run_dir}" in out


@pytest.mark.slow
def test_a_crashed_trial_resumes_from_its_checkpoint_and_a_lasting_error_is_recorded(run_search, tmp_path):
    raw = {"model": SCRIPTED, "seed": 1, "epochs": 5,
           "params": {"crash_at": 4, "marker_dir": str(tmp_path)},
           "space": {"crash_times": {"choice": [1, 3]}},
           "warm_start": [{"crash_times": 1}, {"crash_times": 3}],
           "budget": {"num_samples": 2, "max_failures": 1},
           "scheduler": {"grace_period": 5}, "checkpoint": {"interval": 1}}
    code, out, run_dir = run_search(raw, "crash")
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
def test_the_quickstart_shows_every_kind_of_pruning_with_its_reason(run_search):
    raw = yaml.safe_load((REPO / "configs" / "quickstart.yaml").read_text(encoding="utf-8"))
    code, out, run_dir = run_search(raw, "quickstart")
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


@pytest.mark.slow
def test_healthy_trials_of_the_built_in_models_are_never_health_pruned(run_search):
    searches = {
        "triplet": {"model": "triplet", "epochs": 3,
                    "params": {"samples_per_class": 100, "data_seed": 0, "hidden_dim": 64, "embedding_dim": 16},
                    "space": {"lr": {"loguniform": [1e-3, 1e-2]}, "mining": {"choice": ["batch_all", "batch_hard"]}}},
        "symmetric": {"model": "symmetric", "epochs": 3, "params": {"num_stories": 100},
                      "space": {"lr": {"loguniform": [1e-4, 1e-3]}, "w_cycle": {"uniform": [0.25, 1.0]}}},
    }
    for name, raw in searches.items():
        raw.update(budget={"num_samples": 2, "max_failures": 0}, scheduler={"grace_period": raw["epochs"]})
        code, out, run_dir = run_search(raw, name)
        assert code == 0, out
        outcomes = read_outcomes(run_dir)
        assert len(outcomes) == 2 and {e["outcome"] for e in outcomes.values()} == {"completed"}, (name, outcomes)


def assert_user_run(run_dir: Path, done) -> list[dict]:
    assert done.returncode == 0, done.stdout + done.stderr
    outcomes = read_outcomes(run_dir)
    assert len(outcomes) == 2 and {e["outcome"] for e in outcomes.values()} == {"completed"}
    rows = [row for t in trials(run_dir).values() for row in t["rows"]]
    assert len(rows) == 6 and all(isinstance(r["val_acc"], float) for r in rows)
    return rows


@pytest.mark.slow
def test_a_user_model_in_the_working_directory_runs_through_the_cli(user_project):
    project = user_project({"my_user_model.py": USER_MODEL, "search.yaml": USER_CONFIG})
    done = hpsearch("run", "search.yaml", "--name", "mine", cwd=project)
    assert_user_run(project / "runs" / "mine", done)
    assert "outcomes: completed 2" in done.stdout


@pytest.mark.slow
def test_address_runs_the_search_on_a_ray_head_and_ships_the_user_module(tmp_path, user_project):
    """The head's workers cannot import the user's module on their own: the driver finds it on its
    PYTHONPATH (a directory the head never heard of), so it must travel in the runtime env."""
    head = LocalCluster(tmp_path, workers=0, cpus=2)
    try:
        project = user_project({"my_user_model.py": USER_MODEL, "search.yaml": USER_CONFIG})
        elsewhere = user_project({})
        env = head.client_env("driver", PYTHONPATH=str(project))
        done = hpsearch("run", str(project / "search.yaml"), "--name", "remote", "--storage", str(tmp_path / "runs"),
                        "--address", head.address, cwd=elsewhere, env=env)
        rows = assert_user_run(tmp_path / "runs" / "remote", done)
        without_token = {k: v for k, v in env.items() if not k.startswith("RAY_AUTH")}
        refused = hpsearch("run", str(project / "search.yaml"), "--storage", str(tmp_path / "runs"),
                           "--address", head.address, cwd=elsewhere, env=without_token, timeout=120)
        assert refused.returncode == 2
        assert refused.stderr.splitlines()[-1].startswith("hpsearch run: error: --address: the Ray head at ")
        assert "RAY_AUTH_MODE=token" in refused.stderr
        assert {r["train_from_runtime_env"] for r in rows} == {1.0}
        assert f"Ray cluster at {head.address}" in done.stdout
        assert read_run_info(tmp_path / "runs" / "remote")["address"] == head.address
    finally:
        survivors = head.stop()
    assert survivors == [] and marked(head.tag) == []


CONVERGING = {
    "model": SCRIPTED, "seed": 2, "epochs": 3, "params": {"curve": "healthy"},
    "space": {"quality": {"uniform": [0.2, 0.9]}},
    # the best comes first; the next three do no better, so the fourth is the last one started
    "warm_start": [{"quality": 0.9}, {"quality": 0.5}, {"quality": 0.4}, {"quality": 0.3}, {"quality": 0.6}],
    "budget": {"num_samples": 10, "max_concurrent": 1, "max_failures": 0, "converge_after": 3},
    "scheduler": {"grace_period": 3},
}


@pytest.mark.slow
def test_a_converged_search_starts_no_more_trials_and_says_why(run_search):
    code, out, run_dir = run_search(CONVERGING, "converging")
    assert code == 0, out
    assert len(read_outcomes(run_dir)) == 4 and {o["outcome"] for o in read_outcomes(run_dir).values()} == {"completed"}
    info = read_run_info(run_dir)
    assert info["state"] == "finished"
    assert info["stopped_early"].startswith("the best objective (") and "last 3 ranked trials (4 in all)" in info["stopped_early"]
    assert f"stopped early, as budget.converge_after asks: {info['stopped_early']}" in out
