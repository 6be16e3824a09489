"""Every private name of Ray and Optuna that hpsearch uses, each behind one small function.

Ray Tune and Ray's OptunaSearch keep some of what hpsearch needs in private attributes: the Optuna
study and trials of a searcher, the Tuner's resume path for a fresh Tuner, the pacing of the
experiment snapshot, the running-average windows and the checkpoint records Tune keeps per trial,
and the GCS client that answers without starting Ray. Each function below names the private it reads or replaces and the
versions it was checked against; the pins in pyproject.toml (``ray[tune]``, ``optuna``) stop at the
versions checked here, and tests/search/test_compat.py fails, naming the private, when a release
moves one of them.

Nothing is imported from Ray or Optuna at module level: hpsearch.driver.cluster asks the GCS from
the CLI's fast path, where a config error must come back without Ray being imported.
"""

from __future__ import annotations

import contextlib
import os
from collections import deque
from collections.abc import Callable, Container, Iterator
from typing import TYPE_CHECKING, Any

from hpsearch.core.numbers import one_line

if TYPE_CHECKING:
    import optuna


# -- Ray core: the GCS client ------------------------------------------------------------------

class GcsError(RuntimeError):
    """A GCS call that failed, as one line; ``auth`` when the head asked for a token."""

    def __init__(self, error: BaseException | str):
        super().__init__(one_line(error, 120))
        text = str(error).lower()
        self.auth = "token" in text or "auth" in type(error).__name__.lower()


def gcs_errors() -> tuple[type[BaseException], ...]:
    """What Ray's GCS client raises: a RayError (RpcError, GetTimeoutError, AuthenticationError,
    ...) or the builtin errors its status check maps to."""
    from ray.exceptions import RayError

    return (RayError, OSError, ValueError, RuntimeError)


def _standalone_gcs_client() -> Callable[[str, str | None, int], Any] | None:
    """``ray._raylet.InnerGcsClient.standalone(address, cluster_id, timeout_ms)`` (private module
    ``ray._raylet``; checked against ray 2.60.0): a GCS client that starts no Ray process. None on
    a Ray without it."""
    from ray import _raylet

    return getattr(getattr(_raylet, "InnerGcsClient", None), "standalone", None)


def gcs_answers(address: str, timeout_s: float) -> bool:
    """Ask the GCS at ``address`` for its cluster id, through ``ray._raylet.InnerGcsClient.standalone``
    (private; checked against ray 2.60.0). True when it answered; False when this Ray has no such
    client (the caller's own probe then decides alone); GcsError when anything else answered, or
    nothing did."""
    standalone = _standalone_gcs_client()
    if standalone is None:
        return False
    try:
        standalone(address, None, int(timeout_s * 1000))
    except gcs_errors() as err:
        raise GcsError(err) from None
    return True


def gcs_alive_node_addresses(address: str, timeout_s: float) -> list[str]:
    """The IP addresses of the alive nodes of the cluster whose GCS is at ``address``, sorted,
    through ``ray._raylet.InnerGcsClient.standalone(...).get_all_node_info`` (private; checked
    against ray 2.60.0: a dict of ``gcs_pb2.GcsNodeInfo`` with ``state`` and
    ``node_manager_address``). GcsError when the GCS cannot be asked."""
    from ray.core.generated import gcs_pb2

    standalone = _standalone_gcs_client()
    if standalone is None:
        raise GcsError("this Ray has no ray._raylet.InnerGcsClient.standalone to ask the GCS with")
    try:
        nodes = standalone(address, None, int(timeout_s * 1000)).get_all_node_info(timeout=timeout_s)
    except gcs_errors() as err:
        raise GcsError(err) from None
    alive = gcs_pb2.GcsNodeInfo.ALIVE
    return sorted({info.node_manager_address for info in nodes.values() if info.state == alive})


