"""ASHA's rungs on hand-written tables (no Ray): milestones, cutoffs with -inf and NaN, the rung a
result is due at, the stops and their reasons, and the JSON state a resumed search reads back."""

from __future__ import annotations

import json
import math
import random
import re

import pytest

from hpsearch.core.objective import sign
from hpsearch.core.rungs import STATE_VERSION, Bracket, Rung, Stop, cutoff, fold, percentile, rung_milestones

NAN, INF = math.nan, math.inf

MILESTONES = [
    # grace_period, reduction_factor, max_t, milestones
    (1, 3, 9, [1, 3]),                 # 9 is max_t: finished there, not compared
    (1, 3, 10, [1, 3, 9]),
    (2, 3, 30, [2, 6, 18]),
    (1, 2, 20, [1, 2, 4, 8, 16]),
    (2, 2, 20, [2, 4, 8, 16]),
    (3, 3, 10, [3, 9]),
    (5, 4, 6, [5]),
    (4, 2, 4, []),                     # grace_period == max_t: no rung, every trial runs to the end
    (1, 1.5, 5, [1, 1.5, 2.25, 3.375]),
]


@pytest.mark.parametrize("grace, rf, max_t, expected", MILESTONES, ids=[f"g{c[0]}-rf{c[1]}-max{c[2]}" for c in MILESTONES])
def test_milestones(grace, rf, max_t, expected):
    assert rung_milestones(grace, max_t, rf) == expected
    assert Bracket("val_acc", "max", max_t, grace, rf).milestones == expected


CUTOFFS = [
    # name, mode, reduction_factor, values recorded at the rung, cutoff in the metric's own terms
    ("empty rung: nothing to compare with", "max", 3, [], None),
    ("one trial: its value", "max", 3, [0.5], 0.5),
    ("top third of three", "max", 3, [0.1, 0.5, 0.9], 0.5 + 0.4 / 3),
    ("top half of two", "max", 2, [0.2, 0.4], 0.3),
    ("min mode: the bottom third", "min", 3, [0.1, 0.5, 0.9], 0.5 - 0.4 / 3),
    ("a NaN ranks below every number", "max", 3, [NAN, 0.5, 0.7], 0.5 + 0.2 / 3),
    ("a NaN weighs in: cutoff -inf", "max", 3, [NAN, 0.5], -INF),
    ("+inf is no better than NaN", "max", 3, [INF, INF, 0.9], -INF),
    ("a missing value is -inf too, in min mode", "min", 3, [0.2, None], -INF),
    ("-inf at the rank: exactly the number above it", "max", 2, [NAN, 0.2, 0.4], 0.2),
]


@pytest.mark.parametrize("mode, rf, values, expected", [c[1:] for c in CUTOFFS], ids=[c[0] for c in CUTOFFS])
def test_cutoff(mode, rf, values, expected):
    bracket = Bracket("val_acc", mode, max_t=10, grace_period=1, reduction_factor=rf)
    rung = bracket.rungs[0]
    for i, value in enumerate(values):
        bracket.record(rung, f"t{i}", value)
    got = cutoff(rung.scores.values(), rf)
    if expected is None:
        assert got is None
    elif expected == -INF:
        assert got == -INF
    else:
        assert got * sign(mode) == pytest.approx(expected)


def test_percentile_matches_numpy_and_keeps_minus_inf():
    numpy = pytest.importorskip("numpy")
    values = [0.3, 0.9, 0.1, 0.5]
    assert percentile(values, 66.67) == pytest.approx(numpy.percentile(values, 66.67))
    assert percentile([-INF, 0.5], 66.67) == -INF
    assert percentile([-INF, -INF, 0.9], 66.67) == -INF


DUE = [
    # name, rungs the trial is recorded at, epoch, the rung due (None: none)   -- milestones 1, 2, 4, 8; max_t 10
    ("before the first rung", [], 0, None),
    ("at the first rung", [], 1, 1),
    ("recorded there already", [1], 1, None),
    ("between rungs: the one below", [1], 3, 2),
    ("a skipped rung: the highest reached", [], 3, 2),
    ("recorded at the highest reached", [4], 5, None),
    ("far past its last record", [1], 9, 8),
    ("at max_t: finished, not compared", [], 10, None),
    ("past max_t", [1, 2], 12, None),
]


