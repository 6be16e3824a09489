"""The scheduler driven with hand-written trials as Tune drives it: health stops, NaN ranked last,
ASHA reasons in the OutcomeLog, the state through Tune's save/restore. The rung arithmetic itself
is in test_rungs.py."""

from __future__ import annotations

import dataclasses
import json
import math
import random
from types import SimpleNamespace

import pytest

from hpsearch.core.config import Budget, Objective, RunConfig, SchedulerConfig
from hpsearch.core.health import HealthConfig, assess
from hpsearch.core.rundir import SCHEDULER_STATE, OutcomeLog, read_outcomes
from hpsearch.core.space import Spec
from hpsearch.driver.resume import scheduler_state
from hpsearch.tune.scheduler import HealthASHA, make_scheduler

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
    assert "flat" not in scheduler.bracket.rungs[0].scores
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
    assert restored.bracket.rungs == original.bracket.rungs and restored.bracket.rungs[0].scores["nan"] == -math.inf


def test_restore_refuses_other_settings():
    state = asha().state()
    with pytest.raises(ValueError, match="grace_period"):
        asha(grace_period=2).restore_state(state)


def test_make_scheduler_reads_the_config():
    config = RunConfig(model="m", params={}, objective=Objective("val_acc", "min"),
                       budget=Budget(max_epochs=20), scheduler=SchedulerConfig(grace_period=2, reduction_factor=2))
    outcomes = OutcomeLog(None)
    scheduler = make_scheduler(config, outcomes)
    assert (scheduler.metric, scheduler.mode, scheduler.bracket.max_t) == ("val_acc", "min", 20)
    assert scheduler.bracket.milestones == [2, 4, 8, 16] and scheduler.outcomes is outcomes
    assert scheduler.set_search_properties("val_acc", "min") and not scheduler.set_search_properties("loss", None)


def test_warm_start_points_run_on_past_a_rung_when_kept_and_best_so_far_is_compared():
    """The issue's case: a warm-start point whose last value dips below a cutoff set by one earlier
    trial. ASHA's rule stops it; ``keep_warm_start`` exempts it (health rules still apply);
    ``compare: best`` keeps it on its best value so far; ``min_trials`` waits for more trials."""
    point = {"lr": 0.002, "hidden_dim": 64}
    rung = {"other": results([0.40, 0.44, 0.4425]), "warm": results([0.45, 0.49, 0.43])}   # rung at epoch 3

    def made(**settings):
        rungs = SchedulerConfig(grace_period=3, reduction_factor=3, min_trials=1, compare="last", keep_warm_start=False)
        config = RunConfig(model="m", params={}, objective=Objective("val_acc", "max"), budget=Budget(max_epochs=9),
                           space={"lr": Spec("loguniform", low=1e-5, high=1.0), "hidden_dim": Spec("int", low=8, high=128)},
                           scheduler=dataclasses.replace(rungs, **settings),
                           warm_start=(point,))
        scheduler = make_scheduler(config, OutcomeLog(None))
        for name, config_ in (("other", {"lr": 0.01, "hidden_dim": 64}), ("warm", {"lr": 0.002, "hidden_dim": 64})):
            scheduler.on_trial_add(None, SimpleNamespace(trial_id=name, config=config_))
        return scheduler

    assert drive(made(), rung) == {"other": None, "warm": 3}
    defaults = SchedulerConfig()
    assert (defaults.min_trials, defaults.compare, defaults.keep_warm_start) == (1, "best", True)
    kept = made(keep_warm_start=True)
    assert drive(kept, rung) == {"other": None, "warm": None} and kept.bracket.exempt == {"warm"}
    assert drive(made(compare="best"), rung) == {"other": None, "warm": None}     # best so far 0.49
    assert drive(made(min_trials=2), rung) == {"other": None, "warm": None}       # one other is too few
    kept = made(keep_warm_start=True)                                             # exempt from rungs, not health
    assert drive(kept, {"warm": results([0.5] * 9, [0.1] * 9)})["warm"] is not None
    assert kept.bracket.decided["warm"].outcome == "pruned_flatline"


