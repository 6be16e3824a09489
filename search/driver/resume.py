"""What lets a search survive an interruption, and how ``hpsearch resume`` picks it up again.

While a search runs, every fact is on disk the moment it is decided, in the run dir:

- each trial's ``params.json`` and ``result.json`` lines (hpsearch.tune.progress.ResultLog: written
  straight into the run dir, flushed and fsync'd; Ray's own logger writes to a staging folder under
  /tmp that reaches the run dir only with Ray's next state sync);
- every stop and rung record of the scheduler (``scheduler/changes.jsonl``, one fsynced line per
  change before the stop takes effect, folded now and then into ``scheduler/state.json``) and every
  outcome (``outcomes.jsonl``);
- the Optuna study (``optuna.journal``);
- Ray's snapshot (``experiment_state-*.json`` and the searcher state), taken every Tune step
  while that is cheap (hpsearch.tune.snapshot.pace_snapshots; Ray's default is every 10 s or more), and a
  whole, consistent copy of it in ``snapshot/`` (hpsearch.tune.snapshot): Ray rewrites its own files in
  place in a background thread, so a SIGKILL often leaves them truncated (seen on the first try).

Ray's snapshot can still be one step behind the rest after a SIGKILL. ``hpsearch resume`` therefore
checks the run dir (``check_resumable``, before any Ray process starts: a missing or corrupt state
file is refused, nothing is overwritten or restarted), puts the kept copy where Ray reads it, then
reconciles Ray's snapshot with the run dir's own records (``reconcile``): a trial that ended after
the snapshot is retired instead of run again, a decision the scheduler took is recorded, and an
Optuna trial Ray never saved is closed. Nothing here unpickles: Ray's state files are checked as
JSON, or for a pickle's final byte.

The lock (``run.lock``, flock) keeps two processes from running one search, and tells the report a
running search from one whose driver was killed.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from hpsearch.core.config import RunConfig, load_config, read_yaml
from hpsearch.core.health import exploding_as_run
from hpsearch.core.outcomes import RUN_STATES, Outcome
from hpsearch.core.rundir import (
    RUN_JSON,
    SCHEDULER_CHANGES,
    SCHEDULER_STATE,
    SEARCH_YAML,
    STUDY_FILE,
    OutcomeLog,
    cut_torn_line,
    scheduler_log,
)
from hpsearch.core.rungs import ChangeError, fold
from hpsearch.core.warm_start import margin_as_run
from hpsearch.models.config import ConfigError
from hpsearch.tune.compat import adopt_trial
from hpsearch.tune.snapshot import RayTrial, place_snapshot, read_json, read_snapshot, refusal

ENDED = ("TERMINATED", "ERROR")         # Ray's statuses of a trial that has ended
WAITING = ("PENDING", "PAUSED")        # and of one Ray has yet to start or continue


# -- checks before Ray ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Snapshot:
    """What ``check_resumable`` found: the search config, run.json and Ray's last snapshot."""
    run_dir: Path
    config: RunConfig
    info: dict[str, Any]
    files: tuple[Path, ...]              # Ray's experiment state, then its two searcher files
    kept: bool                           # True: hpsearch's own copy (snapshot/), placed back for Ray
    trials: dict[str, RayTrial] = field(default_factory=dict)


# -- checks before Ray ------------------------------------------------------------------------------

def check_resumable(run_dir: str | Path) -> Snapshot:
    """Everything resume needs, checked before any Ray process starts; a one-line ConfigError
    naming the file otherwise. Nothing in the run dir is written or unpickled here.

    Ray's snapshot is read from hpsearch's own copy (snapshot/) when the run has one, else from
    Ray's newest files in the run dir."""
    run_dir = Path(run_dir).expanduser().resolve()
    if not run_dir.is_dir():
        raise ConfigError(f"resume: {str(run_dir)!r} is not a directory; expected a run directory "
                          "written by `hpsearch run`")
    for name in (SEARCH_YAML, RUN_JSON):
        if not (run_dir / name).is_file():
            raise refusal(run_dir / name, f"{name} is missing, so this is no hpsearch run dir or it is damaged")
    try:
        config = as_it_ran(load_config(run_dir / SEARCH_YAML), read_yaml(run_dir / SEARCH_YAML))
    except ConfigError as err:
        raise refusal(run_dir / SEARCH_YAML, f"the search config does not load ({err})") from None
    info = read_json(run_dir / RUN_JSON, RUN_JSON)
    if not isinstance(info, dict) or info.get("state") not in RUN_STATES:
        raise refusal(run_dir / RUN_JSON, f"{RUN_JSON} has no state among {', '.join(RUN_STATES)}")
    if info["state"] == "finished":
        raise ConfigError(f"resume: {str(run_dir)!r} finished (run.json state 'finished'); nothing to resume")
    files, kept, trials = read_snapshot(run_dir)
    check_journal(run_dir)
    scheduler_state(run_dir)
    return Snapshot(run_dir, config, info, tuple(files), kept, trials)


