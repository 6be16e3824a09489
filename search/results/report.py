"""A run directory as a table: one row per trial, sorted best first, plus a summary.

    df = load_report("runs/quickstart")      # a pandas DataFrame, one row per trial

Columns, in order (all stable; ``df.attrs`` holds ``objective``, ``mode`` and ``run_dir``):

- ``trial``: the trial's number, as the live table shows it (``#N``) and its folder is named
  (``trial_NNNN_<trial_id>``); also the Optuna trial's user attribute ``hpsearch_trial``. <NA> for a
  trial decided before Ray made its folder;
- ``trial_id`` (Ray's), ``outcome`` (completed, pruned_asha, pruned_flatline, pruned_exploding,
  pruned_nonfinite, pruned_collapsed, error, running) and ``reason`` (one line: why it stopped);
- ``epochs``: epochs the trial trained;
- ``objective_best`` / ``best_epoch`` / ``objective_last`` / ``objective_mean``: the objective
  metric named in search.yaml, its best value (mode-aware; NaN when no finite value), the epoch that
  reached it, its value at the last epoch, and the mean of its last ``objective.window`` epochs (NaN
  when one of them is not finite);
- ``warm_start``: whether the trial's searched values are one of search.yaml's warm-start points;
- ``config/<name>``: every searched parameter;
- ``seed`` (the trial's own seed) and ``time_s`` (Ray's ``time_total_s``);
- ``started`` / ``ended`` (UTC timestamps, to the second: when the first reported epoch began, when
  the last result arrived; from Ray's ``timestamp`` and ``time_this_iter_s``) and ``node`` (the
  ``hostname`` Ray recorded with the last result, else its ``node_ip``);
- the last value of every ``train_*`` metric (``train_loss``, ``train_loss_<component>``,
  ``train_grad_norm``, ``train_batch_loss_std``, model diagnostics) and every ``val_*`` metric.

Rows are sorted by the column ``objective.rank`` names (``RANK_COLUMNS``: ``objective_best`` unless
search.yaml says ``last`` or ``mean``; ``df.attrs["rank"]``, in words ``df.attrs["ranked_by"]``)
through :mod:`hpsearch.core.objective` (NaN always last), trials
whose objective can be trusted (completed, ASHA-pruned, running) before health-pruned ones, errors last.
One exception: the best warm-start trial comes first when the first-ranked trial does not beat it by
more than the objective's noise allows (``objective.warm_start_margin``; why, in
``df.attrs["returned"]``, empty otherwise). Only the
text files of the run are read (search.yaml, run.json, outcomes.jsonl, params.json, result.json,
error.txt) plus the Optuna journal (JSON lines) for importances; no pickle in a run dir is ever loaded.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpsearch import models
from hpsearch.core.config import Budget, RunConfig, read_yaml
from hpsearch.core.numbers import finite, number, one_line
from hpsearch.core.objective import rank_phrase, score, trial_value
from hpsearch.core.outcomes import HEALTH_OUTCOMES, RANKED
from hpsearch.core.rundir import RUN_JSON, SEARCH_YAML, lock_held, parse_trial_dir, read_outcomes, read_trial_results
from hpsearch.core.sections import Objective
from hpsearch.core.space import parse_space
from hpsearch.core.warm_start import config_points, is_point, kept_warm_start, margin_as_run
from hpsearch.models.config import ConfigError, parse

HEAD = ("trial", "trial_id", "outcome", "reason", "epochs", "objective_best", "best_epoch", "objective_last",
        "objective_mean", "warm_start")
RANK_COLUMNS = {"best": "objective_best", "last": "objective_last", "mean": "objective_mean"}
RAY_TRIAL_ID = re.compile(r"[0-9a-f]{5,8}_\d{5}")     # Ray's default directory names hold the id
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(RunConfig)}


@dataclass
class Trial:
    trial_id: str
    path: Path | None
    config: dict[str, Any]              # the searched values (Ray's params.json)
    rows: list[dict[str, Any]]          # one per epoch, duplicates resolved, in epoch order
    outcome: str
    reason: str
    stop_epoch: int | None = None       # the epoch the outcome was decided at, when recorded
    number: int | None = None           # the N of its folder trial_NNNN_<id> (the live table's #N)

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """(epochs, values) of one metric; a missing or non-numeric value is NaN."""
        xs, ys = [], []
        for i, row in enumerate(self.rows):
            xs.append(int(row.get("epoch", row.get("training_iteration", i + 1))))
            ys.append(number(row.get(key)))
        return xs, ys


@dataclass
class Run:
    path: Path
    raw: dict[str, Any]                 # search.yaml as written
    model: str
    metric: str
    mode: str
    space: list[str]
    num_samples: int
    max_epochs: int
    state: str                          # running | finished | interrupted | unknown ("running"
                                        # with no process holding run.lock reads as interrupted)
    trials: list[Trial] = field(default_factory=list)
    stopped_early: str = ""             # why the search started no more trials (budget.converge_after)
    rank: str = "best"                  # objective.rank: what orders the trials
    window: int = 5                     # objective.window: epochs objective_mean averages
    warm_points: list[dict[str, Any]] = field(default_factory=list)   # the warm-start points, one config each
    warm_start_margin: float = 0.0      # objective.warm_start_margin; 0 for a run dir written before it

    def is_warm_start(self, trial: Trial) -> bool:
        return is_point(trial.config, self.warm_points)

    def returned_first(self, ranked: list[Trial]) -> tuple[int, str]:
        """Among trials in ranking order (best first, each with a finite ranking value), the position
        of the trial the search returns (0 unless the best warm-start trial stands:
        hpsearch.core.warm_start.kept_warm_start) and, when not 0, why in words."""
        curves = [t.series(self.metric)[1] for t in ranked]
        kept = kept_warm_start(curves, [self.is_warm_start(t) for t in ranked], self.mode, self.window,
                               self.warm_start_margin)
        if kept is None:
            return 0, ""
        return kept.position, kept.phrase(_label(ranked[0]), _label(ranked[kept.position]))

    @property
    def rank_column(self) -> str:
        """The report column ``objective.rank`` orders the rows by."""
        return RANK_COLUMNS[self.rank]

    def rank_value(self, row: dict[str, Any]) -> Any:
        """The report row's value that ranks it (its ``objective.rank`` column)."""
        return row[self.rank_column]

    def rank_epoch(self, row: dict[str, Any]) -> Any:
        """The epoch a report row's ranking value stands for: its best epoch under ``rank: best``,
        else its last (the model a retrain of that many epochs ends with)."""
        return row["best_epoch"] if self.rank == "best" else row["epochs"]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"run_dir: cannot read {str(path)!r}: {err}") from None


