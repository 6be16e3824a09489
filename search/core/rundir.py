"""The run directory: what hpsearch writes beside Ray's own files, and how it is read back.

    <storage>/<name>/
      search.yaml        the validated RunConfig, as run (load_config reads it back)
      run.json           name, storage, address, versions, state (running|finished|interrupted)
      outcomes.jsonl     one JSON line per trial decision: trial_id, outcome, reason, epoch, time;
                         the last line for a trial wins
      optuna.journal     the Optuna study, an append-only journal of JSON lines (``study_storage``;
                         optuna.load_study and optuna-dashboard open it)
      scheduler/state.json  the scheduler's rung records and stop decisions, as a whole (rewritten
                         atomically now and then) ...
      scheduler/changes.jsonl  ... and the changes since, one fsynced line per decision, appended
                         before it takes effect (``StateLog``; a subfolder: Ray re-uploads
                         top-level *.json on resume)
      run.lock           locked (flock) by the hpsearch process that runs or resumes the search
                         (``hold_lock``); ``lock_held`` tells a running search from a killed one
      snapshot/          a whole, consistent copy of Ray's last experiment snapshot (hpsearch.tune.snapshot)
      <trial dirs>/      params.json, result.json (a JSON line per epoch, written as it is reported:
                         hpsearch.tune.progress.ResultLog), Ray's checkpoint_*/

Only JSON, JSONL and YAML that hpsearch or Ray wrote as text are read back; nothing here is
ever unpickled.
"""

from __future__ import annotations

import copy
import fcntl
import json
import os
import re
import time
from collections.abc import Container, Mapping
from pathlib import Path
from typing import IO, Any

import optuna
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from hpsearch.core.outcomes import OUTCOMES_ALL, RUN_JSON
from hpsearch.models.config import ConfigError

SEARCH_YAML = "search.yaml"
OUTCOMES = "outcomes.jsonl"
STUDY_FILE = "optuna.journal"
STUDY_NAME = "hpsearch"
SCHEDULER_STATE = "scheduler/state.json"
SCHEDULER_CHANGES = "scheduler/changes.jsonl"
SNAPSHOT_DIR = "snapshot"
RUN_LOCK = "run.lock"

CHECKPOINT_FILE = "state.pt"      # in each of Ray's checkpoint_*/ folders: weights, history, seed


TRIAL_DIR = re.compile(r"trial_(?P<number>\d+)_(?P<id>.+)")


def trial_dir_name(number: int, trial_id: str) -> str:
    """A trial's name and folder: ``trial_<number>_<trial_id>``, the number (1-based, as the live
    table shows it: ``#<number>``) zero-padded to 4."""
    return f"trial_{int(number):04d}_{trial_id}"


def parse_trial_dir(name: str) -> tuple[int, str] | None:
    """(number, trial_id) of a ``trial_dir_name``; None for any other name (Ray's default folder
    names, a run dir written without them)."""
    found = TRIAL_DIR.fullmatch(name)
    return (int(found.group("number")), found.group("id")) if found else None


def study_storage(run_dir: str | Path) -> Any:
    """The run's Optuna storage: ``JournalStorage`` over ``RUN_DIR/optuna.journal``. Each change is
    one appended line (under a lock file, so other processes may read it at once), which costs a
    few milliseconds where SQLite took tens per trial; a line torn by a crash is left out on read."""
    return RunJournal(JournalFileBackend(str(Path(run_dir).resolve() / STUDY_FILE)))


