"""Real data: raw 1-NN, the shipped defaults, a reference recipe and a 24-trial search, on the same splits.

    .venv/bin/python -m benchmarks.real_search                       # writes its BENCHMARKS.md section
    .venv/bin/python -m benchmarks.real_search --seeds 2 --search-seeds 1 --out B.md

The four scikit-learn data sets of benchmarks/real_data.py (written as the .npz files ``data_dir``
reads), each split by run seed s exactly as real_data.py splits it. Per split:

- cosine 1-NN on the raw validation rows, and the shipped defaults (configs/triplet.yaml, only
  ``data_dir`` set), both from ``benchmarks.real_data.run``;
- the reference recipe: pytorch-metric-learning's example for an embedding trained with a
  semi-hard triplet loss (``TripletMarginMiner(margin=0.2, type_of_triplets="semihard")`` and
  ``TripletMarginLoss(margin=0.2)`` on cosine similarity, ``ThresholdReducer(low=0)``, Adam),
  at lr 1e-3, on the shipped MLP (128 hidden, 32 out), batches and epochs. That miner keeps every
  triplet whose similarity gap ``s(a,p) - s(a,n)`` lies in ``(0, margin]``, which none of the
  model's miners does, so the loss is written here (:func:`pml_semihard_loss`) and trained on the
  model's own net, sampler and split;
- the same recipe with the model's own options (``mining: semi_hard``, margin 0.2, lr 1e-3);
- ``hpsearch.run(configs/triplet.yaml)`` with its shipped space and budget (24 trials, ASHA), with
  ``data_dir`` and ``data_seed`` set so every trial trains and is scored on that split. "best
  trial" is the search's own figure (the best trial's best epoch); "retrained, R" is the config
  that reading R of that same search returns (``READINGS``: the run dir read back with each
  ``objective.rank`` and ``objective.warm_start_margin``) trained again for the full ``epochs``
  with ``RETRAINS`` fresh seeds (``FRESH_SEED``: its own seed would replay the curve it was picked
  on), read after the last epoch as the other columns are, and averaged, as the references are
  over run seeds.

Raw 1-NN, defaults and the references are means over run seeds 0..``--seeds``-1; the searches run
on the first ``--search-seeds`` of those splits (search seed = run seed), and the verdict compares
each retrained search with the better reference on those same splits.

``--part iris`` writes a second section: why the defaults tie raw 1-NN on iris, per seed (cosine
1-NN on the raw and on the standardised rows, the defaults after the last epoch and at their best
epoch, 1-NN on the training rows' embeddings), and a few changes to the defaults measured on iris
(seeds 0..N-1 and, as a check of the choice, the fresh seeds N..2N-1), on the three other data
sets and on the synthetic data configs/triplet.yaml is written for (``--synthetic-seeds`` seeds).

``--space-from FILE`` searches with the ``space`` of another config instead, to compare spaces on
the same splits; it writes its own section, whose body lists the space searched:

    .venv/bin/python -m benchmarks.real_search --space-from my_space.yaml --seeds 3 --search-seeds 3
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import Stamp, command_line, log, out_path, table, write_section
from benchmarks.real_data import CONFIG, DATASETS, run, spread, write_npz

# the readings of each search: label -> (objective.rank, objective.warm_start_margin)
READINGS: dict[str, tuple[str, float]] = {"best, margin 0": ("best", 0.0), "best (default)": ("best", 1.0),
                                          "mean, margin 1": ("mean", 1.0)}
FRESH_SEED = 10_000             # added to a picked trial's seed for its retrain: new initialisation and batches
RETRAINS = 5                    # fresh seeds per picked config: one retrain on 30 validation rows varies by ~0.03
REFERENCE_LR = 1e-3
REFERENCE_MARGIN = 0.2
SECTION = ("real_search", "Real data: defaults, reference recipe and a 24-trial search")
IRIS_SECTION = ("real_search_iris", "Real data: why the triplet defaults tie raw 1-NN on iris")
# changes to the shipped params tried on iris: slower or smaller fits, other miners, other batches
VARIANTS: tuple[dict[str, Any], ...] = (
    {}, {"lr": 5e-4}, {"hidden_dim": 32}, {"k": 8}, {"optimizer": "adamw", "weight_decay": 0.01},
    {"mining": "semi_hard", "lr": REFERENCE_LR},
)


def pml_semihard_loss(embeddings: Any, labels: Any, margin: float = REFERENCE_MARGIN) -> Any:
    """pytorch-metric-learning's semi-hard triplet margin loss on cosine similarity, for one batch.

    Mined (without gradient): every (a, p, n) with a positive pair (a, p), a negative n and a
    similarity gap ``s(a,p) - s(a,n)`` in ``(0, margin]``; loss ``relu(margin - gap)`` averaged over
    the non-zero ones (ThresholdReducer(low=0)); zero on the graph when nothing is mined."""
    import torch
    import torch.nn.functional as F

    emb = F.normalize(embeddings, dim=1)                             # (B, E)
    sim = emb @ emb.T                                                # (B, B)
    same = labels[:, None] == labels[None, :]
    pos = same & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    gap = sim[:, :, None] - sim[:, None, :]                          # (B, B, B): s(a,p) - s(a,n)
    with torch.no_grad():
        mined = pos[:, :, None] & ~same[:, None, :] & (gap > 0) & (gap <= margin)
    losses = torch.relu(margin - gap[mined])
    active = losses > 0
    return losses[active].mean() if bool(active.any()) else embeddings.sum() * 0


def shipped_params(path: Path) -> dict[str, Any]:
    """configs/triplet.yaml's params with ``data_dir`` set to ``path``."""
    from hpsearch.core.config import load_config

    return dict(load_config(CONFIG, [f"params.data_dir={path}"]).params)


