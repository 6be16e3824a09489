"""The health rules held against the shipped corpus of real learning curves
(benchmarks/data/real_curves.json.gz, recorded by benchmarks/record_real.py): every curve is fed
epoch by epoch through ``hpsearch.core.health.assess`` with the shipped defaults and its model's
declared collapse metrics, and compared with its label, which reads the curve alone.

Goals: no healthy curve stopped; a broken one caught within its latency goal after its onset
(nonfinite in its onset epoch, an explosion <= 2 epochs after, a flatline <= 3 epochs (<= 1 when
the batch losses are reported identical), a collapse <= the collapse patience).
"""

from __future__ import annotations

import math
from collections import Counter
from functools import lru_cache

import pytest

from benchmarks import record_real
from benchmarks.detection import first_verdict
from hpsearch.core.health import ExplodingRule, HealthConfig, Verdict

LATENCY = {"nonfinite": 0, "diverged": 2, "flatline": 3, "collapsed": HealthConfig().collapsed.patience}


@lru_cache(maxsize=1)
def replayed() -> tuple[tuple[dict, record_real.Label, list[dict], Verdict], ...]:
    """(curve, label, rows, first verdict) for every curve of the corpus."""
    corpus = record_real.load()
    out = []
    for curve in corpus["curves"]:
        model = corpus["models"][curve["model"]]
        rows = record_real.rows(curve, model)
        out.append((curve, record_real.label_curve(curve, model), rows,
                    first_verdict(rows, HealthConfig(), model["collapse"], model["objective"][0])))
    return tuple(out)


def goal(label: record_real.Label, rows: list[dict]) -> int:
    """Epochs after onset within which the verdict must fire."""
    if label.kind == "flatline":
        row = rows[label.onset - 1]
        if row.get("train_batch_loss_std") == 0 and row.get("train_batches", 2) > 1:
            return 1
    return LATENCY[label.kind]


def describe(curve: dict, label: record_real.Label, verdict: Verdict) -> str:
    return (f"{curve['model']} {curve['dataset']} seed {curve['seed']} {curve['params']}: labelled "
            f"{label.kind or label.status} (onset {label.onset}; {label.why}); verdict {verdict.status} at "
            f"{verdict.epoch}: {verdict.reason}")


def test_corpus_is_large_and_varied() -> None:
    labels = Counter(label.kind or label.status for _, label, _, _ in replayed())
    assert labels["healthy"] >= 1000, labels
    assert all(labels[kind] >= 10 for kind in record_real.KINDS), labels
    models = Counter((curve["model"], curve["dataset"]) for curve, *_ in replayed())
    assert len(models) == len(record_real.PER), models


def stopped_healthy(status: str) -> list[str]:
    return [describe(c, lab, v) for c, lab, _, v in replayed() if lab.status == "healthy" and v.status == status]


@pytest.mark.parametrize("status", ["nonfinite", "collapsed"])
def test_no_healthy_curve_is_stopped(status: str) -> None:
    stopped = stopped_healthy(status)
    assert stopped == [], "\n".join(stopped[:10])


# Goals the corpus shows missed (BENCHMARKS.md, "Health rules on real learning curves", with the
# curves): the counts below are what the shipped rules do on the shipped corpus; a change that
# stops more healthy curves, or catches a divergence later, fails here.
MISSED = {
    # loss spikes of 30-1000x their best, or two epochs of doubling, that recover (warm-up bumps,
    # large-lr Adam on iris), each above twice its first value: the exploding rule cannot tell them
    # from a divergence in the 2 epochs it has (76 before ExplodingRule.scale; a spike back to at
    # most twice the start is no longer stopped; 62 before ExplodingRule.spike 30, which spares
    # spikes of 10-30x their best; 44 before ExplodingRule.trained_patience 3, which spares a trained
    # loss bouncing back for two epochs to below twice its start; 32 before ExplodingRule.hold 2,
    # which spares a loss above twice its start for one epoch, unless it got there by a long climb)
    "healthy stopped as exploding": 23,
    # learned in the first epochs, then stuck at a loss constant to 5-6 digits (one at lr x 0.01)
    "healthy stopped as flatline": 3,
    # a loss that doubled, fell back and wobbled for 4 epochs before blowing up: caught 10 and 5 epochs
    # after (4 and 5 with ExplodingRule.hold 1, 4 and 4 with ExplodingRule.spike 10)
    "diverged caught late": 2,
}


def test_healthy_curves_stopped_are_the_known_few() -> None:
    exploding, flatline = stopped_healthy("exploding"), stopped_healthy("flatline")
    assert len(exploding) <= MISSED["healthy stopped as exploding"], "\n".join(exploding)
    assert len(flatline) <= MISSED["healthy stopped as flatline"], "\n".join(flatline)


@pytest.mark.parametrize("kind", record_real.KINDS)
def test_broken_curves_are_caught_within_their_goal(kind: str) -> None:
    late, never = [], []
    for curve, label, rows, verdict in replayed():
        if label.kind != kind:
            continue
        if verdict.ok:
            never.append(describe(curve, label, verdict))
        elif verdict.epoch - label.onset > goal(label, rows):
            late.append(describe(curve, label, verdict))
    assert never == [], f"{len(never)} never caught:\n" + "\n".join(never[:10])
    allowed = MISSED["diverged caught late"] if kind == "diverged" else 0
    assert len(late) <= allowed, f"{len(late)} late:\n" + "\n".join(late[:10])


