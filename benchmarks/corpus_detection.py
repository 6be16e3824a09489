"""False stops and detection latency on the corpus of real learning curves, health rules side by side
with Ray's and Optuna's stock early stoppers, all applied offline to the same curves.

    .venv/bin/python -m benchmarks.corpus_detection       # writes its section of BENCHMARKS.md
    .venv/bin/python -m benchmarks.corpus_detection --corpus held_out.json.gz
                                   # curves recorded with record_real --first N: a section of its own

The corpus is benchmarks/data/real_curves.json.gz (record_real.py: the triplet model and two
user-style classifiers on four scikit-learn data sets). Each curve carries a label that reads the
curve alone (record_real.label): healthy, broken (nonfinite / diverged / flatline / collapsed, with
an onset epoch) or ambiguous. Every method sees each curve one epoch at a time and says when it
would stop it:

- health: ``hpsearch.core.health.assess`` on the history so far, ``HealthConfig()`` and the model's
  declared collapse metrics (what the trainable does every epoch); the same with the exploding rule
  before this corpus (``ExplodingRule(scale=0)``), and a table of other exploding settings;
- ``ray.tune.stopper.TrialPlateauStopper(metric="train_loss")`` with its defaults (std 0.01 over the
  last 4 results, grace period 4);
- ``optuna.pruners.ThresholdPruner`` on train_loss: ``upper=1.0`` as in its docstring, and
  ``upper=100`` (far above any start here: ln(10) for 10 classes, at most 2 + margin for triplets);
- ``optuna.pruners.PercentilePruner(25.0, n_startup_trials=5, n_warmup_steps=5, interval_steps=2)``
  on the objective: its docstring's example (warm-up 30 %, checks every 10 % of 100 steps) scaled
  to these 15-30 epoch curves; one in-memory study per model and data set, curves in corpus order.

A healthy curve stopped is a false stop. A broken curve is "within goal" when stopped no later than
its latency goal after onset (nonfinite: its onset epoch; diverged: 2 epochs; flatline: 3, 1 when
the batch losses are reported identical; collapsed: the collapse patience, 3); an earlier stop
counts as within goal.
"""

from __future__ import annotations

import argparse
import math
import statistics
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks import record_real
from benchmarks.common import ROOT, Stamp, command_line, out_path, table, write_section
from benchmarks.corpus_floor import floor_text
from benchmarks.corpus_replay import (
    Replayed,
    corpus,
    count_later,
    count_lost,
    count_stopped,
    late_moved_later,
    later_by_kind,
    within,
)
from benchmarks.detection import first_verdict
from hpsearch.core.health import ExplodingRule, FlatlineRule, HealthConfig
from hpsearch.core.numbers import as_float
from hpsearch.core.objective import direction

# --- the methods: each returns the 1-based epoch it stops a curve at (None: never) ---------------


def health_stop(item: Replayed) -> tuple[int | None, str]:
    verdict = first_verdict(item.rows, HealthConfig(), item.collapse, item.objective)
    return verdict.epoch, verdict.status


def plateau_stop(item: Replayed) -> int | None:
    import numpy as np
    from ray.tune.stopper import TrialPlateauStopper

    stopper = TrialPlateauStopper(metric="train_loss")
    with np.errstate(invalid="ignore"):                 # its np.std over a window holding inf
        for epoch, row in enumerate(item.rows, 1):
            if stopper("curve", row):
                return epoch
    return None


def optuna_stops(items: Sequence[Replayed], make: Callable[[], Any], metric: Callable[[Replayed], str],
                 per_study: bool) -> list[int | None]:
    """Feed every curve to an Optuna study as one trial (``trial.report`` per epoch, step = epoch - 1)
    and note when ``should_prune`` says stop. ``per_study``: one study per model and data set,
    trials in corpus order (pruners that compare trials); else a fresh study per curve."""
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    studies: dict[tuple[str, str], Any] = {}
    stops: list[int | None] = []
    for item in items:
        key = (item.curve["model"], item.curve["dataset"]) if per_study else ("", "")
        if key not in studies or not per_study:
            studies[key] = optuna.create_study(direction=direction(item.mode), pruner=make())
        study = studies[key]
        trial = study.ask()
        stop = None
        name = metric(item)
        for epoch, row in enumerate(item.rows, 1):
            value = as_float(row.get(name))
            trial.report(math.nan if value is None else value, epoch - 1)
            if trial.should_prune():
                stop = epoch
                break
        final = as_float(item.rows[-1].get(item.objective))
        if stop is not None:
            study.tell(trial, state=TrialState.PRUNED)
        elif final is None or not math.isfinite(final):
            study.tell(trial, state=TrialState.FAIL)
        else:
            study.tell(trial, final)
        stops.append(stop)
    return stops