def preload_option(modules: list[str]) -> dict[str, Any]:
    """The ``ray.init`` keyword that makes every Python worker of a local Ray it starts import
    ``modules`` before it takes work: ``_system_config={"preload_python_modules": [...]}`` (a private
    system setting of the raylet, which passes ``--worker-preload-modules`` to
    ``ray/_private/workers/default_worker.py``; checked against ray 2.60.0). Workers Ray prestarts
    for the first driver then hold torch and the trainable before the first trial asks for one.
    A module that fails to import is logged in that worker's log and skipped."""
    return {"_system_config": {"preload_python_modules": list(modules)}}


# -- Ray Tune --------------------------------------------------------------------------------

def build_tuner(trainable: Any, *, tune_config: Any, run_config: Any, resume_config: Any = None) -> Any:
    """``tune.Tuner(trainable, tune_config=..., run_config=...)``; with ``resume_config`` (a
    ``ray.tune.ResumeConfig``) a fresh Tuner that first restores the run dir's last snapshot and
    keeps the searcher, scheduler and callbacks given here (``Tuner.restore`` would unpickle the
    ones saved when the search started). Uses the private ``Tuner(_tuner_kwargs=...)``, which
    ray 2.60.0 forwards to ``tune.run(resume_config=...)``."""
    from ray import tune

    extra = {"_tuner_kwargs": {"resume_config": resume_config}} if resume_config is not None else {}
    return tune.Tuner(trainable, tune_config=tune_config, run_config=run_config, **extra)


def tune_actor_env() -> dict[str, str]:
    """The variables Tune sets in every trainable actor's runtime_env besides the ones it copies from
    the driver's environment: the private ``ray.tune.execution.class_cache.DEFAULT_ENV_VARS``
    (checked against ray 2.60.0: ``PL_DISABLE_FORK=1``); empty on a Ray without it."""
    from ray.tune.execution import class_cache

    return dict(getattr(class_cache, "DEFAULT_ENV_VARS", {}))


@contextlib.contextmanager
def trainable_actors_inherit_environment() -> Iterator[bool]:
    """While it is open, Tune registers trainable actors without the ``runtime_env`` of environment
    variables it copies from the driver, so a trial's actor can take a worker Ray prestarted (those
    have no runtime env; an actor with one waits for a worker of its own, seconds of Python and
    torch imports). Only for a local Ray whose workers inherit that environment from the driver
    (hpsearch.driver.runner.start_local_ray sets tune_actor_env there). Replaces the private
    ``ray.tune.execution.class_cache._ActorClassCache.get`` (checked against ray 2.60.0) and puts
    it back on exit; yields False, changing nothing, on a Ray without it."""
    import ray
    from ray.tune.execution import class_cache

    cache = getattr(class_cache, "_ActorClassCache", None)
    original = getattr(cache, "get", None)
    if original is None:
        yield False
        return

    def get(self: Any, trainable_cls: Any) -> Any:
        if trainable_cls not in self._cache:
            self._cache[trainable_cls] = ray.remote(trainable_cls)
        return self._cache[trainable_cls]

    cache.get = get
    try:
        yield True
    finally:
        cache.get = original


@contextlib.contextmanager
def callback_usage_tag_skipped() -> Iterator[bool]:
    """While it is open, ``Tuner.fit`` does not count its callbacks for Ray's usage statistics when
    those are off (RAY_USAGE_STATS_ENABLED=0, as hpsearch sets it): counting them imports every
    logger integration Ray knows, MLflow's among them (1.6 s with MLflow 3 installed, whether the
    search logs to it or not). Replaces the private ``ray.air._internal.usage.tag_callbacks``, which
    ``ray.tune.tune.run`` calls (checked against ray 2.60.0), and puts it back on exit; yields
    False, changing nothing, while usage statistics are on or on a Ray without it."""
    from ray.air._internal import usage

    original = getattr(usage, "tag_callbacks", None)
    if original is None or os.environ.get("RAY_USAGE_STATS_ENABLED") != "0":
        yield False
        return
    usage.tag_callbacks = lambda callbacks: False
    try:
        yield True
    finally:
        usage.tag_callbacks = original


