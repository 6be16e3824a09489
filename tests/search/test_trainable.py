"""hpsearch.tune.trainable without a Ray cluster: Ray's session calls are replaced by a recorder, so the
adapter's own behaviour (seed, device, reports, checkpoint cadence, restore, objective check) is
checked in milliseconds. The same code under real Ray is covered by test_run_e2e.py."""

from __future__ import annotations

import contextlib
import shutil
import types
from pathlib import Path

import numpy as np
import pytest
import torch

import hpsearch.tune.trainable as tr
from hpsearch.core.config import build_config
from tests.fixtures.toy_models import MINIMAL, SCRIPTED


class FakeCheckpoint:
    def __init__(self, path: str):
        self.path = path

    @classmethod
    def from_directory(cls, path: str) -> "FakeCheckpoint":
        return cls(path)

    @contextlib.contextmanager
    def as_directory(self):
        yield self.path


class FakeTune:
    """Stands in for ``ray.tune`` inside the trainable: records reports, keeps checkpoints."""

    Checkpoint = FakeCheckpoint

    def __init__(self, tmp: Path, name: str = "trial_0003_abcd1234", restore: FakeCheckpoint | None = None):
        self.tmp, self.name, self.restore = tmp, name, restore
        self.reports: list[dict] = []
        self.checkpoints: dict[int, FakeCheckpoint] = {}

    def get_context(self):
        return types.SimpleNamespace(get_trial_name=lambda: self.name)

    def get_checkpoint(self):
        return self.restore

    def report(self, metrics: dict, checkpoint: FakeCheckpoint | None = None) -> None:
        self.reports.append(dict(metrics))
        if checkpoint is not None:  # Ray copies the directory before report returns; so do we
            kept = self.tmp / f"ckpt_{metrics['epoch']}_{len(self.reports)}"
            shutil.copytree(checkpoint.path, kept)
            self.checkpoints[metrics["epoch"]] = FakeCheckpoint(str(kept))


def run_config(model: str = SCRIPTED, **overrides):
    raw = {"model": model, "seed": 7, "epochs": 4, "params": {},
           "objective": {"metric": "val_score", "mode": "max"}, "checkpoint": {"interval": 2},
           "space": {"lr": {"loguniform": [1e-4, 1e-1]}} if model == SCRIPTED else {}}
    raw.update(overrides)
    return build_config(raw)


@pytest.fixture
def fake(tmp_path, monkeypatch, one_torch_thread):
    def make(**kwargs) -> FakeTune:
        session = FakeTune(tmp_path, **kwargs)
        monkeypatch.setattr(tr, "tune", session)
        return session

    monkeypatch.setattr(tr.ray, "get_gpu_ids", lambda: [])
    return make


def test_trial_seed_is_a_pure_function_of_search_seed_and_index():
    assert tr.trial_seed(0, 1) == tr.trial_seed(0, 1)
    seeds = {tr.trial_seed(s, i) for s in range(3) for i in range(1, 50)}
    assert len(seeds) == 3 * 49
    assert all(0 <= s < 2 ** 31 for s in seeds)


def test_trial_name_carries_the_index_the_trainable_reads_back():
    trial = types.SimpleNamespace(trial_id="ab12cd34", experiment_tag="7_curve=nan,lr=0.01")
    name = tr.trial_name(trial)
    assert name == "trial_0007_ab12cd34"
    assert tr.index_from_name(name) == 7
    with pytest.raises(ValueError, match="trial_<index>_<id>"):
        tr.index_from_name("train_ab12cd34")


@pytest.mark.parametrize("cpu, threads", [(0.25, 1), (1.0, 1), (2.0, 2), (3.7, 3)])
def test_torch_threads_follow_the_trials_cpu_share(cpu, threads):
    assert tr.cpu_threads(cpu) == threads


def test_device_is_cuda_only_when_ray_gave_the_trial_a_gpu():
    assert tr.trial_device("auto", []) == "cpu"
    assert tr.trial_device("auto", [0]) == "cuda"
    assert tr.trial_device("cuda", ["0"]) == "cuda"
    with pytest.raises(RuntimeError, match="resources.gpu"):
        tr.trial_device("cuda", [])