def methods(items: Sequence[Replayed]) -> dict[str, list[int | None]]:
    from optuna.pruners import PercentilePruner, ThresholdPruner

    health = [health_stop(item)[0] for item in items]
    old_tol = HealthConfig(flatline=FlatlineRule(rel_tol=1e-4))
    return {
        "hpsearch health (HealthConfig())": health,
        "hpsearch health, exploding spike 10, scale 0, hold 1 (the exploding rule before this corpus)": stops(
            items, HealthConfig(exploding=ExplodingRule(spike=10, scale=0, hold=1))),
        "hpsearch health, flatline rel_tol 1e-4 (the default before this corpus)": [
            first_verdict(item.rows, old_tol, item.collapse, item.objective).epoch for item in items],
        "Ray TrialPlateauStopper(metric='train_loss')": [plateau_stop(item) for item in items],
        "Optuna ThresholdPruner(upper=1.0) on train_loss": optuna_stops(
            items, lambda: ThresholdPruner(upper=1.0), lambda _: "train_loss", per_study=False),
        "Optuna ThresholdPruner(upper=100) on train_loss": optuna_stops(
            items, lambda: ThresholdPruner(upper=100.0), lambda _: "train_loss", per_study=False),
        "Optuna PercentilePruner(25, 5 startup trials, warm-up 5, every 2) on the objective": optuna_stops(
            items, lambda: PercentilePruner(25.0, n_startup_trials=5, n_warmup_steps=5, interval_steps=2),
            lambda item: item.objective, per_study=True),
    }


def stops(items: Sequence[Replayed], config: HealthConfig) -> list[int | None]:
    """The epoch the health rules with ``config`` stop each curve at (None: never)."""
    return [first_verdict(item.rows, config, item.collapse, item.objective).epoch for item in items]


# Settings of the exploding rule measured against each other (ExplodingRule's fields; the default
# first). ``trained`` 1e12: the level test without its exception for a loss that fell 40x first.
EXPLODING_VARIANTS = {
    "spike 30, scale 2, trained 40, trained_patience 3, hold 2 (default)": ExplodingRule(),
    "hold 1 (the rule before hold)": ExplodingRule(hold=1),
    "hold 3": ExplodingRule(hold=3),
    "spike 10 (the limit before 2026-12-07 12:00 UTC)": ExplodingRule(spike=10),
    "spike 10, scale 0, hold 1 (no level test: the rule before this corpus)": ExplodingRule(spike=10, scale=0, hold=1),
    "spike 15": ExplodingRule(spike=15),
    "spike 20": ExplodingRule(spike=20),
    "spike 50": ExplodingRule(spike=50),
    "spike 100": ExplodingRule(spike=100),
    "spike 30, factor 30 (spike and level limit together)": ExplodingRule(factor=30),
    "scale 1.5": ExplodingRule(scale=1.5),
    "scale 3": ExplodingRule(scale=3),
    "scale 5": ExplodingRule(scale=5),
    "trained 10": ExplodingRule(trained=10),
    "trained 1000": ExplodingRule(trained=1000),
    "trained 1e12 (no exception)": ExplodingRule(trained=1e12),
    "trained_patience 2 (the rule before, but for its spike test)": ExplodingRule(trained_patience=2),
    "trained_patience 4": ExplodingRule(trained_patience=4),
    "rate 1.5 (x2.5 per epoch)": ExplodingRule(rate=1.5),
    "patience 3": ExplodingRule(patience=3),
}


