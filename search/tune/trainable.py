"""The Ray Tune trainable: a thin adapter over the Model protocol (models/api.py).

Ray's trial config holds only the searched params; the fixed params and the whole RunConfig come
in through ``tune.with_parameters``. For each trial the adapter

1. derives the trial's own seed from the search seed and the trial's index (``trial_seed``), so any
   trial can be re-run exactly with ``hpsearch train`` and ``seed: <the reported seed>``;
2. builds the model on the trial's device (CUDA when Ray gave the trial a GPU) with torch limited
   to the trial's CPU share;
3. restores from Ray's checkpoint if there is one and continues at the next epoch;
4. runs the same epoch loop as ``hpsearch train`` (hpsearch.models.fit.fit) and, after every epoch, asks
   hpsearch.core.health for a verdict and reports every ``train_*`` / ``val_*`` value (Python floats),
   ``epoch``, ``epoch_s``, ``seed``, ``health``, ``health_reason`` and ``node_id`` (the Ray node
   the epoch ran on; Ray adds ``hostname``, ``node_ip`` and ``pid`` itself);
5. checkpoints every ``checkpoint.interval`` epochs, on the last epoch and when the verdict is not
   ok: ``{"model": state_dict, "history": [...], "seed", "epoch", "params"}`` written with
   torch.save to ``CHECKPOINT_FILE`` and read back with ``weights_only=True``.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ray
from ray import tune

from hpsearch import models
from hpsearch.core import health
from hpsearch.core.config import RunConfig
from hpsearch.core.rundir import CHECKPOINT_FILE, parse_trial_dir, trial_dir_name
from hpsearch.core.training import cpu_threads, load_trusted_tensors
from hpsearch.models.fit import fit


def trial_seed(search_seed: int, index: int) -> int:
    """The seed of trial number ``index`` (1-based) of a search seeded with ``search_seed``.
    A pure function of the two: the same search gives every trial the same seed again."""
    digest = hashlib.sha256(f"hpsearch-trial:{int(search_seed)}:{int(index)}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def trial_index(trial: Any) -> int:
    """The 1-based creation index of a Ray trial: the counter that starts its experiment tag."""
    head = str(getattr(trial, "experiment_tag", "") or "").split("_", 1)[0]
    if not head.isdigit():
        raise ValueError(f"trial {getattr(trial, 'trial_id', trial)!r}: experiment tag "
                         f"{getattr(trial, 'experiment_tag', None)!r} does not start with its index")
    return int(head)


def trial_name(trial: Any) -> str:
    """Trial name and directory: ``trial_<index>_<trial_id>`` (hpsearch.core.rundir.trial_dir_name)."""
    return trial_dir_name(trial_index(trial), trial.trial_id)


def index_from_name(name: str) -> int:
    """The index back from a ``trial_name`` (the trainable only sees the name)."""
    parsed = parse_trial_dir(name)
    if parsed is None:
        raise ValueError(f"trial name {name!r} is not trial_<index>_<id>")
    return parsed[0]


def trial_device(requested: str, gpu_ids: list) -> str:
    """``cuda`` when Ray gave this trial a GPU (``ray.get_gpu_ids()``), else ``cpu``. A config asking
    for cuda on a trial without a GPU is an error (the runner refuses it earlier)."""
    if gpu_ids:
        return "cuda"
    if requested == "cuda":
        raise RuntimeError("device: 'cuda' requested but this trial holds no GPU; set resources.gpu > 0")
    return "cpu"


def as_metrics(row: Mapping[str, Any]) -> dict[str, Any]:
    """The row a model returned, every number a Python float (tensors and numpy scalars too)."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if key == "epoch":
            out[key] = int(value)
        elif isinstance(value, bool) or not hasattr(value, "__float__"):
            raise TypeError(f"metric {key!r}: got {value!r} ({type(value).__name__}), expected a number")
        else:
            out[key] = float(value)
    return out


def check_objective(row: Mapping[str, Any], metric: str, model: str) -> None:
    """Every epoch's report must hold the objective: a model that does not report it fails the
    trial at once, naming the metric and what was reported (the scheduler and the searcher could
    not rank the trial otherwise)."""
    if metric not in row:
        reported = ", ".join(sorted(k for k in row if k not in ("epoch", "epoch_s"))) or "nothing"   # not the timing
        epoch = f" at epoch {row['epoch']}" if "epoch" in row else ""
        raise ValueError(f"objective.metric {metric!r} was not reported by model {model!r}{epoch}; "
                         f"it reported: {reported}")


def save_checkpoint(directory: str | Path, model: Any, history: list[dict[str, Any]], seed: int,
                    params: Mapping[str, Any]) -> Path:
    import torch

    path = Path(directory) / CHECKPOINT_FILE
    torch.save({"model": model.state_dict(), "history": [dict(r) for r in history], "seed": int(seed),
                "epoch": len(history), "params": dict(params)}, path)
    return path


def load_checkpoint(directory: str | Path, device: str = "cpu") -> dict[str, Any]:
    return load_trusted_tensors(Path(directory) / CHECKPOINT_FILE, device, "checkpoint")


def should_checkpoint(epoch: int, max_epochs: int, interval: int, verdict: health.Verdict) -> bool:
    return epoch % interval == 0 or epoch >= max_epochs or verdict.status != "ok"


def trainable(params: dict[str, Any], run: RunConfig, workdir: str | None = None) -> None:
    """Ray Tune function trainable: ``params`` are the searched values, ``run`` the search config.
    ``workdir``: the driver's working directory; a trial runs there when this node has it, so
    relative paths in params (data_dir) mean what they meant to the user, whatever Ray's own
    RAY_CHDIR_TO_TRIAL_DIR setting on this worker. torch is imported here, in the trial, so the
    driver that only hands this function to Tune never loads it."""
    import torch

    if workdir is not None and os.path.isdir(workdir):
        os.chdir(workdir)
    context = tune.get_context()
    seed = trial_seed(run.seed, index_from_name(context.get_trial_name()))
    device = trial_device(run.device, ray.get_gpu_ids())
    torch.set_num_threads(cpu_threads(run.resources.cpu))
    full = {**run.params, **params}
    metric = run.objective.metric
    collapse = models.declared(run.model, "collapse")
    where = {"node_id": ray.get_runtime_context().get_node_id()} if ray.is_initialized() else {}

    torch.manual_seed(seed)  # as `hpsearch train` does, so a trial re-runs there exactly
    model = models.build(run.model, full, device=device, seed=seed)
    history: list[dict[str, Any]] = []
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = load_checkpoint(directory, device)
        model.load_state_dict(state["model"])
        history = [dict(r) for r in state["history"]]
    start = len(history) + 1

    def on_epoch(epoch: int, row: dict[str, Any]) -> None:
        row = as_metrics(row)
        check_objective(row, metric, run.model)
        history.append(row)
        verdict = health.assess(history, run.health, collapse, objective=metric)
        report = {**row, "seed": seed, "health": verdict.status, "health_reason": verdict.reason, **where}
        if not should_checkpoint(epoch, run.max_epochs, run.checkpoint.interval, verdict):
            tune.report(report)
            return
        with tempfile.TemporaryDirectory(prefix="hpsearch-ckpt-") as directory:
            save_checkpoint(directory, model, history, seed, full)
            tune.report(report, checkpoint=tune.Checkpoint.from_directory(directory))

    if start <= run.max_epochs:
        fit(model, run.max_epochs, start_epoch=start, on_epoch=on_epoch)
