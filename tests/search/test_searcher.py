"""The Optuna searcher driven as Ray's controller drives it (no Ray cluster): states, warm starts,
seeding, and the study in the run dir."""

from __future__ import annotations

import math
from types import SimpleNamespace

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial
from ray.tune.search import ConcurrencyLimiter

from hpsearch.core.config import Budget, Objective, RunConfig, SchedulerConfig
from hpsearch.core.health import HealthConfig, assess
from hpsearch.core.rundir import STUDY_NAME, OutcomeLog, study_storage
from hpsearch.core.space import parse_space
from hpsearch.models.config import ConfigError
from hpsearch.tune.scheduler import make_scheduler
from hpsearch.tune.searcher import (
    CONSTRAINT,
    HealthOptunaSearch,
    close_open_trials,
    inner_searcher,
    make_searcher,
    ranked_values,
    warm_start_points,
)

SPACE = parse_space({"lr": {"loguniform": [1e-5, 1e-1]}, "hidden_dim": {"int": [16, 256], "log": True},
                     "mining": {"choice": ["batch_all", "batch_hard"]}})


def make_config(seed=0, warm_start=(), params=None, max_concurrent=0):
    return RunConfig(model="m", params=params if params is not None else {}, objective=Objective("val_acc", "max"),
                     seed=seed, space=SPACE, warm_start=tuple(warm_start),
                     budget=Budget(num_samples=20, max_epochs=9, max_concurrent=max_concurrent),
                     scheduler=SchedulerConfig(grace_period=1, reduction_factor=3))


def study(run_dir):
    return optuna.load_study(study_name=STUDY_NAME, storage=study_storage(run_dir))


def by_ray_id(run_dir):
    return {t.user_attrs["trial_id"]: t for t in study(run_dir).trials}


def rows(objective, losses=None):
    """Per-epoch results as the trainable reports them (health from hpsearch.core.health)."""
    losses = losses if losses is not None else [0.8 ** e for e in range(len(objective))]
    out, history = [], []
    for epoch, (value, loss) in enumerate(zip(objective, losses), 1):
        history.append({"train_loss": loss, "train_batch_loss_std": 0.1, "train_grad_norm": 1.0})
        verdict = assess(history, HealthConfig())
        out.append({"training_iteration": epoch, "val_acc": value, "train_loss": loss,
                    "health": verdict.status, "health_reason": verdict.reason})
    return out


def run_trial(searcher, scheduler, trial_id, results):
    """What Ray's TuneController does with one trial's results: scheduler first; the searcher sees
    results the scheduler continues, then the completion with the last result."""
    searcher.suggest(trial_id)
    trial = SimpleNamespace(trial_id=trial_id)
    for result in results:
        decision = scheduler.on_trial_result(None, trial, result)
        if decision == "STOP":
            break
        searcher.on_trial_result(trial_id, result)
    searcher.on_trial_complete(trial_id, result=result)


@pytest.fixture
def search(tmp_path):
    config = make_config()
    outcomes = OutcomeLog(tmp_path)
    return make_searcher(config, tmp_path, outcomes), make_scheduler(config, outcomes), tmp_path


def test_completed_trial_gets_its_last_value_and_intermediate_values(search):
    searcher, scheduler, run_dir = search
    run_trial(searcher, scheduler, "good", rows([0.5, 0.7, 0.6, 0.62, 0.64, 0.66, 0.68, 0.7, 0.65]))
    trial = by_ray_id(run_dir)["good"]
    assert trial.state == TrialState.COMPLETE and trial.value == 0.65
    assert trial.intermediate_values == {1: 0.5, 2: 0.7, 3: 0.6, 4: 0.62, 5: 0.64, 6: 0.66, 7: 0.68, 8: 0.7, 9: 0.65}
    assert trial.user_attrs["outcome"] == "completed" and not trial.constraints


@pytest.mark.parametrize("losses, outcome", [([0.1] * 9, "pruned_flatline"),
                                             ([1.0, 0.8, 2.4, 7.2, 21.6, 64.8, 194.4, 583.2, 1749.6], "pruned_exploding")])