def pace_experiment_snapshots(next_gap_s: Callable[[float], float]) -> bool:
    """Ray's "auto" snapshot period replaced: after each experiment snapshot that took
    ``time_taken`` seconds, the next comes ``next_gap_s(time_taken)`` seconds later (Ray's own rule
    waits at least 10 s). Replaces the private method
    ``ray.tune.execution.experiment_state._ExperimentCheckpointManager._update_auto_checkpoint_time``
    and sets its private ``_checkpoint_period`` while ``_auto_checkpoint_enabled`` (a number in
    TUNE_GLOBAL_CHECKPOINT_S turns that off); checked against ray 2.60.0. False, changing nothing,
    on a Ray without this hook."""
    from ray.tune.execution import experiment_state

    manager = getattr(experiment_state, "_ExperimentCheckpointManager", None)
    if manager is None or not hasattr(manager, "_update_auto_checkpoint_time"):
        return False

    def update(self: Any, time_taken: float) -> None:
        if self._auto_checkpoint_enabled:
            self._checkpoint_period = next_gap_s(time_taken)

    manager._update_auto_checkpoint_time = update
    return True


def latest_checkpoint_path(trial: Any) -> str | None:
    """Where the trial's latest checkpoint is (public ``Trial.checkpoint``); None before its first."""
    path = getattr(getattr(trial, "checkpoint", None), "path", None)
    return path if isinstance(path, str) else None


def trim_checkpoints(trial: Any, keep: int, protect: Container[str] = ()) -> int:
    """Ray's rule for which of a trial's checkpoints stay, applied when hpsearch calls it instead of
    at every new checkpoint: the ``keep`` best by the score attribute and the latest stay, and so
    does any whose path is in ``protect``; every other one is deleted from storage (through its
    pyarrow filesystem; one already gone is only forgotten, as after a resume from a snapshot taken
    before it was deleted) and from the trial's records. With Tune's
    ``CheckpointConfig(num_to_keep=None)`` Tune itself deletes none, and so never forces an
    experiment snapshot to keep its view of the latest checkpoint in step with the deletions (one
    per trial every ``num_to_keep`` checkpoints, each writing every trial of the search). Privates
    (ray 2.60.0): ``Trial.run_metadata.checkpoint_manager._checkpoint_results`` (worst first when
    the score attribute is reported) and ``_TrainingRunMetadata.invalidate_cache``. Returns how
    many were dropped (0, changing nothing, where a private is missing)."""
    metadata = getattr(trial, "run_metadata", None)
    manager = getattr(metadata, "checkpoint_manager", None)
    results = getattr(manager, "_checkpoint_results", None)
    if not isinstance(results, list) or len(results) <= keep or not hasattr(metadata, "invalidate_cache"):
        return 0
    from pyarrow.fs import FileType

    latest = getattr(manager, "latest_checkpoint_result", None)
    doomed = [r for r in results[:len(results) - keep] if r is not latest and r.checkpoint.path not in protect]
    if not doomed:
        return 0
    gone = {id(r) for r in doomed}
    manager._checkpoint_results = [r for r in results if id(r) not in gone]
    metadata.invalidate_cache()
    for result in doomed:
        filesystem, path = result.checkpoint.filesystem, result.checkpoint.path
        if filesystem.get_file_info(path).type != FileType.NotFound:
            filesystem.delete_dir(path)
    return len(doomed)


def drop_result_windows(trial: Any) -> bool:
    """Frees what Tune keeps of a finished trial only to update its running averages: for every
    numeric metric the trial reported, two deques of its last 5 and last 10 values (private
    ``Trial.run_metadata.metric_n_steps``, ``ray.tune.trainable.metadata._TrainingRunMetadata``;
    checked against ray 2.60.0), about 1.6 KB a metric in the driver for as long as the search runs,
    and a pickled copy of each in every experiment snapshot. The averages themselves
    (``metric_analysis``) stay. A trial that reports again must get its windows back first
    (``refill_result_windows``). False, changing nothing, where the private is missing."""
    metadata = getattr(trial, "run_metadata", None)
    if not isinstance(getattr(metadata, "metric_n_steps", None), dict) or getattr(metadata, "_n_steps", None) is None:
        return False                    # without the lengths, windows could not be given back
    metadata.metric_n_steps = {}       # the setter also drops the metadata's cached JSON
    return True


