"""The rules behind `hpsearch resume`, on hand-written data (no Ray): how Ray's snapshot is
reconciled with the run dir's own records, the scheduler's persisted decisions and the trials it
retires, the signal handler, the result log, and hpsearch's kept copy of Ray's snapshot. The real
interruptions are in test_resume.py.
"""

from __future__ import annotations

import json
import signal
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import pytest

from hpsearch.core.config import build_config, dump_config
from hpsearch.core.rundir import SCHEDULER_STATE, OutcomeLog, read_trial_results
from hpsearch.driver.resume import ORPHAN_REASON, check_resumable, reconcile, retire_finished, scheduler_state
from hpsearch.tune.scheduler import HealthASHA
from hpsearch.tune.snapshot import RayTrial, keep_snapshot, placed_name
from tests.fixtures.resume_runs import SESSION, TOY, ray_files

# ----------------------------------------------------------------------------------------------
# Reconciling Ray's snapshot with the run dir's own records.

def rows(last: int) -> list[dict]:
    return [{"training_iteration": e, "epoch": e, "val_score": 0.1 * e} for e in range(1, last + 1)]


def outcome(kind: str, epoch: int) -> dict:
    return {"outcome": kind, "reason": f"{kind} at {epoch}", "epoch": epoch}


RECONCILE = [
    # name, Ray's status, rows reported, outcomes.jsonl entry, scheduler decision, expected
    ("ended in Ray's snapshot: left as it is", "TERMINATED", 4, outcome("completed", 4), None, "none"),
    ("completed after the snapshot: retired", "RUNNING", 4, outcome("completed", 4), None, "retire completed"),
    ("ASHA-pruned after the snapshot: retired", "RUNNING", 2, outcome("pruned_asha", 2), None,
     "retire pruned_asha"),
    ("pruned, but its last row never reached the disk: resumed", "RUNNING", 1, outcome("pruned_asha", 2),
     None, "resume"),
    ("stop decided, outcome never written: recorded, retired", "PENDING", 2, None, outcome("pruned_asha", 2),
     "record+retire pruned_asha"),
    ("reached max_epochs, outcome never written: completed", "RUNNING", 4, None, None,
     "record+retire completed"),
    ("failed after the snapshot: retired as an error", "RUNNING", 3, outcome("error", 3), None, "retire error"),
    ("still training: resumed from its checkpoint", "RUNNING", 3, None, None, "resume"),
    ("never started: resumed", "PENDING", 0, None, None, "resume"),
]


@pytest.mark.parametrize("status, reported, entry, decided, expected", [c[1:] for c in RECONCILE],
                         ids=[c[0] for c in RECONCILE])
def test_reconcile(status, reported, entry, decided, expected):
    got = reconcile({"t": RayTrial("t", status, "trial_0001_t")}, {"t": rows(reported)} if reported else {},
                    {"t": entry} if entry else {}, {"t": decided} if decided else {}, max_epochs=4)
    kind = expected.split()[-1]
    if expected == "none":
        assert (got.retire, got.resume, got.record) == ({}, [], [])
    elif expected == "resume":
        assert (got.resume, got.retire, got.record) == (["t"], {}, [])
    else:
        assert got.resume == [] and got.retire["t"]["outcome"] == kind
        assert got.retire["t"]["result"] == (rows(reported)[-1] if reported else None)
        recorded = [r for r in got.record if r[0] == "t"]
        assert [r[1] for r in recorded] == ([kind] if expected.startswith("record") else [])


def test_trials_ray_never_saved_are_orphans_and_an_unfinished_one_is_an_error():
    got = reconcile({}, {"done": rows(4), "half": rows(2)}, {"pruned": outcome("pruned_asha", 2)}, {}, max_epochs=4)
    assert got.orphans == ["done", "half", "pruned"]
    assert sorted(got.record) == [("done", "completed", "", 4), ("half", "error", ORPHAN_REASON, 2)]


# ----------------------------------------------------------------------------------------------
# The scheduler's persisted decisions.

