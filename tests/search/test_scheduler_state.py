"""The scheduler's state on disk (HealthASHA with a state_path): every decision is there before it
takes effect, each as one appended change, the whole state rewritten only as often as it is large,
and a run dir from an older hpsearch resumed as it began."""

from __future__ import annotations

import json
import random
from types import SimpleNamespace

from hpsearch.core.health import HealthConfig, assess
from hpsearch.core.rundir import OUTCOMES, SCHEDULER_CHANGES, SCHEDULER_STATE, OutcomeLog, StateLog, json_lines
from hpsearch.driver.resume import scheduler_state
from hpsearch.tune import scheduler as scheduler_module
from hpsearch.tune.scheduler import HealthASHA

STOP, CONTINUE = "STOP", "CONTINUE"


def results(objective):
    """Healthy results a trainable reports, one per epoch, with this objective."""
    rows, history = [], []
    for epoch, value in enumerate(objective, 1):
        history.append({"train_loss": 0.8 ** epoch, "train_batch_loss_std": 0.1, "train_grad_norm": 1.0})
        verdict = assess(history, HealthConfig())
        rows.append({"training_iteration": epoch, "val_acc": value, "health": verdict.status,
                     "health_reason": verdict.reason})
    return rows


def drive(scheduler, trials):
    """Feed results epoch by epoch, trials in the given order, until each is stopped or runs out."""
    stopped = {name: False for name in trials}
    for epoch in range(1, max(len(rows) for rows in trials.values()) + 1):
        for name, rows in trials.items():
            if not stopped[name] and epoch <= len(rows):
                stopped[name] = scheduler.on_trial_result(None, SimpleNamespace(trial_id=name), rows[epoch - 1]) == STOP


def test_a_decision_writes_its_change_not_the_whole_state_and_disk_always_holds_the_state(tmp_path, monkeypatch):
    """3,000 trials through two rungs (a third stopped at each, some by health, one warm start
    exempt): after every decision the run dir reads back as the scheduler's state, and the whole
    state is written only when the log of changes would outgrow it, so a decision at trial 3,000
    writes about what one at trial 10 did."""
    monkeypatch.setattr(scheduler_module, "COMPACT_AFTER", 50)
    writes: list[int] = []
    real_write = StateLog.write
    monkeypatch.setattr(StateLog, "write", lambda self, state: writes.append(len(json.dumps(state)))
                        or real_write(self, state))
    scheduler = HealthASHA("val_acc", "max", max_t=9, grace_period=1, reduction_factor=3, outcomes=OutcomeLog(None),
                           state_path=tmp_path / SCHEDULER_STATE, exempt_points=[{"x": 0.5}])
    scheduler.on_trial_add(None, SimpleNamespace(trial_id="warm", config={"x": 0.5}))
    rng = random.Random(0)
    ids = ["warm"] + [f"t{i}" for i in range(3000)]
    for i, trial_id in enumerate(ids):
        health = "exploding" if i % 97 == 5 else "ok"
        for epoch in (1, 3):
            result = {"training_iteration": epoch, "val_acc": rng.random(), "health": health,
                      "health_reason": "spiked" if health != "ok" else ""}
            if scheduler.on_trial_result(None, SimpleNamespace(trial_id=trial_id), result) == STOP:
                break
        if i % 250 == 0 or i == len(ids) - 1:
            assert scheduler_state(tmp_path) == json.loads(json.dumps(scheduler.state()))
    log = (tmp_path / SCHEDULER_CHANGES).read_text().splitlines()
    assert scheduler.bracket.stopped["health"] == 31 and scheduler.bracket.stopped["asha"] > 1500
    assert "warm" in scheduler.bracket.exempt and "warm" not in scheduler.bracket.decided
    assert 3 <= len(writes) <= 12                  # whole writes as rare as the state is large ...
    assert sum(writes) < 4 * writes[-1]             # ... so all of them cost a few of the last one
    assert max(len(line) for line in log) < 300    # one change a line, whatever the trial count


