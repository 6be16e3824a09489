"""TensorBoard and MLflow, opt-in in the config's ``log`` section: a search with both leaves event
files in each trial's folder and one MLflow run per trial (a file store in the run dir), with every
epoch's metrics, the trial's seed and its outcome; a resumed search goes on logging to the same
places; the section is checked like any other; a tracker asked for but not installed is refused
before Ray is imported, naming the extra to install."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from hpsearch.core.config import build_config
from hpsearch.core.rundir import read_outcomes, read_trial_results
from hpsearch.core.sections import LogConfig, MlflowConfig
from hpsearch.models.config import ConfigError
from hpsearch.tune.trackers import MLFLOW_STORE
from tests.fixtures.cli import HPSEARCH, RAY_IMPORTED, block_ray, clean_env
from tests.fixtures.toy_models import SCRIPTED
from tests.fixtures.trackers import block_module, metric_history, mlflow_runs, tensorboard_scalars

EPOCHS = 3
SEARCH = {
    "model": SCRIPTED,
    "seed": 3,
    "epochs": EPOCHS,
    "space": {"curve": {"choice": ["healthy", "constant"]}, "lr": {"loguniform": [1e-3, 1e-1]}},
    # a completed trial and a health-pruned one at least, so the outcome tags differ
    "warm_start": [{"curve": "healthy"}, {"curve": "constant"}],
    "budget": {"num_samples": 4, "max_failures": 0},
    "scheduler": {"grace_period": EPOCHS},
    "log": {"tensorboard": True, "mlflow": True},
}


# what Tune's TBXLoggerCallback does not log as scalars (it logs the rest)
TUNE_LEAVES_OUT = {"pid", "timestamp", "time_total_s", "training_iteration"}


def numeric(row: dict) -> set[str]:
    """The keys of a report whose values are numbers (not text, not the nested config)."""
    return {k for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


@pytest.mark.slow
def test_a_search_logs_every_trial_to_tensorboard_and_mlflow(run_search, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")      # MLflow 3 reads a file store only when told
    code, out, run_dir = run_search(SEARCH, "tracked")
    assert code == 0, out
    outcomes = read_outcomes(run_dir)
    results = {rows[0]["trial_id"]: (trial_dir, rows) for trial_dir in sorted(run_dir.glob("trial_*"))
               if (rows := read_trial_results(trial_dir))}
    assert len(results) == 4 and set(outcomes) == set(results)

    for trial_dir, rows in results.values():
        scalars = tensorboard_scalars(trial_dir)
        losses = scalars[scalars["tag"] == "ray/tune/train_loss"].sort_values("step")
        assert list(losses["step"]) == list(range(1, len(rows) + 1))
        assert list(losses["value"]) == pytest.approx([r["train_loss"] for r in rows], rel=1e-6)
        # every numeric value of the report, but for those Tune keeps out of TensorBoard
        assert {f"ray/tune/{k}" for k in numeric(rows[-1]) - TUNE_LEAVES_OUT} <= set(scalars["tag"])

    uri = (run_dir / MLFLOW_STORE).as_uri()
    runs = mlflow_runs(uri, "tracked")
    assert len(runs) == 4
    for _, run in runs.iterrows():
        trial_id = run["tags.trial_id"]
        rows = results[trial_id][1]
        assert run["tags.outcome"] == outcomes[trial_id]["outcome"]
        assert run["tags.reason"] == outcomes[trial_id]["reason"]
        assert run["params.seed"] == str(rows[0]["seed"])
        assert run["params.curve"] in ("healthy", "constant")
        for key in ("train_loss", "train_batch_loss_std", "val_score", "val_loss"):
            assert metric_history(uri, run["run_id"], key) == [
                (r["epoch"], pytest.approx(r[key], rel=1e-9)) for r in rows], key
        assert {f"metrics.{k}" for k in numeric(rows[-1])} <= set(runs.columns)
        assert "metrics.health" not in runs.columns and "metrics.config/curve" not in runs.columns
    assert {o["outcome"] for o in outcomes.values()} >= {"completed", "pruned_flatline"}


def base(**log):
    return {"model": SCRIPTED, "epochs": 2, "space": {"lr": {"loguniform": [1e-3, 1e-1]}}, "log": log}


def test_log_is_off_by_default_and_takes_true_or_settings():
    assert build_config({"model": SCRIPTED}, search=False).log == LogConfig()
    config = build_config(base(tensorboard=True, mlflow=True))
    assert config.log == LogConfig(tensorboard=True, mlflow=MlflowConfig())
    config = build_config(base(mlflow={"tracking_uri": "http://mlflow:5000", "experiment": "mine"}))
    assert config.log.mlflow == MlflowConfig("http://mlflow:5000", "mine")
    assert build_config(config.to_dict()).log == config.log      # search.yaml reads back the same


@pytest.mark.parametrize(("log", "message"), [
    ({"tensorbord": True}, "log.tensorbord: unknown key (did you mean 'tensorboard'?)"),
    ({"mlflow": {"experimnt": "x"}}, "log.mlflow.experimnt: unknown key (did you mean 'experiment'?)"),
    ({"mlflow": "yes"}, "log.mlflow: got 'yes', expected true, false or {tracking_uri: URI, experiment: NAME}"),
    ({"tensorboard": 1}, "log.tensorboard: got 1, expected true or false"),
])
def test_a_wrong_log_section_is_one_line_naming_the_field(log, message):
    with pytest.raises(ConfigError) as err:
        build_config(base(**log))
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


@pytest.mark.parametrize(("tracker", "module", "extra"), [
    ("tensorboard", "tensorboardX", "tensorboard"),
    ("mlflow", "mlflow", "mlflow"),
])
def test_a_tracker_that_is_not_installed_is_refused_before_ray_starts(tracker, module, extra, tmp_path,
                                                                       config_file):
    blocked = block_module(block_ray(tmp_path / "blocked"), module)
    config = config_file(base(**{tracker: True}))
    result = subprocess.run([str(HPSEARCH), "run", str(config), "--storage", str(tmp_path / "runs")],
                            cwd=tmp_path, env=clean_env(PYTHONPATH=str(blocked)), capture_output=True, text=True)
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert result.returncode != RAY_IMPORTED
    lines = result.stderr.strip().splitlines()
    assert lines == [f'hpsearch run: error: log.{tracker}: {module} is not installed; expected it installed '
                     f'(pip install "hpsearch[{extra}]") or log.{tracker}: false'], result.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


RESUMED = {**SEARCH, "warm_start": [], "space": {"lr": {"loguniform": [1e-3, 1e-1]}},
           "params": {"epoch_sleep": 1.0}, "budget": {"num_samples": 2, "max_failures": 0}}


@pytest.mark.slow
def test_a_resumed_search_logs_to_the_same_places(run_search, tmp_path, monkeypatch):
    from hpsearch.driver import runner

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")

    def interrupt_after_the_first_epoch(run_dir):
        while not any(read_trial_results(d) for d in run_dir.glob("trial_*")):
            time.sleep(0.1)
        os.kill(os.getpid(), signal.SIGINT)      # as Ctrl-C does: the search stops gracefully

    code, out, run_dir = run_search(RESUMED, "resumed", during=interrupt_after_the_first_epoch)
    assert code == 130, out
    with (tmp_path / "resume.out").open("w", encoding="utf-8") as stream:
        assert runner.resume(run_dir, interval_s=0.5, stream=stream) == 0
    outcomes = read_outcomes(run_dir)
    assert len(outcomes) == 2

    uri = (run_dir / MLFLOW_STORE).as_uri()
    runs = mlflow_runs(uri, "resumed")
    assert (runs["status"] == "KILLED").any()          # a trial was stopped part-way and continued
    for trial_id, entry in outcomes.items():
        mine = runs[runs["tags.trial_id"] == trial_id]
        finished = mine[mine["status"] == "FINISHED"]
        assert len(finished) == 1 and finished.iloc[0]["tags.outcome"] == entry["outcome"]
        assert set(mine["status"]) <= {"FINISHED", "KILLED"}        # nothing left RUNNING
        steps = {step for run_id in mine["run_id"] for step, _ in metric_history(uri, run_id, "train_loss")}
        assert steps == set(range(1, entry["epoch"] + 1))
        trial_dir = next(run_dir.glob(f"trial_*_{trial_id}"))
        scalars = tensorboard_scalars(trial_dir)
        assert set(scalars[scalars["tag"] == "ray/tune/train_loss"]["step"]) == steps
