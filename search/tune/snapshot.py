"""Ray's experiment snapshot in a run dir, and hpsearch's whole copy of it.

Tune snapshots its experiment (``experiment_state-<session>.json``, JSON) and its searcher
(``search_gen_state-<session>.json`` and ``searcher-state-<session>.pkl``, pickles) into a staging
folder under /tmp, then copies them into the run dir in a background thread, rewriting each file in
place. A driver killed during that copy leaves a truncated file (a SIGKILL did, on the first try),
or files from two different steps. So hpsearch keeps its own copy (``keep_snapshot``): taken from
the staging folder right after Tune wrote it, into the free one of two slots of RUN_DIR/snapshot/,
published by replacing a manifest. ``read_snapshot`` reads it back, and ``place_snapshot`` puts it
where Tune looks on resume, under names that sort after Tune's own (``placed_name``).

Nothing here unpickles: the experiment state is read as JSON, a pickle is only checked for its final
byte. ``pace_snapshots`` sets how often Tune snapshots.
"""

from __future__ import annotations

import fnmatch
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpsearch.core.rundir import SNAPSHOT_DIR, fsync_dir, write_json_atomic
from hpsearch.models.config import ConfigError
from hpsearch.tune.compat import pace_experiment_snapshots

RAY_FILES = ("experiment_state-*.json",      # Ray's TuneController.CKPT_FILE_TMPL (JSON)
             "search_gen_state-*.json",      # Ray's searcher state: pickles, whatever the suffix
             "searcher-state-*.pkl")
MANIFEST = "manifest.json"
PLACED = "~hpsearch"
RAY_STATUSES = ("PENDING", "RUNNING", "PAUSED", "TERMINATED", "ERROR")
SNAPSHOT_SHARE = 0.05      # of the driver's time, at most, spent on Ray's snapshots
SNAPSHOT_MAX_GAP_S = 5.0


def snapshot_gap(time_taken: float) -> float:
    """Seconds until Ray's next experiment snapshot after one that took ``time_taken`` seconds: 19
    times as long (at most 5% of the driver's time goes to snapshots), never more than 5 s."""
    return min(SNAPSHOT_MAX_GAP_S, time_taken * (1 - SNAPSHOT_SHARE) / SNAPSHOT_SHARE)


def pace_snapshots() -> bool:
    """Ray's "auto" snapshot period without its 10 s floor (``snapshot_gap``). A search of tens of
    trials snapshots every Tune step (a few ms each), so a killed driver loses nothing. In a search
    of thousands of short trials the snapshot grows with the trial count (tens of ms); it is then
    taken every few hundred ms instead of at every step, where it would take most of the driver's
    time. Tune deletes no checkpoint itself (hpsearch.tune.lean.LeanDriver does, keeping the one
    a resume starts from), so it forces no snapshot either, and a resumed trial redoes what it
    trained since the last snapshot. Applies while TUNE_GLOBAL_CHECKPOINT_S is
    "auto" (hpsearch.driver.runner's default); a number there is used as Ray uses it. A Ray without
    this hook keeps its own "auto" period (False; hpsearch.tune.compat.pace_experiment_snapshots)."""
    return pace_experiment_snapshots(snapshot_gap)


@dataclass(frozen=True)
class RayTrial:
    trial_id: str
    status: str          # Ray's status in its last snapshot
    dirname: str | None


def refusal(path: Path, problem: str) -> ConfigError:
    return ConfigError(f"resume: {problem}: {str(path)!r}; refusing to resume (nothing was changed; "
                       f"`hpsearch report` still reads what the run wrote)")


def newest(folder: Path, pattern: str) -> Path | None:
    """The file Ray reads back: the largest name matching ``pattern`` (names carry a timestamp)."""
    found = sorted(folder.glob(pattern))
    return found[-1] if found else None


def read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise refusal(path, f"{what} is unreadable or truncated ({type(err).__name__}: {err})") from None


def ray_trials(path: Path) -> dict[str, RayTrial]:
    state = read_json(path, "Ray's experiment state")
    trial_data = state.get("trial_data") if isinstance(state, dict) else None
    if not isinstance(trial_data, list) or not isinstance(state.get("runner_data"), dict):
        raise refusal(path, "Ray's experiment state has no trial_data/runner_data")
    trials = {}
    for entry in trial_data:
        try:
            trial = json.loads(entry[0])
            trial_id, status = trial["trial_id"], trial["status"]
        except (TypeError, IndexError, KeyError, json.JSONDecodeError):
            raise refusal(path, "Ray's experiment state holds a malformed trial") from None
        if not isinstance(trial_id, str) or status not in RAY_STATUSES:
            raise refusal(path, f"Ray's experiment state holds trial {trial_id!r} with status {status!r}")
        dirname = trial.get("relative_logdir")
        trials[trial_id] = RayTrial(trial_id, status, dirname if isinstance(dirname, str) else None)
    return trials