@pytest.mark.parametrize("recorded, epoch, expected", [c[1:] for c in DUE], ids=[c[0] for c in DUE])
def test_due_rung(recorded, epoch, expected):
    bracket = Bracket("val_acc", "max", max_t=10, grace_period=1, reduction_factor=2)
    for rung in bracket.rungs:
        if rung.milestone in recorded:
            bracket.record(rung, "t", 0.5)
    rung = bracket.due("t", epoch)
    assert (None if rung is None else rung.milestone) == expected


RANK = [
    # name, mode, values recorded before, value, the stop's reason (None: go on)   -- at epoch 1, rung 1
    ("first at its rung, even NaN", "max", [], NAN, None),
    ("NaN against a number", "max", [0.5], NAN,
     "val_acc nan is not a finite number, so it ranks last at epoch 1 (rung 1, 2 trials)"),
    ("+inf against a number", "max", [0.5], INF,
     "val_acc inf is not a finite number, so it ranks last at epoch 1 (rung 1, 2 trials)"),
    ("missing against a number", "max", [0.5], None, "val_acc is missing, so it ranks last at epoch 1 (rung 1, 2 trials)"),
    ("NaN against NaN", "max", [NAN], NAN,
     "val_acc nan is not a finite number, so it ranks last at epoch 1 (rung 1, 2 trials)"),
    ("a number against NaN: better than nothing", "max", [NAN], 0.1, None),
    ("below the cutoff", "max", [0.9], 0.412, "val_acc 0.412 below rung cutoff 0.9 at epoch 1 (rung 1, 2 trials)"),
    ("below an interpolated cutoff", "max", [0.1, 0.5, 0.9], 0.6,
     "val_acc 0.6 below rung cutoff 0.6333 at epoch 1 (rung 1, 4 trials)"),
    ("above an interpolated cutoff", "max", [0.1, 0.5, 0.9], 0.7, None),
    ("equal to the cutoff", "max", [0.9], 0.9, None),
    ("min mode: above the cutoff", "min", [0.2], 0.7, "val_acc 0.7 above rung cutoff 0.2 at epoch 1 (rung 1, 2 trials)"),
    ("min mode: below an interpolated cutoff", "min", [0.1, 0.5, 0.9], 0.3, None),
    ("min mode: above an interpolated cutoff", "min", [0.1, 0.5, 0.9], 0.4,
     "val_acc 0.4 above rung cutoff 0.3667 at epoch 1 (rung 1, 4 trials)"),
]


@pytest.mark.parametrize("mode, before, value, reason", [c[1:] for c in RANK], ids=[c[0] for c in RANK])
def test_rank(mode, before, value, reason):
    bracket = Bracket("val_acc", mode, max_t=9, grace_period=1, reduction_factor=3)
    rung = bracket.due("x", 1)
    for i, earlier in enumerate(before):
        bracket.record(rung, f"t{i}", earlier)
    stop = bracket.rank(rung, "x", 1, value)
    assert "x" in rung.scores                                  # recorded, whatever the decision
    if reason is None:
        assert stop is None and "x" not in bracket.decided
    else:
        assert stop == Stop("pruned_asha", reason, 1) and bracket.decided["x"] == stop
        assert bracket.stopped == {"health": 0, "asha": 1}