def as_it_ran(config: RunConfig, raw: Any) -> RunConfig:
    """The run dir's config with the settings a search from before them ran without as it ran
    (``objective.warm_start_margin`` 0: hpsearch.core.warm_start.margin_as_run; the exploding rule's
    ``spike`` at its ``factor``, ``trained_patience`` at its ``patience`` and ``hold`` at 1:
    hpsearch.core.health.exploding_as_run)."""
    raw = raw if isinstance(raw, dict) else {}
    margin = margin_as_run(raw.get("objective"), config.objective.warm_start_margin)
    health = raw.get("health") if isinstance(raw.get("health"), dict) else {}
    exploding = exploding_as_run(health.get("exploding"), config.health.exploding)
    return dataclasses.replace(
        config, objective=dataclasses.replace(config.objective, warm_start_margin=margin),
        health=dataclasses.replace(config.health, exploding=exploding))


def check_journal(run_dir: Path) -> None:
    """The Optuna journal: present, and every complete line an Optuna journal entry (a last line
    without its newline is what a killed write leaves; ``repair_journal`` drops it)."""
    path = run_dir / STUDY_FILE
    if not path.is_file():
        if (run_dir / "optuna.db").is_file():
            raise refusal(run_dir / "optuna.db", "the Optuna study is in SQLite, as an older hpsearch kept it; "
                          "resume this run with that version")
        raise refusal(path, "the Optuna study is missing")
    lines = path.read_bytes().split(b"\n")[:-1]     # complete lines only
    if not lines:
        raise refusal(path, "the Optuna study is empty")
    for number, line in enumerate(lines, start=1):
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        if not isinstance(entry, dict) or not isinstance(entry.get("op_code"), int):
            raise refusal(path, f"line {number} is not an Optuna journal entry")


def repair_journal(run_dir: Path) -> None:
    """Cut a torn last line (a write the kill interrupted: Optuna would join the next write to it
    and then fail to read the file) and remove a lock the killed writer left (Optuna would wait
    30 s for it). Only while holding run.lock, so no other hpsearch process writes here."""
    cut_torn_line(run_dir / STUDY_FILE)
    for stale in run_dir.glob(f"{STUDY_FILE}.lock*"):
        stale.unlink(missing_ok=True)


def scheduler_state(run_dir: Path) -> dict[str, Any] | None:
    """The scheduler's persisted state: the whole file with the changes logged since applied
    (hpsearch.core.rungs.fold); None before its first decision."""
    path = Path(run_dir) / SCHEDULER_STATE
    try:
        state, changes = scheduler_log(path).read()
    except (OSError, ValueError) as err:
        raise refusal(path, f"the scheduler state is unreadable or truncated ({err})") from None
    if state is None:
        return None
    if not isinstance(state.get("rungs"), list):
        raise refusal(path, "the scheduler state has no rungs")
    try:
        return fold(state, changes)
    except ChangeError as err:
        raise refusal(Path(run_dir) / SCHEDULER_CHANGES, f"the scheduler's changes do not apply to its state "
                      f"({err})") from None
    except (KeyError, TypeError, ValueError) as err:
        raise refusal(path, f"the scheduler state does not load ({type(err).__name__}: {err})") from None


# -- reconciling Ray's snapshot with the run dir ------------------------------------------------------

def last_epoch(rows: list[Mapping[str, Any]]) -> int:
    """The highest epoch among a trial's reported rows (0 when none)."""
    epochs = [row.get("training_iteration", row.get("epoch")) for row in rows]
    return max((int(e) for e in epochs if isinstance(e, (int, float)) and not isinstance(e, bool)), default=0)


@dataclass
class Reconciled:
    retire: dict[str, dict[str, Any]] = field(default_factory=dict)  # trial_id -> {outcome, result}
    record: list[tuple[str, str, str, int | None]] = field(default_factory=list)  # outcomes to write
    resume: list[str] = field(default_factory=list)      # Ray continues them from their checkpoint
    orphans: list[str] = field(default_factory=list)     # in the run dir, unknown to Ray's snapshot