def test_metrics_become_python_floats():
    row = tr.as_metrics({"epoch": 2, "train_loss": torch.tensor(0.5), "val_acc": np.float32(0.25), "n": 3})
    assert row == {"epoch": 2, "train_loss": 0.5, "val_acc": 0.25, "n": 3.0}
    assert all(type(v) is float for k, v in row.items() if k != "epoch")
    with pytest.raises(TypeError, match="'val_note'"):
        tr.as_metrics({"val_note": "fine"})


def test_every_epoch_reports_metrics_seed_and_health_and_checkpoints_on_the_interval(fake):
    session = fake()
    tr.trainable({"lr": 0.01}, run=run_config())
    assert [r["epoch"] for r in session.reports] == [1, 2, 3, 4]
    first = session.reports[0]
    assert {"train_loss", "train_grad_norm", "train_batch_loss_std", "val_score", "val_loss", "epoch_s",
            "seed", "health", "health_reason"} <= set(first)
    assert first["seed"] == tr.trial_seed(7, 3)
    assert all(type(r[k]) is float for r in session.reports for k in r if k.startswith(("train_", "val_")))
    assert {r["health"] for r in session.reports} == {"ok"}
    assert sorted(session.checkpoints) == [2, 4]          # interval 2, and the last epoch
    with session.checkpoints[4].as_directory() as d:
        state = tr.load_checkpoint(d)                     # torch.load(weights_only=True)
    assert state["epoch"] == 4 and state["seed"] == first["seed"]
    assert [row["epoch"] for row in state["history"]] == [1, 2, 3, 4]
    assert state["params"]["lr"] == 0.01


def test_an_unhealthy_epoch_is_reported_with_its_reason_and_checkpointed(fake):
    session = fake()
    tr.trainable({"lr": 0.01}, run=run_config(params={"curve": "nan", "onset": 3}, epochs=3,
                                              checkpoint={"interval": 5}))
    last = session.reports[-1]
    assert last["epoch"] == 3 and last["health"] == "nonfinite"
    assert "nan" in last["health_reason"] and "epoch 3" in last["health_reason"]
    assert sorted(session.checkpoints) == [3]


def test_a_restored_trial_continues_at_the_next_epoch_with_the_same_curve(fake, tmp_path):
    config = run_config(params={"curve": "healthy"}, checkpoint={"interval": 1})
    first = fake()
    tr.trainable({"lr": 0.02}, run=config)
    second = fake(restore=first.checkpoints[2])
    tr.trainable({"lr": 0.02}, run=config)
    assert [r["epoch"] for r in second.reports] == [3, 4]
    strip = lambda rows: [{k: v for k, v in r.items() if k != "epoch_s"} for r in rows]  # noqa: E731
    assert strip(second.reports) == strip(first.reports[2:])
    with second.checkpoints[4].as_directory() as d:
        assert [row["epoch"] for row in tr.load_checkpoint(d)["history"]] == [1, 2, 3, 4]


def test_a_finished_checkpoint_reports_nothing_more(fake):
    config = run_config(checkpoint={"interval": 1})
    first = fake()
    tr.trainable({"lr": 0.02}, run=config)
    again = fake(restore=first.checkpoints[4])
    tr.trainable({"lr": 0.02}, run=config)
    assert again.reports == []


def test_a_user_model_that_does_not_report_the_objective_fails_naming_it(fake):
    session = fake()
    config = run_config(MINIMAL, params={"metric": "acc"}, objective={"metric": "val_f1", "mode": "max"})
    with pytest.raises(ValueError) as err:
        tr.trainable({}, run=config)
    message = str(err.value)
    assert "'val_f1'" in message and "val_acc" in message and "train_loss" in message
    assert session.reports == []


def test_a_trial_runs_in_the_drivers_working_directory_when_this_node_has_it(fake, tmp_path, monkeypatch):
    driver = tmp_path / "project"
    driver.mkdir()
    monkeypatch.chdir(tmp_path)                      # restored after the test
    fake()
    tr.trainable({"lr": 0.01}, run=run_config(epochs=2), workdir=str(driver))
    assert Path.cwd() == driver                      # relative data paths resolve as the user wrote them
    tr.trainable({"lr": 0.01}, run=run_config(epochs=2), workdir=str(tmp_path / "not-on-this-node"))
    assert Path.cwd() == driver