def exploding_variants(items: Sequence[Replayed], default: Sequence[int | None]) -> str:
    """The health rules with each exploding setting: healthy curves stopped, broken curves within
    goal, and broken curves stopped later than with the default."""
    healthy = sum(item.label.status == "healthy" for item in items)
    rows = []
    for name, rule in EXPLODING_VARIANTS.items():
        got = default if rule == ExplodingRule() else stops(items, HealthConfig(exploding=rule))
        false = sum(stop is not None for item, stop in zip(items, got) if item.label.status == "healthy")
        delayed = count_later(items, default, got)
        columns = []
        for kind in record_real.KINDS:
            chosen = [(item, stop) for item, stop in zip(items, got) if item.label.kind == kind]
            hit = sum(within(item, stop) for item, stop in chosen)
            columns.append(f"{hit} / {len(chosen)}")
        rows.append([name, f"{false} of {healthy}", *columns, delayed])
    return table(["exploding setting", "healthy curves stopped"]
                 + [f"{kind} within goal" for kind in record_real.KINDS]
                 + ["broken curves stopped later than the default"], rows)


# --- the tables ---------------------------------------------------------------------------------


def caught(items: Sequence[Replayed], stops: Sequence[int | None], kind: str) -> str:
    """``within goal / curves`` and the epochs after onset (median, max) for one broken kind."""
    chosen = [(item, stop) for item, stop in zip(items, stops) if item.label.kind == kind]
    if not chosen:
        return "-"
    hits = sum(within(item, stop) for item, stop in chosen)
    after = [stop - item.label.onset for item, stop in chosen if stop is not None]
    missed = sum(stop is None for _, stop in chosen)
    latency = f"; after onset median {statistics.median(after):g}, max {max(after)}" if after else ""
    return f"{hits} / {len(chosen)}{latency}" + (f"; never stopped {missed}" if missed else "")


def summary(items: Sequence[Replayed], results: Mapping[str, list[int | None]]) -> str:
    healthy = sum(item.label.status == "healthy" for item in items)
    header = ["method", f"healthy curves stopped (of {healthy})"] + \
        [f"{kind}: within goal / curves" for kind in record_real.KINDS] + ["ambiguous stopped"]
    rows = []
    ambiguous = sum(item.label.status == "ambiguous" for item in items)
    for name, stops in results.items():
        false = sum(stop is not None for item, stop in zip(items, stops) if item.label.status == "healthy")
        amb = sum(stop is not None for item, stop in zip(items, stops) if item.label.status == "ambiguous")
        rows.append([name, f"{false} ({false / healthy:.1%})" if healthy else "-"]
                    + [caught(items, stops, kind) for kind in record_real.KINDS] + [f"{amb} of {ambiguous}"])
    return table(header, rows)


def per_rule(items: Sequence[Replayed]) -> str:
    """Which health verdict stopped which label, and when (epochs after onset)."""
    counts: dict[tuple[str, str], list[int]] = {}
    for item in items:
        epoch, status = health_stop(item)
        key = (item.label.kind or item.label.status, status)
        counts.setdefault(key, []).append(-1 if epoch is None or item.label.onset is None
                                          else epoch - item.label.onset)
    rows = []
    for (lab, status), after in sorted(counts.items()):
        known = [a for a in after if a >= 0 or status != "ok"]
        text = "-" if status == "ok" or lab in ("healthy", "ambiguous") else \
            f"{statistics.median(known):g} / {max(known)}"
        rows.append([lab, status, len(after), text])
    return table(["label", "health verdict", "curves", "epochs after onset (median / max)"], rows)