def _dedupe(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep the last row per training_iteration (a resumed trial may re-report an epoch)."""
    latest: dict[int, dict[str, Any]] = {}
    for row in rows:
        key = row.get("training_iteration", row.get("epoch"))
        if isinstance(key, bool) or not isinstance(key, (int, float)):
            continue
        latest[int(key)] = row
    return [latest[k] for k in sorted(latest)]


def _error_line(trial_dir: Path) -> str:
    """Last non-empty line of Ray's error.txt (error.pkl, a pickle, is never read)."""
    text = (trial_dir / "error.txt").read_text(encoding="utf-8", errors="replace")
    return one_line(text, last=True) or "error.txt is empty"


def _trial_dirs(path: Path) -> list[Path]:
    return sorted(child for child in path.iterdir() if child.is_dir()
                  and ((child / "result.json").is_file() or (child / "params.json").is_file()))


def _id_from_name(name: str) -> str:
    """A trial's id from its directory name, for a trial that has not reported yet."""
    ours = parse_trial_dir(name)
    if ours:
        return ours[1]
    ray = RAY_TRIAL_ID.search(name)
    return ray.group(0) if ray else name


def _number_from_name(name: str) -> int | None:
    """The trial number N of a folder named ``trial_NNNN_<id>``; None for any other name (a run
    dir written with Ray's default folder names)."""
    ours = parse_trial_dir(name)
    return ours[0] if ours else None


def _label(trial: Trial) -> str:
    return f"trial #{trial.number}" if trial.number is not None else f"trial {trial.trial_id}"


def _warm_points(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """search.yaml's warm-start points as the searcher asked them, one config each (those that name
    every searched parameter; hpsearch.core.warm_start)."""
    warm = [p for p in raw.get("warm_start") or [] if isinstance(p, dict)]
    return config_points(warm, parse_space(raw.get("space")), raw.get("params") or {})


def _objective(raw: dict[str, Any]) -> Objective:
    objective = raw.get("objective")
    if objective is None:
        default = models.declared(raw.get("model", ""), "objective")
        if default is None:
            raise ConfigError("search.yaml: objective: missing and the model declares no default")
        objective = {"metric": default[0], "mode": default[1]}
    return parse(Objective, objective, where="search.yaml: objective.")


def read_run(run_dir: str | Path) -> Run:
    """Everything hpsearch and Ray wrote as text in ``run_dir``; a ConfigError if it is no run dir."""
    path = Path(run_dir)
    if not path.is_dir():
        raise ConfigError(f"run_dir: {str(path)!r} is not a directory; expected a run directory "
                          "written by `hpsearch run`")
    if not (path / SEARCH_YAML).is_file():
        raise ConfigError(f"run_dir: {str(path)!r} is not a run directory (no {SEARCH_YAML}); expected "
                          "a directory written by `hpsearch run`")
    raw = read_yaml(path / SEARCH_YAML)
    if not isinstance(raw, dict):
        raise ConfigError(f"run_dir: {str(path / SEARCH_YAML)!r} holds {type(raw).__name__}, "
                          "expected a mapping of sections")
    objective = _objective(raw)
    budget = parse(Budget, raw.get("budget") or {}, where="search.yaml: budget.")
    epochs = raw.get("epochs", _DEFAULTS["epochs"])
    info = _read_json(path / RUN_JSON) if (path / RUN_JSON).is_file() else {}
    state = str(info.get("state", "unknown")) if isinstance(info, dict) else "unknown"
    if state == "running" and lock_held(path) is False:   # no process runs it: the driver was killed
        state = "interrupted"
    run = Run(path=path, raw=raw, model=str(raw.get("model", "")), metric=objective.metric, mode=objective.mode,
              space=[str(k) for k in (raw.get("space") or {})], num_samples=budget.num_samples,
              max_epochs=int(budget.max_epochs or epochs), state=state,
              stopped_early=str(info.get("stopped_early", "")) if isinstance(info, dict) else "",
              rank=objective.rank, window=objective.window, warm_points=_warm_points(raw),
              warm_start_margin=margin_as_run(raw.get("objective"), objective.warm_start_margin))

    outcomes = read_outcomes(path)
    seen = set()
    for trial_dir in _trial_dirs(path):
        rows = _dedupe(read_trial_results(trial_dir))
        config = _read_json(trial_dir / "params.json") if (trial_dir / "params.json").is_file() else None
        if not isinstance(config, dict):
            config = rows[-1].get("config", {}) if rows and isinstance(rows[-1].get("config"), dict) else {}
        ids = [r["trial_id"] for r in rows if isinstance(r.get("trial_id"), str)]
        trial_id = ids[-1] if ids else _id_from_name(trial_dir.name)
        run.trials.append(_trial(run, trial_id, trial_dir, config, rows, outcomes.get(trial_id)))
        seen.add(trial_id)
    for trial_id, record in outcomes.items():   # decided before Ray made its directory
        if trial_id not in seen:
            run.trials.append(_trial(run, trial_id, None, {}, [], record))
    return run


def _trial(run: Run, trial_id: str, trial_dir: Path | None, config: dict[str, Any],
           rows: list[dict[str, Any]], record: dict[str, Any] | None) -> Trial:
    trial_number = _number_from_name(trial_dir.name) if trial_dir is not None else None
    if record is not None:
        outcome, reason = str(record.get("outcome")), str(record.get("reason") or "")
        epoch = record.get("epoch")
        stop = int(epoch) if isinstance(epoch, int) and not isinstance(epoch, bool) else None
        return Trial(trial_id, trial_dir, config, rows, outcome, reason, stop, trial_number)
    if trial_dir is not None and (trial_dir / "error.txt").is_file():
        return Trial(trial_id, trial_dir, config, rows, "error", _error_line(trial_dir), number=trial_number)
    reason = "the run was interrupted before this trial ended" if run.state == "interrupted" else ""
    return Trial(trial_id, trial_dir, config, rows, "running", reason, number=trial_number)


def _span(rows: list[dict[str, Any]]) -> tuple[int | None, int | None]:
    """(started, ended) in whole epoch seconds: the earliest ``timestamp - time_this_iter_s`` (when
    an epoch began) and the latest ``timestamp`` of the rows; None where no row has them. Ray's
    ``timestamp`` is whole seconds, so finer would only look precise."""
    stamps = [number(r.get("timestamp")) for r in rows]
    begun = [t - (number(r.get("time_this_iter_s")) if finite(r.get("time_this_iter_s")) else 0.0)
             for t, r in zip(stamps, rows)]
    started = [round(t) for t in begun if math.isfinite(t)]
    ended = [round(t) for t in stamps if math.isfinite(t)]
    return (min(started) if started else None), (max(ended) if ended else None)


def _node(rows: list[dict[str, Any]]) -> str | None:
    """Where the trial last ran: the ``hostname`` Ray put in its last result that has one, else
    that result's ``node_ip``."""
    for row in reversed(rows):
        for key in ("hostname", "node_ip"):
            if isinstance(row.get(key), str) and row[key]:
                return row[key]
    return None


def trial_row(run: Run, trial: Trial) -> dict[str, Any]:
    """One report row (see the module docstring for the columns)."""
    epochs_x, values = trial.series(run.metric)
    top, at = trial_value(values, run.mode, "best")
    mean, _ = trial_value(values, run.mode, "mean", run.window)
    last = trial.rows[-1] if trial.rows else {}
    time_s = number(last.get("time_total_s"))
    if math.isnan(time_s) and trial.rows:
        time_s = sum(number(r.get("epoch_s")) for r in trial.rows)
    seeds = [r["seed"] for r in trial.rows if isinstance(r.get("seed"), int) and not isinstance(r.get("seed"), bool)]
    row: dict[str, Any] = {
        "trial": trial.number, "trial_id": trial.trial_id, "outcome": trial.outcome, "reason": trial.reason,
        "epochs": max(epochs_x) if epochs_x else 0,
        "objective_best": top, "best_epoch": epochs_x[at] if at is not None else None,
        "objective_last": values[-1] if values else math.nan, "objective_mean": mean,
    }
    names = run.space or sorted(trial.config)
    row["warm_start"] = run.is_warm_start(trial)
    for name in names:
        row[f"config/{name}"] = trial.config.get(name)
    row["seed"] = seeds[-1] if seeds else None
    row["time_s"] = time_s
    row["started"], row["ended"] = _span(trial.rows)
    row["node"] = _node(trial.rows)
    for r in trial.rows:
        for key, value in r.items():
            if key.startswith(("train_", "val_")):
                row[key] = number(value)
    return row


def _metric_order(key: str) -> tuple[int, str]:
    if key == "train_loss":
        return (0, key)
    if key.startswith("train_loss_"):
        return (1, key)
    return (2, key) if key.startswith("train_") else (3, key)


def build_table(run: Run):
    """The report DataFrame of an already-read run."""
    import pandas as pd

    rows = [trial_row(run, t) for t in run.trials]
    # Trusted objectives first, then health-pruned trials, then errors; best objective first in each.
    def tier(outcome: str) -> int:
        return 0 if outcome in RANKED else 1 if outcome in HEALTH_OUTCOMES else 2

    rows.sort(key=lambda r: (tier(r["outcome"]), -score(run.rank_value(r), run.mode), r["trial_id"]))
    trials = {t.trial_id: t for t in run.trials}
    ranked = [trials[r["trial_id"]] for r in rows
              if tier(r["outcome"]) == 0 and score(run.rank_value(r), run.mode) > -math.inf]
    at, returned = run.returned_first(ranked)
    if at:
        kept = next(i for i, r in enumerate(rows) if r["trial_id"] == ranked[at].trial_id)
        rows.insert(0, rows.pop(kept))
    fixed = list(HEAD) + [f"config/{n}" for n in run.space]
    extra = {k for r in rows for k in r if k not in fixed}
    configs = sorted(k for k in extra if k.startswith("config/"))
    metrics = sorted((k for k in extra if k.startswith(("train_", "val_"))), key=_metric_order)
    columns = fixed + configs + ["seed", "time_s", "started", "ended", "node"] + metrics
    table = pd.DataFrame(rows, columns=columns)
    for name in ("trial", "epochs", "best_epoch", "seed"):
        table[name] = table[name].astype("Int64")
    table["warm_start"] = table["warm_start"].astype("bool")
    for name in ("started", "ended"):
        table[name] = pd.to_datetime(table[name].astype("float64"), unit="s", utc=True).dt.as_unit("ns")
    for name in ["objective_best", "objective_last", "objective_mean", "time_s", *metrics]:
        table[name] = table[name].astype("float64")
    table.attrs.update({"objective": run.metric, "mode": run.mode, "run_dir": str(run.path),
                        "rank": run.rank_column, "ranked_by": rank_phrase(run.rank, run.window),
                        "returned": returned})
    return table


def load_report(run_dir: str | Path):
    """One row per trial of ``run_dir``, best first. Works on finished, running and interrupted runs."""
    return build_table(read_run(run_dir))


__all__ = ["RANK_COLUMNS", "Run", "Trial", "build_table", "load_report", "read_run", "trial_row"]