def test_health_pruned_trial_is_pruned_and_infeasible_never_complete(search, losses, outcome):
    searcher, scheduler, run_dir = search
    run_trial(searcher, scheduler, "sick", rows([0.99] * 9, losses))  # ranks first, but unhealthy
    trial = by_ray_id(run_dir)["sick"]
    assert trial.state == TrialState.PRUNED
    assert trial.user_attrs["outcome"] == outcome and "epoch" in trial.user_attrs["reason"]
    assert trial.constraints == {CONSTRAINT: 1.0, "0": 1.0}  # TPE ranks infeasible trials below every feasible one


def test_health_verdict_in_the_result_is_enough_without_the_log(tmp_path):
    """A searcher restored by Ray holds its own copy of the log; the result's verdict still counts."""
    searcher = make_searcher(make_config(), tmp_path, OutcomeLog(None))
    searcher.suggest("t")
    searcher.on_trial_complete("t", result={"training_iteration": 2, "val_acc": 0.9, "health": "collapsed",
                                            "health_reason": "train_emb_std 0 at epoch 2: ..."})
    trial = by_ray_id(tmp_path)["t"]
    assert (trial.state, trial.user_attrs["outcome"]) == (TrialState.PRUNED, "pruned_collapsed")


def test_outcome_read_from_disk_when_this_log_copy_missed_it(tmp_path):
    searcher = make_searcher(make_config(), tmp_path, OutcomeLog(tmp_path))
    OutcomeLog(tmp_path).record("t", "pruned_flatline", "train_loss unchanged at epoch 3", 3)  # another copy
    searcher.suggest("t")
    searcher.on_trial_complete("t", result={"training_iteration": 3, "val_acc": 0.9})
    assert by_ray_id(tmp_path)["t"].user_attrs["outcome"] == "pruned_flatline"


def test_asha_pruned_trial_is_pruned_but_feasible(search):
    searcher, scheduler, run_dir = search
    run_trial(searcher, scheduler, "first", rows([0.9] * 9))
    run_trial(searcher, scheduler, "worse", rows([0.2] * 9))
    trial = by_ray_id(run_dir)["worse"]
    assert trial.state == TrialState.PRUNED and not trial.constraints
    assert trial.user_attrs["reason"] == "val_acc 0.2 below rung cutoff 0.9 at epoch 1 (rung 1, 2 trials)"


@pytest.mark.parametrize("final", [math.nan, math.inf, -math.inf])
def test_nonfinite_final_objective_is_never_complete(search, final):
    searcher, _, run_dir = search
    searcher.suggest("nan")
    searcher.on_trial_result("nan", {"training_iteration": 1, "val_acc": 0.4})
    searcher.on_trial_result("nan", {"training_iteration": 2, "val_acc": math.nan})
    searcher.on_trial_complete("nan", result={"training_iteration": 3, "val_acc": final})
    trial = by_ray_id(run_dir)["nan"]
    assert trial.state == TrialState.PRUNED and trial.user_attrs["outcome"] == "pruned_nonfinite"
    assert trial.intermediate_values == {1: 0.4}  # non-finite values are never reported
    assert trial.constraints == {CONSTRAINT: 1.0, "0": 1.0}


def test_errored_trial_fails(search):
    searcher, _, run_dir = search
    searcher.suggest("boom")
    searcher.on_trial_result("boom", {"training_iteration": 1, "val_acc": 0.4})
    searcher.on_trial_complete("boom", error=True)
    trial = by_ray_id(run_dir)["boom"]
    assert (trial.state, trial.user_attrs["outcome"]) == (TrialState.FAIL, "error")


def test_trial_that_never_reported_fails(search):
    searcher, _, run_dir = search
    searcher.suggest("pending")
    searcher.on_trial_complete("pending")  # Ray removes a trial that never started
    assert by_ray_id(run_dir)["pending"].state == TrialState.FAIL


