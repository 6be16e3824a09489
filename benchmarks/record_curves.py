"""Record the per-epoch curves of a built-in model over a grid of its searched parameters.

    .venv/bin/python -m benchmarks.record_curves triplet      # -> benchmarks/data/curves_triplet.json.gz
    .venv/bin/python -m benchmarks.record_curves symmetric

Each grid point is trained the way a trial is (``models.build`` + ``hpsearch.models.fit.fit``: train_epoch,
then evaluate, every epoch) at the scale of the recipe below, with one torch thread per process
and ``--workers`` processes. Everything a health rule or the report reads is kept: the objective,
train_loss, every loss component and diagnostic, every validation metric, and the epoch's seconds.
The grid covers the regions where training breaks (the quickstart's lr x weight_decay corner
diverges, sampler random with batches of 16 has nothing to learn from).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import math
import multiprocessing
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import DATA, ROOT, Stamp, command_line, machine, versions
from benchmarks.curves import dump
from hpsearch import models
from hpsearch.core.config import apply_overrides, build_config, read_yaml
from hpsearch.core.space import Spec
from hpsearch.models.config import ConfigError


@dataclass(frozen=True)
class Recipe:
    config: str                       # the run config whose space the grid covers
    epochs: int                       # epochs recorded per grid point (= the replay's max_t)
    levels: dict[str, int]            # numeric parameter -> number of grid levels
    overrides: tuple[str, ...] = ()   # --set style overrides: the recording scale
    note: str = ""
    choices: dict[str, list[Any]] = field(default_factory=dict)  # restrict a choice parameter


RECIPES = {
    # the quickstart search exactly: its data, its 8 epochs, its space
    "triplet": Recipe("configs/quickstart.yaml", 8, {"lr": 6, "weight_decay": 6, "hidden_dim": 3},
                      note="configs/quickstart.yaml as shipped (16 classes x 150 samples, 8 epochs)"),
    # configs/symmetric.yaml at a tenth of its data and 6 epochs, on a narrower space (batch 32,
    # hidden_dim <= 128, lr >= 1e-4): one config costs ~10 s here instead of ~10 min
    "symmetric": Recipe("configs/symmetric.yaml", 6, {"lr": 4, "hidden_dim": 3, "num_rules": 2,
                                                      "w_parse": 2, "w_generate": 2, "w_cycle": 2},
                        overrides=("num_stories=100", "space.batch_size={choice: [32]}",
                                   "space.hidden_dim={int: [8, 128], log: true}",
                                   "space.lr={loguniform: [1.0e-4, 1.0e-1]}"),
                        note="configs/symmetric.yaml at 100 stories, 6 epochs, batch 32, hidden_dim 8-128, "
                             "lr 1e-4 to 1e-1"),
}


def levels(spec: Spec, count: int) -> list[Any]:
    """``count`` values spread evenly over a numeric spec on its own scale (ends included)."""
    if spec.kind == "choice":
        return list(spec.choices)
    log = spec.kind == "loguniform" or spec.log
    low, high = float(spec.low), float(spec.high)
    if count == 1:
        points = [math.sqrt(low * high) if log else (low + high) / 2]
    elif log:
        points = [math.exp(math.log(low) + (math.log(high) - math.log(low)) * i / (count - 1)) for i in range(count)]
    else:
        points = [low + (high - low) * i / (count - 1) for i in range(count)]
    if spec.kind == "int":
        return sorted({int(round(p)) for p in points})
    return [float(f"{p:.4g}") for p in points]


def make_grid(run: Any, recipe: Recipe) -> dict[str, list[Any]]:
    grid = {}
    for name, spec in run.space.items():
        if spec.kind == "choice":
            grid[name] = list(recipe.choices.get(name, spec.choices))
        else:
            grid[name] = levels(spec, recipe.levels.get(name, 3))
    return grid


def grid_seed(index: int) -> int:
    return int.from_bytes(hashlib.sha256(f"hpsearch-curves:{index}".encode()).digest()[:4], "big") & 0x7FFFFFFF


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def record_one(job: tuple[int, str, dict[str, Any], int]) -> tuple[int, list[dict], list[float], float]:
    """Train one grid point; returns (index, rows, epoch seconds, build seconds)."""
    import torch

    from hpsearch import models
    from hpsearch.models.fit import fit

    index, model_name, params, epochs = job
    seed = grid_seed(index)
    started = time.perf_counter()
    torch.manual_seed(seed)
    try:
        model = models.build(model_name, params, device="cpu", seed=seed)
        build_s = time.perf_counter() - started
        rows = fit(model, epochs)
    except Exception as err:
        raise RuntimeError(f"grid point {index} ({params}) failed: {type(err).__name__}: {err}") from err
    return index, rows, [float(r["epoch_s"]) for r in rows], build_s


def record(model: str, out: Path, recipe: Recipe, workers: int, limit: int | None, sets: list[str],
           epochs: int | None, argv: list[str]) -> Path:
    stamp = Stamp(command_line("benchmarks.record_curves", argv))
    raw = apply_overrides(dict(read_yaml(ROOT / recipe.config)), [*recipe.overrides, *sets])
    run = build_config(raw, source=recipe.config)
    epochs = epochs or recipe.epochs
    run = build_config({**run.to_dict(), "epochs": epochs,
                        "budget": {**run.to_dict()["budget"], "max_epochs": epochs}}, source=recipe.config)
    grid = make_grid(run, recipe)
    names = list(grid)
    configs = []
    for values in itertools.product(*(grid[n] for n in names)):
        try:  # a combination the model refuses (all loss weights 0) is not a config anyone can run
            models.validate_params(run.model, {**run.params, **dict(zip(names, values))})
        except ConfigError:
            continue
        configs.append(list(values))
    if limit is not None and limit < len(configs):  # an even spread over the grid
        step = len(configs) / limit
        configs = [configs[int(i * step)] for i in range(limit)]
    jobs = [(i, run.model, {**run.params, **dict(zip(names, c))}, epochs) for i, c in enumerate(configs)]
    print(f"recording {len(jobs)} configs x {epochs} epochs of {run.model} with {workers} worker(s)", flush=True)
    results: dict[int, tuple] = {}
    began = time.perf_counter()
    if workers > 1:
        with multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
            for done, (index, rows, epoch_s, build_s) in enumerate(pool.imap_unordered(record_one, jobs), 1):
                results[index] = (rows, epoch_s, build_s)
                _progress(done, len(jobs), began)
    else:
        _init_worker()
        for done, job in enumerate(jobs, 1):
            index, rows, epoch_s, build_s = record_one(job)
            results[index] = (rows, epoch_s, build_s)
            _progress(done, len(jobs), began)
    order = sorted(results)
    rows_all = [results[i][0] for i in order]
    keys = sorted({k for rows in rows_all for r in rows for k in r if k.startswith(("train_", "val_"))})
    recorded = {"date": stamp.started.isoformat(timespec="seconds"), "machine": machine(), "versions": versions(),
                "command": stamp.command, "seconds": round(time.perf_counter() - began, 1),
                "workers": workers, "torch_threads": 1, "scale": recipe.note, "grid_seed": "sha256 of the index"}
    path = dump(out, run, grid, keys, configs, rows_all, [results[i][1] for i in order],
                [results[i][2] for i in order], recorded)
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB) in {recorded['seconds']:.0f} s", flush=True)
    return path


def _progress(done: int, total: int, began: float) -> None:
    if done == total or done % max(1, total // 20) == 0:
        elapsed = time.perf_counter() - began
        print(f"  {done}/{total} configs, {elapsed:.0f} s, ~{elapsed / done * (total - done):.0f} s left",
              flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=sorted(RECIPES))
    parser.add_argument("--out", help="output file (default benchmarks/data/curves_<model>.json.gz)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--limit", type=int, help="record only this many grid points, spread over the grid")
    parser.add_argument("--epochs", type=int, help="epochs per grid point (default: the recipe's)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting of the recipe's config (e.g. samples_per_class=20)")
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else DATA / f"curves_{args.model}.json.gz"
    record(args.model, out, RECIPES[args.model], args.workers, args.limit, args.set, args.epochs, argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
