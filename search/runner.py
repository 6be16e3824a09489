"""``hpsearch run``: check everything (search.preflight), start or join Ray, run the Tuner, say
what happened.

    Tuner(with_resources(with_parameters(trainable, run=config), {cpu, gpu}),
          TuneConfig(search_alg=make_searcher(...), scheduler=make_scheduler(...), num_samples),
          RunConfig(name, storage_path, callbacks=[JSON and CSV loggers, OutcomeRecorder,
                    LiveTable], FailureConfig, CheckpointConfig))

metric/mode live in the searcher and the scheduler only (Ray refuses them in both places). One
OutcomeLog instance is shared by the scheduler (pruned_*), the searcher (reads it) and the
OutcomeRecorder callback (completed, error). Ray is imported only after every check passed, so a
bad config fails fast.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from typing import Any

from models.config import ConfigError
from search import preflight
from search.config import dump_config
from search.rundir import SEARCH_YAML, OutcomeLog, update_run_info

# Set before Ray is imported (run_command imports it only after the checks): no usage-stats
# banner, and trials keep the working directory, so relative data paths keep working.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")   # with verbose=0: Ray prints no table of its own
# Result files come from the JSON and CSV loggers passed explicitly below; the TensorBoard logger
# Ray would add on its own only prints warnings about NaN values into the live output.
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")

KEEP_CHECKPOINTS = 2       # the best two by the objective, plus always the latest


def start_ray(plan: preflight.Plan) -> bool:
    """Start a local Ray or join the cluster; False when a Ray session already exists here (it is
    used as it is and left running)."""
    import ray

    if ray.is_initialized():
        return False
    common = dict(logging_level=logging.ERROR, log_to_driver=False, runtime_env=plan.runtime_env)
    if plan.address is None:
        ray.init(address="local", num_cpus=os.cpu_count() or 1, include_dashboard=False, **common)
        return True
    try:
        ray.init(address=plan.address, **common)
    except (ConnectionError, RuntimeError) as err:
        last = [line for line in str(err).splitlines() if line.strip()]
        hint = ""
        if "token" in str(err).lower():
            hint = ("; the cluster uses token authentication: set RAY_AUTH_MODE=token and "
                    "RAY_AUTH_TOKEN (or ~/.ray/auth_token) as on the head")
        raise ConfigError(f"--address: could not join the Ray cluster at {plan.address}: "
                          f"{last[-1] if last else type(err).__name__}{hint}") from None
    return True


def make_tuner(plan: preflight.Plan, searcher: Any, scheduler: Any, callbacks: list) -> Any:
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    from search.trainable import trainable, trial_name

    config = plan.config
    resources = {"cpu": config.resources.cpu, "gpu": config.resources.gpu}
    return tune.Tuner(
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
            callbacks=[JsonLoggerCallback(), CSVLoggerCallback(), *callbacks],
            failure_config=tune.FailureConfig(max_failures=config.budget.max_failures),
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=KEEP_CHECKPOINTS, checkpoint_score_attribute=config.objective.metric,
                checkpoint_score_order=config.objective.mode),
            verbose=0,
        ),
    )


def header(plan: preflight.Plan) -> str:
    import ray

    c = plan.config
    where = "local Ray" if plan.address is None else f"Ray cluster at {plan.address}"
    space = ", ".join(c.space) or "nothing (fixed params)"
    return (f"hpsearch run {plan.name}: {c.model}, {c.budget.num_samples} trials x up to {c.max_epochs} "
            f"epochs, objective {c.objective.metric} ({c.objective.mode}), searching {space}\n"
            f"  on {where} ({int(ray.cluster_resources().get('CPU', 0))} CPUs); run dir {plan.run_dir}")


def claim_run_dir(plan: preflight.Plan) -> None:
    """Create the run dir (refusing one that exists: never overwrite a run) and write search.yaml
    and run.json."""
    from search.training import versions

    try:
        plan.run_dir.mkdir(parents=True, exist_ok=False)
    except FileExistsError:
        preflight.check_new_run(plan.run_dir)
        raise
    dump_config(plan.config, plan.run_dir / SEARCH_YAML)
    update_run_info(plan.run_dir, name=plan.name, storage=str(plan.storage), address=plan.address or "local",
                    config=str(plan.config_path), command=preflight.command_line(), versions=versions(),
                    state="running", started=time.time())


def run(plan: preflight.Plan, interval_s: float = 5.0, stream: Any = None) -> int:
    """Run a checked search to the end. 0 when the search ran to the end and some trial got
    further than an error, 1 when every trial failed, 130 when it was interrupted."""
    import ray

    from search.progress import LiveTable, OutcomeRecorder, summary
    from search.scheduler import make_scheduler
    from search.searcher import close_open_trials, make_searcher

    stream = stream or sys.stdout
    for note in plan.warnings:
        print(f"hpsearch run: note: {note}", file=sys.stderr)
    claim_run_dir(plan)
    try:
        started_here = start_ray(plan)
    except BaseException:
        shutil.rmtree(plan.run_dir)  # only what claim_run_dir just wrote: the search never started
        raise
    if plan.address is not None:
        have = ray.cluster_resources()
        for kind, key in (("cpu", "CPU"), ("gpu", "GPU")):
            want = getattr(plan.config.resources, kind)
            if want > have.get(key, 0):
                print(f"hpsearch run: note: resources.{kind} {want:g} per trial, but the cluster has "
                      f"{have.get(key, 0):g} {key}s now; trials wait until nodes join", file=sys.stderr)
    metric, mode = plan.config.objective.metric, plan.config.objective.mode
    outcomes = OutcomeLog(plan.run_dir)
    live = LiveTable(metric, outcomes, interval_s=interval_s, stream=stream)
    state, begun = "interrupted", time.monotonic()
    try:
        searcher = make_searcher(plan.config, plan.run_dir, outcomes)
        tuner = make_tuner(plan, searcher, make_scheduler(plan.config, outcomes),
                           [OutcomeRecorder(outcomes), live])
        print(header(plan), file=stream, flush=True)
        try:
            tuner.fit()
        finally:
            close_open_trials(searcher, "the search ended before the trial finished")
        live.print_table()
        unfinished = [r for r in live.rows.values() if outcomes.get(r.trial_id) is None]
        state = "interrupted" if unfinished else "finished"
    finally:
        update_run_info(plan.run_dir, state=state, finished=time.time())
        if started_here:
            ray.shutdown()
    print(summary(live.rows, outcomes.all(), metric, mode, plan.run_dir, elapsed_s=time.monotonic() - begun,
                  state=state), file=stream, flush=True)
    if state == "interrupted":
        print(f"the search was interrupted; continue it with `hpsearch resume {plan.run_dir}`", file=stream)
        return 130
    ended = [e["outcome"] for e in outcomes.all().values()]
    return 1 if ended and all(o == "error" for o in ended) else 0


def run_command(args: Any) -> int:
    return run(preflight.plan(args))


def resume_command(args: Any) -> int:
    """``hpsearch resume RUN_DIR``: not in this version; say so in one line instead of a traceback."""
    raise ConfigError(f"resume: continuing an interrupted search is not available yet; {args.run_dir} keeps "
                      f"every trial that ran (`hpsearch report {args.run_dir}`), and `hpsearch run` with "
                      "another --name starts afresh")