def test_no_trial_left_running_when_the_search_ends_early(tmp_path):
    limited = make_searcher(make_config(max_concurrent=3), tmp_path, OutcomeLog(tmp_path))
    assert isinstance(limited, ConcurrencyLimiter)
    for trial_id in ("a", "b", "c"):
        assert limited.suggest(trial_id) is not None
    assert limited.suggest("d") is None  # the limiter holds back a fourth
    limited.on_trial_complete("a", result={"training_iteration": 9, "val_acc": 0.5})
    assert close_open_trials(limited) == ["b", "c"]
    states = {t.user_attrs["trial_id"]: t.state for t in study(tmp_path).trials}
    assert states == {"a": TrialState.COMPLETE, "b": TrialState.FAIL, "c": TrialState.FAIL}
    assert close_open_trials(limited) == []
    limited.on_trial_complete("b", result={"training_iteration": 9, "val_acc": 0.5})  # late: ignored
    assert study(tmp_path).trials[1].state == TrialState.FAIL


def test_completing_twice_is_harmless(search):
    searcher, _, run_dir = search
    searcher.suggest("t")
    searcher.on_trial_complete("t", result={"training_iteration": 9, "val_acc": 0.5})
    searcher.on_trial_complete("t", result={"training_iteration": 9, "val_acc": 0.9})
    assert by_ray_id(run_dir)["t"].value == 0.5


def test_saved_and_restored_searcher_carries_on(tmp_path):
    """Ray pickles the searcher into its experiment checkpoint and restores it on resume."""
    searcher = make_searcher(make_config(), tmp_path, OutcomeLog(tmp_path))
    searcher.suggest("a")
    searcher.suggest("b")
    searcher.on_trial_result("a", {"training_iteration": 1, "val_acc": 0.3})
    searcher.save(str(tmp_path / "searcher.pkl"))
    restored = make_searcher(make_config(), tmp_path, OutcomeLog(tmp_path))
    restored.restore(str(tmp_path / "searcher.pkl"))
    restored.on_trial_result("a", {"training_iteration": 2, "val_acc": 0.4})
    restored.on_trial_complete("a", result={"training_iteration": 3, "val_acc": 0.5})
    assert restored.close_open_trials() == ["b"]
    trials = by_ray_id(tmp_path)
    assert (trials["a"].state, trials["a"].value, trials["a"].intermediate_values) == (
        TrialState.COMPLETE, 0.5, {1: 0.3, 2: 0.4, 3: 0.5})
    assert trials["b"].state == TrialState.FAIL and len(trials) == 2


def test_the_searcher_lets_go_of_each_trial_it_has_told_optuna_about(tmp_path):
    """Ray pickles the searcher into every snapshot: it holds the trials still running, not every
    trial the search asked for; a late result or a second end of a told trial changes nothing."""
    outer = make_searcher(make_config(), tmp_path, OutcomeLog(tmp_path))
    searcher = inner_searcher(outer)
    for trial_id in "abc":
        outer.suggest(trial_id)
    outer.on_trial_result("a", {"training_iteration": 1, "val_acc": 0.3})
    outer.on_trial_complete("a", result={"training_iteration": 2, "val_acc": 0.5})
    outer.on_trial_complete("b", error=True)
    assert set(searcher.asked) == {"c"} and {"a", "b"} <= searcher.told
    assert set(searcher._reported_steps) <= {"c"}
    outer.on_trial_result("a", {"training_iteration": 3, "val_acc": 0.9})
    outer.on_trial_complete("a", result={"training_iteration": 3, "val_acc": 0.9})
    searcher.save(str(tmp_path / "searcher.pkl"))
    outer.on_trial_complete("c", result={"training_iteration": 1, "val_acc": 0.4})   # after that snapshot
    restored = make_searcher(make_config(), tmp_path, OutcomeLog(tmp_path))
    inner_searcher(restored).restore(str(tmp_path / "searcher.pkl"))
    assert inner_searcher(restored).asked == {} and "c" in inner_searcher(restored).told
    assert restored.close_open_trials() == []
    trials = by_ray_id(tmp_path)
    assert (trials["a"].state, trials["a"].value, trials["a"].intermediate_values) == (
        TrialState.COMPLETE, 0.5, {1: 0.3, 2: 0.5})
    assert trials["b"].state == TrialState.FAIL and trials["c"].value == 0.4


def drive_seeded(run_dir, seed, n=12):
    """Sequential trials with a deterministic objective; returns the suggested configs."""
    searcher = make_searcher(make_config(seed=seed), run_dir, OutcomeLog(run_dir))
    configs = []
    for i in range(n):
        config = searcher.suggest(f"t{i}")
        configs.append(config)
        value = -abs(math.log10(config["lr"]) + 3) - abs(config["hidden_dim"] - 100) / 100
        searcher.on_trial_complete(f"t{i}", result={"training_iteration": 9, "val_acc": value})
    return configs


