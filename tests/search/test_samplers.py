"""hpsearch.tune.samplers: what the rung-fitted TPE learns from (every usable trial ranked by the
epoch it reached and then its value there, or the usable trials at the largest budget enough of them
reached; never a health-pruned or failed one), and that its suggestions depend on the stored study
and the trial number alone, so a resumed search samples as an uninterrupted one."""

from __future__ import annotations

import math
import pickle

import numpy as np
import optuna
import pytest
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from hpsearch.tune.samplers import ALGORITHMS, BUDGET, REACH, FitStudy, Observed, RungTPESampler, make_sampler, reach, usable

SPACE = {"x": FloatDistribution(0.0, 1.0), "n": IntDistribution(1, 8)}


def observations(trials, min_points, view=REACH):
    """Every observation a fresh reader gives (a limit no study here reaches)."""
    return Observed().bounded_points(trials, min_points, len(trials), maximize=True, view=view)


def reference_bounded(points, limit, maximize, step=None):
    """What ``Observed.bounded_points`` keeps, read the slow way from every point: the best tenth of
    ``limit`` by value (ties: the older first) and every point from a start that moves in steps."""
    if len(points) <= limit:
        return points
    best, step = max(1, limit // 10), step or max(1, limit // 5)
    order = sorted(range(len(points)), key=lambda i: points[i][1], reverse=maximize)
    start = (len(points) - (limit - best)) // step * step
    return [points[i] for i in sorted(set(order[:best]) | set(range(start, len(points))))]


def fitted(values, limit, maximize, step=None, view=REACH):
    """The positions ``Observed.bounded_points`` keeps of finished trials worth ``values``, oldest first."""
    space = {"i": IntDistribution(0, 10**6)}
    trials = [create_trial(state=TrialState.COMPLETE, params={"i": i}, distributions=space, value=float(v),
                           intermediate_values={1: float(v)}) for i, v in enumerate(values)]
    return [p["i"] for p, _ in Observed().bounded_points(trials, 1, limit, maximize, "s", step, view)]


def trial(state, steps, x=0.5, n=4, outcome=None):
    made = create_trial(state=state, params={"x": x, "n": n}, distributions=SPACE,
                        value=max(steps.values()) if state == TrialState.COMPLETE else None,
                        intermediate_values=steps, user_attrs={"outcome": outcome} if outcome else {})
    return made


@pytest.mark.parametrize("what, made, ok", [
    ("completed", trial(TrialState.COMPLETE, {1: 0.1, 2: 0.2}), True),
    ("stopped by ASHA", trial(TrialState.PRUNED, {1: 0.1}, outcome="pruned_asha"), True),
    ("still running", trial(TrialState.RUNNING, {1: 0.1}), True),
    ("flatlined", trial(TrialState.PRUNED, {1: 0.9}, outcome="pruned_flatline"), False),
    ("exploded", trial(TrialState.PRUNED, {1: 0.9}, outcome="pruned_exploding"), False),
    ("failed", trial(TrialState.FAIL, {}), False),
])
def test_what_the_model_may_learn_from(what, made, ok):
    assert usable(made) is ok


def test_every_usable_trial_counts_ranked_by_the_epoch_it_reached_then_its_value():
    trials = [trial(TrialState.COMPLETE, {1: 0.1, 2: 0.2, 3: 0.3}, x=0.1),
              trial(TrialState.PRUNED, {1: 0.4, 2: 0.5}, x=0.2, outcome="pruned_asha"),
              trial(TrialState.PRUNED, {1: 0.6}, x=0.3, outcome="pruned_asha"),
              trial(TrialState.RUNNING, {1: 0.9, 2: 0.1}, x=0.4),
              trial(TrialState.PRUNED, {1: 0.99, 2: 0.99, 3: 0.99}, x=0.9, outcome="pruned_flatline")]
    points = observations(trials, 4)
    assert [p["x"] for p, _ in points] == [0.1, 0.2, 0.3, 0.4]      # in trial order; the flatlined one never
    by_reach = [p["x"] for p, _ in sorted(points, key=lambda point: point[1], reverse=True)]
    assert by_reach == [0.1, 0.2, 0.4, 0.3]     # 3 epochs; 2 epochs at 0.5 above 2 at 0.1; then 1 epoch
    assert observations(trials, 5) is None      # the flatlined trial never counts


@pytest.mark.parametrize("maximize", [True, False])
@pytest.mark.parametrize("values", [
    (0.817, 0.819, 0.853),                      # a plateau and the lone best
    (1e-5, 2e-5, 0.08),                         # a loss near zero
    (-3.0, 0.0, 250.0), (1e6, 2e6, 1e9),        # negative and large
])
def test_reach_orders_by_epoch_first_then_by_value_in_the_objective_direction(values, maximize):
    at = {step: [reach(trial(TrialState.PRUNED, {step: v}), maximize) for v in values] for step in (1, 2, 5)}
    for reaches in at.values():
        expected = sorted(reaches) if maximize else sorted(reaches, reverse=True)
        assert reaches == expected and len(set(reaches)) == len(values)       # no tie between distinct values
    assert max(at[1]) < min(at[2]) and max(at[2]) < min(at[5])             # a later epoch outranks any value


def test_the_budget_view_is_the_largest_epoch_enough_usable_trials_reached():
    trials = [trial(TrialState.COMPLETE, {1: 0.1, 2: 0.2, 3: 0.3}, x=0.1),
              trial(TrialState.PRUNED, {1: 0.4, 2: 0.5}, x=0.2, outcome="pruned_asha"),
              trial(TrialState.PRUNED, {1: 0.6}, x=0.3, outcome="pruned_asha"),
              trial(TrialState.PRUNED, {1: 0.99, 2: 0.99, 3: 0.99}, x=0.9, outcome="pruned_flatline")]
    assert [(p["x"], v) for p, v in observations(trials, 2, BUDGET)] == [(0.1, 0.2), (0.2, 0.5)]
    assert [(p["x"], v) for p, v in observations(trials, 3, BUDGET)] == [(0.1, 0.1), (0.2, 0.4), (0.3, 0.6)]
    assert observations(trials, 4, BUDGET) is None          # the flatlined trial never counts
    minimized = Observed().bounded_points(trials, 3, 10, maximize=False, view=BUDGET)
    assert [v for _, v in minimized] == [-0.1, -0.4, -0.6]  # higher is better in the fit: a loss is negated


def test_the_views_share_out_the_model_drawn_configs_by_trial_number():
    sampler = RungTPESampler(SPACE, seed=11)
    views = [sampler.view(n) for n in range(2000)]
    assert views == [RungTPESampler(SPACE, seed=11).view(n) for n in range(2000)]       # a function of the number
    assert 900 <= views.count(None) <= 1100 and 400 <= views.count(REACH) <= 600 and 400 <= views.count(BUDGET) <= 600
    only_reach = RungTPESampler(SPACE, seed=11, random_share=0.0, reach_share=1.0)
    assert {only_reach.view(n) for n in range(200)} == {REACH}


def test_a_trial_without_a_finite_report_has_no_reach():
    assert reach(trial(TrialState.RUNNING, {}), True) is None
    assert reach(trial(TrialState.RUNNING, {1: 0.5, 2: math.nan}), True) is None


def test_observations_kept_between_calls_equal_a_fresh_read_of_a_growing_study():
    """Trials start, report, and finish out of order (completed, stopped by ASHA or by a health
    rule, failed); at every step the kept reader returns what reading every trial returns."""
    rng = np.random.default_rng(7)
    kept, kept_max, kept_min = Observed(), Observed(), Observed()
    # a warm-start point enqueued first waits (WAITING) while later trials run and finish
    live = [{"state": TrialState.WAITING, "steps": {}, "x": 0.5, "outcome": None}]
    ends = [(TrialState.COMPLETE, None), (TrialState.PRUNED, "pruned_asha"), (TrialState.PRUNED, "pruned_flatline"),
            (TrialState.FAIL, None)]
    for round_ in range(150):
        if round_ == 60:
            live[0]["state"] = TrialState.RUNNING
        if round_ == 90:                                    # a searcher restored from Ray's snapshot
            kept, kept_max = pickle.loads(pickle.dumps(kept)), pickle.loads(pickle.dumps(kept_max))
            assert kept._filed == {} and kept_max._ranked == {}
        if rng.random() < 0.4:
            live.append({"state": TrialState.RUNNING, "steps": {}, "x": float(rng.random()), "outcome": None})
        running = [t for t in live if t["state"] == TrialState.RUNNING]
        for t in running:
            if rng.random() < 0.6:
                t["steps"][len(t["steps"]) + 1] = round(float(rng.random()), 1)     # ties among values
        if running and rng.random() < 0.3:
            t = running[int(rng.integers(len(running)))]           # any running trial, not the oldest
            t["state"], t["outcome"] = ends[int(rng.integers(len(ends)))]
        trials = [create_trial(state=t["state"], params={"x": t["x"], "n": 4}, distributions=SPACE,
                               value=(max(t["steps"].values()) if t["steps"] else 0.0)
                               if t["state"] == TrialState.COMPLETE else None,
                               intermediate_values=dict(t["steps"]),
                               user_attrs={"outcome": t["outcome"]} if t["outcome"] else {}) for t in live]
        for view in (REACH, BUDGET):
            for min_points in (1, 3, 6):
                assert kept.bounded_points(trials, min_points, len(trials), True, "study", view=view) == \
                    read_every_trial(trials, min_points, True, view)
            for maximize, reader in ((True, kept_max), (False, kept_min)):
                for min_points, limit, step in ((12, 1, None), (12, 2, None), (12, 6, None), (12, 10, 3), (24, 20, 4)):
                    every = read_every_trial(trials, min_points, maximize, view)
                    assert reader.bounded_points(trials, min_points, limit, maximize, "study", step, view) == \
                        (None if every is None else reference_bounded(every, limit, True, step))


def read_every_trial(trials, min_points, maximize=True, view=REACH):
    """What ``observations`` means, read the slow way, in trial order: REACH, every usable trial that
    reported, with its reach (None while fewer than ``min_points``); BUDGET, the largest epoch that
    at least ``min_points`` usable trials reached, and every such trial's value there (negated when
    minimizing)."""
    reached = [t for t in trials if usable(t) and t.intermediate_values]
    if view == REACH:
        points = [(t.params, reach(t, maximize)) for t in reached]
        return points if len(points) >= min_points else None
    sign = 1 if maximize else -1
    for budget in sorted({s for t in reached for s in t.intermediate_values}, reverse=True):
        points = [(t.params, sign * t.intermediate_values[budget]) for t in reached if budget in t.intermediate_values]
        if len(points) >= min_points:
            return points
    return None


def study_with(trials):
    study = optuna.create_study(direction="maximize", sampler=RungTPESampler(SPACE, seed=3, min_points=3))
    study.add_trials(trials)
    return study


def test_suggestions_depend_on_the_stored_study_and_the_trial_number_alone():
    """Two samplers over the same stored trials (one as it ran, one rebuilt after a resume) suggest
    the same configs, whatever was asked of them before."""
    history = [trial(TrialState.COMPLETE, {1: x, 2: x}, x=x, n=1 + i % 8) for i, x in
               enumerate([0.1, 0.8, 0.85, 0.3, 0.9, 0.2, 0.75, 0.5])]
    first, resumed = study_with(history), study_with(history)
    first.ask(SPACE)                                  # a suggestion the resumed sampler never made
    resumed.enqueue_trial({"x": 0.5, "n": 2})
    resumed.ask(SPACE)
    a = [first.ask(SPACE).params for _ in range(5)]
    b = [resumed.ask(SPACE).params for _ in range(5)]
    assert a == b


def test_the_model_leans_towards_what_the_rungs_showed():
    """High x did well at epoch 1 on most trials: most model-drawn suggestions land high."""
    history = [trial(TrialState.PRUNED if x < 0.5 else TrialState.RUNNING, {1: x}, x=x,
                     outcome="pruned_asha" if x < 0.5 else None)
               for x in [0.05, 0.1, 0.2, 0.3, 0.35, 0.4, 0.6, 0.7, 0.8, 0.9, 0.95]]
    study = study_with(history)
    xs = [study.ask(SPACE).params["x"] for _ in range(30)]
    assert sum(x > 0.5 for x in xs) >= 20


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_every_algorithm_makes_a_sampler(algorithm):
    assert isinstance(make_sampler(algorithm, SPACE, seed=0), optuna.samplers.BaseSampler)


def test_an_unknown_algorithm_is_refused():
    with pytest.raises(ValueError, match="algorithm: got 'bohb'"):
        make_sampler("bohb", SPACE, seed=0)


@pytest.mark.parametrize("maximize, expected", [
    (True, list(range(12, 30))),             # the best 2 (28, 29) and the recent past from 12 (a multiple of 4)
    (False, [0, 1, *range(12, 30)]),         # the best 2 (0, 1) and the recent past from 12
])
@pytest.mark.parametrize("view", [REACH, BUDGET])
def test_a_suggestion_fits_on_the_best_and_the_most_recent_points_only(maximize, expected, view):
    values = range(30)                                              # 30 points, oldest first, point i worth i
    assert fitted(values, 30, maximize, view=view) == list(range(30))   # within the limit: every point
    # limit 20: 2 best and at least 18 recent ones, from a start that moves in steps of 20 // 5 = 4
    assert fitted(values, 20, maximize, view=view) == expected


@pytest.mark.parametrize("view", [REACH, BUDGET])
def test_the_best_points_are_kept_however_old(view):
    kept = fitted([1.0] + [0.0] * 39, 10, maximize=True, view=view)                    # the oldest is the best; step 2
    assert kept == [0, *range(30, 40)]                                       # and the recent past from 30


@pytest.mark.parametrize("view", [REACH, BUDGET])
def test_the_recent_window_moves_in_steps_so_the_kept_points_mostly_grow_at_their_end(view):
    rng = np.random.default_rng(3)
    values = rng.random(120)
    kept = [fitted(values[:n], 20, True, step=5, view=view) for n in range(21, 121)]
    for before, after in zip(kept, kept[1:]):
        assert 18 <= len(after) <= 25 and after[-1] == before[-1] + 1     # limit - best tenth .. limit + step
    extended = sum(after[:len(before)] == before for before, after in zip(kept, kept[1:]))
    assert extended >= 0.7 * (len(kept) - 1)        # the window moved at 1 in 5; a new best now and then


def test_the_kept_fit_study_suggests_what_a_fresh_fit_would():
    """One sampler asked at every step of a growing study (its fit study extended, or rebuilt when
    the bound drops old points) suggests what a new sampler suggests from the same stored trials."""
    import hpsearch.tune.samplers as module

    rng = np.random.default_rng(0)
    history = [trial(TrialState.COMPLETE, {1: float(v)}, x=float(x), n=int(n))
               for x, v, n in zip(rng.random(40), rng.random(40), rng.integers(1, 9, 40))]
    kept = RungTPESampler(SPACE, seed=5, min_points=3, random_share=0.0)
    for size in (5, 6, 9, 14, 30, 40):
        for limit in (1000, 12):                      # 12: old points dropped, so the kept study is rebuilt
            module.MAX_POINTS = limit
            try:
                fresh = RungTPESampler(SPACE, seed=5, min_points=3, random_share=0.0)
                a, b = study_with(history[:size]), study_with(history[:size])
                a.sampler, b.sampler = kept, fresh
                assert a.ask(SPACE).params == b.ask(SPACE).params
            finally:
                module.MAX_POINTS = 500


def test_the_fit_study_matches_optunas_own_trials_and_is_not_saved_with_the_sampler():
    points = [({"x": x, "n": 1 + i % 8}, v) for i, (x, v) in enumerate([(0.1, 0.3), (0.7, 0.9), (0.4, 0.5),
                                                                        (0.9, 0.8), (0.2, 0.1)])]
    ours = FitStudy().holding(points, SPACE, optuna.study.StudyDirection.MAXIMIZE)
    theirs = optuna.create_study(direction="maximize")
    theirs.add_trials([create_trial(params=p, distributions=SPACE, value=v) for p, v in points])
    for study in (ours, theirs):
        study.sampler = optuna.samplers.TPESampler(seed=1, multivariate=True, n_startup_trials=0)
    assert ours.ask(SPACE).params == theirs.ask(SPACE).params
    sampler = RungTPESampler(SPACE, seed=5, min_points=3, random_share=0.0)
    sampler._fit_studies[REACH].holding(points, SPACE, optuna.study.StudyDirection.MAXIMIZE)
    sampler._observed.bounded_points([trial(TrialState.COMPLETE, {1: 0.5}) for _ in range(4)], 3, 10, True, "s")
    assert sampler._observed._ranked                           # filled before it is saved
    restored = pickle.loads(pickle.dumps(sampler))             # as Ray's searcher snapshot saves it
    unused = RungTPESampler(SPACE, seed=5, min_points=3, random_share=0.0)
    assert all(f._held == [] for f in restored._fit_studies.values()) and restored._observed._ranked == {}
    assert len(pickle.dumps(sampler)) == len(pickle.dumps(unused))