class RunJournal(optuna.storages.JournalStorage):
    """``JournalStorage`` that answers "which trials are WAITING" (asked by every ``Study.ask``, for
    an enqueued trial to run first) without reading every trial of the study, which costs 4 ms a
    suggestion at 10,000 trials. A trial is WAITING only from its creation (``enqueue_trial``) until
    it is set to another state, so the waiting ones are known from one full read of each study and
    the trials created since by this storage, checked against their stored state at each answer.
    The search's driver is the only writer of a run's study, through one storage; a trial enqueued
    after the first read by another process or through another storage object would not be seen."""

    def __init__(self, backend: Any) -> None:
        super().__init__(backend)
        self._waiting: dict[int, set[int]] = {}       # study id -> ids of trials that were WAITING

    def __getstate__(self) -> dict[Any, Any]:
        state = super().__getstate__()
        state.pop("_waiting", None)
        return state

    def __setstate__(self, state: dict[Any, Any]) -> None:
        super().__setstate__(state)
        self._waiting = {}

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        trial_id = super().create_new_trial(study_id, template_trial)
        if template_trial is not None and template_trial.state == TrialState.WAITING and study_id in self._waiting:
            self._waiting[study_id].add(self.get_trial(trial_id).number)
        return trial_id

    def get_all_trials(self, study_id: int, deepcopy: bool = True,
                       states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        if states is None or any((state in states) != (state == TrialState.WAITING) for state in TrialState):
            return super().get_all_trials(study_id, deepcopy, states)       # not "WAITING only"
        if study_id in self._waiting:
            numbers = sorted(self._waiting[study_id])
            trials = [self.get_trial(self.get_trial_id_from_study_id_trial_number(study_id, n)) for n in numbers]
            waiting = [t for t in trials if t.state == TrialState.WAITING]
        else:
            waiting = super().get_all_trials(study_id, deepcopy=False, states=states)
        self._waiting[study_id] = {t.number for t in waiting}
        return copy.deepcopy(waiting) if deepcopy else waiting


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write JSON so a reader (or a crash, of the process or the machine) never sees half a file:
    the new file is on disk, under its name, when this returns."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(folder: str | Path) -> None:
    """Put a folder's entries (a file created, renamed into place) on disk, where the OS allows."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class StateLog:
    """A JSON object on disk as a whole file (``write``) plus an append-only log of the changes
    made to it since (``append``: one line each, fsynced), so that keeping a change on disk costs
    what the change holds, not what the whole object does. Changes are numbered (``seq``) and the
    whole file names the last one it holds, so a crash between writing it and emptying the log
    applies nothing twice. ``read`` gives the object and the changes after it, in order; a torn last
    line (a crash mid-append) is left out, and cut off before the next append. The caller decides
    when to write the whole (``pending`` says how many changes the log holds) and how to apply a
    change (hpsearch.core.rungs.fold for the scheduler's state)."""

    def __init__(self, path: str | Path, log_path: str | Path):
        self.path, self.log_path = Path(path), Path(log_path)
        self.seq: int | None = None     # the number of the last change on disk (read before the first write)
        self.pending = 0                # changes in the log, after the whole file

    def read(self) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """(the whole object, or None before the first ``write``; the changes logged after it).
        ValueError when the whole file is not a JSON object."""
        state, _, changes = self._read()
        return state, changes

    def _read(self) -> tuple[dict[str, Any] | None, int, list[dict[str, Any]]]:
        if not self.path.exists():
            return None, 0, []
        try:
            state = json.loads(self.path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{type(err).__name__}: {err}") from None
        if not isinstance(state, dict):
            raise ValueError(f"got {type(state).__name__}, expected a JSON object")
        base = state.pop("seq", 0)
        base = base if isinstance(base, int) else 0
        changes = [c for c in json_lines(self.log_path) if isinstance(c.get("seq"), int) and c["seq"] > base]
        return state, base, changes

    def write(self, state: Mapping[str, Any]) -> None:
        """Replace the whole object (atomically, and on disk before the log it replaces is emptied)
        and empty the log."""
        self._find_seq()
        write_json_atomic(self.path, {**state, "seq": self.seq})
        with self.log_path.open("w", encoding="utf-8") as fh:
            fh.flush()
            os.fsync(fh.fileno())
        self.pending = 0

    def append(self, changes: list[Mapping[str, Any]]) -> None:
        """Log ``changes`` after the whole object, in one write; on disk when this returns."""
        self._find_seq()
        lines = []
        for change in changes:
            self.seq += 1
            lines.append(json.dumps({**change, "seq": self.seq}) + "\n")
        created = not self.log_path.exists()
        with self.log_path.open("a", encoding="utf-8") as fh:
            fh.write("".join(lines))
            fh.flush()
            os.fsync(fh.fileno())
        if created:
            fsync_dir(self.log_path.parent)
        self.pending += len(changes)

    def _find_seq(self) -> None:
        """The last change number on disk, once per object, after a torn last line of the log is cut."""
        if self.seq is not None:
            return
        if self.log_path.exists():
            cut_torn_line(self.log_path)
        _, base, changes = self._read()
        self.seq = max([base, *(c["seq"] for c in changes)])
        self.pending = len(changes)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)


def scheduler_log(state_path: str | Path) -> StateLog:
    """The scheduler's state at ``state_path`` (RUN_DIR/SCHEDULER_STATE) and its log of changes beside it."""
    state_path = Path(state_path)
    return StateLog(state_path, state_path.with_name(Path(SCHEDULER_CHANGES).name))


def cut_torn_line(path: str | Path) -> None:
    """Cut a last line without its newline (what a write killed mid-line leaves) off a JSON-lines
    file, so the next append starts a line of its own."""
    data = Path(path).read_bytes()
    if data and not data.endswith(b"\n"):
        with Path(path).open("r+b") as fh:
            fh.truncate(data.rfind(b"\n") + 1)
            fh.flush()
            os.fsync(fh.fileno())


def read_run_info(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / RUN_JSON
    return json.loads(path.read_text(encoding="utf-8"))


def update_run_info(run_dir: str | Path, **fields: Any) -> dict[str, Any]:
    path = Path(run_dir) / RUN_JSON
    info = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    info.update(fields)
    info["updated"] = time.time()
    write_json_atomic(path, info)
    return info


class OutcomeLog:
    """Append-only record of why each trial ended, shared by scheduler, searcher and callbacks."""

    def __init__(self, run_dir: str | Path | None):
        self.path = Path(run_dir) / OUTCOMES if run_dir is not None else None
        self._latest: dict[str, dict[str, Any]] = {}
        self._read_to = 0       # bytes of the file already applied to _latest
        self.catch_up()

    def record(self, trial_id: str, outcome: str, reason: str = "", epoch: int | None = None) -> dict[str, Any]:
        if outcome not in OUTCOMES_ALL:
            raise ValueError(f"outcome: got {outcome!r}, expected one of {', '.join(OUTCOMES_ALL)}")
        entry = {"trial_id": trial_id, "outcome": outcome, "reason": reason, "epoch": epoch,
                 "time": time.time()}
        self._latest[trial_id] = entry
        if self.path is not None:
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(entry) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
        return entry

    def get(self, trial_id: str) -> dict[str, Any] | None:
        return self._latest.get(trial_id)

    def catch_up(self) -> None:
        """Apply what was appended to the file since this copy last read it (records another copy of
        the log wrote: a searcher restored by Ray holds its own), in file order, so each trial's
        entry is its last record. Reads only the new bytes: a search of 10,000 trials pays per
        trial what a search of 10 pays. A torn last line is left for the next call; a file that
        shrank (replaced) is read again from its start."""
        if self.path is None or not self.path.exists():
            return
        with self.path.open("rb") as fh:
            if fh.seek(0, os.SEEK_END) < self._read_to:
                self._read_to = 0
            fh.seek(self._read_to)
            data = fh.read()
        complete = data.rfind(b"\n") + 1
        for entry in parse_json_lines(data[:complete].decode("utf-8", errors="replace")):
            if "trial_id" in entry:
                self._latest[entry["trial_id"]] = entry
        self._read_to += complete

    def all(self) -> Mapping[str, dict[str, Any]]:
        return dict(self._latest)


def json_lines(path: str | Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines file, in order; a line that does not parse (the torn last
    line of a crash mid-write) or is not an object is skipped; no file reads as none."""
    path = Path(path)
    return parse_json_lines(path.read_text(encoding="utf-8")) if path.exists() else []


def parse_json_lines(text: str) -> list[dict[str, Any]]:
    """The JSON objects of JSON-lines text, in order (``json_lines`` without the file)."""
    objects = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict):
            objects.append(entry)
    return objects


def read_outcomes(run_dir: str | Path) -> dict[str, dict[str, Any]]:
    """trial_id -> its last outcome record. A torn last line (crash mid-write) is skipped."""
    return {entry["trial_id"]: entry for entry in json_lines(Path(run_dir) / OUTCOMES) if "trial_id" in entry}


def read_trial_results(trial_dir: str | Path) -> list[dict[str, Any]]:
    """Ray's result.json of one trial: one dict per report, a torn last line skipped."""
    return json_lines(Path(trial_dir) / "result.json")


def hold_lock(run_dir: str | Path) -> IO[str]:
    """Lock the run dir for this process (released when it exits, however it exits); a
    ConfigError when another process holds it."""
    handle = (Path(run_dir) / RUN_LOCK).open("a", encoding="utf-8")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise ConfigError(f"run_dir: {str(run_dir)!r} is in use: another hpsearch process is running this "
                          f"search ({RUN_LOCK} is locked); wait for it, or stop it first") from None
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def lock_held(run_dir: str | Path) -> bool | None:
    """True while a process runs the search, False when none does, None when unknown (no lock
    file, or a filesystem without flock)."""
    path = Path(run_dir) / RUN_LOCK
    if not path.is_file():
        return None
    try:
        with path.open("r", encoding="utf-8") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    except OSError:
        return None
