"""Run directories with known contents, laid out as ``hpsearch run`` and Ray write them:

    <root>/<name>/search.yaml, run.json, outcomes.jsonl,
                  trial_<index>_<trial_id>/params.json, result.json, checkpoint_NNNNNN/<checkpoint file>

A trial is given as its searched values, a per-epoch history of metrics, and its outcome; every
result row gets what Ray adds (trial_id, training_iteration, time_total_s, config, ...).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass
class FakeTrial:
    trial_id: str
    config: dict[str, Any]
    history: list[dict[str, float]]            # epoch i+1 -> its train_*/val_* metrics
    outcome: str | None = None                 # None: no outcomes.jsonl line (still running)
    reason: str = ""
    seed: int = 0
    epoch_s: float = 0.5
    rereported: dict[int, dict[str, float]] = field(default_factory=dict)  # epoch -> a stale row
                                                                            # written before the final one
    checkpoints: dict[int, Any] = field(default_factory=dict)   # epoch -> payload for torch.save, or file bytes
    error_txt: str | None = None


def linear(start: float, stop: float, n: int) -> list[float]:
    return [start + (stop - start) * i / max(n - 1, 1) for i in range(n)]


def history(n: int, objective: str = "val_recall_at_1", obj=(0.1, 0.5), loss=(2.0, 1.0),
            components: dict[str, tuple[float, float]] | None = None, **constant: float) -> list[dict[str, float]]:
    """n epochs of metrics moving linearly from start to stop."""
    objs, losses = linear(*obj, n), linear(*loss, n)
    parts = {name: linear(a, b, n) for name, (a, b) in (components or {}).items()}
    rows = []
    for i in range(n):
        row = {"train_loss": losses[i], "train_grad_norm": 1.0, "train_batch_loss_std": 0.1}
        row.update({f"train_loss_{name}": values[i] for name, values in parts.items()})
        row.update(constant)
        row[objective] = objs[i]
        rows.append(row)
    return rows


def checkpoint_file() -> str:
    from hpsearch.core.rundir import CHECKPOINT_FILE

    return CHECKPOINT_FILE


def make_run(root: str | Path, trials: list[FakeTrial], *, name: str = "run", model: str = "triplet",
             params: dict[str, Any] | None = None, objective: tuple[str, str] = ("val_recall_at_1", "max"),
             space: dict[str, Any] | None = None, num_samples: int | None = None, max_epochs: int = 10,
             epochs: int = 10, seed: int = 0, state: str = "finished") -> Path:
    run = Path(root) / name
    run.mkdir(parents=True)
    config = {
        "model": model, "seed": seed, "epochs": epochs, "device": "cpu", "params": dict(params or {}),
        "objective": {"metric": objective[0], "mode": objective[1]},
        "space": space if space is not None else {"lr": {"loguniform": [1e-5, 1e-1]}},
        "budget": {"num_samples": num_samples or len(trials), "max_epochs": max_epochs, "max_concurrent": 2,
                   "max_failures": 1},
        "scheduler": {"grace_period": 1, "reduction_factor": 3.0},
    }
    (run / "search.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    (run / "run.json").write_text(json.dumps({"name": name, "storage": str(root), "state": state}), encoding="utf-8")
    lines = []
    for index, trial in enumerate(trials):
        write_trial(run / f"trial_{index + 1:04d}_{trial.trial_id}", trial)
        if trial.outcome is not None:
            lines.append({"trial_id": trial.trial_id, "outcome": trial.outcome, "reason": trial.reason,
                          "epoch": len(trial.history), "time": 1.0e9 + index})
    (run / "outcomes.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return run


def write_trial(trial_dir: Path, trial: FakeTrial) -> None:
    trial_dir.mkdir()
    (trial_dir / "params.json").write_text(json.dumps(trial.config), encoding="utf-8")
    rows = []
    ckpt_index = 0
    for i, metrics in enumerate(trial.history):
        epoch = i + 1
        if epoch in trial.rereported:   # a resumed trial reports this epoch again; the later row wins
            rows.append(_row(trial, epoch, trial.rereported[epoch], None))
        ckpt_name = None
        if epoch in trial.checkpoints:
            ckpt_name = f"checkpoint_{ckpt_index:06d}"
            ckpt_index += 1
            (trial_dir / ckpt_name).mkdir()
            payload, path = trial.checkpoints[epoch], trial_dir / ckpt_name / checkpoint_file()
            if isinstance(payload, bytes):
                path.write_bytes(payload)
            else:
                import torch

                torch.save(payload, path)
        rows.append(_row(trial, epoch, metrics, ckpt_name))
    (trial_dir / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    if trial.error_txt is not None:
        (trial_dir / "error.txt").write_text(trial.error_txt, encoding="utf-8")


def _row(trial: FakeTrial, epoch: int, metrics: dict[str, float], ckpt_name: str | None) -> dict[str, Any]:
    row: dict[str, Any] = {"epoch": epoch, **metrics, "epoch_s": trial.epoch_s, "seed": trial.seed,
                           "health": "ok", "health_reason": ""}
    row.update({"timestamp": 1_700_000_000 + epoch, "checkpoint_dir_name": ckpt_name, "done": False,
                "training_iteration": epoch, "trial_id": trial.trial_id, "date": "2025-01-01_00-00-00",
                "time_this_iter_s": trial.epoch_s, "time_total_s": trial.epoch_s * epoch, "pid": 1,
                "hostname": "host", "node_ip": "127.0.0.1", "config": trial.config,
                "time_since_restore": trial.epoch_s * epoch, "iterations_since_restore": epoch})
    return row