def test_only_a_point_that_names_every_searched_parameter_exempts_a_trial():
    """A point that leaves a parameter to the sampler is not one config: the trials it seeds, and
    any other trial sharing its named values, stay under the rungs."""
    space = {"lr": Spec("loguniform", low=1e-5, high=1.0), "optimizer": Spec("choice", choices=("adam", "sgd"))}
    config = RunConfig(model="m", params={}, objective=Objective("val_acc", "max"), budget=Budget(max_epochs=9),
                       space=space, warm_start=({"optimizer": "adam"}, {"lr": 0.01, "optimizer": "sgd"}, {}))
    scheduler = make_scheduler(config, OutcomeLog(None))
    for name, trial_config in (("adam", {"lr": 3e-4, "optimizer": "adam"}), ("sgd", {"lr": 0.01, "optimizer": "sgd"}),
                               ("other", {"lr": 0.05, "optimizer": "sgd"})):
        scheduler.on_trial_add(None, SimpleNamespace(trial_id=name, config=trial_config))
    assert scheduler.bracket.exempt == {"sgd"}


def test_a_resumed_search_compares_the_best_value_its_trials_reported_before():
    """The state is saved at rungs only; the best value so far of the epochs after it comes back from
    the run dir's rows (Resumption.apply), so the resumed search decides as the uninterrupted one."""
    rows = results([0.5, 0.6, 0.9, 0.7, 0.65, 0.6])                # rungs at epochs 2 and 6
    live, resumed = asha(max_t=18, grace_period=2), asha(max_t=18, grace_period=2)
    live.bracket.compare = resumed.bracket.compare = "best"
    for epoch, row in enumerate(rows[:5], 1):
        live.on_trial_result(None, SimpleNamespace(trial_id="a"), row)
        if epoch == 2:
            saved = json.loads(json.dumps(live.state()))            # what the rung at epoch 2 persisted
    resumed.restore_state(saved)
    assert resumed.bracket.best == {"a": 0.6}
    resumed.observe_history({"a": rows[:5], "unhealthy": [{**rows[0], "health": "nonfinite", "val_acc": 9.0}]})
    assert resumed.bracket.best == live.bracket.best == {"a": 0.9}


def test_a_final_result_takes_its_place_at_a_due_rung_and_an_unhealthy_one_does_not():
    """A Tune stop criterion ends a trial without ``on_trial_result``: its last result is recorded
    at the rung due (no stop decided), as in Ray's ASHA."""
    scheduler = asha()
    scheduler.on_trial_complete(None, SimpleNamespace(trial_id="a"), results([0.5, 0.6, 0.7])[2])
    scheduler.on_trial_complete(None, SimpleNamespace(trial_id="flat"), results([0.9] * 3, [0.1] * 3)[2])
    scheduler.on_trial_complete(None, SimpleNamespace(trial_id="done"), results([0.9] * 9)[8])   # at max_t
    assert [rung.scores for rung in scheduler.bracket.rungs] == [{}, {"a": 0.7}]
    assert scheduler.bracket.decided == {}


def test_a_health_stop_without_a_reason_says_which_verdict_at_which_epoch():
    outcomes = OutcomeLog(None)
    result = {"training_iteration": 2, "val_acc": 0.5, "health": "exploding"}
    assert asha(outcomes).on_trial_result(None, SimpleNamespace(trial_id="x"), result) == STOP
    assert outcomes.get("x")["outcome"] == "pruned_exploding"
    assert outcomes.get("x")["reason"] == "health verdict exploding at epoch 2"


def test_every_decision_is_written_to_the_state_path(tmp_path):
    scheduler = HealthASHA("val_acc", "max", max_t=9, grace_period=1, reduction_factor=3,
                           outcomes=OutcomeLog(None), state_path=tmp_path / SCHEDULER_STATE)
    drive(scheduler, {"t1": results([0.9] * 2), "t2": results([0.4] * 2)})
    assert scheduler_state(tmp_path) == json.loads(json.dumps(scheduler.state()))
    assert scheduler_state(tmp_path)["decided"]["t2"]["outcome"] == "pruned_asha"


def test_a_hook_for_the_next_step_runs_once_before_ray_picks_a_trial():
    from ray.tune.experiment import Trial

    scheduler, seen = asha(), []
    waiting = SimpleNamespace(trial_id="w", status=Trial.PENDING)
    controller = SimpleNamespace(get_trials=lambda: [waiting], get_live_trials=lambda: [waiting])
    scheduler.on_trial_add(controller, waiting)
    scheduler.on_next_step(lambda c: seen.append((c, waiting.status)))
    assert scheduler.choose_trial_to_run(controller) is waiting
    assert scheduler.choose_trial_to_run(controller) is waiting
    assert seen == [(controller, Trial.PENDING)]


class TuneTrial:
    """A trial as a scheduler reads it; hashable, as Tune keeps its live trials in a set."""

    def __init__(self, trial_id, status):
        self.trial_id, self.status, self.config = trial_id, status, {}


