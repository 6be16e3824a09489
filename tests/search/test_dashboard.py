"""The study as optuna-dashboard shows it: a health-pruned trial is infeasible there, and every
Optuna trial carries the number the live table, the trial folder and the report give it.

The searcher is driven as Ray's controller drives it, without a Ray cluster: Ray's own
SearchGenerator makes the trials (so their numbers are Ray's), and the dashboard is the installed
optuna-dashboard's WSGI app, asked through its HTTP API."""

from __future__ import annotations

import json
import wsgiref.util
from pathlib import Path
from typing import Any

import optuna
import optuna_dashboard
import pytest
from ray.tune.experiment import Experiment
from ray.tune.search import SearchGenerator

from hpsearch.core.config import Budget, Objective, RunConfig, SchedulerConfig
from hpsearch.core.rundir import STUDY_NAME, OutcomeLog, study_storage
from hpsearch.core.space import parse_space
from hpsearch.tune.searcher import TRIAL_NUMBER, make_searcher
from hpsearch.tune.trainable import trial_index, trial_name

CONFIG = RunConfig(model="m", params={}, objective=Objective("val_acc", "max"), seed=0,
                   space=parse_space({"lr": {"loguniform": [1e-5, 1e-1]}}),
                   budget=Budget(num_samples=8, max_epochs=3, max_concurrent=0),
                   scheduler=SchedulerConfig(grace_period=1, reduction_factor=3))


def trainable(config: dict[str, Any]) -> None:
    """Never run: SearchGenerator only needs something to name in the experiment."""


def generator(run_dir: Path) -> SearchGenerator:
    """Ray's SearchGenerator over the run's searcher, as Tune builds it for ``hpsearch run``."""
    searcher = make_searcher(CONFIG, run_dir, OutcomeLog(run_dir))
    search = SearchGenerator(searcher)
    search.add_configurations([Experiment("run", run=trainable, num_samples=CONFIG.budget.num_samples,
                                          storage_path=str(run_dir), trial_name_creator=trial_name,
                                          trial_dirname_creator=trial_name)])
    return search


def finish(search: SearchGenerator, trial: Any, values: list[float]) -> None:
    """The trial reports ``values`` epoch by epoch and ends."""
    for epoch, value in enumerate(values, 1):
        search.on_trial_result(trial.trial_id, {"training_iteration": epoch, "val_acc": value})
    search.on_trial_complete(trial.trial_id, result={"training_iteration": len(values), "val_acc": values[-1]})


def stored(run_dir: Path) -> dict[str, optuna.trial.FrozenTrial]:
    """Ray trial id -> its Optuna trial, as a new reader of the run dir's journal sees it."""
    study = optuna.load_study(study_name=STUDY_NAME, storage=study_storage(run_dir))
    return {t.user_attrs["trial_id"]: t for t in study.trials}


def api(app: Any, path: str) -> Any:
    """GET ``path`` from a WSGI app; its JSON answer."""
    environ: dict[str, Any] = {}
    wsgiref.util.setup_testing_defaults(environ)
    environ.update(REQUEST_METHOD="GET", PATH_INFO=path, QUERY_STRING="")
    status: list[str] = []
    body = b"".join(app(environ, lambda code, headers, exc_info=None: status.append(code)))
    assert status and status[0].startswith("200"), (status, body[:300])
    return json.loads(body)


def dashboard_trials(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Ray trial id -> the trial as optuna-dashboard's API serves it for the run's study."""
    app = optuna_dashboard.wsgi(study_storage(run_dir))
    (summary,) = api(app, "/api/studies")["study_summaries"]
    detail = api(app, f"/api/studies/{summary['study_id']}")
    return {next(a["value"] for a in t["user_attrs"] if a["key"] == "trial_id"): t for t in detail["trials"]}


def infeasible(served: dict[str, Any]) -> bool:
    """What the dashboard's page decides from a served trial: infeasible when a constraint is > 0."""
    return any(value > 0 for value in served["constraints"])


def test_a_health_pruned_trial_is_infeasible_in_optuna_dashboard(tmp_path):
    search = generator(tmp_path)
    outcomes = OutcomeLog(tmp_path)
    good, cut, flat, nan = (search.next_trial() for _ in range(4))
    finish(search, good, [0.5, 0.6, 0.7])
    outcomes.record(cut.trial_id, "pruned_asha", "val_acc 0.1 below rung cutoff 0.5 at epoch 1", 1)
    finish(search, cut, [0.1])
    outcomes.record(flat.trial_id, "pruned_flatline", "train_loss unchanged over 3 epochs at epoch 3", 3)
    finish(search, flat, [0.9, 0.95, 0.99])      # the best-looking objective of all, but unhealthy
    finish(search, nan, [0.4, float("nan")])      # a final objective that is NaN

    served = dashboard_trials(tmp_path)
    assert {t: (served[t.trial_id]["state"], infeasible(served[t.trial_id])) for t in (good, cut, flat, nan)} == {
        good: ("Complete", False), cut: ("Pruned", False), flat: ("Pruned", True), nan: ("Pruned", True)}
    assert served[flat.trial_id]["intermediate_values"][-1] == {"step": 3, "value": 0.99}   # its curve is still there
    trials = stored(tmp_path)                                                              # and Optuna agrees
    assert [trials[t.trial_id].constraints.get("healthy", 0.0) > 0 for t in (good, cut, flat, nan)] == [
        False, False, True, True]


def test_every_optuna_trial_carries_the_trial_number_of_its_folder(tmp_path):
    search = generator(tmp_path)
    made = [search.next_trial() for _ in range(3)]
    for trial in made:
        finish(search, trial, [0.3, 0.4, 0.5])

    trials = stored(tmp_path)
    assert [trials[t.trial_id].user_attrs[TRIAL_NUMBER] for t in made] == [trial_index(t) for t in made] == [1, 2, 3]
    assert [trial_name(t) for t in made] == [f"trial_{n:04d}_{t.trial_id}" for n, t in zip([1, 2, 3], made)]
    served = dashboard_trials(tmp_path)
    assert [{"key": TRIAL_NUMBER, "value": str(n)} in served[t.trial_id]["user_attrs"]
            for n, t in zip([1, 2, 3], made)] == [True, True, True]
    assert [served[t.trial_id]["number"] for t in made] == [0, 1, 2]     # Optuna's own number: 0-based


@pytest.mark.parametrize("saved_before_numbering", [False, True])
def test_the_trial_number_follows_rays_after_a_resume(tmp_path, saved_before_numbering):
    """Ray restores its SearchGenerator and the searcher from the same snapshot; a trial made after
    that snapshot is lost to Ray, so Ray's next trial takes its number again, and so does the
    searcher's, while Optuna's own number has moved on."""
    search = generator(tmp_path)
    first = [search.next_trial() for _ in range(2)]
    finish(search, first[0], [0.3, 0.4, 0.5])
    inner, numbered = search.searcher, search.searcher._numbered
    if saved_before_numbering:            # a snapshot written before trials were numbered
        del inner._numbered
    search.save_to_dir(str(tmp_path), session_str="s1")
    inner._numbered = numbered
    lost = search.next_trial()            # made after the snapshot: Ray will not know it

    resumed = generator(tmp_path)
    resumed.restore_from_dir(str(tmp_path))
    again = resumed.next_trial()

    assert (trial_index(lost), trial_index(again)) == (3, 3)
    trials = stored(tmp_path)
    assert trials[again.trial_id].user_attrs[TRIAL_NUMBER] == 3
    assert trials[again.trial_id].number == 3 and trials[lost.trial_id].number == 2