def build(params: dict[str, Any], seed: int) -> Any:
    """The triplet model for run seed ``seed`` (its note on the batch composition silenced)."""
    from hpsearch import models

    with contextlib.redirect_stderr(io.StringIO()):
        return models.build("triplet", params, device="cpu", seed=seed)


def pml_reference(path: Path, seed: int, epochs: int) -> float:
    """val recall@1 of the reference recipe (:func:`pml_semihard_loss`, Adam at REFERENCE_LR) on
    the model's net, batches and split for run seed ``seed``, after ``epochs`` epochs."""
    model = build({**shipped_params(path), "lr": REFERENCE_LR}, seed)
    train = model.data.train
    for _ in range(epochs):
        model.net.train()
        for idx in model.sampler.epoch(model.generator):
            embeddings, _ = model.net(train.x[idx])
            loss = pml_semihard_loss(embeddings, train.y[idx])
            model.optimizer.zero_grad()
            loss.backward()
            model.optimizer.step()
    return model.evaluate()["val_recall_at_1"]


def search(path: Path, seed: int, storage: Path, space: dict[str, Any] | None = None,
           ranks: dict[str, tuple[str, float]] = READINGS,
           retrains: int = RETRAINS) -> tuple[float, dict[str, float], dict[str, dict[str, Any]]]:
    """A search with configs/triplet.yaml's budget and its space (or ``space``) on run seed
    ``seed``'s split: (the best trial's val recall@1 at its best epoch; per reading in ``ranks``,
    the config that search returns, retrained for the full epochs with ``retrains`` fresh seeds and
    read after the last epoch, the mean; per reading, that trial's searched values). Every reading
    reads the same search. The trial's own seed would replay its own curve, the very measurement it
    was picked on; fresh seeds measure the config, not its luck, as the references' means over run
    seeds do."""
    import hpsearch
    from hpsearch.api import best_of
    from hpsearch.results.report import build_table, read_run

    params = shipped_params(path)
    data_seed = build(params, seed).data_seed                       # the split real_data.run uses
    found = hpsearch.run(CONFIG, name=f"{path.stem}-seed{seed}", storage=str(storage), stream=io.StringIO(),
                         params={"data_dir": str(path), "data_seed": data_seed}, seed=seed, device="cpu",
                         **({"space": space} if space else {}))
    if found.best is None:
        return float("nan"), dict.fromkeys(ranks, float("nan")), {}
    record, searched = read_run(found.run_dir), found.config.space or {}
    retrained: dict[str, float] = {}
    values: dict[str, dict[str, Any]] = {}
    by_trial: dict[str, float] = {}
    for rank, (by, margin) in ranks.items():
        ranked = dataclasses.replace(record, rank=by, warm_start_margin=margin)
        best = best_of(ranked, build_table(ranked))
        if best is None:                       # no trial has a finite value under this ranking
            retrained[rank], values[rank] = float("nan"), {}
            continue
        if best.trial_id not in by_trial:     # fresh seeds: the trial's own would replay its own curve
            scores = []
            for k in range(retrains):
                full = {**best.config, "epochs": int(found.config.epochs),
                        "seed": int(best.config["seed"]) + FRESH_SEED + k}
                with contextlib.redirect_stdout(io.StringIO()):
                    scores.append(float(hpsearch.train(full)["final"]["val_recall_at_1"]))
            by_trial[best.trial_id] = statistics.fmean(scores)
        retrained[rank] = by_trial[best.trial_id]
        values[rank] = {k: best.config["params"][k] for k in searched}
    return float(found.best.row["objective_best"]), retrained, values


