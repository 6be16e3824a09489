"""Record a corpus of real learning curves: full-budget per-epoch results of the built-in triplet
model and two user-style models (benchmarks/byo.py) on the four scikit-learn data sets, and of the
built-in symmetric model on stories written apart from its own generator, over
configs sampled across wide ranges, each curve labelled by what happened at the full budget.

    .venv/bin/python -m benchmarks.record_real            # -> benchmarks/data/real_curves.json.gz
                                                          #    (1937 curves, ~23 min CPU, 1 process)
    .venv/bin/python -m benchmarks.record_real --per 3 --out /tmp/c.json.gz   # a tiny corpus
    .venv/bin/python -m benchmarks.record_real --per 40 --first 100000 --out /tmp/held_out.json.gz
                                                          # configs the shipped corpus does not hold
    .venv/bin/python -m benchmarks.record_real --only symmetric   # re-record one model's curves in place

Every config is drawn from its own seeded generator (the curve's index), trained the way a trial is
(``models.build`` + ``hpsearch.models.fit.fit``), one torch thread, one process. Per curve the file
keeps every key the model reports each epoch and the untrained model's objective (``evaluate()``
before the first epoch). The symmetric model reads STORY_COUNT stories of benchmarks/stories_apart.py
(another domain, other relations, vocabularies and sentence shapes than models/symmetric/stories.py)
as a user's ``data_dir``, 12 epochs a curve.

Labels (``label``) read the curve only, never hpsearch.core.health:

    nonfinite  a loss (train_loss, train_loss_*, val_loss) or the objective NaN/inf; onset: the first
               such epoch
    collapsed  a declared collapse metric at or below its floor over the last COLLAPSE_RUN epochs or
               more (the model's own word for degenerate); onset: first epoch of that final stretch
    flatline   train_loss constant to FLAT_REL over the last FLAT_RUN epochs or more, not converged
               (see healthy) and the final objective no better than untrained; onset: first epoch of
               that final constant stretch
    diverged   the final train_loss above DIVERGE_FACTOR x its first value, or above DIVERGE_FACTOR x
               its lowest, at or above its first and the objective no better than untrained; onset:
               the first epoch after
               the lowest loss at which the loss is more than twice that lowest (the final rise)
    healthy    every loss finite, the final objective better than the untrained model's by MARGIN
               or more (every objective here is a fraction: accuracy, recall@1, fact accuracy) and the final
               train_loss below the first epoch's (a loss constant at the end counts only when it is
               converged: below CONVERGED x its first value, e.g. at float32 resolution)
    ambiguous  anything else: finite, yet the objective or the loss not better, neither constant nor
               rising; or constant at the end after learning, far above zero
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import json
import math
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import DATA, Stamp, command_line, log, machine, versions
from benchmarks.curves import _round
from benchmarks.real_data import DATASETS, write_npz
from benchmarks.record_curves import grid_seed
from benchmarks.stories_apart import write as write_stories
from hpsearch.core.numbers import as_float
from hpsearch.core.objective import score
from hpsearch.models.config import ConfigError

FORMAT = "real-1"
CORPUS = DATA / "real_curves.json.gz"
FACTORIES = {"triplet": "triplet", "mlp": "benchmarks.byo:MLPClassifier", "cnn": "benchmarks.byo:CNNClassifier",
             "symmetric": "symmetric"}
STORIES = "stories_apart"       # the symmetric model's data set: benchmarks/stories_apart.py
STORY_COUNT = 100               # stories in that data set (about 350 sentences)
# curves per data set and model in the shipped corpus (the CNN reads the digits only)
PER = {("mlp", "digits"): 220, ("mlp", "iris"): 450, ("mlp", "wine"): 450, ("mlp", "breast_cancer"): 450,
       ("cnn", "digits"): 90, ("triplet", "digits"): 40, ("triplet", "iris"): 50, ("triplet", "wine"): 50,
       ("triplet", "breast_cancer"): 50, ("symmetric", STORIES): 90}

FLAT_REL = 1e-5        # "constant": relative spread of train_loss (6 significant digits stored)
FLAT_RUN = 3           # epochs
COLLAPSE_RUN = 3       # epochs
DIVERGE_FACTOR = 10.0  # "a large factor"
CONVERGED = 1e-3       # a final loss this far below its first is converged: constant there is done
MARGIN = 0.02          # "clearly better" than untrained: objectives here are fractions (accuracy, recall@1, ...)
KINDS = ("nonfinite", "diverged", "flatline", "collapsed")


def _log_uniform(rng: random.Random, low: float, high: float) -> float:
    return float(f"{math.exp(rng.uniform(math.log(low), math.log(high))):.4g}")


def sample_byo(rng: random.Random, model: str, dataset: str) -> dict[str, Any]:
    """A config of benchmarks/byo.py over wide ranges: lr over 5 decades, SGD and Adam, batches of 8
    to 512 (past the training split of the small sets: one full batch), schedules and warm-up."""
    optimizer = rng.choice(["sgd", "adam"])
    return {
        "dataset": dataset,
        "standardize": rng.random() < 0.8,
        "hidden": rng.choice([16, 32, 64, 128, 256]),
        "depth": rng.choice([1, 2, 3, 4]) if model == "mlp" else rng.choice([1, 2, 3]),
        "optimizer": optimizer,
        "lr": _log_uniform(rng, 1e-4, 10.0) if optimizer == "sgd" else _log_uniform(rng, 1e-5, 3.0),
        "momentum": rng.choice([0.0, 0.9, 0.9, 0.99]),
        "weight_decay": 0.0 if rng.random() < 0.6 else _log_uniform(rng, 1e-5, 1e-1),
        "batch_size": rng.choice([8, 16, 32, 64, 128, 512] if model == "mlp" or rng.random() < 0.3
                                 else [32, 64, 128, 512]),
        "schedule": rng.choice(["none", "cosine", "step"]),
        "warmup": 0 if rng.random() < 0.5 else rng.randint(1, 5),
        "epochs": rng.choice([15, 20, 25, 30]) if model == "mlp" else rng.choice([15, 20]),
    }


def sample_triplet(rng: random.Random, path: Path) -> dict[str, Any]:
    """A config of the built-in triplet model on an .npz, over wider ranges than its search space."""
    optimizer = rng.choice(["adam", "adamw", "sgd"])
    return {
        "data_dir": str(path),
        "optimizer": optimizer,
        "lr": _log_uniform(rng, 1e-5, 10.0),
        "weight_decay": 0.0 if rng.random() < 0.6 else _log_uniform(rng, 1e-5, 1e-1),
        "batch_size": rng.choice([16, 32, 64]),
        "sampler": rng.choice(["pk", "pk", "random"]),
        "mining": rng.choice(["batch_all", "batch_hard", "semi_hard"]),
        "margin": _log_uniform(rng, 0.01, 2.0),
        "hidden_dim": rng.choice([2, 8, 32, 128, 256]),
        "embedding_dim": rng.choice([2, 4, 16, 32, 64]),
        "max_z": rng.choice([6.0, None]),
        "epochs": rng.choice([15, 20]),
    }


def sample_symmetric(rng: random.Random, path: Path) -> dict[str, Any]:
    """A config of the built-in symmetric model on the held-apart stories, over wider ranges than its
    search space: lr over 5 decades; no gradient clipping, the model's default of 1, or a loose 10;
    batches of 8 to 128; parse and generate weights from 0 (the term switched off) to 3, the cycle
    weight 0 to 1; 12 epochs (a curve costs about 6 s)."""
    return {
        "data_dir": str(path),
        "lr": _log_uniform(rng, 1e-5, 1.0),
        "batch_size": rng.choice([8, 32, 128]),
        "hidden_dim": rng.choice([8, 32, 128]),
        "num_rules": rng.choice([1, 4, 16, 32]),
        "w_parse": rng.choice([0.0, 0.5, 1.0, 3.0]),
        "w_generate": rng.choice([0.0, 0.5, 1.0, 3.0]),
        "w_cycle": rng.choice([0.0, 0.5, 1.0]),
        "grad_clip": rng.choice([0.0, 0.0, 1.0, 10.0]),
        "epochs": 12,
    }


def record_one(model: str, params: dict[str, Any], seed: int) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """The untrained model's evaluation and the per-epoch rows of one full-budget run."""
    import torch

    from hpsearch import models
    from hpsearch.models.fit import fit

    torch.manual_seed(seed)
    epochs = int(params["epochs"])
    build = {k: v for k, v in params.items() if k != "epochs" or model not in ("triplet", "symmetric")}
    with contextlib.redirect_stderr(io.StringIO()):              # the triplet note on the batch composition
        net = models.build(FACTORIES[model], build, device="cpu", seed=seed)
    untrained = net.evaluate("val")
    rows = fit(net, epochs)
    return untrained, [{k: v for k, v in row.items() if k not in ("epoch", "epoch_s")} for row in rows]