NOISY = [
    # name, min_trials, compare, exempt, the trial's values before the rung, others at the rung, value,
    # the stop's reason (None: go on)   -- at epoch 3, rung 3
    ("one other is enough by default", 1, "last", False, [], [0.8], 0.4,
     "val_acc 0.4 below rung cutoff 0.8 at epoch 3 (rung 3, 2 trials)"),
    ("too few others to cut", 3, "last", False, [], [0.8, 0.9], 0.4, None),
    ("enough others", 3, "last", False, [], [0.8, 0.9, 0.85], 0.4,
     "val_acc 0.4 below rung cutoff 0.8667 at epoch 3 (rung 3, 4 trials)"),
    ("one bad epoch under best so far", 1, "best", False, [0.9, 0.7], [0.8], 0.4, None),
    ("best so far still below", 1, "best", False, [0.5, 0.6], [0.8], 0.4,
     "val_acc 0.4 (best so far 0.6) below rung cutoff 0.8 at epoch 3 (rung 3, 2 trials)"),
    ("best so far is this value", 1, "best", False, [0.3], [0.8], 0.4,
     "val_acc 0.4 below rung cutoff 0.8 at epoch 3 (rung 3, 2 trials)"),
    ("best so far, but NaN now", 1, "best", False, [0.9, 0.9], [0.8], NAN,
     "val_acc nan is not a finite number, so it ranks last at epoch 3 (rung 3, 2 trials)"),
    ("a warm-start point is never cut", 1, "last", True, [], [0.9, 0.95], 0.1, None),
]


@pytest.mark.parametrize("min_trials, compare, exempt, history, others, value, reason", [c[1:] for c in NOISY],
                         ids=[c[0] for c in NOISY])
def test_rank_on_a_noisy_objective(min_trials, compare, exempt, history, others, value, reason):
    bracket = Bracket("val_acc", "max", max_t=9, grace_period=3, reduction_factor=3, min_trials=min_trials,
                      compare=compare)
    if exempt:
        bracket.exempt.add("x")
    rung = bracket.due("x", 3)
    for i, earlier in enumerate(others):
        bracket.record(rung, f"t{i}", earlier)
    for earlier in history:                                    # epochs 1 and 2: no rung there
        bracket.observe("x", earlier)
    stop = bracket.rank(rung, "x", 3, value)
    assert (None if stop is None else stop.reason) == reason
    if compare == "best" and history and value == value:
        assert rung.scores["x"] == max(*history, value)       # recorded with its best so far


def test_a_health_stop_withdraws_the_trials_values_from_every_rung():
    bracket = Bracket("val_acc", "max", max_t=9, grace_period=1, reduction_factor=3)
    for epoch in (1, 3):
        bracket.record(bracket.due("flat", epoch), "flat", 0.99)
        bracket.record(bracket.due("b", epoch), "b", 0.5)
    stop = bracket.decide("flat", "pruned_flatline", "train_loss unchanged", 3)
    assert stop == Stop("pruned_flatline", "train_loss unchanged", 3)
    assert [set(rung.scores) for rung in bracket.rungs] == [{"b"}, {"b"}]
    assert bracket.stopped == {"health": 1, "asha": 0}
    assert bracket.rank(bracket.due("c", 1), "c", 1, 0.6) is None     # against 0.99, 0.6 would be cut


REACHED = [
    # the stop's epoch, the epoch of a result after a restore, whether the trial stops again
    (2, 1, False),
    (2, 2, True),
    (2, 3, True),
    (None, 1, True),
    (2, None, True),
]


@pytest.mark.parametrize("stopped_at, epoch, expected", REACHED)
def test_a_restored_stop_is_reached_at_its_epoch(stopped_at, epoch, expected):
    assert Stop("pruned_asha", "", stopped_at).reached(epoch) is expected


# ----------------------------------------------------------------------------------------------
# The state on disk.

def small_bracket() -> Bracket:
    """rf 2, max_t 8: rungs at 2 and 4; a, b, a NaN trial and c at 2 (the last two pruned), a and b
    at 4 (b pruned)."""
    bracket = Bracket("val_acc", "max", max_t=8, grace_period=2, reduction_factor=2)
    for trial_id, value in (("a", 0.8), ("b", 0.9), ("nan", NAN), ("c", 0.1)):
        bracket.rank(bracket.due(trial_id, 2), trial_id, 2, value)
    for trial_id, value in (("a", 0.95), ("b", 0.85)):
        bracket.rank(bracket.due(trial_id, 4), trial_id, 4, value)
    return bracket