def asha(tmp_path: Path, outcomes: OutcomeLog) -> HealthASHA:
    return HealthASHA("val_acc", "max", max_t=8, grace_period=2, reduction_factor=2, outcomes=outcomes,
                      state_path=tmp_path / SCHEDULER_STATE)


def report(scheduler, trial_id: str, epoch: int, value: float) -> str:
    return scheduler.on_trial_result(None, SimpleNamespace(trial_id=trial_id),
                                     {"training_iteration": epoch, "val_acc": value, "health": "ok"})


def test_every_decision_is_on_disk_before_it_takes_effect_and_a_restored_stop_stands(tmp_path):
    outcomes = OutcomeLog(tmp_path)
    first = asha(tmp_path, outcomes)
    for trial_id, value in (("a", 0.9), ("b", 0.8), ("c", 0.1)):
        assert report(first, trial_id, 1, value) == "CONTINUE"          # no rung at epoch 1
        decision = report(first, trial_id, 2, value)                    # rung 2: a decision
        assert scheduler_state(tmp_path) == json.loads(json.dumps(first.state()))
        assert trial_id in first.bracket.rungs[0].scores
    assert decision == "STOP" and first.bracket.decided["c"].outcome == "pruned_asha"
    lines = (tmp_path / "outcomes.jsonl").read_text().count("\n")

    # after an interruption: a fresh scheduler with the state from disk
    second = asha(tmp_path, OutcomeLog(tmp_path))
    second.restore_state(scheduler_state(tmp_path))
    assert report(second, "c", 1, 0.1) == "CONTINUE"       # re-running an epoch before its stop
    assert report(second, "c", 2, 0.99) == "STOP"          # the decision stands, whatever it reports now
    assert (tmp_path / "outcomes.jsonl").read_text().count("\n") == lines   # and is not recorded twice
    assert report(second, "d", 2, 0.5) == "STOP"            # ranked against a, b and c from before
    assert set(second.bracket.rungs[0].scores) == {"a", "b", "c", "d"}


class FakeTrial(SimpleNamespace):
    pass


def test_retired_trials_are_closed_at_the_first_step_and_only_those(tmp_path):
    """Trials that ended after Ray's last snapshot, handed to the scheduler's next step: each one Ray
    holds as waiting is told to the searcher once, with its outcome, and stopped without starting."""
    from ray.tune.experiment import Trial

    scheduler = asha(tmp_path, OutcomeLog(None))
    trials = [FakeTrial(trial_id="done", status=Trial.PENDING), FakeTrial(trial_id="failed", status=Trial.PENDING),
              FakeTrial(trial_id="todo", status=Trial.PENDING), FakeTrial(trial_id="old", status=Trial.TERMINATED)]
    told, stopped = [], []
    controller = SimpleNamespace(
        get_trials=lambda: trials, stop_trial=lambda t: (stopped.append(t.trial_id), setattr(t, "status", "TERMINATED")),
        search_alg=SimpleNamespace(on_trial_complete=lambda tid, result=None, error=False: told.append((tid, result, error))),
        _live_trials=set(), get_live_trials=lambda: [])
    last = {"training_iteration": 4, "val_acc": 0.7}
    finished = {"done": {"outcome": "completed", "result": last}, "failed": {"outcome": "error", "result": None},
                "old": {"outcome": "completed", "result": last}}
    scheduler.on_next_step(partial(retire_finished, finished))
    scheduler.choose_trial_to_run(controller)
    scheduler.choose_trial_to_run(controller)
    assert stopped == ["done", "failed"]
    assert told == [("done", last, False), ("failed", None, True)]


# ----------------------------------------------------------------------------------------------
# Signals and the result log.