def declarations(model: str) -> dict[str, Any]:
    from hpsearch import models

    objective = models.declared(FACTORIES[model], "objective")
    return {"factory": FACTORIES[model], "objective": list(objective),
            "collapse": dict(models.declared(FACTORIES[model], "collapse") or {})}


# --- labels -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Label:
    status: str               # healthy | broken | ambiguous
    kind: str = ""            # broken: one of KINDS
    onset: int | None = None  # broken: 1-based epoch the symptom starts
    why: str = ""


def _loss_key(key: str) -> bool:
    return key in ("train_loss", "val_loss") or key.startswith(("train_loss_", "val_loss_"))


def _final_stretch(values: Sequence[float | None], holds: Any) -> int:
    """How many of the last values satisfy ``holds(window)`` grown from the end (0: not even the last)."""
    n = 0
    while n < len(values) and holds(values[len(values) - n - 1:]):
        n += 1
    return n


def _constant(window: Sequence[float | None]) -> bool:
    if any(v is None or not math.isfinite(v) for v in window):
        return False
    top = max(abs(v) for v in window)
    return top == 0 or (max(window) - min(window)) / top <= FLAT_REL


def label(rows: Sequence[Mapping[str, Any]], untrained: float, objective: str, mode: str,
          collapse: Mapping[str, float]) -> Label:
    """What happened at the full budget, read from the curve alone (see the module docstring)."""
    for epoch, row in enumerate(rows, 1):
        for key in sorted(row):
            value = as_float(row[key])
            if (key == objective or _loss_key(key)) and value is not None and not math.isfinite(value):
                return Label("broken", "nonfinite", epoch, f"{key} {value} at epoch {epoch}")
    final = as_float(rows[-1].get(objective))
    learned = score(final, mode) > score(untrained, mode)
    clearly = score(final, mode) >= score(untrained, mode) + MARGIN
    losses = [as_float(r.get("train_loss")) for r in rows]
    for metric, floor in sorted(collapse.items()):
        values = [as_float(r.get(metric)) for r in rows]
        run = _final_stretch(values, lambda w, f=floor: all(v is not None and v <= f for v in w))
        if run >= COLLAPSE_RUN:
            return Label("broken", "collapsed", len(rows) - run + 1, f"{metric} <= {floor:g} over the last {run} epochs")
    if any(v is None for v in losses):
        return Label("ambiguous", why="train_loss missing")
    first, last = losses[0], losses[-1]
    run = _final_stretch(losses, _constant)
    converged = 0 <= last <= CONVERGED * first
    if run >= FLAT_RUN and not learned and not converged:
        return Label("broken", "flatline", len(rows) - run + 1, f"train_loss constant over the last {run} epochs")
    if run >= FLAT_RUN and not converged:
        return Label("ambiguous", why=f"train_loss constant at {last:.4g} over the last {run} epochs after learning")
    low = min(range(len(losses)), key=lambda i: losses[i])
    if last > 0 and losses[low] > 0 and (last > DIVERGE_FACTOR * first or
                                        (not learned and last > DIVERGE_FACTOR * losses[low] and last >= first)):
        onset = next(i for i in range(low + 1, len(losses)) if losses[i] > 2 * losses[low]) + 1
        return Label("broken", "diverged", onset, f"train_loss {last:.4g} from {first:.4g} (lowest "
                     f"{losses[low]:.4g} at epoch {low + 1})")
    if clearly and last < first:
        return Label("healthy")
    return Label("ambiguous", why=f"{objective} {final} vs untrained {untrained}, train_loss {first:.4g} -> "
                                  f"{last:.4g}: not both better, neither constant nor rising")