def reconcile(ray_trials: Mapping[str, RayTrial], rows: Mapping[str, list[dict[str, Any]]],
              outcomes: Mapping[str, Mapping[str, Any]], decided: Mapping[str, Mapping[str, Any]],
              max_epochs: int) -> Reconciled:
    """What to do with each trial Ray's snapshot holds as unfinished, given what the run dir says:
    ``rows`` (trial_id -> deduplicated result rows), ``outcomes`` (outcomes.jsonl) and ``decided``
    (the scheduler's stops). The first rule that applies decides:

    1. an outcome is recorded and the rows reach its epoch -> retire with that outcome;
    2. the scheduler decided a stop that never reached outcomes.jsonl, and the rows reach its epoch
       -> record the decision, retire;
    3. the rows reach max_epochs -> record ``completed``, retire;
    4. otherwise -> resume from Ray's checkpoint (epochs missing from the rows are trained again;
       a restored stop decision stops the trial again when it gets there).

    Trials in the run dir that Ray's snapshot does not hold are ``orphans``; an unfinished one is
    recorded as an error (Ray cannot continue a trial it never saved)."""
    out = Reconciled()
    for trial_id, trial in ray_trials.items():
        if trial.status in ENDED:
            continue
        mine = rows.get(trial_id, [])
        done = last_epoch(mine)
        last = mine[-1] if mine else None
        entry, stop = outcomes.get(trial_id), decided.get(trial_id)
        if entry and entry.get("outcome") != "running" and done >= (entry.get("epoch") or 0):
            out.retire[trial_id] = {"outcome": entry["outcome"], "result": last}
        elif stop and stop.get("epoch") is not None and done >= stop["epoch"]:
            out.record.append((trial_id, stop["outcome"], stop.get("reason", ""), stop["epoch"]))
            out.retire[trial_id] = {"outcome": stop["outcome"], "result": last}
        elif done >= max_epochs:
            out.record.append((trial_id, "completed", "", done))
            out.retire[trial_id] = {"outcome": "completed", "result": last}
        else:
            out.resume.append(trial_id)
    for trial_id in sorted(set(rows) | set(outcomes)):
        if trial_id in ray_trials:
            continue
        out.orphans.append(trial_id)
        entry = outcomes.get(trial_id)
        if entry and entry.get("outcome") != "running":
            continue
        if last_epoch(rows.get(trial_id, [])) >= max_epochs:
            out.record.append((trial_id, "completed", "", last_epoch(rows[trial_id])))
        elif rows.get(trial_id):
            out.record.append((trial_id, "error", ORPHAN_REASON, last_epoch(rows[trial_id])))
    return out


ORPHAN_REASON = "the search stopped before Ray saved this trial, so it could not be resumed"


def close_orphans(searcher: Any, known: set[str], rows: Mapping[str, list[dict[str, Any]]],
                  outcomes: Mapping[str, Mapping[str, Any]]) -> list[int]:
    """Close every Optuna trial left RUNNING that Ray's snapshot does not hold (Ray will never
    finish it): a finished one as its outcome says, through the searcher's own judgement; an
    unfinished one as FAIL. A point that never reported is asked again (enqueued), so the resumed
    search still tries it. Returns the Optuna numbers closed."""
    import optuna

    study = searcher.study
    closed = []
    for frozen in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        trial_id = frozen.user_attrs.get("trial_id")
        if trial_id in known:
            continue
        key = trial_id or f"optuna-{frozen.number}"
        adopt_trial(searcher, key, frozen)
        entry = outcomes.get(key)
        mine = rows.get(key, [])
        if entry and entry.get("outcome") not in ("running", None):
            searcher.on_trial_complete(key, result=mine[-1] if mine else None, error=entry["outcome"] == "error")
        else:
            searcher.close_open_trials(ORPHAN_REASON)
            if not mine:
                study.enqueue_trial(dict(frozen.params), skip_if_exists=False)
        closed.append(frozen.number)
    return closed


def retire_finished(finished: Mapping[str, Mapping[str, Any]], tune_controller: Any) -> None:
    """Close the trials a resumed search must not run again: they ended after Ray's last snapshot,
    so Ray restored them as unfinished. ``finished``: trial_id -> {"outcome": ..., "result": the
    trial's last reported row} (``Reconciled.retire``). Each one Ray holds as waiting is told to the
    searcher with its real end (its last row, or an error) and stopped by Tune without starting.
    Run once, at the resumed search's first scheduling step (HealthASHA.on_next_step), when Tune
    knows every restored trial."""
    for trial in list(tune_controller.get_trials()):
        final = finished.get(trial.trial_id)
        if final is None or trial.status not in WAITING:
            continue
        tune_controller.search_alg.on_trial_complete(
            trial.trial_id, result=final.get("result"), error=final.get("outcome") == Outcome.ERROR)
        tune_controller.stop_trial(trial)


