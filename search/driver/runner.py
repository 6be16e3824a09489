"""``hpsearch run`` and ``hpsearch resume``: check everything (hpsearch.driver.preflight, hpsearch.driver.resume),
start or join Ray, run the Tuner, stop gracefully on a signal, say what happened.

    Tuner(with_resources(with_parameters(trainable, run=config), {cpu, gpu}),
          TuneConfig(search_alg=make_searcher(...), scheduler=make_scheduler(...), num_samples),
          RunConfig(name, storage_path, callbacks=[ResultLog, OutcomeRecorder, *trackers, LiveTable,
                    SnapshotKeeper, LeanDriver], FailureConfig, CheckpointConfig(num_to_keep=None)))

The trackers (TensorBoard, MLflow: the config's ``log`` section, hpsearch.tune.trackers) come after
the OutcomeRecorder, so a trial's outcome is on record when they close its run. LeanDriver comes
last: it deletes an ended trial's surplus checkpoints once its outcome is on record, and keeps a
running trial's that the snapshot SnapshotKeeper has just published resumes it from.

metric/mode live in the searcher and the scheduler only (Ray refuses them in both places). One
OutcomeLog instance is shared by the scheduler (pruned_*), the searcher (reads it) and the
OutcomeRecorder callback (completed, error). Ray is imported only after every check passed, so a
bad config fails fast.

A resumed search is the same Tuner built afresh with Ray's ``ResumeConfig`` (unfinished trials
continue from their checkpoints, ended ones are kept as they are): Tune restores its trials and
the searcher from its last snapshot, the scheduler gets its own saved state back, and the trials
that ended after that snapshot are retired (hpsearch.driver.resume.reconcile).

Signals: SIGINT and SIGTERM stop a search gracefully (``GracefulStop``): Tune saves its state and
stops the trials, run.json says ``interrupted``, the exit code is 130 / 143 and the last line says
how to resume. A second signal stops at once (the state saved at the last step stands).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hpsearch.core.config import dump_config
from hpsearch.core.numbers import one_line
from hpsearch.core.rundir import SCHEDULER_STATE, SEARCH_YAML, OutcomeLog, hold_lock, update_run_info
from hpsearch.core.training import versions
from hpsearch.driver import preflight
from hpsearch.driver.cluster import check_cluster_storage, runtime_env, worker_modules
from hpsearch.driver.signals import GracefulStop
from hpsearch.models.config import ConfigError
from hpsearch.tune import draws
from hpsearch.tune.compat import callback_usage_tag_skipped, preload_option, trainable_actors_inherit_environment

# Set before Ray is imported (run_command imports it only after the checks): no usage-stats
# banner, and trials keep the working directory, so relative data paths keep working.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")   # with verbose=0: Ray prints no table of its own
# Result files come from ResultLog (hpsearch.tune.progress); the TensorBoard logger Ray would add on its
# own only prints warnings about NaN values into the live output. TensorBoard and MLflow are
# there when the config's log section asks for them (hpsearch.tune.trackers).
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
# Ray's experiment snapshot paced by its cost (hpsearch.tune.snapshot.pace_snapshots): every Tune step
# while it is cheap, instead of Ray's every 10 s or more, so after a SIGKILL resume redoes at most
# about a step of work. A number of seconds here is used as Ray uses it.
os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "auto")
# SIGINT is handled here (GracefulStop), like SIGTERM; Tune's own handler would take SIGINT only.
os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")

# Local Ray nodes started by start_local_ray in this process: their workers inherit the trial
# actors' environment, so a trial may take one of the warm workers Ray prestarted there.
WARM_NODES: set[str] = set()


def start_ray(plan: preflight.Plan) -> bool:
    """Start a local Ray or join the cluster; False when a Ray session already exists here (it is
    used as it is and left running)."""
    import ray

    if ray.is_initialized():
        return False
    if plan.address is None:
        start_local_ray(plan)
        return True
    common = dict(logging_level=logging.ERROR, log_to_driver=False, runtime_env=plan.runtime_env)
    try:
        ray.init(address=plan.address, **common)
    except (ConnectionError, RuntimeError) as err:
        hint = ""
        if "token" in str(err).lower():
            hint = ("; the cluster uses token authentication: set RAY_AUTH_MODE=token and "
                    "RAY_AUTH_TOKEN (or ~/.ray/auth_token) as on the head")
        raise ConfigError(f"--address: could not join the Ray cluster at {plan.address}: "
                          f"{one_line(err, last=True)}{hint}") from None
    return True


def preload(config: Any) -> None:
    """What the search will import anyway, started in the background as Ray starts: rung-tpe's
    quasi-random configs need scipy.stats (hpsearch.tune.draws.preload)."""
    if config.sampler == "rung-tpe":
        draws.preload()


def start_local_ray(plan: preflight.Plan) -> None:
    """A local Ray whose prestarted workers hold torch and the trainable before the first trial.

    Ray prestarts one worker per CPU as the driver connects, and each imports the modules of
    hpsearch.driver.cluster.worker_modules while the search is assembled. A trial's actor takes
    such a worker only when neither the job nor the actor has a runtime_env, so the variables of
    both (all a local search's runtime env holds, and what Tune would give its actors) reach the
    workers through the environment the raylet inherits from this process, set while Ray starts
    and restored after; ``search`` then registers the trainable without them
    (hpsearch.tune.compat.trainable_actors_inherit_environment)."""
    import ray

    from hpsearch.tune.compat import tune_actor_env

    extra = {key: value for key, value in plan.runtime_env.items() if key != "env_vars"}
    options: dict[str, Any] = dict(address="local", num_cpus=os.cpu_count() or 1, include_dashboard=False,
                                   logging_level=logging.ERROR, log_to_driver=False,
                                   **preload_option(worker_modules(plan.config.model)))
    if extra:  # something to ship: the workers start with the job's runtime env, cold
        options["runtime_env"] = plan.runtime_env
    with environment({**tune_actor_env(), **plan.runtime_env.get("env_vars", {})}):
        ray.init(**options)
    if not extra:
        WARM_NODES.add(ray.get_runtime_context().get_node_id())


@contextlib.contextmanager
def environment(variables: dict[str, str]) -> Iterator[None]:
    """``os.environ`` with ``variables`` set for the duration; the previous values back after."""
    before = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def lean_fit(plan: preflight.Plan) -> Iterator[None]:
    """What ``Tuner.fit`` skips for hpsearch: counting its callbacks for Ray's usage statistics when
    those are off (seconds of logger imports), and, on a local Ray start_local_ray started, the
    runtime_env that would keep trials off the warm workers Ray prestarted."""
    import ray

    with contextlib.ExitStack() as stack:
        stack.enter_context(callback_usage_tag_skipped())
        if plan.address is None and ray.get_runtime_context().get_node_id() in WARM_NODES:
            stack.enter_context(trainable_actors_inherit_environment())
        yield


def make_tuner(plan: preflight.Plan, searcher: Any, scheduler: Any, callbacks: list, resume: bool = False) -> Any:
    """The search's Tuner; with ``resume`` Tune restores the run dir's last snapshot first."""
    from ray import tune
    from ray.tune import ResumeConfig

    from hpsearch.tune.compat import build_tuner
    from hpsearch.tune.snapshot import pace_snapshots
    from hpsearch.tune.trainable import trainable, trial_name

    pace_snapshots()
    config = plan.config
    resources = {"cpu": config.resources.cpu, "gpu": config.resources.gpu}
    # Tuner.restore would bring back the searcher, scheduler and callbacks pickled when the search
    # started; a fresh Tuner with a ResumeConfig restores Tune's trials and the searcher's state
    # from the last snapshot and keeps these objects.
    restore = ResumeConfig(unfinished=ResumeConfig.ResumeType.RESUME,
                           errored=ResumeConfig.ResumeType.SKIP) if resume else None
    return build_tuner(
        tune.with_resources(tune.with_parameters(trainable, run=config, workdir=os.getcwd()), resources),
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=config.budget.num_samples,
            reuse_actors=True,
            trial_name_creator=trial_name,
            trial_dirname_creator=trial_name,
        ),
        run_config=tune.RunConfig(
            name=plan.name,
            storage_path=str(plan.storage),
            callbacks=callbacks,
            failure_config=tune.FailureConfig(max_failures=config.budget.max_failures),
            # Tune keeps every checkpoint; hpsearch.tune.lean.LeanDriver deletes all but the best two
            # and the latest, without the experiment snapshot Tune would force each time it deleted.
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=None, checkpoint_score_attribute=config.objective.metric,
                checkpoint_score_order=config.objective.mode),
            verbose=0,
            # Given none, Tune makes a JupyterNotebookReporter in a notebook, which clears the cell's
            # output (hpsearch's header) as the search starts; at verbose=0 this one never prints.
            progress_reporter=tune.CLIReporter(),
        ),
        resume_config=restore,
    )


def header(plan: preflight.Plan, verb: str = "run") -> str:
    import ray

    c = plan.config
    where = "local Ray" if plan.address is None else f"Ray cluster at {plan.address}"
    space = ", ".join(c.space) or "nothing (fixed params)"
    return (f"hpsearch {verb} {plan.name}: {c.model}, {c.budget.num_samples} trials x up to {c.max_epochs} "
            f"epochs, objective {c.objective.metric} ({c.objective.mode}), searching {space} with {c.sampler}\n"
            f"  on {where} ({int(ray.cluster_resources().get('CPU', 0))} CPUs); run dir {plan.run_dir}")


def claim_run_dir(plan: preflight.Plan) -> None:
    """Create the run dir (refusing one that exists: never overwrite a run) and write search.yaml
    and run.json."""
    try:
        plan.run_dir.mkdir(parents=True, exist_ok=False)
    except FileExistsError:
        preflight.check_new_run(plan.run_dir)
        raise
    dump_config(plan.config, plan.run_dir / SEARCH_YAML)
    update_run_info(plan.run_dir, name=plan.name, storage=str(plan.storage), address=plan.address or "local",
                    config=plan.source, command=plan.command, versions=versions(),
                    state="running", started=time.time())


def cluster_notes(plan: preflight.Plan) -> None:
    import ray

    if plan.address is None:
        return
    have = ray.cluster_resources()
    for kind, key in (("cpu", "CPU"), ("gpu", "GPU")):
        want = getattr(plan.config.resources, kind)
        if want > have.get(key, 0):
            print(f"hpsearch: note: resources.{kind} {want:g} per trial, but the cluster has "
                  f"{have.get(key, 0):g} {key}s now; trials wait until nodes join", file=sys.stderr)


def trial_slots(config: Any) -> int:
    """How many trials run at once: ``budget.max_concurrent``, or (0) as many as the cluster's CPUs
    (and GPUs, when trials ask for them) hold."""
    import ray

    if config.budget.max_concurrent > 0:
        return config.budget.max_concurrent
    have = ray.cluster_resources()
    slots = int(have.get("CPU", 0) // config.resources.cpu)
    if config.resources.gpu > 0:
        slots = min(slots, int(have.get("GPU", 0) // config.resources.gpu))
    return max(1, slots)


def search(plan: preflight.Plan, stop: GracefulStop, started_here: bool, *, interval_s: float, stream: Any,
           resumption: Any = None) -> int:
    """Run the Tuner to the end of the search or to a signal; ``resumption`` (hpsearch.driver.resume) for a
    resumed search. Returns the exit code."""
    import ray

    from hpsearch.tune.lean import LeanDriver
    from hpsearch.tune.progress import LiveTable, OutcomeRecorder, ResultLog, SnapshotKeeper, summary
    from hpsearch.tune.scheduler import exempt_points, make_scheduler
    from hpsearch.tune.searcher import close_open_trials, inner_searcher, make_searcher
    from hpsearch.tune.trackers import make_trackers

    config, run_dir = plan.config, plan.run_dir
    metric, mode = config.objective.metric, config.objective.mode
    outcomes = OutcomeLog(run_dir)
    live = LiveTable(metric, outcomes, interval_s=interval_s, stream=stream)
    state, ended, begun, early = "interrupted", False, time.monotonic(), ""
    try:
        cluster_notes(plan)
        # With a searcher, Tune keeps one trial pending at a time unless told otherwise, and a
        # search then runs its trials one after another: fill every slot.
        slots = trial_slots(config)
        os.environ["TUNE_MAX_PENDING_TRIALS_PG"] = str(slots)
        searcher = make_searcher(config, run_dir, outcomes, max_concurrent=slots)
        scheduler = make_scheduler(config, outcomes, state_path=run_dir / SCHEDULER_STATE)
        if resumption is not None:
            resumption.apply(searcher, scheduler, live)
        trackers = make_trackers(config.log, run_dir, plan.name, outcomes)
        keeper = SnapshotKeeper(run_dir)
        # In this order: an outcome is on disk before LeanDriver deletes an ended trial's checkpoints,
        # and a snapshot is published before LeanDriver keeps the checkpoints it names.
        callbacks = [ResultLog(), OutcomeRecorder(outcomes), *trackers, live, keeper,
                     LeanDriver(keeper, averages_of=(metric,))]
        tuner = make_tuner(plan, searcher, scheduler, callbacks, resume=resumption is not None)
        print(header(plan, "run" if resumption is None else "resume"), file=stream, flush=True)
        if resumption is not None:
            print(f"  {resumption.describe()}", file=stream, flush=True)
        try:
            with stop.tune_running(), lean_fit(plan):
                tuner.fit()
            ended = stop.signum is None   # fit() returns as if complete after a graceful stop
        except KeyboardInterrupt:
            pass
        if ended:   # an interrupted search keeps its Optuna trials open for `hpsearch resume`
            close_open_trials(searcher, "the search ended before the trial finished")
        live.print_table()
        unfinished = [r for r in live.rows.values() if outcomes.get(r.trial_id) is None]
        state = "finished" if ended and not unfinished else "interrupted"
        early = inner.stopped_early if (inner := inner_searcher(searcher)) is not None and ended else ""
    finally:
        live.close()    # the terminal's live view ends, whatever happened
        update_run_info(run_dir, state=state, finished=time.time(), **({"signal": stop.name} if stop.signum else {}),
                        **({"stopped_early": early} if early else {}))
        if started_here:
            ray.shutdown()
    print(summary(live.rows, outcomes.all(), metric, mode, run_dir, elapsed_s=time.monotonic() - begun,
                  state=state, space=config.space, stopped_early=early, rank=config.objective.rank,
                  window=config.objective.window, warm_points=exempt_points(config),
                  margin=config.objective.warm_start_margin), file=stream, flush=True)
    if state == "interrupted":
        by = f" by {stop.name}" if stop.signum else ""
        again = f"hpsearch resume {run_dir}" + (f" --address {plan.address}" if plan.address else "")
        print(f"the search was interrupted{by}; its state is saved: continue it with `{again}`", file=stream, flush=True)
        return stop.exit_code
    ended_as = [e["outcome"] for e in outcomes.all().values()]
    return 1 if ended_as and all(o == "error" for o in ended_as) else 0


def run(plan: preflight.Plan, interval_s: float = 5.0, stream: Any = None) -> int:
    """Run a checked search to the end. 0 when the search ran to the end and some trial got
    further than an error, 1 when every trial failed, 130 / 143 when SIGINT / SIGTERM stopped it.
    ``stream`` takes the header, the live table and the summary (default: sys.stdout as it is now,
    e.g. a notebook's): a view updated in place on a terminal, plain lines anywhere else
    (hpsearch.tune.progress.LiveTable); notes and signals' messages go to sys.stderr."""
    stream = stream if stream is not None else sys.stdout
    preflight.check_trackers(plan.config.log)    # again where the search runs: the head, under Ray Client
    for note in plan.warnings:
        print(f"hpsearch run: note: {note}", file=sys.stderr)
    stop = GracefulStop()
    with stop.installed():
        claim_run_dir(plan)
        lock = hold_lock(plan.run_dir)
        try:
            preload(plan.config)
            started_here = start_ray(plan)
            stop.arm()
        except BaseException:
            lock.close()
            shutil.rmtree(plan.run_dir)  # only what claim_run_dir just wrote: the search never started
            raise
        try:
            return search(plan, stop, started_here, interval_s=interval_s, stream=stream)
        finally:
            lock.close()


def resume(run_dir: str | Path, address: str | None = None, interval_s: float = 5.0, stream: Any = None,
           shown_address: str | None = None) -> int:
    """Continue an interrupted search in ``run_dir`` (``hpsearch resume``): every check first, then
    the run dir's records reconciled with Ray's last snapshot, then the search to its end.
    ``address`` as hpsearch.driver.cluster.check_address returned it (``commands.resume_run_dir`` checks it);
    ``shown_address``: the address the user gave, where it differs (Ray Client: hpsearch.driver.client).
    ``stream`` as for ``run``."""
    from hpsearch.driver import resume as restoring

    stream = stream if stream is not None else sys.stdout
    snapshot = restoring.check_resumable(run_dir)
    check_cluster_storage(snapshot.run_dir.parent, address)
    preflight.check_cpu(snapshot.config, address)
    preflight.check_gpu(snapshot.config, address)
    preflight.check_trackers(snapshot.config.log)
    plan = preflight.Plan(config=snapshot.config, source=str(snapshot.run_dir / SEARCH_YAML),
                          name=snapshot.run_dir.name, storage=snapshot.run_dir.parent,
                          address=shown_address or address,
                          runtime_env=runtime_env(snapshot.config.model if address is not None else None))
    stop = GracefulStop()
    with stop.installed():
        lock = hold_lock(snapshot.run_dir)
        try:
            resumption = restoring.prepare(snapshot)
            update_run_info(snapshot.run_dir, state="running", address=shown_address or address or "local",
                            resumed=[*snapshot.info.get("resumed", []), time.time()])
            preload(plan.config)
            started_here = start_ray(plan)
            stop.arm()
            return search(plan, stop, started_here, interval_s=interval_s, stream=stream, resumption=resumption)
        finally:
            lock.close()