@pytest.mark.slow
def test_seeded_suggestions_are_reproducible(tmp_path):
    first = drive_seeded(tmp_path / "a", seed=7)
    again = drive_seeded(tmp_path / "b", seed=7)
    other = drive_seeded(tmp_path / "c", seed=8, n=2)
    assert first == again  # including the TPE suggestions after the 10 random start-up trials
    assert first[:2] != other
    for config in first:
        assert 1e-5 <= config["lr"] <= 1e-1 and 16 <= config["hidden_dim"] <= 256
        assert config["mining"] in ("batch_all", "batch_hard")


def test_warm_start_points_come_first_and_are_filled_from_params(tmp_path):
    warm = [{"lr": 3e-4, "hidden_dim": 128, "mining": "batch_hard"}, {"lr": 1e-4}]
    config = make_config(warm_start=warm, params={"hidden_dim": 64, "mining": "semi_hard", "margin": 0.2})
    assert warm_start_points(config) == [warm[0], {"lr": 1e-4, "hidden_dim": 64}]  # semi_hard is not in the space
    searcher = make_searcher(config, tmp_path, OutcomeLog(tmp_path))
    first, second, third = (searcher.suggest(t) for t in ("t0", "t1", "t2"))
    assert first == warm[0]
    assert (second["lr"], second["hidden_dim"]) == (1e-4, 64) and second["mining"] in ("batch_all", "batch_hard")
    assert third["lr"] not in (3e-4, 1e-4)


def test_study_opens_from_the_run_dir_with_the_documented_name(search):
    searcher, scheduler, run_dir = search
    run_trial(searcher, scheduler, "good", rows([0.5] * 9))
    run_trial(searcher, scheduler, "flat", rows([0.99] * 9, [0.1] * 9))
    assert (run_dir / "optuna.journal").is_file()
    loaded = study(run_dir)
    assert loaded.direction == optuna.study.StudyDirection.MAXIMIZE
    assert [(t.user_attrs["trial_id"], t.state) for t in loaded.trials] == [
        ("good", TrialState.COMPLETE), ("flat", TrialState.PRUNED)]
    assert loaded.best_trial.user_attrs["trial_id"] == "good"
    assert not [t for t in loaded.trials if t.state == TrialState.RUNNING]


def test_empty_space_is_a_config_error(tmp_path):
    config = RunConfig(model="m", params={}, objective=Objective("val_acc", "max"))
    with pytest.raises(ConfigError, match="space: empty"):
        make_searcher(config, tmp_path, OutcomeLog(tmp_path))


def test_make_searcher_wraps_and_inner_searcher_unwraps(tmp_path):
    from ray.tune.search import SearchGenerator
    from ray.tune.search.optuna import OptunaSearch

    plain = make_searcher(make_config(), tmp_path / "a", OutcomeLog(None))
    limited = make_searcher(make_config(max_concurrent=2), tmp_path / "b", OutcomeLog(None))
    assert isinstance(plain, OptunaSearch) and isinstance(plain, HealthOptunaSearch)
    assert isinstance(limited, ConcurrencyLimiter) and limited.max_concurrent == 2
    assert inner_searcher(SearchGenerator(limited)) is limited.searcher
    assert inner_searcher(plain) is plain and inner_searcher(object()) is None


