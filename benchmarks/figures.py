"""The search-efficiency figures, from traces (benchmarks.traces.Trace or live runs alike).

- epochs to reach within 1% of the grid's best objective: the epochs all trials had spent when
  the config the strategy would hand back first scored within 1% (relative) of the best final
  objective on the grid (broken configs left out of the grid's best); median and IQR over seeds,
  +inf for a seed that never got there within the budget;
- the returned config's objective at fixed epoch budgets;
- how often the returned config is a broken one (fixed labels, benchmarks.curves.label_rows).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks.common import fmt, quantiles
from hpsearch.core.objective import score, sign

TOLERANCE = 0.01


def target_value(best: float, mode: str, tolerance: float = TOLERANCE) -> float:
    """The worst value still within ``tolerance`` (relative) of ``best``."""
    return best - sign(mode) * tolerance * abs(best)


def iqr_text(values: Sequence[float]) -> str:
    q1, q2, q3 = quantiles(values)
    return f"{fmt(q2)} [{fmt(q1)}, {fmt(q3)}]"


def summarise(traces: Sequence[Any], best: float, mode: str, budgets: Sequence[int],
              is_broken: Callable[[Any, int], bool], label_of: Callable[[Any, int], str]) -> dict[str, Any]:
    """Figures for one strategy's traces (one per seed)."""
    target = target_value(best, mode)
    to_target = [t.epochs_to(target, mode) for t in traces]
    at_budget = {b: [] for b in budgets}
    broken, labels = 0, {}
    for t in traces:
        for b in budgets:
            found = t.returned_at(b)
            at_budget[b].append(found[2] if found is not None else math.nan)
        final = t.returned_at(t.budget)
        if final is not None and is_broken(t, final[0]):
            broken += 1
            label = label_of(t, final[0])
            labels[label] = labels.get(label, 0) + 1
    trials = [len(t.trials) for t in traces]
    epochs_per_trial = [t.spent / len(t.trials) for t in traces if t.trials]
    return {
        "to_target": to_target,
        "median": quantiles(to_target, (50,))[0],
        "reached": sum(1 for v in to_target if math.isfinite(v)),
        "seeds": len(traces),
        "at_budget": at_budget,
        "broken": broken,
        "broken_labels": labels,
        "trials": quantiles(trials, (50,))[0],
        "epochs_per_trial": quantiles(epochs_per_trial, (50,))[0],
    }


def ratio(a: float, b: float, budget: float) -> tuple[float, str]:
    """a / b, as (value to check against a target, text). When ``b`` never got there within
    ``budget`` the ratio is below a / budget: that bound is the value, written "< x"."""
    if math.isinf(a):
        return math.inf, "never"
    if math.isinf(b):
        return a / budget, f"< {fmt(a / budget)}"
    value = a / b if b else math.nan
    return value, fmt(value)


def random_expectation(p: float, epochs: int, slots: int = 2, qs: Sequence[float] = (25, 50, 75)) -> list[float]:
    """Exact quantiles of the epochs random search without pruning spends before it returns a config
    within 1%, when each trial hits with probability ``p``. Trials run ``slots`` at a time in
    lockstep (as in benchmarks.simulate.tune_like): trial k finishes after the epochs of every trial
    launched before its group plus its own group's epochs up to its last report."""
    if p <= 0:
        return [math.inf for _ in qs]
    out, cumulative, k = [], 0.0, 0
    targets = sorted(q / 100 for q in qs)
    results: dict[float, float] = {}
    while len(results) < len(targets) and k < 10_000_000:
        k += 1
        cumulative += (1 - p) ** (k - 1) * p
        group, position = divmod(k - 1, slots)
        spent = epochs * slots * group + slots * (epochs - 1) + position + 1
        for t in targets:
            if t not in results and cumulative >= t:
                results[t] = float(spent)
    for q in qs:
        out.append(results.get(q / 100, math.inf))
    return out


def median_value(values: Sequence[float], mode: str) -> str:
    finite = [v for v in values if score(v, mode) > -math.inf]
    if not finite:
        return "n/a"
    text = iqr_text(finite)
    missing = len(values) - len(finite)
    return text + (f" ({missing} none)" if missing else "")