def keep_snapshot(staging: Path, run_dir: Path, previous: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Copy Ray's newest experiment state and searcher state from its staging folder into the slot
    of RUN_DIR/snapshot/ not in use, then publish that slot by replacing the manifest. Call right
    after Ray wrote them (Tune asks its callbacks for their state at that moment). Ray's own copies
    in the run dir are rewritten in place, in the background, a file at a time: a killed driver can
    leave them truncated or from two different steps; the published slot is always one whole step,
    on disk (fsynced) when this returns. Returns the new manifest (``previous`` when Ray has written
    nothing yet)."""
    files = [newest(Path(staging), pattern) for pattern in RAY_FILES]
    if any(path is None for path in files):
        return previous
    folder = Path(run_dir) / SNAPSHOT_DIR
    if previous is None and (folder / MANIFEST).is_file():   # a resumed search: keep the published slot
        try:
            previous = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            previous = None
    slot = "b" if isinstance(previous, dict) and previous.get("slot") == "a" else "a"
    target = folder / slot
    target.mkdir(parents=True, exist_ok=True)
    for old in target.iterdir():
        old.unlink()
    sizes = {}
    for source in files:
        data = source.read_bytes()
        with (target / source.name).open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        sizes[source.name] = len(data)
    fsync_dir(target)
    manifest = {"slot": slot, "files": sizes, "time": time.time()}
    write_json_atomic(folder / MANIFEST, manifest)      # on disk, the copy whole, when this returns
    return manifest


def kept_files(run_dir: Path) -> list[Path] | None:
    """The published slot of RUN_DIR/snapshot/, each file checked against the manifest; None when
    the run has no such copy."""
    folder = run_dir / SNAPSHOT_DIR
    if not (folder / MANIFEST).exists():
        return None
    manifest = read_json(folder / MANIFEST, "the manifest of hpsearch's copy of Ray's snapshot")
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if manifest.get("slot") not in ("a", "b") or not isinstance(files, dict) or len(files) != len(RAY_FILES):
        raise refusal(folder / MANIFEST, "the manifest of hpsearch's copy of Ray's snapshot is malformed")
    paths = []
    for pattern in RAY_FILES:
        names = [n for n in files if fnmatch.fnmatch(n, pattern)]
        path = folder / manifest["slot"] / names[0] if len(names) == 1 else folder / manifest["slot"] / pattern
        if len(names) != 1 or not path.is_file() or path.stat().st_size != files[names[0]]:
            raise refusal(path, "hpsearch's copy of Ray's snapshot is incomplete")
        paths.append(path)
    return paths


def pickle_whole(path: Path) -> None:
    """A pickle's last byte is its STOP opcode: a cheap truncation check that loads nothing."""
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - 1))
        if size == 0 or handle.read(1) != b".":
            raise refusal(path, "Ray's searcher state is empty or truncated")


def placed_name(name: str) -> str:
    """The name a kept file gets back in the run dir: Ray's pattern still matches it, and it sorts
    after Ray's own file of the same session (so Ray reads it first), before any later session's."""
    stem, dot, suffix = name.rpartition(".")
    return name if stem.endswith(PLACED) else f"{stem}{PLACED}{dot}{suffix}"


def place_snapshot(run_dir: Path, files: Sequence[Path]) -> None:
    """Put the kept copy where Ray reads its snapshot (the run dir's top level), each file written
    whole and renamed into place. Ray's own files are left as they are."""
    for path in files:
        target = Path(run_dir) / placed_name(path.name)
        tmp = Path(run_dir) / f".{target.name}.tmp"
        tmp.write_bytes(path.read_bytes())
        os.replace(tmp, target)


def read_snapshot(run_dir: Path) -> tuple[list[Path], bool, dict[str, RayTrial]]:
    """Ray's last snapshot of the search in ``run_dir``: its files (experiment state, then the two
    searcher files), whether they are hpsearch's kept copy, and Ray's trials. Read from the kept
    copy when the run has one, else from Ray's newest files; a ConfigError naming the file when
    either is missing or damaged."""
    files = kept_files(run_dir)
    kept = files is not None
    if files is None:
        files = []
        for pattern in RAY_FILES:
            path = newest(run_dir, pattern)
            if path is None:
                raise refusal(run_dir / pattern, "Ray saved no state of this search before it stopped")
            files.append(path)
    trials = ray_trials(files[0])
    for path in files[1:]:
        pickle_whole(path)
    return files, kept, trials


__all__ = ["MANIFEST", "PLACED", "RAY_FILES", "RAY_STATUSES", "RayTrial", "keep_snapshot", "kept_files", "newest",
           "pace_snapshots", "pickle_whole", "place_snapshot", "placed_name", "ray_trials", "read_json", "read_snapshot",
           "refusal", "snapshot_gap"]
