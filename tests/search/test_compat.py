"""hpsearch.tune.compat: each private name of Ray and Optuna that hpsearch uses is still there and
still behaves as its adapter assumes. One test per adapter; a failure names the private that moved
and the adapter to fix (then move the pin in pyproject.toml past the version checked)."""

from __future__ import annotations

import inspect
import json
from types import SimpleNamespace
from typing import Any
from unittest import mock

import optuna
import pytest
import ray
from ray.tune.search.optuna import OptunaSearch

from hpsearch.tune import compat
from tests.fixtures.checkpoints import add_checkpoint, checkpointing_trial


def private(owner: Any, name: str, adapter: str) -> Any:
    """``owner.name``, or a failure naming the private, the adapter and the installed versions."""
    if not hasattr(owner, name):
        where = getattr(owner, "__qualname__", None) or type(owner).__qualname__
        pytest.fail(f"{where}.{name} is gone (ray {ray.__version__}, optuna {optuna.__version__}): "
                    f"hpsearch.tune.compat.{adapter} relies on it; adapt it, then move the pin in pyproject.toml")
    return getattr(owner, name)


def parameters(function: Any) -> list[str]:
    return list(inspect.signature(function).parameters)


def ray_optuna_search() -> OptunaSearch:
    """Ray's OptunaSearch built the ordinary way, over an in-memory study."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return OptunaSearch({"x": optuna.distributions.FloatDistribution(0.0, 1.0)}, metric="m", mode="max")


# -- Ray core: the GCS client ------------------------------------------------------------------

def test_gcs_answers_has_rays_standalone_gcs_client():
    from ray import _raylet

    client = private(_raylet, "InnerGcsClient", "gcs_answers")
    standalone = private(client, "standalone", "gcs_answers")
    assert parameters(standalone)[:3] == ["gcs_address", "cluster_id", "timeout_ms"], \
        f"ray._raylet.InnerGcsClient.standalone{inspect.signature(standalone)}: gcs_answers calls it as (address, None, ms)"
    for error in (ray.exceptions.RpcError, ray.exceptions.GetTimeoutError, ray.exceptions.AuthenticationError):
        assert issubclass(error, compat.gcs_errors()), f"{error.__name__} would escape gcs_answers as a traceback"
    assert compat.GcsError(ray.exceptions.AuthenticationError("no token")).auth


def test_gcs_alive_node_addresses_reads_rays_node_info():
    from ray import _raylet
    from ray.core.generated import gcs_pb2

    listing = private(_raylet.InnerGcsClient, "get_all_node_info", "gcs_alive_node_addresses")
    assert "timeout" in parameters(listing), f"InnerGcsClient.get_all_node_info{inspect.signature(listing)} takes no timeout"
    fields = set(gcs_pb2.GcsNodeInfo.DESCRIPTOR.fields_by_name)
    assert {"state", "node_manager_address"} <= fields, f"gcs_pb2.GcsNodeInfo has lost a field it read: {sorted(fields)}"
    private(gcs_pb2.GcsNodeInfo, "ALIVE", "gcs_alive_node_addresses")


@pytest.mark.slow
def test_the_gcs_adapters_answer_on_a_running_ray(ray_session):
    address = ray.get_runtime_context().gcs_address
    assert compat.gcs_answers(address, 3.0) is True
    assert ray.util.get_node_ip_address() in compat.gcs_alive_node_addresses(address, 3.0)


# -- Ray Tune --------------------------------------------------------------------------------

def test_build_tuner_hands_the_resume_config_to_tune_run(tmp_path):
    from ray import tune
    from ray.tune import ResumeConfig
    from ray.tune.impl import tuner_internal

    assert "_tuner_kwargs" in parameters(tune.Tuner.__init__), "ray.tune.Tuner(_tuner_kwargs=) is gone: build_tuner uses it"
    run = private(tuner_internal, "run", "build_tuner")
    assert "resume_config" in parameters(run), "ray.tune.run(resume_config=) is gone: build_tuner forwards it there"

    class Reached(Exception):
        pass

    seen: dict[str, Any] = {}

    def fake_run(**kwargs: Any) -> None:
        seen.update(kwargs)
        raise Reached

    wanted = ResumeConfig(unfinished=ResumeConfig.ResumeType.RESUME, errored=ResumeConfig.ResumeType.SKIP)
    tuner = compat.build_tuner(lambda config: None, tune_config=tune.TuneConfig(num_samples=1),
                               run_config=tune.RunConfig(name="compat", storage_path=str(tmp_path)),
                               resume_config=wanted)
    with mock.patch.object(tuner_internal, "run", fake_run), pytest.raises(Reached):
        tuner.fit()
    assert seen.get("resume_config") == wanted, "Tuner(_tuner_kwargs=) no longer reaches tune.run"


def test_pace_experiment_snapshots_replaces_rays_auto_period(monkeypatch):
    from ray.tune.execution import experiment_state

    manager_class = private(experiment_state, "_ExperimentCheckpointManager", "pace_experiment_snapshots")
    original = private(manager_class, "_update_auto_checkpoint_time", "pace_experiment_snapshots")
    assert "self._update_auto_checkpoint_time(time_taken=" in inspect.getsource(manager_class), \
        "_ExperimentCheckpointManager no longer calls _update_auto_checkpoint_time(time_taken=) after a snapshot"
    monkeypatch.setattr(manager_class, "_update_auto_checkpoint_time", original)   # Ray's own back afterwards

    assert compat.pace_experiment_snapshots(lambda taken: taken * 2) is True
    auto = manager_class(storage=None, checkpoint_period="auto")
    fixed = manager_class(storage=None, checkpoint_period=30)
    for manager in (auto, fixed):
        private(manager, "_auto_checkpoint_enabled", "pace_experiment_snapshots")
        private(manager, "_checkpoint_period", "pace_experiment_snapshots")
        manager._update_auto_checkpoint_time(time_taken=0.25)
    assert auto._checkpoint_period == 0.5
    assert fixed._checkpoint_period == 30.0       # a number in TUNE_GLOBAL_CHECKPOINT_S stays as set


def test_trainable_actors_inherit_environment_registers_the_trainable_without_a_runtime_env():
    from ray.tune.execution import class_cache

    cache_class = private(class_cache, "_ActorClassCache", "trainable_actors_inherit_environment")
    original = private(cache_class, "get", "trainable_actors_inherit_environment")
    defaults = private(class_cache, "DEFAULT_ENV_VARS", "tune_actor_env")
    assert compat.tune_actor_env() == defaults and all(isinstance(v, str) for v in defaults.values())
    assert "self._class_cache.get(" in inspect.getsource(private(tune_controller(), "_schedule_trial_actor",
                                                                "trainable_actors_inherit_environment")), \
        "TuneController no longer registers trainables through _ActorClassCache.get"

    class Trainable:
        pass

    tunes = cache_class().get(Trainable)._default_options.get("runtime_env")
    assert set(defaults) <= set(tunes["env_vars"]), f"Tune registers trainables with runtime_env {tunes}"
    with compat.trainable_actors_inherit_environment() as replaced:
        assert replaced is True
        cache = cache_class()
        remote = cache.get(Trainable)
        assert remote._default_options.get("runtime_env") is None
        assert cache.get(Trainable) is remote          # still registered once
    assert cache_class.get is original


def test_callback_usage_tag_skipped_replaces_the_tag_tune_run_calls(monkeypatch):
    from ray.air._internal import usage
    from ray.tune import tune as tune_module

    original = private(usage, "tag_callbacks", "callback_usage_tag_skipped")
    assert "air_usage.tag_callbacks(" in inspect.getsource(tune_module.run), \
        "ray.tune.tune.run no longer calls ray.air._internal.usage.tag_callbacks"
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    with compat.callback_usage_tag_skipped() as skipped:
        assert skipped is True and usage.tag_callbacks is not original
        assert usage.tag_callbacks([object()]) is False
    assert usage.tag_callbacks is original
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "1")     # the user asked for usage statistics: kept
    with compat.callback_usage_tag_skipped() as skipped:
        assert skipped is False and usage.tag_callbacks is original


def tune_controller() -> Any:
    from ray.tune.execution import tune_controller as module

    return module.TuneController


def test_drop_result_windows_frees_the_windows_of_a_finished_trial_and_keeps_its_averages():
    from ray.tune.experiment import Trial
    from ray.tune.trainable.metadata import _TrainingRunMetadata

    trial = Trial("trainable", config={"x": 0.5}, stub=True)
    for epoch, loss in enumerate((0.9, 0.7, 0.4), start=1):
        trial.update_last_result({"training_iteration": epoch, "train_loss": loss, "health": "ok"})
    windows = private(trial.run_metadata, "metric_n_steps", "drop_result_windows")
    assert list(windows["train_loss"]["5"]) == [0.9, 0.7, 0.4], "Tune no longer keeps a deque per metric and n"
    averages = dict(trial.metric_analysis["train_loss"])
    before = trial.get_json_state()[1]

    assert compat.drop_result_windows(trial) is True
    after = trial.get_json_state()[1]
    assert trial.run_metadata.metric_n_steps == {}
    assert trial.metric_analysis["train_loss"] == averages == {
        "max": 0.9, "min": 0.4, "avg": pytest.approx(2.0 / 3), "last": 0.4,
        "last-5-avg": pytest.approx(2.0 / 3), "last-10-avg": pytest.approx(2.0 / 3)}
    assert json.loads(after)["metric_n_steps"] == {} and len(after) < len(before), "the snapshot still holds them"
    restored = _TrainingRunMetadata.from_json_state(after)       # as Tune reads it back on resume
    assert restored.metric_analysis == trial.metric_analysis and restored.last_result["train_loss"] == 0.4
    assert compat.drop_result_windows(object()) is False
    lengthless = SimpleNamespace(run_metadata=SimpleNamespace(metric_n_steps={"m": {}}, metric_analysis={"m": {}}))
    assert compat.drop_result_windows(lengthless) is False and lengthless.run_metadata.metric_n_steps == {"m": {}}


def test_drop_averages_keeps_the_named_metrics_averages_and_what_a_snapshot_reads_back():
    from ray.tune.experiment import Trial
    from ray.tune.trainable.metadata import _TrainingRunMetadata

    trial = Trial("trainable", config={"x": 0.5}, stub=True)
    for epoch, (loss, acc) in enumerate(((0.9, 0.2), (0.7, 0.5), (0.4, 0.4)), start=1):
        trial.update_last_result({"training_iteration": epoch, "train_loss": loss, "val_acc": acc})
    averages = private(trial.run_metadata, "metric_analysis", "drop_averages")
    kept = dict(averages["val_acc"])
    before = trial.get_json_state()[1]

    assert compat.drop_averages(trial, {"val_acc"}) == len(averages) - 1
    assert trial.metric_analysis == {"val_acc": kept} and kept["max"] == 0.5 and kept["last"] == 0.4
    after = trial.get_json_state()[1]
    assert len(after) < len(before), "the snapshot still holds the dropped averages"
    restored = _TrainingRunMetadata.from_json_state(after)
    assert restored.metric_analysis == {"val_acc": kept} and restored.last_result["train_loss"] == 0.4
    assert compat.drop_averages(trial, {"val_acc"}) == 0                  # nothing left to drop
    trial.update_last_result({"training_iteration": 4, "train_loss": 0.3, "val_acc": 0.6})   # reported again
    assert trial.metric_analysis["train_loss"]["min"] == 0.3 and trial.metric_analysis["val_acc"]["max"] == 0.6
    assert compat.drop_averages(object(), {"val_acc"}) == 0


def test_drop_default_result_lets_go_of_the_actors_first_answer_once_the_trial_has_reported():
    from ray.tune.experiment import Trial

    trial = Trial("trainable", config={"x": 0.5}, stub=True)
    future = ray.ObjectRef(b"\x01" * 28)                    # what set_ray_actor stores; never fetched here
    private(trial, "_default_result_or_future", "drop_default_result")
    trial._default_result_or_future = future
    assert compat.drop_default_result(trial) is False           # nothing reported: last_result reads it
    assert trial._default_result_or_future is future
    trial.update_last_result({"training_iteration": 1, "val_acc": 0.5})
    assert compat.drop_default_result(trial) is True
    assert trial._default_result_or_future is None and trial.last_result["val_acc"] == 0.5
    assert compat.drop_default_result(trial) is False and compat.drop_default_result(object()) is False


def test_refill_result_windows_gives_dropped_windows_back_at_tunes_lengths():
    from ray.tune.experiment import Trial

    trial = Trial("trainable", config={"x": 0.5}, stub=True)
    trial.update_last_result({"training_iteration": 1, "train_loss": 0.9})
    lengths = private(trial.run_metadata, "_n_steps", "refill_result_windows")
    assert compat.refill_result_windows(trial) is False                  # nothing was missing
    compat.drop_result_windows(trial)
    assert compat.refill_result_windows(trial) is True
    windows = trial.run_metadata.metric_n_steps["train_loss"]
    assert {k: (len(w), w.maxlen) for k, w in windows.items()} == {str(n): (0, n) for n in lengths}
    trial.update_last_result({"training_iteration": 2, "train_loss": 0.5})   # Tune appends: no KeyError
    assert trial.metric_analysis["train_loss"]["last-5-avg"] == 0.5 and trial.metric_analysis["train_loss"]["min"] == 0.5


def test_forget_encoded_objects_empties_the_texts_tunes_encoder_kept_and_nothing_else():
    from collections import deque

    from ray.tune.utils.serialization import TuneFunctionEncoder
    from ray.util import debug

    logged = private(debug, "_logged", "forget_encoded_objects")
    assert 'log_once(f"tune_func_encode:{str(obj)}")' in inspect.getsource(TuneFunctionEncoder.default), \
        "TuneFunctionEncoder.default no longer keys log_once on the object's text"
    json.dumps({"window": deque([0.5, 0.25], maxlen=5)}, cls=TuneFunctionEncoder)
    assert f"{compat.ENCODER_LOG_PREFIX}deque([0.5, 0.25], maxlen=5)" in logged
    debug.log_once("hpsearch-test-other-key")
    assert compat.forget_encoded_objects() >= 1
    assert not any(key.startswith(compat.ENCODER_LOG_PREFIX) for key in logged)
    assert "hpsearch-test-other-key" in logged
    logged.discard("hpsearch-test-other-key")


# -- Ray's OptunaSearch ----------------------------------------------------------------------

def test_searcher_study_is_the_study_rays_optuna_search_asks():
    searcher = ray_optuna_search()
    private(searcher, "_ot_study", "searcher_study")
    study = compat.searcher_study(searcher)
    assert isinstance(study, optuna.Study)
    searcher.suggest("a")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.RUNNING]


def test_searcher_trials_maps_ray_ids_to_the_optuna_trials_asked():
    searcher = ray_optuna_search()
    private(searcher, "_ot_trials", "searcher_trials")
    config = searcher.suggest("a")
    trials = compat.searcher_trials(searcher)
    assert set(trials) == {"a"} and isinstance(trials["a"], optuna.Trial)
    assert trials["a"].params == config


def test_searcher_finished_holds_the_ray_ids_told_to_optuna():
    searcher = ray_optuna_search()
    private(searcher, "_completed_trials", "searcher_finished")
    searcher.suggest("a")
    searcher.suggest("b")
    assert compat.searcher_finished(searcher) == set()
    searcher.on_trial_complete("a", {"m": 0.5})
    assert compat.searcher_finished(searcher) == {"a"}
    compat.searcher_finished(searcher).add("b")          # the searcher's own set: b is never told
    searcher.on_trial_complete("b", {"m": 0.7})
    assert [t.state.name for t in compat.searcher_study(searcher).trials] == ["COMPLETE", "RUNNING"]


def test_adopt_trial_lets_the_searcher_finish_a_stored_trial():
    searcher = ray_optuna_search()
    study = compat.searcher_study(searcher)
    study.ask()                                           # asked before a restart: no Ray id holds it
    frozen = study.get_trials(deepcopy=False)[0]
    private(frozen, "_trial_id", "adopt_trial")
    compat.adopt_trial(searcher, "orphan", frozen)
    searcher.on_trial_complete("orphan", {"m": 0.25})
    done = study.trials[frozen.number]
    assert (done.state, done.value) == (optuna.trial.TrialState.COMPLETE, 0.25)


# -- Optuna ----------------------------------------------------------------------------------

def test_stored_trial_reads_the_trial_as_the_storage_holds_it_now():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    private(study, "_storage", "stored_trial")
    private(trial, "_trial_id", "stored_trial")
    assert compat.stored_trial(study, trial).state == optuna.trial.TrialState.RUNNING
    study.tell(trial.number, 1.0)                         # told through another handle
    stored = compat.stored_trial(study, trial)
    assert (stored.number, stored.state, stored.value) == (trial.number, optuna.trial.TrialState.COMPLETE, 1.0)


def test_set_listed_constraints_writes_optunas_list_form_beside_the_per_key_one():
    from optuna.study import _constrained_optimization

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    key = private(_constrained_optimization, "_CONSTRAINTS_KEY", "set_listed_constraints")
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    private(study, "_storage", "set_listed_constraints")
    private(trial, "_trial_id", "set_listed_constraints")
    trial.set_constraint("healthy", 1.0)
    compat.set_listed_constraints(study, trial, [1.0])
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    frozen = study.trials[0]
    assert frozen.system_attrs[key] == [1.0]                        # the list form
    assert frozen.constraints == {"0": 1.0, "healthy": 1.0}         # Optuna reads both forms, no clash


def test_trim_checkpoints_keeps_the_best_the_latest_and_the_protected_and_deletes_the_rest(tmp_path):
    from ray.tune.trainable.metadata import _TrainingRunMetadata

    trial = checkpointing_trial()
    for index, value in enumerate([0.5, 0.9, 0.3, 0.8, 0.2, 0.4]):
        add_checkpoint(trial, tmp_path / f"checkpoint_{index:06d}", value)
    manager = trial.run_metadata.checkpoint_manager
    results = private(manager, "_checkpoint_results", "trim_checkpoints")
    assert [r.metrics["val_acc"] for r in results] == [0.2, 0.3, 0.4, 0.5, 0.8, 0.9], "no longer worst first"
    private(trial.run_metadata, "invalidate_cache", "trim_checkpoints")
    folder = {i: str(tmp_path / f"checkpoint_{i:06d}") for i in range(6)}
    assert compat.latest_checkpoint_path(trial) == folder[5]
    before = trial.get_json_state()[1]

    assert compat.trim_checkpoints(trial, keep=2, protect={folder[2]}) == 2     # 0.5 and 0.2
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"checkpoint_{i:06d}" for i in (1, 2, 3, 5)]
    assert [r.metrics["val_acc"] for r in manager._checkpoint_results] == [0.3, 0.4, 0.8, 0.9]
    assert compat.latest_checkpoint_path(trial) == folder[5]                 # a resume still starts there
    after = trial.get_json_state()[1]
    restored = _TrainingRunMetadata.from_json_state(after).checkpoint_manager     # what a snapshot holds now
    assert [r.checkpoint.path for r in restored._checkpoint_results] == [folder[i] for i in (2, 5, 3, 1)]
    assert restored.latest_checkpoint_result.checkpoint.path == folder[5] and len(after) < len(before)
    assert compat.trim_checkpoints(trial, keep=2, protect={folder[2]}) == 0
    assert compat.trim_checkpoints(trial, keep=2) == 1 and not (tmp_path / "checkpoint_000002").exists()
    assert compat.trim_checkpoints(object(), keep=2) == 0 and compat.latest_checkpoint_path(object()) is None