def mean(values: list[float]) -> float:
    """The mean; NaN for no values (a column with nothing measured)."""
    return statistics.fmean(values) if values else float("nan")


def describe(values: dict[str, Any]) -> str:
    """A best trial's searched values, short."""
    return ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items())


def dataset_row(path: Path, seeds: int, search_seeds: int, storage: Path, epochs: int,
                space: dict[str, Any] | None = None, retrains: int = RETRAINS) -> tuple[list[Any], list[str]]:
    """One data set's table row and the best trials' values, one line per searched split."""
    raw, shipped, pml, own = [], [], [], []
    for seed in range(seeds):
        base = run(path, seed, {})
        raw.append(base["raw"])
        shipped.append(base["model"])
        pml.append(pml_reference(path, seed, epochs))
        own.append(run(path, seed, {"mining": "semi_hard", "margin": REFERENCE_MARGIN, "lr": REFERENCE_LR})["model"])
        log(f"{path.stem} seed {seed}: raw {raw[-1]:.3f}, defaults {shipped[-1]:.3f}, "
            f"reference {pml[-1]:.3f}, model semi_hard {own[-1]:.3f}")
    best, notes = [], []
    retrained: dict[str, list[float]] = {rank: [] for rank in READINGS}
    for seed in range(search_seeds):
        b, again, values = search(path, seed, storage, space, retrains=retrains)
        best.append(b)
        for rank in READINGS:
            retrained[rank].append(again[rank])
        picks = "; ".join(f"{rank}: retrained {again[rank]:.3f}, {describe(values.get(rank, {}))}" for rank in READINGS)
        notes.append(f"{path.stem}, split {seed}: best trial {b:.3f}; {picks}")
        log(notes[-1])
    target = max(mean(pml[:search_seeds]), mean(own[:search_seeds]))

    def verdict(result: float) -> str:
        return "met" if result >= target else f"missed by {target - result:.3f}"

    row = [path.stem, spread(raw), spread(shipped), spread(pml), spread(own),
           f"{mean(pml[:search_seeds]):.3f} / {mean(own[:search_seeds]):.3f}", spread(best),
           *[f"{spread(retrained[rank])}: {verdict(mean(retrained[rank]))}" for rank in READINGS]]
    return row, notes


def diagnose(path: Path, seed: int, epochs: int) -> dict[str, float]:
    """The defaults on run seed ``seed``: val recall@1 after the last and at the best epoch, and
    recall@1 of the training rows' own embeddings (how far the fit went on them)."""
    from hpsearch.models.fit import fit
    from hpsearch.models.triplet.metrics import retrieval_metrics

    model = build(shipped_params(path), seed)
    history = fit(model, epochs)
    train = model.data.train
    val = [row["val_recall_at_1"] for row in history]
    return {"last": val[-1], "best": max(val), "best_epoch": float(val.index(max(val)) + 1),
            "train": retrieval_metrics(model.embed(train.x), train.y)["recall_at_1"]}


def iris_rows(path: Path, seeds: int, epochs: int) -> list[list[Any]]:
    """One row per run seed: the validation rows' 1-NN baselines and what the defaults do on them."""
    rows, values = [], []
    for seed in range(seeds):
        base = run(path, seed, {})
        d = diagnose(path, seed, epochs)
        verdict = "above" if d["last"] > base["raw"] else "equal" if d["last"] == base["raw"] else "below"
        rows.append([seed, f"{base['raw']:.3f}", f"{base['standardised']:.3f}", f"{d['last']:.3f}",
                     f"{d['best']:.3f} (epoch {d['best_epoch']:.0f})", f"{d['train']:.3f}", verdict])
        values.append((base["raw"], base["standardised"], d["last"], d["best"], d["train"]))
    means = [f"**{mean(list(column)):.3f}**" for column in zip(*values)]
    counts = " / ".join(str(sum(r[-1] == v for r in rows)) for v in ("above", "equal", "below"))
    return [*rows, ["mean", *means, f"{counts} (above / equal / below)"]]


