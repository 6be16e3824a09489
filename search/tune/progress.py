"""What ``hpsearch run`` prints: a compact live table while the search runs, a summary at the end.

The live table is a Ray Tune callback. It keeps the last result of every trial and shows one row per
trial. On a terminal it is one view updated in place a few times a second (``rich.live.Live``),
and the final table is printed once when the search ends. Anywhere else (a log file, a pipe, Ray
Client's relay, a notebook's output: a stream that is not a TTY) it prints plain lines with no
escape codes, at most every ``interval_s`` seconds and only when something changed:

    [  14s] 6 trials: 2 running, 4 ended
    trial  status            epoch  val_score  train_loss  health
    #1     completed             6      0.779       0.269  ok
    #3     pruned_flatline       1       0.99         0.1  flatline
    #5     running               2       0.52        0.64  ok

The summary names the best trials, counts the outcomes (with a reason for each kind of pruning and
for errors) and gives the run dir. ``OutcomeRecorder`` is the other callback the runner hands to
Tune: it writes the outcomes nobody else decides (completed, error); ``ResultLog`` writes each
trial's params.json and result.json straight into the run dir, and ``SnapshotKeeper`` keeps a
whole copy of Ray's snapshots there (both for ``hpsearch resume``).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from ray.tune import Callback

from hpsearch.core.advice import edge_of_range
from hpsearch.core.numbers import as_float, fmt, one_line
from hpsearch.core.objective import rank_phrase, score, trial_value
from hpsearch.core.outcomes import RANKED
from hpsearch.core.rundir import OutcomeLog
from hpsearch.core.space import Spec
from hpsearch.core.warm_start import is_point, kept_warm_start
from hpsearch.tune.snapshot import keep_snapshot

MAX_ROWS = 24          # a longer table shows the running trials and the latest that ended
REFRESH_S = 0.25       # the terminal view's pace: four times a second


@dataclass
class TrialRow:
    trial_id: str
    label: str
    status: str = "pending"
    epoch: int | None = None
    objective: float | None = None
    train_loss: float | None = None
    health: str = ""
    values: list[float] = field(default_factory=list)    # the objective, epoch by epoch, as reported here
    config: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    updated: float = 0.0

    @property
    def ended(self) -> bool:
        return self.status not in ("pending", "running")


def label(trial: Any) -> str:
    """``#<index>`` for a trial named ``trial_<index>_<id>``, else its id."""
    parts = str(trial).split("_")
    if len(parts) >= 3 and parts[0] == "trial" and parts[1].isdigit():
        return f"#{int(parts[1])}"
    return str(getattr(trial, "trial_id", trial))


def is_terminal(stream: Any) -> bool:
    """Whether ``stream`` is an interactive terminal, where the live view updates in place. A
    file, a pipe, Ray Client's relay (hpsearch.driver.client.RelayStream) and a notebook's output
    are not, nor is a terminal that declares itself dumb."""
    isatty = getattr(stream, "isatty", None)
    try:
        tty = bool(isatty()) if callable(isatty) else False
    except (ValueError, OSError):    # a closed or detached stream
        return False
    return tty and os.environ.get("TERM") != "dumb"


