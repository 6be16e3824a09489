"""What ranks one trial (objective.rank): hand-written objective curves, each rank and window."""

from __future__ import annotations

import math

import pytest

from hpsearch.core.objective import RANKS, is_better, score, trial_value
from hpsearch.results.report import RANK_COLUMNS

NAN, INF = math.nan, math.inf

# (values epoch by epoch, mode, rank, window, expected value, expected position)
CASES = [
    ([0.5, 0.9, 0.7], "max", "best", 5, 0.9, 1),
    ([0.5, 0.9, 0.7], "max", "last", 5, 0.7, 2),
    ([0.5, 0.9, 0.7], "max", "mean", 5, 0.7, 2),            # fewer epochs than the window: all of them
    ([0.5, 0.9, 0.7, 0.8], "max", "mean", 2, 0.75, 3),
    ([0.5, 0.9, 0.9], "max", "best", 5, 0.9, 1),            # a tie: the first epoch that reached it
    ([2.0, 0.5, 1.0], "min", "best", 5, 0.5, 1),
    ([2.0, 0.5, 1.0], "min", "mean", 2, 0.75, 2),
    ([NAN, 0.4, 0.6], "max", "best", 5, 0.6, 2),            # best skips a non-finite epoch
    ([NAN, 0.4, 0.6], "max", "mean", 2, 0.5, 2),            # ... and mean when it is outside the window
    ([0.4, NAN, 0.6], "max", "mean", 2, NAN, None),         # a NaN inside the window: no value to rank by
    ([0.4, 0.6, INF], "max", "last", 5, NAN, None),         # inf is not finite either
    ([NAN, NAN], "min", "best", 5, NAN, None),
    ([], "max", "mean", 5, NAN, None),
]


@pytest.mark.parametrize("values, mode, rank, window, value, position", CASES)
def test_trial_value(values, mode, rank, window, value, position):
    got, at = trial_value(values, mode, rank, window)
    assert at == position
    assert (math.isnan(got) and math.isnan(value)) or got == pytest.approx(value)


def test_an_unknown_rank_or_an_empty_window_is_refused():
    with pytest.raises(ValueError, match="objective.rank: got 'avg', expected one of best, last, mean"):
        trial_value([0.1], "max", "avg")
    with pytest.raises(ValueError, match="objective.window: got 0, expected an integer >= 1"):
        trial_value([0.1], "max", "mean", 0)


def test_the_report_has_a_column_for_every_rank():
    assert set(RANK_COLUMNS) == set(RANKS)


@pytest.mark.parametrize("value", [None, math.nan, math.inf, -math.inf, True, "0.5", "x", [0.5]])
def test_what_is_not_a_finite_number_ranks_last_either_way(value):
    """As the health rules read numbers (hpsearch.core.numbers.as_float): a bool or a string is not one."""
    for mode in ("min", "max"):
        assert score(value, mode) == -math.inf
        assert is_better(0.0, value, mode) and not is_better(value, 0.0, mode)