def drop_averages(trial: Any, keep: Container[str]) -> int:
    """Frees Tune's running averages of a finished trial's metrics (``Trial.metric_analysis``: max,
    min, avg, last and the last-5 / last-10 averages of every numeric metric it reported, about 0.5 KB
    a metric in the driver and 150 bytes in every experiment snapshot) except those named in
    ``keep``. Tune reads them only for ``ExperimentAnalysis`` queries by scope (``avg``, ``last-5-avg``,
    ...), which hpsearch never makes (its report reads the run dir); a metric reported again gets
    fresh averages from Tune's ``update_metric``. Private ``_TrainingRunMetadata.metric_analysis``,
    checked against ray 2.60.0; returns how many metrics' averages went (0 where it is missing)."""
    metadata = getattr(trial, "run_metadata", None)
    averages = getattr(metadata, "metric_analysis", None)
    if not isinstance(averages, dict):
        return 0
    gone = [metric for metric in averages if metric not in keep]
    if gone:
        metadata.metric_analysis = {m: v for m, v in averages.items() if m in keep}   # drops the cached JSON
    return len(gone)


def drop_default_result(trial: Any) -> bool:
    """Lets go of the reference Tune keeps to a trial's first answer from its actor (private
    ``Trial._default_result_or_future``, ray 2.60.0: an ``ObjectRef`` to Ray's auto-filled metrics,
    asked for at every start and read only while the trial has reported nothing). Held, it keeps the
    object and Ray's reference-counting entry in the driver for as long as the search runs. Only
    for a trial that has reported (its last result then never falls back on it); True when one
    went."""
    import ray

    future = getattr(trial, "_default_result_or_future", None)
    metadata = getattr(trial, "run_metadata", None)
    reported = getattr(metadata, "last_result", None)
    if not isinstance(future, ray.ObjectRef) or not isinstance(reported, dict) or set(reported) <= {"trial_id"}:
        return False
    trial._default_result_or_future = None
    return True


def refill_result_windows(trial: Any) -> bool:
    """Gives every metric Tune has averages of but no windows for (``drop_result_windows``) empty
    windows again, of Tune's lengths (private ``_TrainingRunMetadata._n_steps``), so a trial that
    reports after its windows were dropped averages its new values (from those alone): Tune's
    ``update_metric`` appends to the window of a metric it has seen, and a missing one would stop
    the whole search. hpsearch never runs a stopped or failed trial again (a retry under
    ``max_failures`` never loses its windows, and a resume skips failed trials); this covers what
    it does not control: Tune recovering a trial whose stop failed after ``on_trial_complete``,
    or a Tuner restore that resumes finished or failed trials. True when any was missing."""
    metadata = getattr(trial, "run_metadata", None)
    windows = getattr(metadata, "metric_n_steps", None)
    averages = getattr(metadata, "metric_analysis", None)
    lengths = getattr(metadata, "_n_steps", None)
    if not isinstance(windows, dict) or not isinstance(averages, dict) or lengths is None:
        return False
    missing = [metric for metric in averages if metric not in windows]
    for metric in missing:
        windows[metric] = {str(n): deque(maxlen=n) for n in lengths}
    return bool(missing)


ENCODER_LOG_PREFIX = "tune_func_encode:"