def synthetic(changes: dict[str, Any], seeds: int, epochs: int) -> list[float]:
    """val recall@1 of configs/triplet.yaml as shipped (synthetic data), ``changes`` applied."""
    from hpsearch.core.config import load_config
    from hpsearch.models.fit import fit

    params = {**load_config(CONFIG).params, **changes}
    return [fit(build(params, seed), epochs)[-1]["val_recall_at_1"] for seed in range(seeds)]


COLUMNS = ("iris", "iris fresh", *(n for n in DATASETS if n != "iris"), "synthetic")


def variant_means(paths: dict[str, Path], changes: dict[str, Any], seeds: int, synthetic_seeds: int,
                  epochs: int) -> tuple[dict[str, float], dict[str, float], str]:
    """(raw 1-NN means, the changed defaults' means, above / equal / below raw on iris seeds
    0..N-1) per COLUMNS: iris on seeds 0..N-1 and N..2N-1, the other data sets on 0..N-1, the
    synthetic data (no raw baseline) on ``synthetic_seeds`` seeds."""
    seed_sets = {"iris": range(seeds), "iris fresh": range(seeds, 2 * seeds)}
    raw, model, count = {}, {}, ""
    for column in COLUMNS[:-1]:
        results = [run(paths[column.split()[0]], s, changes) for s in seed_sets.get(column, range(seeds))]
        raw[column] = mean([r["raw"] for r in results])
        model[column] = mean([r["model"] for r in results])
        if column == "iris":
            wins = sum(r["model"] > r["raw"] for r in results)
            ties = sum(r["model"] == r["raw"] for r in results)
            count = f"{wins} / {ties} / {len(results) - wins - ties}"
    raw["synthetic"] = float("nan")
    model["synthetic"] = mean(synthetic(changes, synthetic_seeds, epochs))
    return raw, model, count


def shortfalls(raw: dict[str, float], model: dict[str, float], shipped: dict[str, float]) -> str:
    """Where a change fails the bar for new defaults: above raw 1-NN on both iris seed sets, and on
    every other data set (the synthetic one included) at least the shipped defaults' mean."""
    misses = [f"{c} {model[c]:.3f} <= raw {raw[c]:.3f}" for c in ("iris", "iris fresh")
              if round(model[c], 3) <= round(raw[c], 3)]
    misses += [f"{c} {model[c] - shipped[c]:+.3f} vs defaults" for c in COLUMNS[2:]
               if round(model[c], 3) < round(shipped[c], 3)]
    return "; ".join(misses) or "holds"


def variant_rows(folder: Path, seeds: int, synthetic_seeds: int, epochs: int) -> list[list[Any]]:
    """A row for raw 1-NN and one for each of VARIANTS (the first: the shipped defaults), with
    where each falls short of the bar (:func:`shortfalls`)."""
    paths = {name: write_npz(name, folder) for name in DATASETS}
    rows, shipped = [], {}
    for changes in VARIANTS:
        raw, model, count = variant_means(paths, changes, seeds, synthetic_seeds, epochs)
        if not rows:
            shipped = model
            rows.append(["cosine 1-NN, raw", *(f"{raw[c]:.3f}" for c in COLUMNS[:-1]), "n/a", ""])
        cells = [f"{model[c]:.3f}" for c in COLUMNS]
        cells[0] += f" ({count})"
        verdict = "(the defaults)" if not changes else shortfalls(raw, model, shipped)
        rows.append([describe(changes) or "shipped defaults", *cells, verdict])
        log(f"variant {rows[-1]}")
    return rows