def evidence(items: Sequence[Replayed], stops: Sequence[int | None], limit: int = 12) -> list[str]:
    """One line per healthy curve the health rules stop and per broken curve caught late or never:
    broken curves first, then healthy ones stopped by a rule other than exploding, then the rest."""
    lines: list[tuple[int, str]] = []
    for item, stop in zip(items, stops):
        lab = item.label
        bad = (lab.status == "healthy" and stop is not None) or \
            (lab.status == "broken" and not within(item, stop))
        if bad:
            _, status = health_stop(item)
            losses = ", ".join(f"{r.get('train_loss', math.nan):.4g}" for r in item.rows)
            rank = 0 if lab.status == "broken" else (1 if status != "exploding" else 2)
            lines.append((rank, f"- {item.curve['model']} {item.curve['dataset']} seed {item.curve['seed']} "
                                f"{item.curve['params']}: labelled {lab.kind or lab.status} (onset {lab.onset}); "
                                f"health {status} at {stop}; train_loss {losses}"))
    ordered = [line for _, line in sorted(lines, key=lambda pair: pair[0])]
    return ordered[:limit] + ([f"- ... and {len(ordered) - limit} more"] if len(ordered) > limit else [])


def targets(items: Sequence[Replayed], stops: Sequence[int | None]) -> str:
    """The health rules' goals against what they do on the corpus."""
    healthy = [stop for item, stop in zip(items, stops) if item.label.status == "healthy"]
    false = sum(stop is not None for stop in healthy)
    rows = [["0 healthy curves stopped", f"{false} of {len(healthy)}", "met" if not false else "missed"]]
    goals = {"nonfinite": "NaN/inf stopped in its onset epoch", "diverged": "explosion <= 2 epochs after onset",
             "flatline": "flatline <= 3 epochs (<= 1 with identical batch losses)",
             "collapsed": "collapse <= patience (3) epochs"}
    for kind, text in goals.items():
        chosen = [(item, stop) for item, stop in zip(items, stops) if item.label.kind == kind]
        hits = sum(within(item, stop) for item, stop in chosen)
        rows.append([text, f"{hits} of {len(chosen)}", "met" if hits == len(chosen) else "missed"])
    return table(["goal", "on the corpus", "status"], rows)


