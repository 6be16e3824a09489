"""``hpsearch export``: the best trials as standalone configs and weights that reproduce them.

    <out>/<rank>_<trial_id>/config.yaml   model, params (the run's, with the trial's searched values),
                                          seed (the trial's), epochs (the exported checkpoint's),
                                          objective, and `exported:` provenance
    <out>/<rank>_<trial_id>/model.pt      that checkpoint's model state (torch.save of a dict of
                                          tensors and plain values)

``hpsearch train <dir>/config.yaml`` retrains it from scratch without Ray and reaches the same
objective at its last epoch; ``hpsearch evaluate <dir>`` reloads the weights and reports the same
metrics without training.

Only finished trials (completed or ASHA-pruned) are exported; health-pruned ones are not. Of a
trial's checkpoints still on disk, the one whose epoch reached the best objective is exported under
``objective.rank: best``; under ``last`` and ``mean`` the latest (the model the trial ended with,
unless that epoch's checkpoint was not kept). The trials are ordered by the ranking value at the
exported epoch: the report's order, unless a checkpoint the ranking needs was not kept; the best
warm-start trial first when the report returns it (``objective.warm_start_margin``), unless it has
no checkpoint to export (the log says so).
Checkpoints are read with ``torch.load(weights_only=True)``; nothing is unpickled.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hpsearch.core.config import Resources, build_config, dump_config, trial_config
from hpsearch.core.objective import is_better, rank_phrase, score, trial_value
from hpsearch.core.outcomes import FINISHED
from hpsearch.core.rundir import CHECKPOINT_FILE
from hpsearch.core.training import CONFIG, WEIGHTS, cpu_threads, load_trusted_tensors, prepare_out_dir, versions
from hpsearch.models.config import ConfigError, parse
from hpsearch.results.records import cell
from hpsearch.results.report import Run, Trial, build_table, read_run


def trial_threads(run: Run) -> int:
    """The torch thread count the run's trials trained with (the trainable's CPU share)."""
    return cpu_threads(parse(Resources, run.raw.get("resources") or {}, where="resources.").cpu)


@dataclass
class Choice:
    trial: Trial
    path: Path            # the checkpoint file
    epoch: int
    row: dict[str, Any]   # the trial's result row of that epoch
    value: float = math.nan   # what ranks it: the trial's ranking value at that epoch (ranked_at)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint payload, read with weights_only=True; a one-line ConfigError if it is refused."""
    payload = load_trusted_tensors(path, "cpu", "checkpoint")
    if not isinstance(payload, dict) or "model" not in payload:
        raise ConfigError(f"checkpoint: {str(path)!r} holds no 'model' state; expected a checkpoint written "
                          "by the hpsearch trainable")
    return payload


def _payload_epoch(payload: dict[str, Any]) -> int | None:
    history = payload.get("history")
    if isinstance(payload.get("epoch"), int):
        return payload["epoch"]
    if isinstance(history, list) and history and isinstance(history[-1], dict) \
            and isinstance(history[-1].get("epoch"), int):
        return history[-1]["epoch"]
    return len(history) if isinstance(history, list) and history else None


def ranked_at(run: Run, series: tuple[list[int], list[float]], epoch: int) -> float:
    """The trial's ranking value (``objective.rank``) had it ended at ``epoch``, from its objective
    ``series`` (``Trial.series``): what the exported config, trained to that epoch, ranks at (NaN
    when not finite)."""
    epochs, values = series
    return trial_value([v for e, v in zip(epochs, values) if e <= epoch], run.mode, run.rank, run.window)[0]


def choose_checkpoint(run: Run, trial: Trial) -> Choice | None:
    """The trial's checkpoint on disk whose epoch has the best objective (the earliest on a tie);
    under ``objective.rank`` last or mean, its latest checkpoint (the last epoch, unless that was not
    kept: ``checkpoint.interval``) whose ranking value there is finite."""
    if trial.path is None:
        return None
    name = CHECKPOINT_FILE
    by_dir = {r.get("checkpoint_dir_name"): r for r in trial.rows if r.get("checkpoint_dir_name")}
    by_epoch = {r.get("epoch"): r for r in trial.rows}
    chosen: Choice | None = None
    series = trial.series(run.metric)
    for ckpt_dir in sorted(trial.path.glob("checkpoint_*")):
        path = ckpt_dir / name
        if not path.is_file():
            continue
        row = by_dir.get(ckpt_dir.name)
        if row is None:        # not named in result.json: ask the checkpoint which epoch it holds
            row = by_epoch.get(_payload_epoch(load_checkpoint(path)))
        if row is None or score(row.get(run.metric), run.mode) == -math.inf:
            continue
        if run.rank != "best":
            value = ranked_at(run, series, int(row["epoch"]))
            if math.isfinite(value) and (chosen is None or row["epoch"] >= chosen.epoch):
                chosen = Choice(trial, path, int(row["epoch"]), row, value)
        elif chosen is None or is_better(row.get(run.metric), chosen.row.get(run.metric), run.mode) \
                or (row.get(run.metric) == chosen.row.get(run.metric) and row["epoch"] < chosen.epoch):
            chosen = Choice(trial, path, int(row["epoch"]), row, float(row[run.metric]))
    return chosen


