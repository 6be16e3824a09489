"""Detection latency: the epoch each health verdict fires, against the earliest epoch it could.

    .venv/bin/python -m benchmarks.detection            # writes its section of BENCHMARKS.md

Part 1 feeds planted curves (a constant loss, a loss clamped at a floor, NaN at epoch k, x3 growth,
a one-epoch spike, slow improvers, ...) through what a search does every epoch: the trainable's
verdict (``hpsearch.core.health.assess`` on the history so far, default thresholds) and the real
scheduler (``hpsearch.tune.scheduler.HealthASHA``), and records the epoch the trial is stopped.

Part 2 runs the same per-epoch verdicts over every recorded curve (benchmarks/data, see
record_curves.py). Each curve is labelled by fixed criteria that do not use the health rules
(benchmarks.curves.label): ``healthy`` (finite, the loss fell, it moved), ``nonfinite``,
``diverged``, ``flat``, ``collapsed``, or ``other`` (finite, not learning, not broken). A healthy
curve that the rules stop is a false prune.

"Epochs after onset" is the firing epoch minus the first epoch that shows the symptom (0 = the
epoch it appears). "Earliest" is the first epoch at which the symptom can be told apart from a
healthy curve (one equal value is not yet a flat line; one rise is not yet a growth).
"""

from __future__ import annotations

import argparse
import math
import types
from collections.abc import Callable
from dataclasses import dataclass

from benchmarks.common import Stamp, command_line, out_path, table, write_section
from hpsearch.core.health import HealthConfig, Verdict, assess

EPOCHS = 12
OBJECTIVE = "val_objective"


def healthy(epoch: int) -> float:
    """A loss that learns: 1.0 falling 15% a epoch, with a small wobble."""
    return 0.85 ** (epoch - 1) * (1 + 0.01 * math.sin(epoch))


def row(loss: float, spread: float | None = None, grad: float = 1.0, objective: float | None = None,
        **extra: float) -> dict[str, float]:
    out = {"train_loss": loss, "train_grad_norm": grad,
           OBJECTIVE: objective if objective is not None else (0.5 if not math.isfinite(loss) else 1 / (1 + loss))}
    if spread is not None:
        out["train_batch_loss_std"] = spread
    out.update(extra)
    return out


@dataclass(frozen=True)
class Case:
    name: str
    rows: list[dict[str, float]]
    expected: str              # the verdict that should fire ("ok": none)
    onset: int | None = None   # first epoch showing the symptom
    earliest: int | None = None  # first epoch the symptom can be told from a healthy curve
    limit: int | None = None   # target: fire at most this many epochs after onset (None: no target)
    target: str = ""
    collapse: dict[str, float] | None = None


def _curve(fn: Callable[[int], dict[str, float]]) -> list[dict[str, float]]:
    return [fn(e) for e in range(1, EPOCHS + 1)]