class LiveTable(Callback):
    """Tune callback: the live table. ``outcomes`` (hpsearch.core.rundir.OutcomeLog) names why a trial
    ended. ``stream`` (default: sys.stdout) decides the form: a view updated in place on a terminal,
    plain lines elsewhere."""

    def __init__(self, metric: str, outcomes: Any, interval_s: float = 5.0, stream: TextIO | None = None):
        self.metric, self.outcomes = metric, outcomes
        self.interval_s = interval_s
        self.stream = stream
        self.rows: dict[str, TrialRow] = {}
        self.started = time.monotonic()
        self._printed = 0.0
        self._changed = False
        self._tty = is_terminal(stream if stream is not None else sys.stdout)
        self._console: Any = None     # rich.console.Console on a terminal, made on first use
        self._view: Any = None        # rich.live.Live while the terminal view is on

    def __getstate__(self) -> dict[str, Any]:
        """Ray pickles callbacks with the experiment state; an open stream and the view stay behind."""
        return {**self.__dict__, "stream": None, "_tty": False, "_console": None, "_view": None}

    def _row(self, trial: Any) -> TrialRow:
        row = self.rows.get(trial.trial_id)
        if row is None:
            row = self.rows[trial.trial_id] = TrialRow(trial.trial_id, label(trial),
                                                       config=dict(getattr(trial, "config", {}) or {}))
        row.updated = time.monotonic()
        self._changed = True
        return row

    def _ended(self, trial: Any, fallback: str) -> None:
        row = self._row(trial)
        entry = self.outcomes.get(trial.trial_id)
        row.status = entry["outcome"] if entry else fallback

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._row(trial).status = "running"

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        row = self._row(trial)
        row.status = "running"
        row.epoch = result.get("epoch", result.get("training_iteration"))
        row.objective = as_float(result.get(self.metric))
        row.train_loss = as_float(result.get("train_loss"))
        row.health = str(result.get("health", ""))
        row.seed = result.get("seed", row.seed)
        if isinstance(row.epoch, int) and not isinstance(row.epoch, bool) and 1 <= row.epoch <= len(row.values):
            del row.values[row.epoch - 1:]       # reported again after a restore: the later report wins
            # (a table rebuilt by a resumed search starts at the resumed epoch; its values are fewer)
        row.values.append(row.objective if row.objective is not None else math.nan)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended(trial, "completed")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended(trial, "error")

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        now = time.monotonic()
        if self._tty:
            if now - self._printed >= REFRESH_S:
                self._refresh_view()
        elif self._changed and self.rows and now - self._printed >= self.interval_s:   # no empty table
            self.print_table()

    def _terminal(self) -> Any:
        """The rich Console that writes to the terminal stream."""
        if self._console is None:
            from rich.console import Console

            stream = self.stream if self.stream is not None else sys.stdout
            self._console = Console(file=stream, force_terminal=True)
        return self._console

    def _refresh_view(self) -> None:
        """Draw the view again in place (started on first use). Refreshed from Tune's own loop, never
        from a thread of its own, so it reads the rows while nothing changes them."""
        self._printed, self._changed = time.monotonic(), False
        if self._view is None:
            from rich.live import Live

            stream = self.stream if self.stream is not None else sys.stdout
            # the messages other code prints (a signal's, on stderr) go above the view, not through it
            self._view = Live(self.renderable(), console=self._terminal(), auto_refresh=False, transient=True,
                              redirect_stdout=stream is sys.stdout, redirect_stderr=is_terminal(sys.stderr))
            self._view.start(refresh=True)
        else:
            self._view.update(self.renderable(), refresh=True)

    def close(self) -> None:
        """End the terminal view (it is erased: ``print_table`` prints the final table once)."""
        if self._view is not None:
            self._view.stop()
            self._view = None

    def print_table(self) -> None:
        """The table as it is now, printed once: on a terminal as the view's table, after the view
        ends; elsewhere as plain lines."""
        self._printed, self._changed = time.monotonic(), False
        if self._tty:
            self.close()
            self._terminal().print(self.renderable())
            return
        print(self.table(), file=self.stream or sys.stdout, flush=True)

    def _sorted(self) -> tuple[list[TrialRow], list[TrialRow], list[TrialRow], list[TrialRow]]:
        """(every row, the running ones, the ended ones, the rows shown): a longer table than
        MAX_ROWS shows the running trials and the latest that ended."""
        rows = sorted(self.rows.values(), key=lambda r: (r.label.lstrip("#").zfill(6), r.trial_id))
        running = [r for r in rows if not r.ended]
        ended = [r for r in rows if r.ended]
        shown = rows
        if len(rows) > MAX_ROWS:
            keep = max(MAX_ROWS - len(running), 4)
            latest = sorted(ended, key=lambda r: r.updated)[-keep:]
            shown = sorted(running + latest, key=lambda r: (r.label.lstrip("#").zfill(6), r.trial_id))
        return rows, running, ended, shown

    def _title(self, rows: list[TrialRow], running: list[TrialRow], ended: list[TrialRow]) -> str:
        return (f"[{time.monotonic() - self.started:5.0f}s] {len(rows)} trials: "
                f"{len(running)} running, {len(ended)} ended")

    def table(self) -> str:
        """The table as plain lines."""
        rows, running, ended, shown = self._sorted()
        width = max(10, len(self.metric))
        lines = [self._title(rows, running, ended),
                 f"{'trial':<6} {'status':<17} {'epoch':>5} {self.metric:>{width}} {'train_loss':>10}  health"]
        for r in shown:
            lines.append(f"{r.label:<6} {r.status:<17} {fmt(r.epoch):>5} {fmt(r.objective):>{width}} "
                         f"{fmt(r.train_loss):>10}  {r.health}")
        if len(shown) < len(rows):
            lines.append(f"({len(rows) - len(shown)} earlier ended trials not shown)")
        return "\n".join(lines)

    def renderable(self) -> Any:
        """The table for the terminal view: a rich Table with the same title, columns and rows as
        the plain lines."""
        from rich import box
        from rich.table import Table

        rows, running, ended, shown = self._sorted()
        hidden = len(rows) - len(shown)
        view = Table(title=self._title(rows, running, ended), title_justify="left", box=box.SIMPLE_HEAD, show_edge=False,
                     caption=f"({hidden} earlier ended trials not shown)" if hidden else None,
                     caption_justify="left", pad_edge=False)
        view.add_column("trial")
        view.add_column("status")
        for name in ("epoch", self.metric, "train_loss"):
            view.add_column(name, justify="right")
        view.add_column("health")
        for r in shown:
            view.add_row(r.label, r.status, fmt(r.epoch), fmt(r.objective), fmt(r.train_loss), r.health)
        return view