def test_a_signal_inside_fit_asks_tune_to_stop_and_a_second_one_stops_at_once():
    from hpsearch.driver.runner import GracefulStop

    asked = []
    stop = GracefulStop()
    before = signal.getsignal(signal.SIGUSR1)
    try:
        with stop.installed():
            assert signal.getsignal(signal.SIGTERM) is stop and signal.getsignal(signal.SIGINT) is stop
            with stop.tune_running():
                signal.signal(signal.SIGUSR1, lambda s, f: asked.append(s))   # as Tune does in fit()
                stop(signal.SIGTERM, None)
                assert asked == [signal.SIGTERM] and (stop.exit_code, stop.name) == (143, "SIGTERM")
                with pytest.raises(KeyboardInterrupt):
                    stop(signal.SIGINT, None)
        assert signal.getsignal(signal.SIGTERM) is not stop
    finally:
        signal.signal(signal.SIGUSR1, before)
    outside = GracefulStop()
    with pytest.raises(KeyboardInterrupt):
        outside(signal.SIGINT, None)                       # before fit(): stop at once
    assert outside.exit_code == 130


def test_result_log_writes_each_row_to_the_run_dir_and_closes_a_torn_line(tmp_path):
    from hpsearch.tune.progress import ResultLog

    trial_dir = tmp_path / "trial_0001_x"
    trial_dir.mkdir()
    (trial_dir / "result.json").write_text('{"training_iteration": 1}\n{"training_iter', encoding="utf-8")
    log = ResultLog()
    trial = SimpleNamespace(trial_id="x", path=str(trial_dir), config={"quality": 0.5})
    for epoch in (2, 3):
        log.on_trial_result(0, [], trial, {"training_iteration": epoch, "val_score": 0.1})
    log.on_trial_complete(0, [], trial)
    assert [r["training_iteration"] for r in read_trial_results(trial_dir)] == [1, 2, 3]
    assert json.loads((trial_dir / "params.json").read_text()) == {"quality": 0.5}


def test_an_outcome_log_catches_up_with_what_another_copy_appended_and_the_last_record_wins(tmp_path):
    ours, theirs = OutcomeLog(tmp_path), OutcomeLog(tmp_path)   # a searcher restored by Ray holds its own
    ours.record("a", "completed", "", 3)
    theirs.record("b", "pruned_asha", "below the rung", 2)
    theirs.record("a", "pruned_flatline", "flat", 3)
    assert ours.get("b") is None                                 # not read until asked to catch up
    ours.catch_up()
    assert ours.get("b")["outcome"] == "pruned_asha"
    assert ours.get("a")["outcome"] == "pruned_flatline"         # the file's order decides, as a fresh read
    assert ours.all() == OutcomeLog(tmp_path).all()


def test_an_outcome_log_leaves_a_torn_line_for_later_and_rereads_a_replaced_file(tmp_path):
    log = OutcomeLog(tmp_path)
    path = tmp_path / "outcomes.jsonl"
    whole = json.dumps({"trial_id": "a", "outcome": "completed"}) + "\n"
    torn = json.dumps({"trial_id": "b", "outcome": "error"})
    path.write_text(whole + torn[:10], encoding="utf-8")
    log.catch_up()
    assert set(log.all()) == {"a"}
    with path.open("a", encoding="utf-8") as fh:                 # the writer finishes its line
        fh.write(torn[10:] + "\n")
    log.catch_up()
    assert log.get("b")["outcome"] == "error"
    path.write_text(json.dumps({"trial_id": "c", "outcome": "completed"}) + "\n", encoding="utf-8")
    log.catch_up()                                               # shorter than what was read: from the start
    assert log.get("c")["outcome"] == "completed"


def test_placed_files_sort_after_rays_own_file_of_the_session_and_before_a_later_session():
    for pattern in ("experiment_state-{}.json", "search_gen_state-{}.json", "searcher-state-{}.pkl"):
        ours = placed_name(pattern.format(SESSION))
        names = sorted([pattern.format(SESSION), ours, pattern.format("2026-01-02_03-04-06")])
        assert names.index(ours) == 1 and placed_name(ours) == ours
        assert ours.startswith(pattern.split("{")[0]) and ours.endswith(pattern.split("}")[1])