def label_curve(curve: Mapping[str, Any], model: Mapping[str, Any]) -> Label:
    """``label`` for a curve of the corpus file with its model's declarations."""
    metric, mode = model["objective"]
    return label(rows(curve, model), curve["untrained"], metric, mode, model["collapse"])


def rows(curve: Mapping[str, Any], model: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The per-epoch result dicts of a corpus curve (missing values left out)."""
    return [{k: v for k, v in zip(model["keys"], values) if v is not None} for values in curve["rows"]]


def recorded_text(data: Mapping[str, Any]) -> str:
    """How a corpus file was recorded: the command, and that of each model's curves added since."""
    done = data["recorded"]
    parts = [f"recorded {done['date']} with `{done['command']}` ({done['cpu_s']:.0f} s CPU)"]
    parts += [f"its {a['model']} curves recorded {a['date']} with `{a['command']}` ({a['cpu_s']:.0f} s CPU)"
              for a in done.get("added", [])]
    return "; ".join(parts)


def load(path: str | Path = CORPUS) -> dict[str, Any]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        data = json.load(fh)
    if data.get("format") != FORMAT:
        raise ValueError(f"{path}: format {data.get('format')!r}, expected {FORMAT!r}")
    return data


# --- recording ----------------------------------------------------------------------------------


def plan(per: Mapping[tuple[str, str], int], folder: Path, first: int = 0) -> list[tuple[str, str, dict[str, Any], int]]:
    """Every (model, data set, params, seed) to record, each config from its own seeded generator
    (indices from ``first`` on: another ``first`` draws configs the shipped corpus does not hold)."""
    jobs = []
    paths = {name: write_npz(name, folder) for name in DATASETS}
    paths[STORIES] = write_stories(folder / f"{STORIES}.jsonl", STORY_COUNT)
    index = first
    for (model, dataset), count in per.items():
        for _ in range(count):
            seed = grid_seed(index)
            rng = random.Random(seed)
            if model == "symmetric":
                params = sample_symmetric(rng, paths[dataset])
            elif model == "triplet":
                params = sample_triplet(rng, paths[dataset])
            else:
                params = sample_byo(rng, model, dataset)
            jobs.append((model, dataset, params, seed))
            index += 1
    return jobs


def record(per: Mapping[tuple[str, str], int], out: Path, argv: list[str], first: int = 0,
           only: str | None = None, per_arg: int | None = None) -> Path:
    import torch

    layout = {"first": first, "per": per_arg}       # what decides the configs drawn (``plan``)
    base = load(out) if only is not None and out.exists() else None     # a bad file refused before training
    if base is not None and base["recorded"].get("plan", {"first": 0, "per": None}) != layout:
        raise SystemExit(f"--only {only}: {out} was recorded with {base['recorded'].get('plan')}, not --first "
                         f"{first} --per {per_arg}; its other curves would not match these configs")
    torch.set_num_threads(1)
    stamp = Stamp(command_line("benchmarks.record_real", argv))
    started = time.process_time()
    groups: dict[str, dict[str, Any]] = {}
    curves, skipped = [], []
    with tempfile.TemporaryDirectory() as tmp:
        jobs = [job for job in plan(per, Path(tmp), first) if only is None or job[0] == only]
        for i, (model, dataset, params, seed) in enumerate(jobs):
            group = groups.setdefault(model, {**declarations(model), "keys": []})
            try:
                untrained, history = record_one(model, params, seed)
            except ConfigError as err:                     # a combination the model refuses
                skipped.append(f"{model} {dataset} {params}: {err}")
                continue
            for row in history:
                group["keys"] += [k for k in row if k not in group["keys"]]
            metric = group["objective"][0]
            shown = {k: v for k, v in params.items() if k != "data_dir"}
            curves.append({"model": model, "dataset": dataset, "seed": seed, "params": shown,
                           "untrained": _round(untrained[metric]),
                           "rows": history})
            if i % 50 == 0 or i == len(jobs) - 1:
                log(f"{i + 1}/{len(jobs)} {model} {dataset} (cpu {time.process_time() - started:.0f} s)")
    for curve in curves:
        keys = groups[curve["model"]]["keys"]
        curve["rows"] = [[_round(row.get(k)) for k in keys] for row in curve["rows"]]
    counts = Counter()
    for curve in curves:
        lab = label_curve(curve, groups[curve["model"]])
        counts[lab.kind or lab.status] += 1
    recorded = {"date": stamp.started.isoformat(timespec="minutes"), "machine": machine(), "versions": versions(),
                "command": stamp.command, "cpu_s": round(time.process_time() - started, 1), "refused": skipped,
                "plan": layout}
    if base is not None:                          # one model's curves, in place of that model's in the file
        data = base
        data["models"][only] = groups[only]
        data["curves"] = [c for c in data["curves"] if c["model"] != only] + curves
        data["recorded"]["added"] = [a for a in data["recorded"].get("added", []) if a["model"] != only] \
            + [{"model": only, **recorded}]
    else:
        data = {"format": FORMAT, "models": groups, "curves": curves, "recorded": recorded}
    out.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(out, "wt", encoding="utf-8", compresslevel=9) as fh:
        json.dump(data, fh, separators=(",", ":"))
    log(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB): {len(curves)} curves, labels {dict(counts)}")
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(CORPUS), help="the corpus file (default: %(default)s)")
    parser.add_argument("--per", type=int, help="curves per model and data set (default: the shipped counts)")
    parser.add_argument("--only", choices=sorted(FACTORIES),
                        help="record this model's curves only (the same configs as in a whole recording); into an "
                             "existing --out they replace that model's curves, the others are kept")
    parser.add_argument("--first", type=int, default=0,
                        help="index of the first config drawn (default 0, the shipped corpus; another value "
                             "records held-out curves)")
    args = parser.parse_args(argv)
    per = {key: args.per for key in PER} if args.per is not None else PER
    record(per, Path(args.out), argv, args.first, args.only, args.per)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
