"""The triplet model's shipped defaults on real data sets, against cosine 1-NN on the raw inputs.

    .venv/bin/python -m benchmarks.real_data              # prints the table (2-3 minutes on 1 core)
    .venv/bin/python -m benchmarks.real_data --seeds 3 --out B.md

Four small real data sets that ship inside scikit-learn (``pip install -e .[bench]``; nothing is
downloaded) are written as the .npz files ``data_dir`` reads (``x`` N×D floats, ``y`` N labels):
8x8 digits (pixels, 10 classes), iris (3 classes), wine and breast cancer (tabular features in
mixed units). Each is trained with configs/triplet.yaml as shipped, only ``data_dir`` set, for its
``epochs``; the figure is ``val_recall_at_1`` after the last epoch. The baselines use the very same
validation rows (the model's split for that seed): cosine 1-NN on the raw inputs, and on the inputs
as the model sees them (standardised). "plain z-scores" is the same training with ``max_z: null``:
every feature divided by its standard deviation, so the digits' near-constant border pixels reach
z = 40.

Every figure is the mean over ``--seeds`` run seeds (the split, initialisation and batches all
follow the seed), with the range; "beats raw 1-NN" counts seeds where the defaults are above /
equal to / below the raw baseline.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import ROOT, Stamp, command_line, log, table, write_section

DATASETS = ("digits", "iris", "wine", "breast_cancer")
CONFIG = ROOT / "configs" / "triplet.yaml"


def write_npz(name: str, folder: Path) -> Path:
    """One scikit-learn data set as ``folder/NAME.npz`` with ``x`` (float32) and ``y`` (int64)."""
    from sklearn import datasets

    bunch = getattr(datasets, f"load_{name}")()
    path = folder / f"{name}.npz"
    np.savez(path, x=bunch.data.astype(np.float32), y=bunch.target.astype(np.int64))
    return path


def run(path: Path, seed: int, changes: dict[str, Any]) -> dict[str, Any]:
    """Train the shipped config on ``path`` (params ``changes`` applied) with run seed ``seed``;
    recall@1 of the model and of cosine 1-NN on the raw and on the standardised validation rows."""
    import torch

    from hpsearch import models
    from hpsearch.core.config import load_config
    from hpsearch.models.fit import fit
    from hpsearch.models.triplet.data import split_indices, to_split
    from hpsearch.models.triplet.metrics import retrieval_metrics

    config = load_config(CONFIG, [f"params.data_dir={path}"])
    with contextlib.redirect_stderr(io.StringIO()):              # the note on the batch composition
        model = models.build("triplet", {**config.params, **changes}, device="cpu", seed=seed)
    cfg = model.cfg
    with np.load(path) as archive:
        x, y = archive["x"], archive["y"]
    _, val_rows, _ = split_indices(y, cfg.split, cfg.val_fraction, cfg.test_fraction,
                                   np.random.default_rng(model.data_seed))
    raw = to_split(x, y, val_rows, torch.device("cpu"))
    assert torch.equal(raw.y, model.data.val.y), "the baseline must use the model's validation rows"
    out = {"raw": retrieval_metrics(raw.x, raw.y)["recall_at_1"],
           "standardised": retrieval_metrics(model.data.val.x, model.data.val.y)["recall_at_1"],
           "batch": f"{model.sampler.p} x {model.sampler.k}" if cfg.sampler == "pk" else str(cfg.batch_size),
           "val": len(val_rows), "epochs": config.epochs}
    history = fit(model, config.epochs)
    out["model"] = history[-1]["val_recall_at_1"]
    return out


def spread(values: list[float]) -> str:
    return f"{statistics.fmean(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20, help="run seeds 0..N-1 per data set")
    parser.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated, from " + ", ".join(DATASETS))
    parser.add_argument("--data", help="folder for the .npz files (default: a temporary folder)")
    parser.add_argument("--out", help="also write the table as the real_data section of this markdown file")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    stamp = Stamp(command_line("benchmarks.real_data", argv))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.data or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for name in args.datasets.split(","):
            path = write_npz(name, folder)
            shipped, plain = [], []
            for seed in range(args.seeds):
                shipped.append(run(path, seed, {}))
                plain.append(run(path, seed, {"max_z": None}))
                log(f"{name} seed {seed}: defaults {shipped[-1]['model']:.3f}, plain z-scores "
                    f"{plain[-1]['model']:.3f}, raw 1-NN {shipped[-1]['raw']:.3f}")
            with np.load(path) as archive:
                n, d = archive["x"].shape
                classes = len(np.unique(archive["y"]))
            model = [r["model"] for r in shipped]
            raw = [r["raw"] for r in shipped]
            wins = sum(m > r for m, r in zip(model, raw))
            ties = sum(m == r for m, r in zip(model, raw))
            rows.append([name, f"{n} x {d}", classes, shipped[0]["val"], shipped[0]["batch"], spread(raw),
                         spread([r["standardised"] for r in shipped]), spread(model),
                         spread([r["model"] for r in plain]),
                         f"{statistics.fmean(model) - statistics.fmean(raw):+.3f}",
                         f"{wins} / {ties} / {len(model) - wins - ties}"])
    header = ["data set", "samples x features", "classes", "val samples", "pk batch", "cosine 1-NN, raw inputs",
              "cosine 1-NN, standardised", "triplet defaults", "triplet, plain z-scores (max_z null)",
              "defaults - raw 1-NN", "beats raw 1-NN (seeds above / equal / below)"]
    body = (f"val_recall_at_1, mean (min-max) over run seeds 0-{args.seeds - 1}; configs/triplet.yaml as shipped "
            f"({shipped[0]['epochs']} epochs), only data_dir set.\n\n" + table(header, rows))
    print("\n".join(stamp.lines()) + "\n\n" + body)
    if args.out:
        write_section("real_data", "Triplet defaults on real data", body, stamp, Path(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