def test_a_search_resumed_from_an_older_state_writes_it_whole_before_logging_changes(tmp_path):
    """A version-2 state (before min_trials and compare) on disk: the resumed scheduler's first
    decision writes the whole state in today's form, so its changes extend a state that reads back,
    still decided by the rule it began with."""
    first = HealthASHA("val_acc", "max", max_t=9, grace_period=1, reduction_factor=3, outcomes=OutcomeLog(None))
    drive(first, {"t1": results([0.9] * 2), "t2": results([0.4] * 2)})
    old = {k: v for k, v in first.state().items() if k not in ("min_trials", "compare", "best", "exempt")}
    (tmp_path / SCHEDULER_STATE).parent.mkdir()
    (tmp_path / SCHEDULER_STATE).write_text(json.dumps({**old, "version": 2}))
    resumed = HealthASHA("val_acc", "max", max_t=9, grace_period=1, reduction_factor=3, outcomes=OutcomeLog(None),
                         state_path=tmp_path / SCHEDULER_STATE, min_trials=2, compare="best")
    resumed.restore_state(scheduler_state(tmp_path))
    drive(resumed, {"t3": results([0.95] * 2), "t4": results([0.1] * 2)})
    state = scheduler_state(tmp_path)
    assert state == json.loads(json.dumps(resumed.state()))
    assert (state["version"], state["min_trials"], state["compare"], state["legacy"]) == (3, 1, "last", True)
    assert set(state["decided"]) == {"t2", "t4"}
    again = HealthASHA("val_acc", "max", max_t=9, grace_period=1, reduction_factor=3, outcomes=OutcomeLog(None),
                       state_path=tmp_path / SCHEDULER_STATE, min_trials=2, compare="best")
    again.restore_state(scheduler_state(tmp_path))                  # a second resume loads it too
    assert (again.bracket.min_trials, again.bracket.compare, again.exempt_points) == (1, "last", [])


def test_a_stop_persisted_before_a_crash_that_lost_its_outcome_is_recorded_when_the_trial_reaches_it(tmp_path):
    """The state on disk holds t2's stop at epoch 2 but outcomes.jsonl does not (the driver died
    between the two writes): resumed, t2 re-runs from an older checkpoint, goes on before epoch 2, and
    at epoch 2 stops with the outcome and reason it was given, not as a completed trial."""
    first = HealthASHA("val_acc", "max", max_t=9, grace_period=2, reduction_factor=3, outcomes=OutcomeLog(None),
                       state_path=tmp_path / SCHEDULER_STATE)
    drive(first, {"t1": results([0.9] * 2), "t2": results([0.4] * 2)})
    stop = first.bracket.decided["t2"]
    assert stop.outcome == "pruned_asha" and stop.epoch == 2
    outcomes = OutcomeLog(tmp_path)                 # the new log: nothing recorded for t2
    resumed = HealthASHA("val_acc", "max", max_t=9, grace_period=2, reduction_factor=3, outcomes=outcomes,
                         state_path=tmp_path / SCHEDULER_STATE)
    resumed.restore_state(scheduler_state(tmp_path))
    rows = results([0.4] * 2)
    assert resumed.on_trial_result(None, SimpleNamespace(trial_id="t2"), rows[0]) == CONTINUE
    assert outcomes.get("t2") is None
    assert resumed.on_trial_result(None, SimpleNamespace(trial_id="t2"), rows[1]) == STOP
    recorded = OutcomeLog(tmp_path).get("t2")       # read back from the run dir
    assert (recorded["outcome"], recorded["reason"], recorded["epoch"]) == (stop.outcome, stop.reason, 2)
    assert resumed.on_trial_result(None, SimpleNamespace(trial_id="t2"), rows[1]) == STOP
    assert len(json_lines(tmp_path / OUTCOMES)) == 1    # recorded once