class OutcomeRecorder(Callback):
    """Records ``completed`` for trials that end without an outcome (the scheduler records every
    pruning first) and ``error`` with the exception's last line for trials that fail for good."""

    def __init__(self, outcomes: OutcomeLog):
        self.outcomes = outcomes

    @staticmethod
    def _epoch(trial: Any) -> int | None:
        result = getattr(trial, "last_result", None) or {}
        value = result.get("epoch", result.get("training_iteration"))
        return int(value) if isinstance(value, (int, float)) else None

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if self.outcomes.get(trial.trial_id) is None:
            self.outcomes.record(trial.trial_id, "completed", "", self._epoch(trial))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.outcomes.record(trial.trial_id, "error", error_line(trial), self._epoch(trial))


class ResultLog(Callback):
    """Each trial's ``params.json`` and ``result.json`` (one JSON line per report), written in the
    trial's run-dir folder (``trial.path``) and flushed and fsync'd before Tune moves on, so they
    survive a killed driver. (Ray's JsonLoggerCallback writes to a staging folder under /tmp that
    reaches the run dir only with Ray's next state sync.) Written with the first report: a trial
    that never reported leaves no folder. A line torn by a crash is closed before the next one."""

    def __init__(self) -> None:
        self._files: dict[str, TextIO] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"_files": {}}

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        from ray.tune.utils.util import SafeFallbackEncoder

        handle = self._files.get(trial.trial_id)
        if handle is None:
            folder = Path(trial.path)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "params.json").write_text(json.dumps(trial.config, indent=2, sort_keys=True,
                                                           cls=SafeFallbackEncoder), encoding="utf-8")
            path = folder / "result.json"
            torn = path.is_file() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
            handle = self._files[trial.trial_id] = path.open("a", encoding="utf-8")
            if torn:
                handle.write("\n")
        handle.write(json.dumps(result, cls=SafeFallbackEncoder) + "\n")
        handle.flush()
        os.fsync(handle.fileno())

    def _close(self, trial: Any) -> None:
        handle = self._files.pop(trial.trial_id, None)
        if handle is not None:
            handle.close()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._close(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._close(trial)


class SnapshotKeeper(Callback):
    """Keeps a whole copy of each snapshot Ray takes in RUN_DIR/snapshot/ (hpsearch.tune.snapshot).
    Tune asks callbacks for their state right after it wrote the snapshot to its staging folder;
    that is when the copy is taken (the state returned is None: nothing else to save). ``published``
    counts the copies published, the ones a resume reads (hpsearch.tune.lean.LeanDriver keeps the
    checkpoints they name)."""

    def __init__(self, run_dir: Any) -> None:
        self.run_dir = Path(run_dir)
        self._staging: str | None = None
        self._manifest: dict[str, Any] | None = None
        self.published = 0

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if self._staging is None and trials:
            self._staging = trials[0].local_experiment_path

    def get_state(self) -> None:
        if self._staging is not None:
            manifest = keep_snapshot(Path(self._staging), self.run_dir, self._manifest)
            self.published += manifest is not self._manifest
            self._manifest = manifest
        return None


def error_line(trial: Any) -> str:
    """The last non-empty line of a trial's error text (the exception type and message)."""
    text = ""
    path = getattr(trial, "error_file", None)
    if path and Path(path).is_file():
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    return one_line(text, last=True) or "the trial failed (no error text was saved)"


def summary(rows: dict[str, TrialRow], outcomes: dict[str, dict[str, Any]], metric: str, mode: str,
            run_dir: Any, top: int = 5, elapsed_s: float | None = None, state: str = "finished",
            space: Mapping[str, Spec] | None = None, stopped_early: str = "", rank: str = "best",
            window: int = 5, warm_points: Sequence[Mapping[str, Any]] = (), margin: float = 0.0) -> str:
    """The end-of-run text: best trials (ranked as ``objective.rank`` and ``window`` say; the best
    warm-start trial first when the first does not beat it by more than the objective's noise
    allows: ``warm_points``, one config each, and ``margin``, objective.warm_start_margin), outcome
    counts with reasons, ranges whose edge the best trials sit at (``space``: the searched specs;
    hpsearch.core.advice), the run dir."""
    ids = list(dict.fromkeys([*rows, *outcomes]))
    lines = [f"search {state}: {len(ids)} trials" + (f" in {elapsed_s:.0f}s" if elapsed_s is not None else "")]
    if stopped_early:
        lines.append(f"stopped early, as budget.converge_after asks: {stopped_early}")

    def outcome(trial_id: str) -> str:
        entry = outcomes.get(trial_id)
        return entry["outcome"] if entry else "running"

    # Health-pruned and failed trials are counted below, never ranked: a flatlined loss can carry
    # the best-looking objective of the search.
    value = {r.trial_id: trial_value(r.values, mode, rank, window)[0] for r in rows.values()}
    healthy = [r for r in rows.values() if outcome(r.trial_id) in RANKED and score(value[r.trial_id], mode) > -math.inf]
    ordered = sorted(healthy, key=lambda r: (-score(value[r.trial_id], mode), r.trial_id))   # as the report
    kept = kept_warm_start([r.values for r in ordered], [is_point(r.config, warm_points) for r in ordered], mode,
                           window, margin)
    if kept is not None:
        first = ordered[0].label
        ordered.insert(0, ordered.pop(kept.position))
    ranked = ordered[:top]
    if ranked:
        by = "" if rank == "best" else f"; {rank_phrase(rank, window)}"
        lines.append(f"best trials by {metric} ({mode}{by}), health-pruned and failed trials left out:")
        if kept is not None:
            lines.append(f"  {kept.phrase(first, ranked[0].label)}")
        for r in ranked:
            params = " ".join(f"{k}={fmt(v)}" for k, v in sorted(r.config.items()))
            lines.append(f"  {r.label:<6} {fmt(value[r.trial_id]):>8}  {outcome(r.trial_id):<12} "
                         f"epochs {r.epoch or 0:<3} seed {r.seed}  {params}")
    counts = Counter(outcome(t) for t in ids)
    lines.append("outcomes: " + ", ".join(f"{name} {n}" for name, n in sorted(counts.items())))
    examples: dict[str, tuple[str, str]] = {}
    for trial_id in ids:
        entry = outcomes.get(trial_id)
        if entry and entry["outcome"] != "completed" and entry.get("reason"):
            row = rows.get(trial_id)
            examples.setdefault(entry["outcome"], (row.label if row else trial_id, entry["reason"]))
    for name, (who, reason) in sorted(examples.items()):
        lines.append(f"  {name:<17} e.g. {who}: {reason}")
    advice = edge_of_range(space or {}, [r.config for r in ordered])
    if advice:
        lines.append("ranges to widen:")
        lines.extend(f"  {line}" for line in advice)
    lines.append(f"run dir: {run_dir}")
    lines.append(f"next: hpsearch report {run_dir}")
    return "\n".join(lines)
