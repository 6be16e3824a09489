"""The floor benchmarks.corpus_detection puts under the healthy curves any scale-free, monotone rule
must stop to catch given divergences in time, on hand-written curves."""

from __future__ import annotations

import pytest

from benchmarks.corpus_floor import forced
from benchmarks.corpus_replay import Replayed
from benchmarks.record_real import Label


def replayed(losses: list[float], label: Label) -> Replayed:
    return Replayed({}, label, [{"train_loss": v} for v in losses], "val_acc", "max", {})


# x3 per epoch from epoch 2 (onset 2): a rule must stop it by epoch 4, when it is 27x its start.
DIVERGENCE = replayed([1.0, 3.0, 9.0, 27.0, 81.0], Label("broken", "diverged", 2))
HEALTHY = Label("healthy")

CASES = [
    # name, healthy curve, forced
    ("above it at every epoch to its deadline", [1.0, 4.0, 10.0, 30.0, 0.5], True),
    ("the same, ten times the scale", [10.0, 40.0, 100.0, 300.0, 5.0], True),
    ("equal up to the deadline, then falling", [1.0, 3.0, 9.0, 27.0, 0.1], True),
    ("below it at the deadline", [1.0, 4.0, 10.0, 20.0, 0.5], False),
    ("below it on the first epoch after the start", [1.0, 0.5, 30.0, 30.0, 0.5], False),
    ("shorter than the deadline", [1.0, 4.0, 10.0], False),
    ("a first loss of 0: no ratio to read", [0.0, 4.0, 10.0, 30.0], False),
]


@pytest.mark.parametrize("losses, expected", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_a_healthy_curve_is_forced_when_it_dominates_a_divergence_to_its_deadline(losses, expected):
    healthy = replayed(losses, HEALTHY)
    assert (forced([healthy], [DIVERGENCE]) == [healthy]) is expected


def test_a_divergence_shorter_than_its_deadline_is_read_to_its_end():
    short = replayed([1.0, 3.0, 9.0], Label("broken", "diverged", 2))     # deadline 4, 3 epochs recorded
    assert forced([replayed([1.0, 4.0, 10.0, 0.5], HEALTHY)], [short]) != []
    assert forced([replayed([1.0, 4.0, 8.0, 0.5], HEALTHY)], [short]) == []


def test_only_healthy_curves_count_and_no_divergence_forces_nothing():
    ambiguous = replayed([1.0, 4.0, 10.0, 30.0], Label("ambiguous"))
    healthy = replayed([1.0, 4.0, 10.0, 30.0], HEALTHY)
    assert forced([ambiguous, DIVERGENCE], [DIVERGENCE]) == []
    assert forced([healthy], []) == []