def against(before: ExplodingRule, after: ExplodingRule) -> tuple[int, list[str], list[str], list[str]]:
    """Two exploding settings on the corpus: healthy curves ``after`` spares that ``before`` stopped,
    healthy curves ``after`` stops that ``before`` did not, broken curves ``after`` stops later, and
    broken curves ``before`` stopped within their latency goal that ``after`` does not."""
    corpus = record_real.load()
    spared, stopped, later, lost = 0, [], [], []
    for curve, label, rows, _ in replayed():
        model = corpus["models"][curve["model"]]
        old, new = (first_verdict(rows, HealthConfig(exploding=rule), model["collapse"], model["objective"][0])
                    for rule in (before, after))
        if label.status == "healthy":
            spared += new.ok and not old.ok
            if old.ok and not new.ok:
                stopped.append(describe(curve, label, new))
        if label.status == "broken" and not old.ok and (new.ok or new.epoch > old.epoch):
            later.append(describe(curve, label, new))
            if old.epoch - label.onset <= goal(label, rows) and (new.ok or new.epoch - label.onset > goal(label, rows)):
                lost.append(describe(curve, label, new))
    return spared, stopped, later, lost


# Each setting measured against the value before it, with the settings that came later at their
# earlier values (ExplodingRule.hold 1 was the rule then).
@pytest.mark.parametrize("before", [ExplodingRule(scale=0, hold=1), ExplodingRule(trained_patience=2, hold=1)],
                         ids=["no level test", "trained patience 2"])
def test_an_exploding_setting_spares_healthy_curves_and_delays_no_broken_one(before: ExplodingRule) -> None:
    """ExplodingRule.scale (a spike or a climb must rise above twice the first loss) against the rule
    without it (scale 0), and ExplodingRule.trained_patience 3 (a loss that fell 40x first and is
    still below twice its start needs three epochs of growth) against 2: fewer healthy curves
    stopped, none stopped that the setting before spared, and every broken curve stopped no later."""
    spared, stopped, later, _ = against(before, ExplodingRule(hold=1))
    assert spared > 0
    assert stopped == [], "\n".join(stopped[:10])
    assert later == [], "\n".join(later[:10])


def test_labels_read_the_curve_alone() -> None:
    """The labeller on hand-written curves (no health rule involved)."""
    label = record_real.label
    good = [{"train_loss": 2.0 * 0.8 ** e, "val_acc": 0.5 + 0.02 * e} for e in range(10)]
    assert label(good, 0.1, "val_acc", "max", {}).status == "healthy"
    nan = good[:4] + [{"train_loss": math.nan, "val_acc": 0.1}] * 3
    assert (label(nan, 0.1, "val_acc", "max", {}).kind, label(nan, 0.1, "val_acc", "max", {}).onset) == ("nonfinite", 5)
    rise = good[:5] + [{"train_loss": v, "val_acc": 0.1} for v in (0.5, 1.5, 9.0, 40.0)]
    assert (label(rise, 0.1, "val_acc", "max", {}).kind, label(rise, 0.1, "val_acc", "max", {}).onset) == ("diverged", 7)
    flat = good[:3] + [{"train_loss": 1.09861, "val_acc": 0.1}] * 5
    assert (label(flat, 0.1, "val_acc", "max", {}).kind, label(flat, 0.1, "val_acc", "max", {}).onset) == ("flatline", 4)
    dead = [{**r, "val_acc": 0.1, "train_logit_std": 0.0 if i >= 6 else 1.0} for i, r in enumerate(good)]
    assert (label(dead, 0.1, "val_acc", "max", {"train_logit_std": 1e-6}).kind,
            label(dead, 0.1, "val_acc", "max", {"train_logit_std": 1e-6}).onset) == ("collapsed", 7)
    stalled = [{"train_loss": 2.3 + 0.1 * (-1) ** e, "val_acc": 0.1} for e in range(10)]
    assert label(stalled, 0.1, "val_acc", "max", {}).status == "ambiguous"


def test_the_spike_limit_spares_healthy_curves_and_stops_no_new_one() -> None:
    """ExplodingRule.spike 30 against 10 (the limit before): healthy curves spared, none stopped
    that 10 did not stop (the latency goals are held by test_broken_curves_are_caught_within_their_goal)."""
    spared, stopped, _, _ = against(ExplodingRule(spike=10, hold=1), ExplodingRule(hold=1))
    assert stopped == [], "\n".join(stopped[:10])
    assert spared >= 15


def test_hold_spares_healthy_curves_and_keeps_every_latency_goal() -> None:
    """ExplodingRule.hold 2 (the loss above twice its start for two epochs in a row) against 1 (the
    rule before): healthy curves spared, none stopped that 1 did not stop, and no broken curve that
    1 stopped within its latency goal stopped after it (many are stopped an epoch later)."""
    spared, stopped, _, lost = against(ExplodingRule(hold=1), ExplodingRule())
    assert stopped == [], "\n".join(stopped[:10])
    assert spared >= 8
    assert lost == [], "\n".join(lost[:10])


def test_a_held_out_recording_draws_configs_the_corpus_does_not_hold(tmp_path) -> None:
    """``record_real --first N`` plans the same models and data sets from other seeds: none of its
    configs is one of the shipped corpus's, and the plan is the same each time it is made."""
    per = {key: 2 for key in record_real.PER}
    shipped = {curve["seed"] for curve, *_ in replayed()}
    held_out = record_real.plan(per, tmp_path, first=100_000)
    assert [(m, d) for m, d, _, _ in held_out] == [key for key in per for _ in range(2)]
    assert not {seed for *_, seed in held_out} & shipped
    assert [seed for *_, seed in record_real.plan(per, tmp_path, first=100_000)] == \
        [seed for *_, seed in held_out]