def forget_encoded_objects() -> int:
    """Empties what Ray Tune's JSON encoder remembers of the objects it wrote as pickles:
    ``ray.tune.utils.serialization.TuneFunctionEncoder.default`` calls
    ``ray.util.debug.log_once(f"tune_func_encode:{obj}")`` for each one (to log one debug line),
    and ``log_once`` keeps every key in the private module-level set ``ray.util.debug._logged`` for
    the life of the process; checked against ray 2.60.0. A running trial's windows of last values
    are such objects, a new text at every epoch and snapshot: 13 keys and about 2.8 KB a trial
    epoch. Removes those keys only (the debug line may then be logged again); returns how many,
    0 where the private is missing."""
    from ray.util import debug

    logged = getattr(debug, "_logged", None)
    if not isinstance(logged, set):
        return 0
    stale = [key for key in list(logged) if isinstance(key, str) and key.startswith(ENCODER_LOG_PREFIX)]
    logged.difference_update(stale)
    return len(stale)


# -- Ray's OptunaSearch ----------------------------------------------------------------------

def searcher_study(searcher: Any) -> "optuna.Study":
    """The Optuna study of a ``ray.tune.search.optuna.OptunaSearch`` (private ``_ot_study``, set
    by ``_setup_study``; checked against ray 2.60.0)."""
    return searcher._ot_study


def searcher_trials(searcher: Any) -> "dict[str, optuna.Trial]":
    """Ray trial id -> the Optuna trial an ``OptunaSearch`` asked for it: the searcher's own dict
    (private ``_ot_trials``; checked against ray 2.60.0), so a change here is the searcher's."""
    return searcher._ot_trials


def searcher_finished(searcher: Any) -> set[str]:
    """The Ray trial ids an ``OptunaSearch`` has told Optuna about and will not tell again: the
    searcher's own set (private ``_completed_trials``; checked against ray 2.60.0)."""
    return searcher._completed_trials


def adopt_trial(searcher: Any, trial_id: str, frozen: "optuna.trial.FrozenTrial") -> None:
    """Hand an ``OptunaSearch`` the stored Optuna trial ``frozen`` as the one it asked for Ray's
    ``trial_id``, so the searcher can finish it (a trial its restored state no longer holds).
    Uses the searcher's private ``_ot_trials`` and ``_ot_study`` (ray 2.60.0) and Optuna's private
    ``FrozenTrial._trial_id`` for ``optuna.trial.Trial(study, trial_id)`` (optuna 5.1.0)."""
    import optuna

    study = searcher_study(searcher)
    searcher_trials(searcher)[trial_id] = optuna.trial.Trial(study, frozen._trial_id)


# -- Optuna ----------------------------------------------------------------------------------

def stored_trial(study: "optuna.Study", trial: "optuna.Trial") -> "optuna.trial.FrozenTrial":
    """The trial as the study's storage holds it now (its state may have changed since it was
    asked), read by id without copying every trial: Optuna's private ``Study._storage`` and
    ``Trial._trial_id``, checked against optuna 5.1.0."""
    return study._storage.get_trial(trial._trial_id)


def set_listed_constraints(study: "optuna.Study", trial: "optuna.Trial", values: list[float]) -> None:
    """Write ``values`` as the trial's constraints in Optuna's list form too: the system attribute
    ``constraints`` (a list; > 0 means violated), which optuna-dashboard 0.21.0 reads to show a
    trial as infeasible (``_serializer.serialize_frozen_trial``) and which ``FrozenTrial.constraints``
    reads back as keys "0", "1", ... ``Trial.set_constraint`` writes one system attribute per key
    (``constraints:<key>``), which that dashboard does not read. Uses Optuna's private
    ``Study._storage``, ``Trial._trial_id`` and
    ``optuna.study._constrained_optimization._CONSTRAINTS_KEY`` (optuna 5.1.0)."""
    from optuna.study._constrained_optimization import _CONSTRAINTS_KEY

    study._storage.set_trial_system_attr(trial._trial_id, _CONSTRAINTS_KEY, [float(v) for v in values])


__all__ = ["GcsError", "adopt_trial", "build_tuner", "drop_averages", "drop_default_result",
           "gcs_alive_node_addresses", "gcs_answers", "gcs_errors", "latest_checkpoint_path",
           "pace_experiment_snapshots", "searcher_finished", "searcher_study", "searcher_trials",
           "set_listed_constraints", "stored_trial", "trim_checkpoints"]