def test_keep_snapshot_writes_the_free_slot_then_publishes_it(tmp_path):
    staging, run_dir = tmp_path / "staging", tmp_path / "run"
    staging.mkdir()
    run_dir.mkdir()
    assert keep_snapshot(staging, run_dir) is None                    # Ray has written nothing yet
    published = []
    for step in range(3):
        for name, data in ray_files({f"t{i}": "RUNNING" for i in range(step + 1)}).items():
            (staging / name).write_bytes(data)
        manifest = keep_snapshot(staging, run_dir)
        published.append(manifest["slot"])
        assert check_resumable_trials(run_dir) == {f"t{i}" for i in range(step + 1)}
    assert published == ["a", "b", "a"]


def check_resumable_trials(run_dir: Path) -> set[str]:
    dump_config(build_config(TOY), run_dir / "search.yaml")
    (run_dir / "run.json").write_text('{"state": "running"}', encoding="utf-8")
    import optuna

    from hpsearch.core.rundir import study_storage

    optuna.create_study(study_name="hpsearch", storage=study_storage(run_dir), direction="maximize", load_if_exists=True)
    return set(check_resumable(run_dir).trials)


def test_optuna_trials_ray_never_saved_are_closed_and_an_unstarted_point_is_asked_again(tmp_path):
    import optuna

    from hpsearch.core.rundir import study_storage
    from hpsearch.driver.resume import close_orphans
    from hpsearch.tune.searcher import inner_searcher, make_searcher

    config = build_config(TOY)
    first = inner_searcher(make_searcher(config, tmp_path, OutcomeLog(tmp_path)))
    points = {trial_id: first.suggest(trial_id) for trial_id in ("known", "unstarted", "done", "half")}
    outcomes = OutcomeLog(tmp_path)
    outcomes.record("done", "completed", "", 2)
    rows_of = {"done": [{"training_iteration": 1, "val_score": 0.4}, {"training_iteration": 2, "val_score": 0.5}],
               "half": [{"training_iteration": 1, "val_score": 0.3}]}

    fresh = inner_searcher(make_searcher(config, tmp_path, OutcomeLog(tmp_path)))   # as `hpsearch resume` builds it
    close_orphans(fresh, {"known"}, rows_of, outcomes.all())
    study = optuna.load_study(study_name="hpsearch", storage=study_storage(tmp_path))
    state = {t.user_attrs.get("trial_id"): t for t in study.trials if t.user_attrs.get("trial_id")}
    assert state["known"].state.name == "RUNNING"                 # Ray resumes it and tells its end
    assert (state["done"].state.name, state["done"].value) == ("COMPLETE", 0.5)
    for lost in ("unstarted", "half"):
        assert state[lost].state.name == "FAIL" and state[lost].user_attrs["reason"] == ORPHAN_REASON
    assert fresh.suggest("next") == points["unstarted"]          # asked again ("half" ran, so it is not)


def test_ray_snapshots_are_paced_by_their_cost_when_auto(monkeypatch):
    """Every step while a snapshot is cheap, at most 5% of the driver's time on them, never more
    than 5 s apart; a fixed TUNE_GLOBAL_CHECKPOINT_S is left as the user set it."""
    from ray.tune.execution.experiment_state import _ExperimentCheckpointManager

    from hpsearch.tune.snapshot import pace_snapshots

    # the pacing replaces a method of Ray's class; put Ray's own back after this test
    monkeypatch.setattr(_ExperimentCheckpointManager, "_update_auto_checkpoint_time",
                        _ExperimentCheckpointManager._update_auto_checkpoint_time)
    pace_snapshots()
    manager = object.__new__(_ExperimentCheckpointManager)
    manager._auto_checkpoint_enabled, manager._checkpoint_period = True, 10.0
    manager._update_auto_checkpoint_time(time_taken=0.002)
    assert abs(manager._checkpoint_period - 0.038) < 1e-9         # 2 ms snapshot: the next 38 ms on
    manager._update_auto_checkpoint_time(time_taken=1.0)
    assert manager._checkpoint_period == 5.0
    manager._auto_checkpoint_enabled, manager._checkpoint_period = False, 30.0
    manager._update_auto_checkpoint_time(time_taken=0.002)
    assert manager._checkpoint_period == 30.0