def iris_body(folder: Path, seeds: int, synthetic_seeds: int, epochs: int) -> str:
    """The iris section: the per-seed diagnosis and the variants."""
    per_seed = table(["run seed", "cosine 1-NN, raw", "cosine 1-NN, standardised", "defaults, last epoch",
                      "defaults, best epoch", "1-NN of the training rows' embeddings", "defaults vs raw"],
                     iris_rows(write_npz("iris", folder), seeds, epochs))
    others = [n for n in DATASETS if n != "iris"]
    variants = table(["params changed", f"iris, seeds 0-{seeds - 1} (above / equal / below raw)",
                      f"iris, fresh seeds {seeds}-{2 * seeds - 1}", *others,
                      f"synthetic (configs/triplet.yaml data), seeds 0-{synthetic_seeds - 1}",
                      "as new defaults (above raw on iris both times, >= defaults elsewhere)"],
                     variant_rows(folder, seeds, synthetic_seeds, epochs))
    return (f"iris: 150 rows x 4 features, 3 classes; each split trains on 90 rows (7 pk batches of 3 x 4 an "
            f"epoch) and scores 30 validation rows, so one row is 0.033. val_recall_at_1 after {epochs} epochs "
            f"unless said.\n\n" + per_seed + "\n\nChanges to the shipped params (val_recall_at_1, mean; the "
            f"other data sets on seeds 0-{seeds - 1}):\n\n" + variants)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20, help="run seeds 0..N-1 for raw 1-NN, defaults, references")
    parser.add_argument("--search-seeds", type=int, default=3, help="24-trial searches on the first N splits")
    parser.add_argument("--retrains", type=int, default=RETRAINS, help="fresh seeds each returned config is retrained with")
    parser.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated, from " + ", ".join(DATASETS))
    parser.add_argument("--out", help="markdown file for the section (default BENCHMARKS.md)")
    parser.add_argument("--print-only", action="store_true", help="print the table, write no file")
    parser.add_argument("--part", choices=("search", "iris"), default="search",
                        help="search: the main table; iris: the iris diagnosis and variants (own section)")
    parser.add_argument("--space-from", help="search with the space of this YAML instead (own section, to compare)")
    parser.add_argument("--synthetic-seeds", type=int, default=3, help="--part iris: seeds on the synthetic data")
    args = parser.parse_args(argv)
    if args.part == "search" and args.search_seeds > args.seeds:
        parser.error("--search-seeds must be at most --seeds (the searches reuse those splits)")
    import torch

    from hpsearch.core.config import load_config, read_config

    torch.set_num_threads(1)
    epochs = load_config(CONFIG).epochs
    stamp = Stamp(command_line("benchmarks.real_search", argv))
    if args.part == "iris":
        with tempfile.TemporaryDirectory() as tmp:
            body = iris_body(Path(tmp), args.seeds, args.synthetic_seeds, epochs)
        print("\n".join(stamp.lines()) + "\n\n" + body)
        if not args.print_only:
            write_section(*IRIS_SECTION, body, stamp, out_path(args.out))
        return 0
    space = read_config(Path(args.space_from))["space"] if args.space_from else None
    rows, notes = [], []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name in args.datasets.split(","):
            row, lines = dataset_row(write_npz(name, folder), args.seeds, args.search_seeds, folder / "runs", epochs,
                                     space, retrains=args.retrains)
            rows.append(row)
            notes += lines
    header = ["data set", "cosine 1-NN, raw", "triplet defaults", "reference (PML semi-hard recipe)",
              "reference with the model's semi_hard", f"references on searched splits 0-{args.search_seeds - 1}",
              "24-trial search, best trial",
              *[f"retrained, {rank}: >= better reference" for rank in READINGS]]
    body = (f"val_recall_at_1 after {epochs} epochs, mean (min-max) over run seeds 0-{args.seeds - 1} (the split, "
            f"initialisation and batches follow the seed); the searches on splits 0-{args.search_seeds - 1}. "
            f"Reference: lr {REFERENCE_LR:g}, margin {REFERENCE_MARGIN:g}, the shipped net and batches "
            f"(module docstring). \"best trial\" is the best epoch of the best of 24 trials, chosen on the "
            f"same validation rows; \"retrained, R\" is the config that search returns read with `objective.rank` "
            f"and `objective.warm_start_margin` as R says (best: its best epoch; mean: the mean of its last 5 "
            f"epochs; margin 1: the best warm-start point unless beaten by more than the noise), trained again for "
            f"{epochs} epochs with {args.retrains} fresh seeds, the mean (its own seed would replay the curve it "
            f"was picked on; one retrain on 30 validation rows varies by about 0.03), with "
            f"whether its mean reaches the better reference's on the searched splits.\n\n"
            + (f"Searched space (from {args.space_from}): {space}.\n\n" if space else "")
            + table(header, rows) + "\n\nBest trials:\n\n" + "\n".join(f"- {line}" for line in notes))
    print("\n".join(stamp.lines()) + "\n\n" + body)
    if not args.print_only:
        section = SECTION if space is None else (f"{SECTION[0]}_space", f"{SECTION[1]}: the space of {args.space_from}")
        write_section(*section, body, stamp, out_path(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