ON_DISK = {
    "version": 3, "metric": "val_acc", "mode": "max", "max_t": 8, "grace_period": 2, "reduction_factor": 2.0,
    "time_attr": "training_iteration", "min_trials": 1, "compare": "last", "stopped": {"health": 0, "asha": 3},
    "best": {}, "exempt": [],
    "decided": {"nan": {"outcome": "pruned_asha", "epoch": 2,
                        "reason": "val_acc nan is not a finite number, so it ranks last at epoch 2 (rung 2, 3 trials)"},
                "c": {"outcome": "pruned_asha", "epoch": 2,
                      "reason": "val_acc 0.1 below rung cutoff 0.8 at epoch 2 (rung 2, 4 trials)"},
                "b": {"outcome": "pruned_asha", "epoch": 4,
                      "reason": "val_acc 0.85 below rung cutoff 0.95 at epoch 4 (rung 4, 2 trials)"}},
    "rungs": [{"milestone": 2.0, "scores": {"a": 0.8, "b": 0.9, "nan": None, "c": 0.1}},
              {"milestone": 4.0, "scores": {"a": 0.95, "b": 0.85}}],
}


def test_the_state_is_the_on_disk_format_in_strict_json():
    state = json.loads(json.dumps(small_bracket().to_json(), allow_nan=False))   # -inf written as null
    assert state == ON_DISK and STATE_VERSION == 3


def test_json_round_trip_carries_rungs_stops_and_counters():
    original = small_bracket()
    restored = Bracket("val_acc", "max", max_t=8, grace_period=2, reduction_factor=2)
    restored.load(json.loads(json.dumps(original.to_json(), allow_nan=False)))
    assert restored.rungs == original.rungs and restored.rungs[0].scores["nan"] == -INF
    assert restored.decided == original.decided and restored.stopped == original.stopped
    assert restored.to_json() == original.to_json()
    # and decides on as the original does
    assert restored.rank(restored.due("d", 2), "d", 2, 0.5) == original.rank(original.due("d", 2), "d", 2, 0.5)


def test_a_version_2_state_keeps_the_rule_it_was_decided_by():
    """A run dir written before min_trials and compare existed resumes under ASHA's rule, whatever
    the defaults are now: its rungs hold last values, and a resumed search decides as it began."""
    old = {k: v for k, v in ON_DISK.items() if k not in ("min_trials", "compare", "best", "exempt")}
    bracket = Bracket("val_acc", "max", max_t=8, grace_period=2, reduction_factor=2, min_trials=3, compare="best")
    bracket.load({**old, "version": 2})
    assert bracket.decided == small_bracket().decided and bracket.best == {} and bracket.exempt == set()
    assert (bracket.min_trials, bracket.compare) == (1, "last")
    written = bracket.to_json()                       # as the resumed search writes it again
    assert (written["version"], written["legacy"], written["min_trials"], written["compare"]) == (3, True, 1, "last")
    again = Bracket("val_acc", "max", max_t=8, grace_period=2, reduction_factor=2, min_trials=3, compare="best")
    again.load(written)                               # and every resume after loads it as it began
    assert (again.min_trials, again.compare, again.legacy) == (1, "last", True)
    assert "legacy" not in small_bracket().to_json()


def test_a_version_1_state_loads_with_no_stops():
    """A run dir written before stops were kept still resumes: rungs and counters, no stops."""
    old = {"version": 1, "metric": "val_acc", "mode": "max", "max_t": 8, "grace_period": 2, "reduction_factor": 2.0,
           "time_attr": "training_iteration", "stopped": {"health": 1, "asha": 1},
           "rungs": [{"milestone": 2.0, "scores": {"a": 0.9, "c": 0.1, "nan": None}}, {"milestone": 4.0, "scores": {}}]}
    bracket = Bracket("val_acc", "max", max_t=8, grace_period=2, reduction_factor=2)
    bracket.load(old)
    assert bracket.rungs == [Rung(2.0, {"a": 0.9, "c": 0.1, "nan": -INF}), Rung(4.0, {})]
    assert bracket.decided == {} and bracket.stopped == {"health": 1, "asha": 1}
    assert bracket.to_json()["version"] == STATE_VERSION


