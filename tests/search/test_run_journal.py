"""The run's Optuna storage (hpsearch.core.rundir.RunJournal) answers which trials wait as Optuna's
own JournalStorage does, through the same sequence of enqueues, asks, tells and reopenings, while
reading only the trials that waited."""

from __future__ import annotations

import pickle

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from hpsearch.core.rundir import RunJournal, study_storage

SPACE = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}
WAITING = (TrialState.WAITING,)


def plain(path):
    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def waiting(storage, study):
    return [(t.number, t.system_attrs["fixed_params"]["x"]) for t in storage.get_all_trials(study._study_id, states=WAITING)]


def test_the_waiting_trials_and_the_order_they_run_in_match_optunas_journal_storage(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ours = optuna.create_study(storage=study_storage(tmp_path), sampler=optuna.samplers.RandomSampler(seed=1))
    theirs = optuna.create_study(storage=plain(tmp_path / "plain.journal"), sampler=optuna.samplers.RandomSampler(seed=1))
    assert isinstance(ours._storage, RunJournal)
    steps = ["enqueue 0.1", "enqueue 0.2", "ask", "enqueue 0.3", "ask", "reopen", "ask", "ask", "enqueue 0.4",
             "reopen", "ask", "ask"]
    asked = {"ours": [], "theirs": []}
    for step in steps:
        for name in ("ours", "theirs"):
            study = ours if name == "ours" else theirs
            if step.startswith("enqueue"):
                study.enqueue_trial({"x": float(step.split()[1])})
            elif step == "ask":
                trial = study.ask(SPACE)
                asked[name].append(trial.params["x"])
                study.tell(trial, trial.params["x"])
            else:                                       # a resumed driver opens the journal again
                storage = study_storage(tmp_path) if name == "ours" else plain(tmp_path / "plain.journal")
                study = optuna.load_study(study_name=study.study_name, storage=storage,
                                          sampler=optuna.samplers.RandomSampler(seed=1))
                if name == "ours":
                    ours = study
                else:
                    theirs = study
        assert waiting(ours._storage, ours) == waiting(theirs._storage, theirs), step
    assert asked["ours"] == asked["theirs"]
    assert asked["ours"][:3] == [0.1, 0.2, 0.3] and asked["ours"][4] == 0.4      # enqueued points first


def test_every_other_question_goes_to_optunas_journal_storage_and_a_copy_is_independent(tmp_path):
    storage = study_storage(tmp_path)
    study = optuna.create_study(storage=storage)
    study.enqueue_trial({"x": 0.5})
    first = storage.get_all_trials(study._study_id, deepcopy=True, states=WAITING)
    first[0].user_attrs["changed"] = True
    assert "changed" not in storage.get_all_trials(study._study_id, states=WAITING)[0].user_attrs
    assert [t.state for t in storage.get_all_trials(study._study_id)] == [TrialState.WAITING]
    assert storage.get_all_trials(study._study_id, states=(TrialState.WAITING, TrialState.RUNNING)) != []
    copy = pickle.loads(pickle.dumps(storage))          # as Ray pickles a searcher with its study
    assert waiting(copy, study) == [(0, 0.5)]


@pytest.mark.parametrize("states", [None, (TrialState.COMPLETE,), (TrialState.WAITING, TrialState.COMPLETE)])
def test_other_state_filters_read_every_trial(tmp_path, states):
    storage = study_storage(tmp_path)
    study = optuna.create_study(storage=storage)
    study.enqueue_trial({"x": 0.5})
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    expected = plain(tmp_path / "optuna.journal").get_all_trials(study._study_id, states=states)
    assert [t.number for t in storage.get_all_trials(study._study_id, states=states)] == [t.number for t in expected]