KIND_CURVES = {
    # kind: (objective per epoch, train_loss per epoch); run in this order, one at a time
    "flat": ([0.99] * 6, [0.1] * 6),
    "good": ([0.9, 0.95, 0.97, 0.98, 0.99, 0.999], [1.0, 0.8, 0.6, 0.5, 0.4, 0.35]),
    "nan": ([0.9999] * 6, [1.0, math.nan, math.nan, math.nan, math.nan, math.nan]),
    "worse": ([0.1] * 6, [1.0, 0.8, 0.6, 0.5, 0.4, 0.35]),
}


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_with_real_ray_tune(tmp_path):
    """Scheduler and searcher inside a real (local, 1 CPU) Tune run: every stop recorded with its
    reason, Optuna told PRUNED for pruned trials, COMPLETE only for the trial that reached max_t."""
    ray = pytest.importorskip("ray")
    from ray import tune

    from hpsearch.core.space import Spec

    def trainable(config):
        objective, losses = KIND_CURVES[config["kind"]]
        history = []
        for value, loss in zip(objective, losses):
            history.append({"train_loss": loss, "train_batch_loss_std": 0.01, "train_grad_norm": 1.0,
                            "val_acc": value})
            verdict = assess(history, HealthConfig(), objective="val_acc")
            tune.report({**history[-1], "health": verdict.status, "health_reason": verdict.reason})

    config = RunConfig(model="m", params={}, objective=Objective("val_acc", "max"), seed=0,
                       space={"kind": Spec("choice", choices=tuple(KIND_CURVES))},
                       warm_start=tuple({"kind": kind} for kind in KIND_CURVES),
                       budget=Budget(num_samples=len(KIND_CURVES), max_epochs=6, max_concurrent=1),
                       scheduler=SchedulerConfig(grace_period=1, reduction_factor=3, keep_warm_start=False))
    run_dir = tmp_path / "run"
    outcomes = OutcomeLog(run_dir.mkdir() or run_dir)
    searcher = make_searcher(config, run_dir, outcomes)
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        tuner = tune.Tuner(tune.with_resources(trainable, {"cpu": 1}),
                           tune_config=tune.TuneConfig(search_alg=searcher, scheduler=make_scheduler(config, outcomes),
                                                       num_samples=config.budget.num_samples),
                           run_config=tune.RunConfig(storage_path=str(tmp_path / "ray"), name="t", verbose=0))
        grid = tuner.fit()
    finally:
        close_open_trials(searcher)
        ray.shutdown()
    kind_of = {r.metrics["trial_id"]: r.config["kind"] for r in grid}
    assert sorted(kind_of.values()) == sorted(KIND_CURVES)
    recorded = {kind_of[t]: (e["outcome"], e["epoch"]) for t, e in outcomes.all().items()}
    assert recorded == {"flat": ("pruned_flatline", 3), "nan": ("pruned_nonfinite", 2), "worse": ("pruned_asha", 1)}
    assert outcomes.all()[next(t for t, k in kind_of.items() if k == "worse")]["reason"] == (
        "val_acc 0.1 below rung cutoff 0.9 at epoch 1 (rung 1, 2 trials)")
    trials = {kind_of[t.user_attrs["trial_id"]]: t for t in study(run_dir).trials}
    assert {k: t.state for k, t in trials.items()} == {"flat": TrialState.PRUNED, "good": TrialState.COMPLETE,
                                                     "nan": TrialState.PRUNED, "worse": TrialState.PRUNED}
    assert trials["good"].value == 0.999
    assert trials["flat"].constraints == trials["nan"].constraints == {CONSTRAINT: 1.0, "0": 1.0}
    assert not trials["worse"].constraints


def test_the_searcher_values_each_ended_trial_as_objective_rank_ranks_it():
    """The values the convergence rule reads: a ranked trial's reported objective under each
    rank; a health-pruned or running trial is not one."""
    study = optuna.create_study(direction="maximize")
    space = {"x": FloatDistribution(0.0, 1.0)}
    for steps, state, outcome in [([0.5, 0.9, 0.6, 0.6], TrialState.COMPLETE, None),
                                  ([0.2, 0.4], TrialState.PRUNED, "pruned_asha"),
                                  ([0.99], TrialState.PRUNED, "pruned_flatline"),
                                  ([0.7], TrialState.RUNNING, None)]:
        study.add_trial(create_trial(state=state, params={"x": 0.5}, distributions=space,
                                     value=steps[-1] if state == TrialState.COMPLETE else None,
                                     intermediate_values=dict(enumerate(steps, 1)),
                                     user_attrs={"outcome": outcome} if outcome else {}))
    assert ranked_values(study, "max") == pytest.approx([0.9, 0.4])
    assert ranked_values(study, "max", "last") == pytest.approx([0.6, 0.4])
    assert ranked_values(study, "max", "mean", 3) == pytest.approx([(0.9 + 0.6 + 0.6) / 3, 0.3])
