"""Interrupting a search and resuming it.

Slow: a real `hpsearch run` (a subprocess with its own local Ray) stopped at about half of the
search by SIGKILL, SIGTERM or SIGINT, then `hpsearch resume`: every trial finishes, no finished
trial trains again, no epoch is missing or shown twice, ASHA-pruned trials stay pruned and later
rungs hold the trials ranked before the interruption; SIGTERM/SIGINT stop gracefully with 143/130.
Every process the driver started is tracked and none is left alive.

Fast: what resume refuses (one line naming the file, nothing in the run dir changed) on hand-built
run dirs, and the lock that tells a running search from one whose driver was killed. The rules
behind resume, on hand-written data: test_resume_rules.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import optuna
import psutil
import pytest
import yaml

from hpsearch.core.rundir import (
    SCHEDULER_CHANGES,
    SCHEDULER_STATE,
    StateLog,
    hold_lock,
    lock_held,
    read_outcomes,
    read_trial_results,
    study_storage,
)
from hpsearch.core.rungs import Bracket
from hpsearch.driver.resume import check_resumable, scheduler_state
from hpsearch.models.config import ConfigError
from hpsearch.results.report import load_report, read_run
from tests.fixtures.cli import HPSEARCH, REPO
from tests.fixtures.cluster import kill_now
from tests.fixtures.resume_runs import SESSION, fake_run
from tests.fixtures.toy_models import SCRIPTED

# ----------------------------------------------------------------------------------------------
# Hand-built run dirs (no Ray): tests.fixtures.resume_runs.

def digest(run_dir: Path) -> dict[str, str]:
    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run_dir.rglob("*")) if p.is_file()}


def truncate(path: Path, keep: int = 0) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def kept_file(run_dir: Path, pattern: str) -> Path:
    manifest = json.loads((run_dir / "snapshot" / "manifest.json").read_text())
    return next((run_dir / "snapshot" / manifest["slot"]).glob(pattern))


def torn_scheduler_state(run_dir: Path) -> Path:
    (run_dir / SCHEDULER_STATE).parent.mkdir()
    (run_dir / SCHEDULER_STATE).write_text('{"rungs": [', encoding="utf-8")
    return run_dir / SCHEDULER_STATE


def foreign_scheduler_change(run_dir: Path) -> Path:
    """A whole scheduler state, then a change naming a rung it does not have."""
    log = StateLog(run_dir / SCHEDULER_STATE, run_dir / SCHEDULER_CHANGES)
    log.write(Bracket("val_acc", "max", max_t=8, grace_period=2, reduction_factor=2).to_json())
    log.append([{"trial": "a", "rung": 3.0, "score": 0.5}])
    return run_dir / SCHEDULER_CHANGES


def unloadable_scheduler_state(run_dir: Path) -> Path:
    """A whole scheduler state without its settings, then a change after it."""
    log = StateLog(run_dir / SCHEDULER_STATE, run_dir / SCHEDULER_CHANGES)
    log.write({"version": 3, "rungs": []})
    log.append([{"trial": "a", "exempt": True}])
    return run_dir / SCHEDULER_STATE


REFUSED = [
    # name, damage(run_dir) -> the file the message must name, kept copy?
    ("search.yaml missing", lambda d: (d / "search.yaml").unlink() or d / "search.yaml", True),
    ("run.json missing", lambda d: (d / "run.json").unlink() or d / "run.json", True),
    ("run.json truncated", lambda d: truncate(d / "run.json", 7) or d / "run.json", True),
    ("kept experiment state truncated",
     lambda d: truncate(kept_file(d, "experiment_state-*"), 50) or kept_file(d, "experiment_state-*"), True),
    ("kept searcher state truncated",
     lambda d: truncate(kept_file(d, "searcher-state-*"), 5) or kept_file(d, "searcher-state-*"), True),
    ("manifest truncated", lambda d: truncate(d / "snapshot" / "manifest.json", 9)
     or d / "snapshot" / "manifest.json", True),
    ("no kept copy, Ray's experiment state truncated",
     lambda d: truncate(d / f"experiment_state-{SESSION}.json", 100) or d / f"experiment_state-{SESSION}.json",
     False),
    ("no kept copy, Ray's experiment state missing",
     lambda d: (d / f"experiment_state-{SESSION}.json").unlink() or d / "experiment_state-*.json", False),
    ("no kept copy, Ray's searcher state truncated",
     lambda d: truncate(d / f"searcher-state-{SESSION}.pkl", 10) or d / f"searcher-state-{SESSION}.pkl", False),
    ("scheduler state truncated", lambda d: torn_scheduler_state(d), True),
    ("scheduler change that does not fit its state", foreign_scheduler_change, True),
    ("scheduler state that does not load, with changes after it", unloadable_scheduler_state, True),
    ("Optuna study missing", lambda d: (d / "optuna.journal").unlink() or d / "optuna.journal", True),
    ("Optuna study with a line that is no journal entry",
     lambda d: (d / "optuna.journal").open("ab").write(b"[]\n{}\n") and d / "optuna.journal", True),
    ("Optuna study in SQLite, from an older hpsearch",
     lambda d: (d / "optuna.journal").rename(d / "optuna.db") or d / "optuna.db", True),
]


def test_a_journal_line_torn_by_a_kill_is_cut_and_the_study_reads_on(tmp_path):
    """A SIGKILL during Optuna's append leaves half a line (and the writer's lock): resume accepts
    the run dir, cuts the half line and removes the lock before the study is opened again, so the
    next write starts a line of its own."""
    from hpsearch.driver.resume import repair_journal

    run_dir = fake_run(tmp_path)
    journal = run_dir / "optuna.journal"
    whole = journal.read_bytes()
    journal.write_bytes(whole + b'{"op_code": 4, "worker_id": "x", "study_id"')
    (run_dir / "optuna.journal.lock").symlink_to(journal)
    check_resumable(run_dir)                                        # a torn last line is no refusal
    repair_journal(run_dir)
    assert journal.read_bytes() == whole and not (run_dir / "optuna.journal.lock").is_symlink()
    study = optuna.load_study(study_name="hpsearch", storage=study_storage(run_dir))
    study.ask()
    study.ask()
    assert len(optuna.load_study(study_name="hpsearch", storage=study_storage(run_dir)).trials) == 2


@pytest.mark.parametrize("damage, kept", [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_resume_refuses_a_damaged_run_dir_naming_the_file_and_changes_nothing(tmp_path, damage, kept):
    run_dir = fake_run(tmp_path, kept=kept)
    named = damage(run_dir)
    before = digest(run_dir)
    with pytest.raises(ConfigError) as refused:
        check_resumable(run_dir)
    message = str(refused.value)
    assert "\n" not in message and str(named) in message and "refusing to resume" in message
    assert digest(run_dir) == before


def test_resume_refuses_a_finished_run(tmp_path):
    with pytest.raises(ConfigError, match="finished.*nothing to resume"):
        check_resumable(fake_run(tmp_path, state="finished"))


def test_the_kept_copy_is_used_when_rays_own_state_file_was_left_truncated(tmp_path):
    run_dir = fake_run(tmp_path, {"aaa": "TERMINATED", "bbb": "RUNNING"})
    truncate(run_dir / f"experiment_state-{SESSION}.json")          # what a SIGKILL mid-sync leaves
    snapshot = check_resumable(run_dir)
    assert snapshot.kept and snapshot.files[0].parent.parent.name == "snapshot"
    assert {t: r.status for t, r in snapshot.trials.items()} == {"aaa": "TERMINATED", "bbb": "RUNNING"}


def test_the_cli_refuses_a_truncated_state_in_one_line_before_anything_starts(tmp_path, no_ray_env):
    run_dir = fake_run(tmp_path, kept=False)
    truncate(run_dir / f"experiment_state-{SESSION}.json", 30)
    before = digest(run_dir)
    done = subprocess.run([str(HPSEARCH), "resume", str(run_dir)], capture_output=True, text=True, timeout=60,
                          cwd=REPO, env=no_ray_env)      # exit 2, not the stub's code: Ray was never imported
    assert done.returncode == 2 and done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith("hpsearch resume: error: resume: Ray's experiment state is unreadable or truncated")
    assert f"experiment_state-{SESSION}.json" in line
    assert digest(run_dir) == before
    assert not list((run_dir).glob("*~hpsearch*"))


def test_a_run_dir_in_use_is_refused_and_the_report_tells_running_from_interrupted(tmp_path):
    run_dir = fake_run(tmp_path, state="running")
    assert read_run(run_dir).state == "running"           # a run dir without a lock: nothing to go by
    hold_lock(run_dir).close()                            # a driver held it and is gone (killed)
    assert read_run(run_dir).state == "interrupted"
    lock = hold_lock(run_dir)
    try:
        assert lock_held(run_dir) is True and read_run(run_dir).state == "running"
        done = subprocess.run([str(HPSEARCH), "resume", str(run_dir)], capture_output=True, text=True,
                              timeout=60, cwd=REPO)
        assert done.returncode == 2 and "is in use" in done.stderr and len(done.stderr.splitlines()) == 1
    finally:
        lock.close()
    assert lock_held(run_dir) is False


# ----------------------------------------------------------------------------------------------
# Real interruptions (slow).

KILL_SEARCH = {
    "model": SCRIPTED, "seed": 3, "epochs": 8, "params": {"epoch_sleep": 0.3},
    "space": {"quality": {"uniform": [0.2, 0.9]}},
    # two good trials set the rungs; the next two fall below them at epoch 2; the last two finish
    "warm_start": [{"quality": 0.6}, {"quality": 0.7}, {"quality": 0.3}, {"quality": 0.35},
                   {"quality": 0.8}, {"quality": 0.85}],
    # one trial at a time: ASHA's rungs then fill in warm-start order, so the uninterrupted end
    # below is fixed and a resumed search must reach exactly it
    "budget": {"num_samples": 6, "max_failures": 0, "max_concurrent": 1},
    "scheduler": {"grace_period": 2, "reduction_factor": 2, "keep_warm_start": False},   # the points script trials
    "resources": {"cpu": 1}, "checkpoint": {"interval": 1},
}
EXPECTED = {0.6: ("completed", 8), 0.7: ("completed", 8), 0.3: ("pruned_asha", 2), 0.35: ("pruned_asha", 2),
            0.8: ("completed", 8), 0.85: ("completed", 8)}


class Driver:
    """An `hpsearch` subprocess in its own session; every process it starts is tracked while it
    runs (Ray's workers are re-parented once their raylet dies), so exactly those can be checked
    and stopped afterwards."""

    def __init__(self, args: list[str], out: Path, cwd: Path):
        self.out = out.open("w", encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "TUNE_GLOBAL_CHECKPOINT_S")}
        self.process = subprocess.Popen([str(HPSEARCH), *args], cwd=cwd, stdout=self.out, stderr=subprocess.STDOUT,
                                        start_new_session=True, env=dict(env, PYTHONPATH=str(REPO)))
        self.tracked: dict[int, psutil.Process] = {}

    def track(self) -> None:
        try:
            for child in psutil.Process(self.process.pid).children(recursive=True):
                self.tracked.setdefault(child.pid, child)
        except psutil.Error:
            pass

    def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self.process.poll() is None and time.monotonic() < deadline:
            self.track()
            time.sleep(0.2)
        code = self.process.wait(timeout=max(1.0, deadline - time.monotonic()))
        self.out.close()
        return code

    def alive(self, within: float = 0.0) -> list[psutil.Process]:
        """The tracked processes still alive ``within`` seconds from now (they may take a moment to
        exit after their raylet shut down)."""
        deadline = time.monotonic() + within
        while True:
            running = []
            for process in self.tracked.values():
                try:
                    if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                        running.append(process)
                except psutil.NoSuchProcess:
                    pass
            if not running or time.monotonic() >= deadline:
                return running
            time.sleep(0.2)

    def stop_leftovers(self) -> list[psutil.Process]:
        left = self.alive()
        kill_now(left, timeout=15)
        return left


def trial_rows(run_dir: Path) -> dict[str, list[dict]]:
    return {d.name.split("_", 2)[2]: read_trial_results(d) for d in sorted(run_dir.glob("trial_*"))
            if (d / "result.json").is_file()}


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("sig, code, algorithm", [(signal.SIGKILL, -9, "auto"), (signal.SIGTERM, 143, "auto"),
                                                  (signal.SIGINT, 130, "auto"), (signal.SIGKILL, -9, "rung-tpe")],
                         ids=["SIGKILL", "SIGTERM", "SIGINT", "SIGKILL-rung-tpe"])
def test_a_search_interrupted_at_half_resumes_to_the_same_end(tmp_path, sig, code, algorithm):
    config = tmp_path / "search.yaml"
    config.write_text(yaml.safe_dump({**KILL_SEARCH, "algorithm": algorithm}, sort_keys=False), encoding="utf-8")
    run_dir = tmp_path / "runs" / "half"
    first = Driver(["run", str(config), "--name", "half", "--storage", str(tmp_path / "runs")],
                   tmp_path / "run.out", tmp_path)
    drivers = [first]
    try:
        # about half: a trial was pruned at its rung and a later one is training
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            first.track()
            assert first.process.poll() is None, (tmp_path / "run.out").read_text()
            ended = read_outcomes(run_dir) if run_dir.exists() else {}
            rows = trial_rows(run_dir) if run_dir.exists() else {}
            if any(e["outcome"] == "pruned_asha" for e in ended.values()) and \
                    any(r and t not in ended for t, r in rows.items()):
                break
            time.sleep(0.1)
        else:
            pytest.fail("the search never reached half")
        before = {t: len(r) for t, r in trial_rows(run_dir).items()}
        ended_before = {t: e for t, e in read_outcomes(run_dir).items()}
        first.process.send_signal(sig)
        assert first.wait(120) == code, (tmp_path / "run.out").read_text()
        printed = (tmp_path / "run.out").read_text()
        if sig == signal.SIGKILL:
            first.stop_leftovers()     # its local Ray outlives it: the processes it started, only
            assert read_run(run_dir).state == "interrupted"            # run.json says running; no one holds it
        else:                                                           # graceful: state saved, Ray shut down
            assert first.alive(within=20) == []
            assert json.loads((run_dir / "run.json").read_text())["state"] == "interrupted"
            assert f"continue it with `hpsearch resume {run_dir}`" in printed.splitlines()[-1]
        done_before = sum(len({r["training_iteration"] for r in rows}) for rows in trial_rows(run_dir).values())

        second = Driver(["resume", str(run_dir)], tmp_path / "resume.out", tmp_path)
        drivers.append(second)
        assert second.wait(180) == 0, (tmp_path / "resume.out").read_text()
        assert second.alive(within=20) == []
    finally:
        for driver in drivers:
            if driver.process.poll() is None:
                os.killpg(driver.process.pid, signal.SIGKILL)
                driver.process.wait()
            driver.stop_leftovers()
    assert all(d.alive() == [] for d in drivers)

    # every trial finished as it would have without the interruption, none trained twice
    after = trial_rows(run_dir)
    outcomes = read_outcomes(run_dir)
    assert len(after) == len(outcomes) == KILL_SEARCH["budget"]["num_samples"]
    got = {round(rows[0]["config"]["quality"], 6): (outcomes[t]["outcome"], outcomes[t]["epoch"])
           for t, rows in after.items()}
    assert got == EXPECTED
    for trial_id, entry in ended_before.items():                    # finished before: never ran again
        assert outcomes[trial_id] == entry and len(after[trial_id]) == before[trial_id]
    for trial_id, rows in after.items():                              # no epoch missing
        assert sorted({r["training_iteration"] for r in rows}) == list(range(1, outcomes[trial_id]["epoch"] + 1))

    # the report: one row per trial, each epoch once; the run is finished
    table = load_report(run_dir)
    assert len(table) == 6 and sorted(table["epochs"]) == [2, 2, 8, 8, 8, 8]
    for trial in read_run(run_dir).trials:
        iterations = [r["training_iteration"] for r in trial.rows]
        assert iterations == sorted(set(iterations))
    assert read_run(run_dir).state == "finished"

    # ASHA's rungs hold the trials ranked before the interruption too
    state = scheduler_state(run_dir)
    assert [len(r["scores"]) for r in state["rungs"]] == [6, 4]
    assert {t for t, d in state["decided"].items() if d["outcome"] == "pruned_asha"} == \
        {t for t, e in outcomes.items() if e["outcome"] == "pruned_asha"}

    # the Optuna study continued: no trial left RUNNING, each Ray trial told its end
    study = optuna.load_study(study_name="hpsearch", storage=study_storage(run_dir))
    assert optuna.trial.TrialState.RUNNING not in {t.state for t in study.trials}
    told = {t.user_attrs.get("trial_id"): t.state.name for t in study.trials if t.state.name != "FAIL"}
    assert told == {t: ("COMPLETE" if e["outcome"] == "completed" else "PRUNED") for t, e in outcomes.items()}

    # lost work: epochs trained again after the interruption (rows reported twice)
    redone = sum(len(rows) - len({r["training_iteration"] for r in rows}) for rows in after.values())
    print(f"\n{signal.Signals(sig).name}: {done_before} epochs done before the interruption, {redone} redone "
          f"after resume ({redone / done_before:.0%})")
    # A running trial loses at most the epoch in flight when the signal lands between its report
    # and Tune registering that epoch's checkpoint (graceful), or the last snapshot step (SIGKILL).
    assert redone <= (2 if sig == signal.SIGKILL else 1)