class Controller:
    """Tune's view of the trials as a scheduler sees it: every trial in the order added (a retried
    trial moves to the end and is added again, as TuneController._try_recover does) and the live
    ones (all but TERMINATED: Ray 2.60 keeps a failed trial in its live set). Counts the reads of
    every trial."""

    def __init__(self, scheduler):
        self.scheduler, self.trials, self.reads = scheduler, [], 0

    def add(self, name, status):
        trial = TuneTrial(name, status)
        self.trials.append(trial)
        self.scheduler.on_trial_add(self, trial)
        return trial

    def retry(self, trial):
        self.trials.remove(trial)
        self.trials.append(trial)
        trial.status = "PENDING"
        self.scheduler.on_trial_add(self, trial)

    def get_trials(self):
        self.reads += 1
        return list(self.trials)

    def get_live_trials(self):
        return {t for t in self.trials if t.status != "TERMINATED"}


FIRST_WAITING = [
    # name, trials (name, status) in the order added, retried (added again), expected
    ("nothing waits", [("a", "RUNNING"), ("b", "TERMINATED")], [], None),
    ("the first pending", [("a", "TERMINATED"), ("b", "PENDING"), ("c", "PENDING")], [], "b"),
    ("pending before paused", [("a", "PAUSED"), ("b", "RUNNING"), ("c", "PENDING")], [], "c"),
    ("the first paused when none pends", [("a", "ERROR"), ("b", "PAUSED"), ("c", "PAUSED")], [], "b"),
    ("a retried trial goes last", [("a", "PENDING"), ("b", "PENDING")], ["a"], "b"),
    ("an errored trial never", [("a", "ERROR"), ("b", "RUNNING")], [], None),
]


@pytest.mark.parametrize("trials,retried,expected", [c[1:] for c in FIRST_WAITING], ids=[c[0] for c in FIRST_WAITING])
def test_ray_starts_the_trial_fifo_order_names_without_reading_every_trial(trials, retried, expected):
    from ray.tune.schedulers import FIFOScheduler

    controller = Controller(asha())
    added = {name: controller.add(name, status) for name, status in trials}
    for name in retried:
        controller.retry(added[name])
    chosen = controller.scheduler.choose_trial_to_run(controller)
    assert (chosen.trial_id if chosen else None) == expected
    assert controller.reads == 0
    assert chosen is FIFOScheduler().choose_trial_to_run(controller)


def test_the_choice_matches_rays_fifo_order_on_random_searches():

    from ray.tune.schedulers import FIFOScheduler

    rng = random.Random(7)
    statuses = ("PENDING", "RUNNING", "PAUSED", "TERMINATED", "ERROR")
    for _ in range(300):
        controller = Controller(asha())
        trials = [controller.add(f"t{i}", rng.choice(statuses)) for i in range(rng.randint(0, 8))]
        for trial in rng.sample(trials, k=min(len(trials), rng.randint(0, 2))):
            controller.retry(trial)
        assert controller.scheduler.choose_trial_to_run(controller) is FIFOScheduler().choose_trial_to_run(controller)


def test_a_stopped_trial_leaves_the_order_and_a_retried_one_comes_back_last():
    controller = Controller(asha())
    a, b = controller.add("a", "PENDING"), controller.add("b", "PENDING")
    a.status = "TERMINATED"
    controller.scheduler.on_trial_complete(controller, a, {})
    b.status = "ERROR"
    controller.scheduler.on_trial_error(controller, b)
    assert controller.scheduler._added == {}
    c = controller.add("c", "PENDING")
    controller.retry(b)
    assert controller.scheduler.choose_trial_to_run(controller) is c and controller.reads == 0


def test_a_waiting_trial_the_scheduler_was_never_told_of_falls_back_to_reading_every_trial():
    controller = Controller(asha())
    controller.add("a", "PENDING")
    stranger = TuneTrial("s", "PENDING")
    controller.trials.insert(0, stranger)                       # in Tune's list, never added
    assert controller.scheduler.choose_trial_to_run(controller) is stranger and controller.reads == 1


def test_the_debug_string_shows_each_rung_in_the_metrics_terms():
    scheduler = asha(mode="min")
    drive(scheduler, {"t1": results([0.2] * 3), "t2": results([0.7] * 3)})
    assert scheduler.debug_string() == ("HealthASHA on val_acc (min): stopped 1 by rank, 0 by health | "
                                        "epoch 1: 2 trials, cutoff 0.3667 | epoch 3: 1 trials, cutoff 0.2")