@dataclass
class Resumption:
    """A checked, reconciled run dir, ready for the resumed Tuner (hpsearch.driver.runner.search)."""
    snapshot: Snapshot
    plan: Reconciled
    rows: dict[str, list[dict[str, Any]]]
    scheduler_state: dict[str, Any] | None
    trials: list[Any]                    # hpsearch.results.report.Trial, for the live table

    def apply(self, searcher: Any, scheduler: Any, live: Any) -> None:
        """Give the fresh scheduler its saved state and, for its first step, the trials to retire;
        close the Optuna trials Ray never saved, and show every earlier trial in the live table."""
        from hpsearch.tune.searcher import inner_searcher

        if self.scheduler_state is not None:
            scheduler.restore_state(self.scheduler_state)
        scheduler.observe_history(self.rows)
        if self.plan.retire:
            scheduler.on_next_step(partial(retire_finished, self.plan.retire))
        inner = inner_searcher(searcher)
        if inner is not None:
            close_orphans(inner, set(self.snapshot.trials), self.rows, live.outcomes.all())
        seed_rows(live, self.trials)

    def describe(self) -> str:
        trials = self.snapshot.trials
        ended = sum(1 for t in trials.values() if t.status in ENDED)
        left = max(0, self.snapshot.config.budget.num_samples - len(trials))
        parts = [f"{ended} trials had ended", f"{len(self.plan.retire)} ended after Ray's last snapshot "
                 "(kept as they ended)", f"{len(self.plan.resume)} continue from their last checkpoint",
                 f"{left} still to start"]
        if self.plan.orphans:
            parts.append(f"{len(self.plan.orphans)} were never saved by Ray and are not resumed")
        return "resuming: " + ", ".join(parts)


def prepare(snapshot: Snapshot) -> Resumption:
    """Read the run dir's own records, reconcile them with Ray's snapshot and write the outcomes
    that reconciling establishes. Call while holding the lock, before Ray starts."""
    from hpsearch.results.report import read_run
    from hpsearch.tune.scheduler import make_scheduler

    if snapshot.kept:
        place_snapshot(snapshot.run_dir, snapshot.files)
    repair_journal(snapshot.run_dir)
    run = read_run(snapshot.run_dir)
    rows = {t.trial_id: t.rows for t in run.trials if t.rows}
    state = scheduler_state(snapshot.run_dir)
    if state is not None:
        try:
            make_scheduler(snapshot.config, OutcomeLog(None)).restore_state(state)
        except (ValueError, KeyError, TypeError) as err:
            raise refusal(snapshot.run_dir / SCHEDULER_STATE,
                          f"the scheduler state does not fit search.yaml ({err})") from None
    outcomes = OutcomeLog(snapshot.run_dir)
    plan = reconcile(snapshot.trials, rows, outcomes.all(), (state or {}).get("decided") or {},
                     snapshot.config.max_epochs)
    for trial_id, outcome, reason, epoch in plan.record:
        outcomes.record(trial_id, outcome, reason, epoch)
    return Resumption(snapshot, plan, rows, state, list(run.trials))


def seed_rows(live: Any, trials: list[Any]) -> None:
    """Every trial already in the run dir as a row of the live table (and so of the summary)."""
    from hpsearch.tune.progress import TrialRow, label

    for trial in trials:
        if trial.trial_id in live.rows:
            continue
        epochs, values = trial.series(live.metric)
        last = trial.rows[-1] if trial.rows else {}
        entry = live.outcomes.get(trial.trial_id)
        status = entry["outcome"] if entry and entry["outcome"] != "running" else "pending"
        loss = last.get("train_loss")
        live.rows[trial.trial_id] = TrialRow(
            trial.trial_id, label(trial.path.name) if trial.path else trial.trial_id, status=status,
            epoch=epochs[-1] if epochs else None,
            objective=values[-1] if values and not math.isnan(values[-1]) else None,
            train_loss=float(loss) if isinstance(loss, (int, float)) and not isinstance(loss, bool) else None,
            health=str(last.get("health", "")), values=list(values), config=dict(trial.config),
            seed=last.get("seed"))


__all__ = ["ENDED", "ORPHAN_REASON", "WAITING", "Reconciled", "Resumption", "Snapshot", "check_resumable",
           "close_orphans", "last_epoch", "prepare", "reconcile", "retire_finished", "scheduler_state",
           "seed_rows"]