def planted() -> list[Case]:
    spread = 0.1  # batch-loss spread of a learning model, relative to its loss
    b3 = healthy(3)
    return [
        Case("constant 0.1 from epoch 1, no batch spread reported", _curve(lambda e: row(0.1)),
             "flatline", 1, 2, 3, "flatline <= 3"),
        Case("constant 0.1 from epoch 1, identical batch losses (spread 0)",
             _curve(lambda e: row(0.1, spread=0.0)), "flatline", 1, 1, 1, "flatline <= 1 with spread"),
        Case("stuck after learning: constant from epoch 5, no spread",
             _curve(lambda e: row(healthy(min(e, 5)))), "flatline", 5, 6, 3, "flatline <= 3"),
        Case("stuck after learning: constant from epoch 5, batch spread reported",
             _curve(lambda e: row(healthy(min(e, 5)), spread=spread * healthy(min(e, 5)))),
             "flatline", 5, 6, 3, "flatline <= 3"),
        Case("clamped at a floor 0.05 from epoch 5, no spread",
             _curve(lambda e: row(max(0.5 * 0.5 ** (e - 1), 0.05))), "flatline", 5, 6, 3, "flatline <= 3"),
        Case("clamped at a floor 0.05 from epoch 5, every batch clamped (spread 0)",
             _curve(lambda e: row(max(0.5 * 0.5 ** (e - 1), 0.05),
                                  spread=0.0 if e >= 5 else spread * 0.5 ** e)),
             "flatline", 5, 5, 1, "flatline <= 1 with spread"),
        Case("no gradient (grad norm 0) from epoch 1", _curve(lambda e: row(0.1, grad=0.0)),
             "flatline", 1, 1, 1, "flatline <= 1"),
        Case("NaN train_loss from epoch 4",
             _curve(lambda e: row(healthy(e) if e < 4 else math.nan)), "nonfinite", 4, 4, 0, "NaN in its epoch"),
        Case("NaN in one component (train_loss_parse) at epoch 4",
             _curve(lambda e: row(healthy(e), train_loss_parse=healthy(e) if e != 4 else math.nan)),
             "nonfinite", 4, 4, 0, "NaN in its epoch"),
        Case("NaN objective at epoch 4, losses finite",
             _curve(lambda e: row(healthy(e), objective=math.nan if e == 4 else 0.5)),
             "nonfinite", 4, 4, 0, "NaN in its epoch"),
        Case("+inf train_loss at epoch 4",
             _curve(lambda e: row(healthy(e) if e < 4 else math.inf)), "nonfinite", 4, 4, 0, "NaN in its epoch"),
        Case("x3 growth per epoch from epoch 4",
             _curve(lambda e: row(healthy(e) if e < 4 else b3 * 3.0 ** (e - 3), spread=0.05)),
             "exploding", 4, 5, 2, "explosion <= 2"),
        Case("x3 growth from epoch 2 (early divergence)",
             _curve(lambda e: row(3.0 ** (e - 1))), "exploding", 2, 3, 2, "explosion <= 2"),
        Case("x1.5 growth per epoch from epoch 4 (slow divergence)",
             _curve(lambda e: row(healthy(e) if e < 4 else b3 * 1.5 ** (e - 3))), "exploding", 4, 5),
        Case("one-epoch spike x5 at epoch 5, then back on track",
             _curve(lambda e: row(healthy(e) * (5.0 if e == 5 else 1.0), spread=0.05)), "ok"),
        Case("slow improver: -0.5% per epoch", _curve(lambda e: row(0.995 ** e, spread=0.02)), "ok"),
        Case("slow improver: -0.05% per epoch", _curve(lambda e: row(0.9995 ** e, spread=0.02)), "ok"),
        Case("collapsed embeddings (train_emb_std 1e-4 from epoch 3)",
             _curve(lambda e: row(healthy(e), spread=0.05, train_emb_std=0.3 if e < 3 else 1e-4)),
             "collapsed", 3, 3, None, collapse={"train_emb_std": 1e-3}),
    ]


def first_verdict(rows: list[dict], config: HealthConfig | None = None,
                  collapse: dict[str, float] | None = None, objective: str = OBJECTIVE) -> Verdict:
    """What the trainable does: a verdict after every epoch on the history so far; the first that is
    not ok (or ok)."""
    for epoch in range(1, len(rows) + 1):
        verdict = assess(rows[:epoch], config, collapse, objective=objective)
        if not verdict.ok:
            return verdict
    return Verdict("ok")


def scheduler_stop(rows: list[dict], config: HealthConfig | None = None,
                   collapse: dict[str, float] | None = None, objective: str = OBJECTIVE) -> int | None:
    """The epoch at which the real scheduler stops the trial (None: it runs to the end)."""
    from hpsearch.tune.scheduler import HealthASHA

    scheduler = HealthASHA(metric=objective, mode="max", max_t=len(rows) + 1, grace_period=1)
    trial = types.SimpleNamespace(trial_id="planted")
    for epoch in range(1, len(rows) + 1):
        verdict = assess(rows[:epoch], config, collapse, objective=objective)
        result = {**rows[epoch - 1], "training_iteration": epoch, "health": verdict.status,
                  "health_reason": verdict.reason}
        if scheduler.on_trial_result(None, trial, result) == "STOP":
            return epoch
    return None


def planted_table() -> tuple[str, list[dict]]:
    results = []
    for case in planted():
        verdict = first_verdict(case.rows, collapse=case.collapse)
        stop = scheduler_stop(case.rows, collapse=case.collapse)
        after = None if verdict.epoch is None or case.onset is None else verdict.epoch - case.onset
        ok = verdict.status == case.expected and (case.limit is None or (after is not None and after <= case.limit))
        results.append({"case": case, "verdict": verdict, "stop": stop, "after": after, "met": ok})
    rows = []
    for r in results:
        c, v = r["case"], r["verdict"]
        rows.append([c.name, c.expected, v.status, v.epoch or "-", r["stop"] or "-", c.onset or "-",
                     c.earliest or "-", "-" if r["after"] is None else r["after"],
                     c.target or "(no target)", "met" if r["met"] else "MISSED"])
    header = ["planted curve", "expected", "verdict", "fires at epoch", "scheduler stops at", "onset",
              "earliest possible", "epochs after onset", "target", ""]
    return table(header, rows), results