def shown(path: str) -> str:
    """A corpus path as the section shows it: relative to the repository when inside it."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else str(resolved)


def about_text(path: str, data: Mapping[str, Any], items: Sequence[Replayed]) -> str:
    """What the corpus holds: curves per model and data set, how it was recorded, its labels."""
    groups = Counter(f"{item.curve['model']} on {item.curve['dataset']}" for item in items)
    labels = Counter(item.label.kind or item.label.status for item in items)
    return (f"Corpus: `{shown(path)}`, {len(items)} curves ({', '.join(f'{k} {v}' for k, v in groups.items())}), "
            f"{record_real.recorded_text(data)}. Labels (record_real.label, which reads the curve alone): "
            + ", ".join(f"{k} {v}" for k, v in sorted(labels.items())) + "; ambiguous curves count in neither column.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="markdown file to write the section into (default BENCHMARKS.md)")
    parser.add_argument("--corpus", default=str(record_real.CORPUS), help="the corpus file (default: %(default)s)")
    args = parser.parse_args(argv)
    stamp = Stamp(command_line("benchmarks.corpus_detection", argv))
    data = record_real.load(args.corpus)
    items = corpus(data)
    results = methods(items)
    health = results["hpsearch health (HealthConfig())"]
    before = results["hpsearch health, exploding spike 10, scale 0, hold 1 (the exploding rule before this corpus)"]
    patience2 = stops(items, HealthConfig(exploding=ExplodingRule(trained_patience=2, hold=1)))
    hold1 = stops(items, HealthConfig(exploding=ExplodingRule(hold=1)))
    about = about_text(args.corpus, data, items)
    if Path(args.corpus).resolve() != Path(record_real.CORPUS).resolve():
        body = [about + " Configs drawn from other seeds than the shipped corpus's (`--first`): no rule "
                "or setting was chosen on these curves.", "", targets(items, health), "",
                summary(items, results), "", exploding_variants(items, health), "", floor_text(items, health), "",
                "Healthy curves stopped and broken curves stopped late or never:", "",
                *(evidence(items, health) or ["- none"])]
        write_section("corpus-detection-held-out", "Health rules on held-out real learning curves",
                      "\n".join(body), stamp, out_path(args.out))
        print("\n".join(body))
        return 0
    body = [
        about,
        "",
        targets(items, health),
        "",
        summary(items, results),
        "",
        "What the corpus taught (search/core/health.py, each with its teaching curve in "
        "tests/search/test_health.py): the flatline rule stopped healthy curves four ways, all fixed "
        "scale-free: (1) a loss driven to float32 resolution (1e-7 of its start) stops changing, and so do "
        "its batch losses and gradient; a loss at or below rel_tol x its first value now counts as "
        "converged, like an exact 0; (2) a full-batch learner or a schedule's tail moves its loss by 1e-5 to "
        "1e-4 a epoch, so rel_tol is now 1e-5 (every stuck loss here repeats to six digits); (3) identical "
        "batch losses need 3 or more batches (one batch has no spread, two meet by chance), or, when the "
        "model does not report its batch count, the epoch loss repeated as well; (4) a zero gradient must "
        "last two epochs (after one, Adam's momentum still moves the weights). The rules as of commit "
        "4a559de stopped 30 of these healthy curves as flatline and 75 as exploding (one-off replay of the "
        "old health.py on the same labels). The exploding rule then also came to need the loss to have left "
        "the level it started at (ExplodingRule.scale 2, trained 40): above twice its first value, or "
        "anywhere once it had fallen to 1/40 of it. Without that test (scale 0, spike limit 10) the rules "
        f"stop {count_stopped(items, before)} healthy curves; with it they stopped 65, and with the spike "
        "limit (a loss above ExplodingRule.spike x its best) at 30, where it was 10 (shared with the level "
        "limit, factor), 47, every broken curve that was within its latency goal still within it (replays "
        "of the rules of then, 2026-12-07 12:00 UTC). Now a trained loss (one that had fallen to 1/40 of its "
        "first value) climbing back needs ExplodingRule.trained_patience 3 epochs of growth, where it "
        "needed 2, until it is above twice its first value, and a spike counts only above twice the first "
        "value (it counted above the first value after such a fall): "
        f"{count_stopped(items, hold1)} healthy curves stopped, against {count_stopped(items, patience2)} with "
        "the new spike test and 2 epochs, and 47 with the rule before (a one-off replay of commit c866615's "
        "health.py on the same labels); broken curves stopped later than with 2: "
        f"{count_later(items, patience2, hold1)}. Since 2026-12-07 22:30 UTC the spike and growth tests "
        "fire only once the loss has been above twice its first value for ExplodingRule.hold 2 epochs in "
        "a row, or at the end of three epochs of growth (a jump above it for one epoch that falls back is "
        "spared; the goal allows an explosion 2 epochs after its onset, and the rule used one): "
        f"{count_stopped(items, health)} healthy curves stopped, against {count_stopped(items, hold1)} with "
        f"hold 1; broken curves stopped later: {later_by_kind(items, hold1, health)}, of which beyond a "
        f"latency goal they were within before: {count_lost(items, hold1, health)}; {late_moved_later(items, hold1, health)}. "
        "The healthy curves it still stops are loss spikes of 30x "
        "to 1000x, or two epochs of doubling, that stay above twice their first value for two epochs or "
        "more, reach it at the end of three epochs of growth, or climb back after a 40x fall, and "
        "recover, mostly from warm-up into a large lr or Adam at lr >= 0.1; "
        "within the 2 epochs the goal allows they look like the divergences it catches, so the "
        "0-false-stop goal stays missed there, and tests/benchmarks/test_real_corpus.py holds the count. "
        "Other settings of the rule, measured the same way: a larger scale spares more healthy curves but "
        "stops broken ones later; with trained_patience 3, a larger trained (a fall of 1000x, or no exception) "
        "spares no more (the table), and the exception keeps the divergences from a trained loss in "
        "tests/search/test_health.py (\"x3 growth after a 40x fall\", \"divergence from a converged point\") "
        "caught; no broken curve of this corpus needs that exception (none is stopped later without it):",
        "",
        exploding_variants(items, health),
        "",
        floor_text(items, health),
        "",
        "Health verdicts per label:",
        "",
        per_rule(items),
        "",
        "Health rules: healthy curves stopped and broken curves stopped late or never:",
        "",
        *(evidence(items, health) or ["- none"]),
    ]
    write_section("corpus-detection", "Health rules on real learning curves", "\n".join(body), stamp,
                  out_path(args.out))
    print("\n".join(body))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