REFUSED = [
    # name, change to the state, the message
    ("another version", {"version": 4}, "got version 4, expected 3"),
    ("another min_trials", {"min_trials": 3}, "min_trials is 3, this search has 1"),
    ("another compare", {"compare": "best"}, "compare is 'best', this search has 'last'"),
    ("no version", {"version": None}, "got version None"),
    ("another grace period", {"grace_period": 1}, "grace_period is 1, this search has 2"),
    ("another mode", {"mode": "min"}, "mode is 'min', this search has 'max'"),
    ("another metric", {"metric": "loss"}, "metric is 'loss', this search has 'val_acc'"),
    ("other rungs", {"rungs": [{"milestone": 3.0, "scores": {}}]}, r"rungs at \[3.0\], this search has \[2.0, 4.0\]"),
]


@pytest.mark.parametrize("change, message", [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_a_state_from_other_settings_is_refused(change, message):
    bracket = Bracket("val_acc", "max", max_t=8, grace_period=2, reduction_factor=2)
    with pytest.raises(ValueError, match=message):
        bracket.load({**ON_DISK, **change})
    assert bracket.to_json() == Bracket("val_acc", "max", max_t=8, grace_period=2, reduction_factor=2).to_json()


def test_a_state_that_is_no_mapping_is_refused():
    with pytest.raises(ValueError, match="got version None"):
        Bracket("val_acc", "max", max_t=8).load([1, 2])


# ----------------------------------------------------------------------------------------------
# Changes: what a search appends to disk per decision, replayed on the state written before.

def random_search(bracket: Bracket, trials: int, seed: int) -> None:
    """Trials through every rung in a shuffled order: NaN and missing values, health stops, exempt trials."""
    rng = random.Random(seed)
    for i in range(trials):
        trial_id = f"t{i}"
        if rng.random() < 0.1:
            bracket.make_exempt(trial_id)
        for epoch in range(1, bracket.max_t):
            if rng.random() < 0.05:
                bracket.decide(trial_id, "pruned_exploding", f"spike at epoch {epoch}", epoch)
                break
            value = rng.choice([NAN, None, rng.random(), rng.random(), rng.random()])
            rung = bracket.due(trial_id, epoch)
            if rung is None:
                bracket.observe(trial_id, value)
            elif bracket.rank(rung, trial_id, epoch, value) is not None:
                break


@pytest.mark.parametrize("compare", ["last", "best"])
@pytest.mark.parametrize("seed", range(4))
def test_the_changes_replayed_on_an_earlier_state_give_the_later_state(compare, seed):
    def bracket() -> Bracket:
        return Bracket("val_acc", "min", max_t=10, grace_period=1, reduction_factor=2, min_trials=2, compare=compare)

    live = bracket()
    random_search(live, 40, seed)
    middle = json.loads(json.dumps(live.to_json(), allow_nan=False))
    live.changes = []
    random_search(live, 60, seed + 100)
    changes = json.loads(json.dumps(live.changes, allow_nan=False))
    assert any("stop" in c for c in changes) and any(c.get("exempt") for c in changes)
    folded, final = fold(middle, changes), json.loads(json.dumps(live.to_json(), allow_nan=False))
    assert {k: v for k, v in folded.items() if k != "best"} == {k: v for k, v in final.items() if k != "best"}
    # a best value so far that no rung recorded is not a change: a resumed search reads it from the
    # trial's rows (HealthASHA.observe_history); every one a rung recorded is there
    assert set(folded["best"]) <= set(final["best"]) and all(v <= final["best"][t] for t, v in folded["best"].items())
    recorded = {t for rung in final["rungs"] for t, s in rung["scores"].items() if s is not None}
    assert recorded <= set(folded["best"]) if compare == "best" else folded["best"] == {}
    replayed = bracket()
    replayed.load(middle)
    for change in changes:
        replayed.apply(change)
    assert replayed.rungs == live.rungs and replayed.decided == live.decided and replayed.exempt == live.exempt
    assert fold(middle, []) == middle


@pytest.mark.parametrize("change, message", [
    ({"trial": "a", "rung": 3.0, "score": 0.5}, "rung 3.0, this search has [2.0, 4.0]"),
    ({"trial": "a", "promoted": True}, "expected a rung score, a stop or an exempt trial"),
])
def test_a_change_the_bracket_cannot_hold_is_refused(change, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        fold(small_bracket().to_json(), [change])
