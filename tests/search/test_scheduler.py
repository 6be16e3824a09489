"""The scheduler driven with hand-written trials: health stops, NaN ranked last, ASHA reasons, state."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest

from hpsearch.core.config import Budget, Objective, RunConfig, SchedulerConfig
from hpsearch.core.health import HealthConfig, assess
from hpsearch.core.rundir import OutcomeLog, read_outcomes
from hpsearch.models.config import ConfigError
from hpsearch.tune.scheduler import HealthASHA, make_scheduler, percentile, rung_milestones

STOP, CONTINUE = "STOP", "CONTINUE"
NAN = math.nan
GOOD_LOSS = [1.0 * 0.8 ** e for e in range(9)]


def results(objective, losses=None):
    """The results a trainable reports: objective per epoch, health computed from the losses."""
    losses = losses if losses is not None else GOOD_LOSS[:len(objective)]
    rows, history = [], []
    for epoch, (value, loss) in enumerate(zip(objective, losses), 1):
        history.append({"train_loss": loss, "train_batch_loss_std": 0.1, "train_grad_norm": 1.0})
        verdict = assess(history, HealthConfig())
        rows.append({"training_iteration": epoch, "val_acc": value, "train_loss": loss,
                     "health": verdict.status, "health_reason": verdict.reason})
    return rows


def drive(scheduler, trials):
    """Feed results epoch by epoch, trials in the given order, until each is stopped or runs out.
    Returns trial_id -> epoch of its STOP (None when it never got one)."""
    stopped = {name: None for name in trials}
    longest = max(len(rows) for rows in trials.values())
    for epoch in range(1, longest + 1):
        for name, rows in trials.items():
            if stopped[name] is not None or epoch > len(rows):
                continue
            decision = scheduler.on_trial_result(None, SimpleNamespace(trial_id=name), rows[epoch - 1])
            assert decision in (STOP, CONTINUE)
            if decision == STOP:
                stopped[name] = epoch
    return stopped


def asha(outcomes=None, max_t=9, grace_period=1, reduction_factor=3, mode="max"):
    return HealthASHA("val_acc", mode, max_t=max_t, grace_period=grace_period,
                      reduction_factor=reduction_factor, outcomes=outcomes if outcomes is not None else OutcomeLog(None))


CASES = [
    # name, trials (id -> results), expected: id -> (stop epoch, outcome or None)
    ("flatline ranked first is stopped at its verdict epoch",
     {"a": results([0.5 + 0.01 * e for e in range(9)]), "b": results([0.6 + 0.01 * e for e in range(9)]),
      "flat": results([0.99] * 9, [0.1] * 9)},
     {"a": (9, None), "b": (9, None), "flat": (3, "pruned_flatline")}),
    ("exploding ranked first is stopped at its verdict epoch",
     {"a": results([0.5 + 0.01 * e for e in range(9)]),
      "boom": results([0.99] * 9, [1.0, 0.8, 2.4, 7.2, 21.6, 64.8, 194.4, 583.2, 1749.6])},
     {"boom": (4, "pruned_exploding"), "a": (9, None)}),
    ("NaN objective is stopped at the first rung where others exist",
     {"a": results([0.5] * 9), "b": results([0.6] * 9), "nan": results([NAN] * 9)},
     {"a": (9, None), "b": (9, None), "nan": (1, "pruned_asha")}),
    ("+inf objective is no better than NaN",
     {"a": results([0.5] * 9), "inf": results([math.inf] * 9)},
     {"a": (9, None), "inf": (1, "pruned_asha")}),
    ("missing objective ranks last",
     {"a": results([0.5] * 9), "none": [{k: v for k, v in r.items() if k != "val_acc"} for r in results([0.5] * 9)]},
     {"a": (9, None), "none": (1, "pruned_asha")}),
    ("a healthy NaN-free search: ASHA keeps the top third",
     {"t1": results([0.9] * 9), "t2": results([0.8] * 9), "t3": results([0.95] * 9)},
     {"t1": (9, None), "t2": (1, "pruned_asha"), "t3": (9, None)}),
]


@pytest.mark.parametrize("trials, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_decisions(trials, expected):
    outcomes = OutcomeLog(None)
    stopped = drive(asha(outcomes), trials)
    for name, (epoch, outcome) in expected.items():
        assert stopped[name] == epoch, (name, stopped)
        entry = outcomes.get(name)
        if outcome is None:
            assert entry is None  # a trial reaching max_t is the runner's to record as completed
        else:
            assert (entry["outcome"], entry["epoch"]) == (outcome, epoch)
            assert entry["reason"] and "\n" not in entry["reason"]


def test_nan_first_at_a_rung_continues_then_ranks_last_at_the_next():
    """The first trial at a rung has nothing to be compared with (as in ASHA); the NaN one is cut
    at the next rung where another trial has been recorded."""
    outcomes = OutcomeLog(None)
    scheduler = asha(outcomes)
    nan, good = results([NAN] * 9), results([0.5] * 9)
    feed = [("nan", nan[0]), ("a", good[0]), ("a", good[1]), ("a", good[2]), ("nan", nan[1]), ("nan", nan[2])]
    decisions = [scheduler.on_trial_result(None, SimpleNamespace(trial_id=t), r) for t, r in feed]
    assert decisions == [CONTINUE] * 5 + [STOP]
    assert outcomes.get("nan")["reason"] == ("val_acc nan is not a finite number, so it ranks last at epoch 3 "
                                             "(rung 3, 2 trials)")
    assert outcomes.get("a") is None


def test_health_stop_carries_the_trainables_reason(tmp_path):
    outcomes = OutcomeLog(tmp_path)
    drive(asha(outcomes), {"flat": results([0.99] * 9, [0.1] * 9)})
    entry = read_outcomes(tmp_path)["flat"]
    assert entry["outcome"] == "pruned_flatline"
    assert entry["reason"].startswith("train_loss unchanged at epoch 3: 0.1, 0.1, 0.1")


def test_asha_stop_reason_names_value_cutoff_epoch_and_rung():
    outcomes = OutcomeLog(None)
    drive(asha(outcomes), {"t1": results([0.9] * 9), "t2": results([0.412] * 9)})
    assert outcomes.get("t2")["reason"] == "val_acc 0.412 below rung cutoff 0.9 at epoch 1 (rung 1, 2 trials)"


def test_min_mode_stops_the_larger_value():
    outcomes = OutcomeLog(None)
    stopped = drive(asha(outcomes, mode="min"), {"t1": results([0.2] * 9), "t2": results([0.7] * 9),
                                                 "nan": results([NAN] * 9)})
    assert stopped == {"t1": 9, "t2": 1, "nan": 1}
    assert outcomes.get("t2")["reason"] == "val_acc 0.7 above rung cutoff 0.2 at epoch 1 (rung 1, 2 trials)"
    assert "val_acc nan is not a finite number" in outcomes.get("nan")["reason"]


def test_health_pruned_values_do_not_raise_the_bar():
    """A flatlined trial's objective was never real: once pruned it no longer sets rung cutoffs."""
    scheduler = asha()
    drive(scheduler, {"flat": results([0.99] * 9, [0.1] * 9), "b": results([0.5] * 9)})
    assert "flat" not in scheduler.rungs[0]
    decision = scheduler.on_trial_result(None, SimpleNamespace(trial_id="c"), results([0.6])[0])
    assert decision == CONTINUE  # against 0.99 still recorded, 0.6 would be cut


