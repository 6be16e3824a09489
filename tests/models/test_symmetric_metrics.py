"""Evaluation metrics on hand-built predictions."""

from __future__ import annotations

import pytest
import torch

from hpsearch.models.symmetric import metrics

P = 0  # PAD, the end token


def test_per_field_accuracies_fact_acc_exact_and_any():
    # 4 samples, K = 2: slots = entity (2 ids), value (2 ids)
    true_slots = torch.tensor([[5, P, 7, 8], [6, 9, 7, P], [5, P, 8, P], [6, P, 9, 9]])
    true_relation = torch.tensor([1, 2, 3, 4])
    slots = torch.tensor([[5, P, 7, 8],      # all right
                          [6, P, 7, P],      # entity cut short, value right
                          [9, P, 9, P],      # entity and value wrong
                          [6, P, 9, 9]])     # entity and value right
    relation = torch.tensor([1, 0, 0, 4])    # right, wrong, wrong, right
    right = metrics.fields_right(slots, relation, true_slots, true_relation)
    assert right.tolist() == [[True, True, True], [False, False, True], [False, False, False],
                              [True, True, True]]
    m = metrics.parse_metrics(right)
    assert m["entity_acc"] == pytest.approx(0.5)
    assert m["relation_acc"] == pytest.approx(0.5)
    assert m["value_acc"] == pytest.approx(0.75)
    assert m["fact_acc"] == pytest.approx((0.5 + 0.5 + 0.75) / 3)
    assert m["exact"] == pytest.approx(0.5)
    assert m["any"] == pytest.approx(0.75)
    assert all(type(v) is float for v in m.values())


def test_generation_is_scored_up_to_the_end_token_only():
    reference = torch.tensor([[4, 5, 6, P, P, P],
                              [4, 5, P, P, P, P]])
    generated = torch.tensor([[4, 5, 6, P, 9, 9],   # right; what follows the end is ignored
                              [4, 7, 5, P, P, P]])  # 1 of 3 scored positions right (4; 7 != 5; 5 != end)
    m = metrics.generation_metrics(generated, reference)
    assert m["gen_token_acc"] == pytest.approx((4 + 1) / (4 + 3))
    assert m["gen_exact"] == pytest.approx(0.5)


def test_a_sentence_that_does_not_end_is_not_exact():
    reference = torch.tensor([[4, 5, P, P]])
    assert metrics.generation_metrics(torch.tensor([[4, 5, 5, 5]]), reference)["gen_exact"] == 0.0


def test_cut_at_end_pads_everything_after_the_first_end_token():
    assert metrics.cut_at_end(torch.tensor([[4, P, 5, 6], [4, 5, 6, 7]])).tolist() == [[4, P, P, P], [4, 5, 6, 7]]


def test_cycle_acc_counts_facts_that_come_back_whole():
    right = torch.tensor([[True, True, True], [True, False, True], [True, True, True], [False, False, False]])
    assert metrics.cycle_metrics(right)["cycle_acc"] == pytest.approx(0.5)
