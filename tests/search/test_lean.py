"""hpsearch.tune.lean: a trial Tune stops for good gives up the windows behind Tune's running
averages (and, in a search, the averages of every metric but its objective), and gets them back,
empty, when it is started again; after a snapshot, the texts Tune's
encoder kept of the windows it pickled are gone."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import ray
from ray.tune.experiment import Trial

from hpsearch.tune.lean import LeanDriver
from tests.fixtures.checkpoints import add_checkpoint, checkpointing_trial


def reported(epochs: int) -> Trial:
    trial = Trial("trainable", config={"x": 0.5}, stub=True)
    for epoch in range(1, epochs + 1):
        trial.update_last_result({"training_iteration": epoch, "train_loss": 1.0 / epoch, "val_score": 0.1 * epoch})
    return trial


def test_a_completed_trial_keeps_its_averages_and_last_result_only():
    trial = reported(3)
    averages, last = {k: dict(v) for k, v in trial.metric_analysis.items()}, dict(trial.last_result)
    LeanDriver().on_trial_complete(iteration=1, trials=[trial], trial=trial)
    assert trial.metric_n_steps == {}
    assert trial.metric_analysis == averages and trial.last_result == last


@pytest.mark.parametrize("stop", ["on_trial_complete", "on_trial_error"])
def test_an_ended_trial_keeps_the_averages_of_the_objective_only_and_no_reference_to_its_actors_answer(stop):
    trial = reported(3)
    objective = dict(trial.metric_analysis["val_score"])
    trial._default_result_or_future = ray.ObjectRef(b"\x02" * 28)
    getattr(LeanDriver(averages_of=("val_score",)), stop)(iteration=1, trials=[trial], trial=trial)
    assert trial.metric_analysis == {"val_score": objective}
    assert trial._default_result_or_future is None and trial.last_result["train_loss"] == 1.0 / 3


@pytest.mark.parametrize("averages_of", [None, ("val_score",)])
@pytest.mark.parametrize("stop", ["on_trial_complete", "on_trial_error"])
def test_a_trial_started_again_after_its_windows_were_dropped_averages_its_new_results(stop, averages_of):
    trial = reported(3)
    lean = LeanDriver(averages_of=averages_of)
    getattr(lean, stop)(iteration=1, trials=[trial], trial=trial)
    assert trial.metric_n_steps == {}
    lean.on_trial_start(iteration=2, trials=[trial], trial=trial)        # retried or resumed
    trial.update_last_result({"training_iteration": 4, "train_loss": 0.25, "val_score": 0.4})
    assert trial.metric_analysis["val_score"]["last-5-avg"] == 0.4 and trial.metric_analysis["val_score"]["max"] == 0.4
    assert len(trial.metric_n_steps["val_score"]["10"]) == 1
    assert trial.metric_analysis["train_loss"]["min"] == 0.25 and len(trial.metric_n_steps["train_loss"]["5"]) >= 1


def test_starting_a_trial_that_kept_its_windows_changes_nothing():
    trial = reported(2)
    before = {m: {n: list(w) for n, w in windows.items()} for m, windows in trial.metric_n_steps.items()}
    LeanDriver().on_trial_start(iteration=1, trials=[trial], trial=trial)
    assert {m: {n: list(w) for n, w in windows.items()} for m, windows in trial.metric_n_steps.items()} == before


def test_after_a_snapshot_the_encoders_texts_of_the_windows_are_forgotten():
    import json

    from ray.tune.utils.serialization import TuneFunctionEncoder
    from ray.util import debug

    trial = reported(2)
    json.dumps(trial.run_metadata.__dict__, cls=TuneFunctionEncoder)        # what a snapshot writes
    kept = [key for key in debug._logged if key.startswith("tune_func_encode:deque(")]
    assert len(kept) >= 2 * len(trial.metric_n_steps)
    LeanDriver().get_state()
    assert not any(key.startswith("tune_func_encode:") for key in debug._logged)


def on_disk(tmp_path) -> list[str]:
    return sorted(p.name for p in tmp_path.iterdir())


def test_a_running_trial_keeps_its_best_two_its_latest_and_the_one_the_last_snapshot_resumes_from(tmp_path):
    """Tune keeps every checkpoint (num_to_keep None); the driver deletes the rest as Tune would, but
    never the checkpoint a resume from the last published snapshot starts the trial from."""
    keeper = SimpleNamespace(published=0)
    lean, trial = LeanDriver(keeper, keep=2), checkpointing_trial()
    lean.on_trial_start(iteration=1, trials=[trial], trial=trial)

    def save(index: int, value: float) -> None:
        add_checkpoint(trial, tmp_path / f"c{index}", value)
        lean.on_trial_save(iteration=index, trials=[trial], trial=trial)      # after Tune registered it

    for index, value in enumerate([0.5, 0.4, 0.3], start=1):
        save(index, value)
    assert on_disk(tmp_path) == ["c1", "c2", "c3"]                # the best two and the latest
    keeper.published += 1
    lean.get_state()                                             # a published snapshot names c3
    save(4, 0.2)
    assert on_disk(tmp_path) == ["c1", "c2", "c3", "c4"]         # c3: what a resume would start from
    lean.get_state()                                             # a snapshot Ray wrote, not published
    save(5, 0.1)
    assert on_disk(tmp_path) == ["c1", "c2", "c3", "c5"]         # still c3; c4 neither best nor latest
    keeper.published += 1
    lean.get_state()                                             # published: it names c5
    save(6, 0.6)
    assert on_disk(tmp_path) == ["c1", "c5", "c6"]

    lean.on_trial_complete(iteration=7, trials=[trial], trial=trial)
    assert on_disk(tmp_path) == ["c1", "c6"]                     # its best two, c6 the latest too
    assert trial.checkpoint.path == str(tmp_path / "c6")


def test_a_trial_restored_from_a_snapshot_keeps_the_checkpoint_it_resumed_from_until_the_next(tmp_path):
    lean, trial = LeanDriver(SimpleNamespace(published=0), keep=1), checkpointing_trial()
    for index, value in enumerate([0.9, 0.1], start=1):
        add_checkpoint(trial, tmp_path / f"c{index}", value)   # as the snapshot restored it: latest c2
    lean.on_trial_start(iteration=1, trials=[trial], trial=trial)
    for index in (3, 4):
        add_checkpoint(trial, tmp_path / f"c{index}", 0.2)
        lean.on_trial_save(iteration=index, trials=[trial], trial=trial)
    assert on_disk(tmp_path) == ["c1", "c2", "c4"]              # c2 resumable, c4 the latest
    lean.get_state()                                            # the keeper published nothing new
    lean.on_trial_save(iteration=5, trials=[trial], trial=trial)
    assert on_disk(tmp_path) == ["c1", "c2", "c4"]


def test_a_checkpoint_a_restored_snapshot_names_but_that_is_gone_is_forgotten(tmp_path):
    """A snapshot taken before a checkpoint was deleted names it; after a resume from it, trimming
    forgets it and deletes the rest."""
    lean, trial = LeanDriver(keep=1), checkpointing_trial()
    for index, value in enumerate([0.9, 0.1, 0.2, 0.3], start=1):
        add_checkpoint(trial, tmp_path / f"c{index}", value)
    (tmp_path / "c2" / "state.pt").unlink()
    (tmp_path / "c2").rmdir()
    lean.on_trial_complete(iteration=5, trials=[trial], trial=trial)
    assert on_disk(tmp_path) == ["c1", "c4"]
    assert [r.checkpoint.path for r in trial.run_metadata.checkpoint_manager._checkpoint_results] == \
        [str(tmp_path / "c4"), str(tmp_path / "c1")]