def test_unknown_health_status_is_refused():
    with pytest.raises(ValueError, match="'sick'"):
        asha().on_trial_result(None, SimpleNamespace(trial_id="x"),
                               {"training_iteration": 1, "val_acc": 0.5, "health": "sick"})


def test_state_round_trip_preserves_decisions():
    trials = {f"t{i}": results([0.1 * i + 0.01 * e for e in range(9)]) for i in range(1, 7)}
    trials["nan"] = results([NAN] * 9)
    first_half = {name: rows[:3] for name, rows in trials.items()}
    second_half = {name: rows[3:] for name, rows in trials.items()}

    original = asha()
    drive(original, first_half)
    state = json.loads(json.dumps(original.state(), allow_nan=False))  # strict JSON: -inf stored as null
    restored = asha()
    restored.restore_state(state)
    assert restored.state() == original.state()
    assert drive(restored, second_half) == drive(original, second_half)
    assert restored.state() == original.state()


def test_save_and_restore_through_a_file(tmp_path):
    original = asha()
    drive(original, {"a": results([0.5] * 3), "nan": results([NAN] * 3)})
    original.save(str(tmp_path / "scheduler.json"))
    restored = asha()
    restored.restore(str(tmp_path / "scheduler.json"))
    assert restored.rungs == original.rungs and restored.rungs[0]["nan"] == -math.inf


def test_restore_refuses_other_settings():
    state = asha().state()
    with pytest.raises(ValueError, match="grace_period"):
        asha(grace_period=2).restore_state(state)


def test_rungs_follow_grace_period_and_reduction_factor():
    assert rung_milestones(1, 9, 3) == [1, 3]
    assert rung_milestones(2, 30, 3) == [2, 6, 18]
    assert rung_milestones(4, 4, 2) == []


def test_percentile_matches_numpy_and_keeps_minus_inf():
    numpy = pytest.importorskip("numpy")
    values = [0.3, 0.9, 0.1, 0.5]
    assert percentile(values, 66.67) == pytest.approx(numpy.percentile(values, 66.67))
    assert percentile([-math.inf, 0.5], 66.67) == -math.inf
    assert percentile([-math.inf, -math.inf, 0.9], 66.67) == -math.inf


BAD = [
    (dict(metric=""), "objective.metric"),
    (dict(mode="maximize"), "objective.mode: got 'maximize'"),
    (dict(max_t=0), "max_epochs: got 0"),
    (dict(grace_period=10), "scheduler.grace_period: got 10"),
    (dict(reduction_factor=1), "scheduler.reduction_factor: got 1"),
]


@pytest.mark.parametrize("override, message", BAD, ids=[b[1] for b in BAD])
def test_constructor_validates(override, message):
    kwargs = dict(metric="val_acc", mode="max", max_t=9, grace_period=1, reduction_factor=3)
    kwargs.update(override)
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        HealthASHA(**kwargs)


def test_make_scheduler_reads_the_config():
    config = RunConfig(model="m", params={}, objective=Objective("val_acc", "min"),
                       budget=Budget(max_epochs=20), scheduler=SchedulerConfig(grace_period=2, reduction_factor=2))
    outcomes = OutcomeLog(None)
    scheduler = make_scheduler(config, outcomes)
    assert (scheduler.metric, scheduler.mode, scheduler.max_t) == ("val_acc", "min", 20)
    assert scheduler.milestones == [2, 4, 8, 16] and scheduler.outcomes is outcomes
    assert scheduler.set_search_properties("val_acc", "min") and not scheduler.set_search_properties("loss", None)