def exported_config(run: Run, choice: Choice, rank: int, versions: dict[str, str]) -> dict[str, Any]:
    """The standalone config (plain data) of one exported checkpoint."""
    trial, row = choice.trial, choice.row
    seed = row.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"trial {trial.trial_id}: no seed in its results; cannot export a config that "
                          "reproduces it")
    raw = trial_config(run.raw, trial.config, seed, choice.epoch)
    raw["exported"] = {
        "run_dir": str(run.path.resolve()), "trial_id": trial.trial_id, "rank": rank, "outcome": trial.outcome,
        "epoch": choice.epoch, "checkpoint": str(choice.path.relative_to(run.path)),
        "objective": {"metric": run.metric, "mode": run.mode, "value": float(row[run.metric]),
                      "ranked_by": run.rank, "ranked_value": choice.value,
                      **({"window": run.window} if run.rank == "mean" else {})},
        "metrics": {k: v for k, v in row.items() if k.startswith("val_") and isinstance(v, (int, float))},
        "searched": {name: trial.config.get(name) for name in run.space},
        "threads": trial_threads(run),
        "versions": versions,
    }
    return raw


def earlier_exports(folder: Path, run_dir: Path) -> list[Path]:
    """The ``<rank>_<trial_id>`` folders an export of ``run_dir`` wrote in ``folder``: a config.yaml
    whose ``exported:`` section names this run and rank, and weights. Nothing else there (another
    run's export, a retrain's output, a link) is ever touched."""
    found = []
    for child in sorted(folder.iterdir()):
        rank = child.name.split("_", 1)[0]
        if child.is_symlink() or not child.is_dir() or not rank.isdigit() or "_" not in child.name \
                or not (child / CONFIG).is_file() or not (child / WEIGHTS).is_file():
            continue
        try:
            written = yaml.safe_load((child / CONFIG).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue
        exported = written.get("exported") if isinstance(written, dict) else None
        if isinstance(exported, dict) and exported.get("run_dir") == str(run_dir.resolve()) \
                and exported.get("rank") == int(rank) and child.name == f"{rank}_{exported.get('trial_id')}":
            found.append(child)
    return found


def export(run_dir: str | Path, top: int, out: str | Path | None, force: bool, log=print) -> list[Path]:
    """Write the ``top`` best finished trials; return their directories."""
    import torch

    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise ConfigError(f"--top: got {top!r}, expected an integer >= 1")
    run = read_run(run_dir)
    table = build_table(run)
    by_id = {t.trial_id: t for t in run.trials}
    rows = {row["trial_id"]: row for _, row in table.iterrows()}
    choices = []
    for trial_id, outcome in zip(table["trial_id"], table["outcome"]):
        choice = choose_checkpoint(run, by_id[trial_id]) if outcome in FINISHED else None
        if choice is not None:
            choices.append(choice)
    if not choices:
        raise ConfigError(f"run_dir: nothing to export: no finished trial ({' or '.join(FINISHED)}) in "
                          f"{str(run.path)!r} has a checkpoint with a finite {run.metric}")
    found = len(choices)
    choices = sorted(choices, key=lambda c: -score(c.value, run.mode))
    returned = table.attrs["returned"]
    if returned:     # the report returns a warm-start trial in place of its first-ranked one: export it first
        kept = next((i for i, c in enumerate(choices) if c.trial.trial_id == table["trial_id"].iloc[0]), None)
        if kept is None:
            log(f"{returned}; it is not exported: only finished trials with a checkpoint at a finite "
                f"{run.metric} are")
        else:
            choices.insert(0, choices.pop(kept))
            log(returned)
    choices = choices[:top]
    target = prepare_out_dir(out if out is not None else run.path / "best", force)
    stamp = versions()
    # everything read and checked before anything in ``target`` changes
    ready = [(rank, choice, build_config(exported_config(run, choice, rank, stamp), source=str(choice.path)),
              load_checkpoint(choice.path)) for rank, choice in enumerate(choices, start=1)]
    names = {f"{rank}_{choice.trial.trial_id}" for rank, choice, _, _ in ready}
    for folder in earlier_exports(target, run.path):
        if folder.name not in names:    # --force: this run's earlier ranks would stand beside these
            shutil.rmtree(folder)
            log(f"{folder}: removed, written by an earlier export of this run")
    written = []
    for rank, choice, config, payload in ready:
        folder = target / f"{rank}_{choice.trial.trial_id}"
        folder.mkdir(exist_ok=True)
        dump_config(config, folder / CONFIG)
        torch.save(payload["model"], folder / WEIGHTS)
        written.append(folder)
        ranked = "" if run.rank == "best" else f"; ranked by {rank_phrase(run.rank, run.window)}: {choice.value:.6g}"
        log(f"{folder}: {choice.trial.trial_id} ({choice.trial.outcome}) {run.metric} "
            f"{choice.row[run.metric]:.6g} at epoch {choice.epoch}{ranked}")
        reported = rows[choice.trial.trial_id]
        epoch = cell(run.rank_epoch(reported))
        if epoch is not None and int(epoch) != choice.epoch:
            log(f"  the report ranks it at epoch {int(epoch)} ({run.rank_column} {run.rank_value(reported):.6g}), "
                f"which has no checkpoint on disk; epoch {choice.epoch} is the best kept, and this config "
                "retrains to it")
    if found < top:
        log(f"only {found} finished trial(s) have a checkpoint; exported {found} of the {top} asked")
    log(f"retrain: hpsearch train {written[0] / CONFIG} · evaluate: hpsearch evaluate {written[0]}")
    return written


def export_command(args) -> int:
    export(args.run_dir, args.top, args.out, args.force)
    return 0
