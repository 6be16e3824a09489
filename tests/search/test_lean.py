"""hpsearch.tune.lean: a trial Tune stops for good gives up the windows behind Tune's running
averages; a failed one, which a resume may run again, keeps them and takes further results."""

from __future__ import annotations

from ray.tune.experiment import Trial

from hpsearch.tune.lean import CompactFinished


def reported(epochs: int) -> Trial:
    trial = Trial("trainable", config={"x": 0.5}, stub=True)
    for epoch in range(1, epochs + 1):
        trial.update_last_result({"training_iteration": epoch, "train_loss": 1.0 / epoch, "val_score": 0.1 * epoch})
    return trial


def test_a_completed_trial_keeps_its_averages_and_last_result_only():
    trial = reported(3)
    averages, last = {k: dict(v) for k, v in trial.metric_analysis.items()}, dict(trial.last_result)
    CompactFinished().on_trial_complete(iteration=1, trials=[trial], trial=trial)
    assert trial.metric_n_steps == {}
    assert trial.metric_analysis == averages and trial.last_result == last
    assert trial.metric_analysis["val_score"]["last-5-avg"] == averages["val_score"]["last-5-avg"]


def test_a_failed_trial_keeps_its_windows_and_goes_on_averaging():
    trial = reported(3)
    CompactFinished().on_trial_error(iteration=1, trials=[trial], trial=trial)
    assert len(trial.metric_n_steps["val_score"]["5"]) == 3
    trial.update_last_result({"training_iteration": 4, "train_loss": 0.25, "val_score": 0.4})
    assert abs(trial.metric_analysis["val_score"]["last-5-avg"] - 0.25) < 1e-12