def first_nonfinite(rows: list[dict], metric: str) -> int:
    for epoch, row in enumerate(rows, 1):
        for key, value in row.items():
            if (key == metric or key.startswith(("train_loss", "val_loss"))) and isinstance(value, float) \
                    and not math.isfinite(value):
                return epoch
    return len(rows) + 1


def _spread(values: list[int]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    return f"{ordered[0]} / {ordered[len(ordered) // 2]} / {ordered[-1]}"


def recorded_table(paths: list) -> tuple[str, dict]:
    """Per-epoch verdicts over every recorded curve, against the fixed labels."""
    from benchmarks.curves import LABELS, CurveSet

    lines, totals = [], {"false_prunes": 0, "healthy": 0}
    for path in paths:
        curves = CurveSet.load(path)
        counts: dict[str, list[int]] = {label: [0, 0] for label in LABELS}  # label -> [curves, stopped]
        fired: dict[str, dict[str, int]] = {label: {} for label in LABELS}
        epochs: dict[str, list[int]] = {label: [] for label in LABELS}
        nan_delay: list[int] = []
        false: list[str] = []
        for i in range(len(curves)):
            label = curves.label(i)
            verdict = first_verdict(curves.rows(i), curves.health, curves.collapse, curves.metric)
            counts[label][0] += 1
            if not verdict.ok:
                counts[label][1] += 1
                fired[label][verdict.status] = fired[label].get(verdict.status, 0) + 1
                epochs[label].append(verdict.epoch)
                if label == "healthy":
                    false.append(f"config {i} ({curves.describe(i)}): {verdict.reason}")
                if label == "nonfinite":
                    nan_delay.append(verdict.epoch - first_nonfinite(curves.rows(i), curves.metric))
        totals["false_prunes"] += counts["healthy"][1]
        totals["healthy"] += counts["healthy"][0]
        rows = [[label, n, stopped, ", ".join(f"{k} {v}" for k, v in sorted(fired[label].items())) or "-",
                 _spread(epochs[label])] for label, (n, stopped) in counts.items() if n]
        lines.append(f"**{curves.model}** ({len(curves)} recorded curves, {curves.epochs} epochs each; "
                     f"objective {curves.metric}):\n")
        lines.append(table(["label (fixed criteria)", "curves", "stopped by health", "verdicts",
                            "stopped at epoch (min / median / max)"], rows))
        if nan_delay:
            lines.append(f"\nNon-finite curves: stopped {max(nan_delay)} epochs after the first non-finite value "
                         f"at most ({sum(1 for d in nan_delay if d == 0)} of {len(nan_delay)} in that very epoch).")
        if false:
            lines.append("\nHealthy curves stopped (false prunes):\n")
            lines += [f"- {f}" for f in false[:20]]
        lines.append("")
    return "\n".join(lines), totals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="markdown file to write the section into (default BENCHMARKS.md)")
    parser.add_argument("--curves", nargs="*", help="recorded curve files (default: benchmarks/data/curves_*)")
    args = parser.parse_args(argv)
    from benchmarks.curves import default_paths

    stamp = Stamp(command_line("benchmarks.detection", argv))
    planted_md, results = planted_table()
    paths = args.curves if args.curves is not None else default_paths()
    recorded_md, totals = recorded_table(paths) if paths else ("(no recorded curves found)", {})
    missed = [r["case"].name for r in results if not r["met"]]
    body = [
        "Default health thresholds (`hpsearch.core.health.HealthConfig()`); a verdict is computed after every "
        "epoch on the history so far, as the trainable does, and fed to `HealthASHA`.",
        "",
        planted_md,
        "",
        f"Planted cases meeting their expectation: {len(results) - len(missed)} of {len(results)}"
        + (f"; missed: {'; '.join(missed)}" if missed else "") + ".",
        "",
        "### Recorded curves",
        "",
        recorded_md,
    ]
    if totals:
        body.append(f"False prunes (healthy-labelled curves stopped by a health verdict): "
                    f"**{totals['false_prunes']}** of {totals['healthy']} (target 0).")
    write_section("detection", "Detection latency", "\n".join(body), stamp, out_path(args.out))
    print("\n".join(body))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
