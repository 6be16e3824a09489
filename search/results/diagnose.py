"""Diagnoses: what a user would otherwise dig out of the report by hand.

Each check reads the report table (one row per trial, see :mod:`hpsearch.results.report`) and returns one
line, or None when it has nothing to say; a healthy run gets no diagnosis at all.

- ``dominant_component``: one loss component makes up most of the summed components in most
  trials (a term on another scale drowns the others), with a weight that would level it when the
  model has a ``w_<component>`` parameter;
- ``no_active_triplets``: trials whose last epoch had ``train_active_triplets == 0`` (a zero loss
  because no batch held a valid triplet: nothing was learned);
- ``divergence``: the lr range where trials exploded or went non-finite, against the lr range of
  the trials that finished;
- ``constant_objective``: the objective has one value across every trial (a metric that cannot
  move, such as an exact-match accuracy stuck at 0).

NaN policy: a NaN or infinite value never counts as evidence; a trial with a non-finite loss
component is left out of the dominance count, and a NaN ``train_active_triplets`` is not zero.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from typing import Any

from hpsearch.core.numbers import finite
from hpsearch.core.outcomes import DIVERGED, FINISHED
from hpsearch.results.records import trial_label

DOMINANT_SHARE = 0.9          # a component above this share of the summed components dominates


def _ids(trial_ids: list[str], limit: int = 5) -> str:
    shown = ", ".join(trial_ids[:limit])
    return shown + (f" and {len(trial_ids) - limit} more" if len(trial_ids) > limit else "")


def _weight_name(component: str, names: list[str]) -> str | None:
    """The weight parameter of a component: ``w_<component>``, else the longest ``w_X`` that
    ``<component>`` starts with (``w_cycle`` for ``cycle_forward``)."""
    if f"w_{component}" in names:
        return f"w_{component}"
    prefixes = [n for n in names if n.startswith("w_") and component.startswith(n[2:])]
    return max(prefixes, key=len) if prefixes else None


def dominant_component(table, params: Mapping[str, Any]) -> str | None:
    components = [c for c in table.columns if c.startswith("train_loss_")]
    if len(components) < 2:
        return None
    names = [*params, *(c[len("config/"):] for c in table.columns if c.startswith("config/"))]
    considered = 0
    hits: dict[str, list[tuple[float, float, float | None]]] = {}   # share, ratio, suggested weight
    for _, row in table.iterrows():
        values = [abs(float(row[c])) if finite(row[c]) else math.nan for c in components]
        if any(math.isnan(v) for v in values) or sum(values) <= 0:
            continue
        considered += 1
        total = sum(values)
        top = max(range(len(values)), key=values.__getitem__)
        share = values[top] / total
        if share <= DOMINANT_SHARE:
            continue
        others = [v for i, v in enumerate(values) if i != top]
        others_mean = sum(others) / len(others)
        name = components[top][len("train_loss_"):]
        weight_name = _weight_name(name, names)
        current = row.get(f"config/{weight_name}") if weight_name else None
        if weight_name and not finite(current):
            current = params.get(weight_name)
        suggested = float(current) * others_mean / values[top] if finite(current) and others_mean > 0 else None
        ratio = values[top] / others_mean if others_mean > 0 else math.inf
        hits.setdefault(components[top], []).append((share, ratio, suggested))
    if not considered:
        return None
    component, found = max(hits.items(), key=lambda kv: len(kv[1]), default=(None, []))
    if component is None or len(found) * 2 < considered:
        return None
    share = statistics.median(s for s, _, _ in found)
    ratio = statistics.median(r for _, r, _ in found)
    name = component[len("train_loss_"):]
    line = (f"{component} is {math.floor(share * 100)}% of the summed loss components in "
            f"{len(found)}/{considered} trials (median {ratio:.3g}x the mean of the others)")
    weights = [w for _, _, w in found if w is not None]
    weight_name = _weight_name(name, names)
    if weights and weight_name:
        return line + f" — consider {weight_name} ≈ {statistics.median(weights):.2g} to bring it to their scale"
    return line + f" — rescale {name} or give it a weight so the other components can steer training"


def no_active_triplets(table, params: Mapping[str, Any]) -> str | None:
    if "train_active_triplets" not in table.columns:
        return None
    dead = [trial_label(row) for _, row in table.iterrows()
            if finite(row["train_active_triplets"]) and float(row["train_active_triplets"]) == 0]
    if not dead:
        return None
    known = sum(1 for v in table["train_active_triplets"] if finite(v))
    return (f"{len(dead)}/{known} trials had no active triplets in their last epoch (train_active_triplets = 0): "
            f"{_ids(dead)} — their loss was 0 with nothing to learn from; batches need several samples of "
            "each class (P×K sampling) and a margin the embeddings do not already satisfy")


def _span(values: list[float]) -> str:
    low, high = min(values), max(values)
    return f"{low:.3g}" if low == high else f"{low:.3g}–{high:.3g}"


def _lr_column(table) -> str | None:
    if "config/lr" in table.columns:
        return "config/lr"
    named = [c for c in table.columns if c.startswith("config/") and "lr" in c[len("config/"):].split("_")]
    return named[0] if named else None


def divergence(table, params: Mapping[str, Any]) -> str | None:
    diverged = table[table["outcome"].isin(DIVERGED)]
    if diverged.empty:
        return None
    counts = ", ".join(f"{o} {n}" for o, n in diverged["outcome"].value_counts().sort_index().items())
    named = _ids([trial_label(row) for _, row in diverged.iterrows()])
    head = f"{len(diverged)}/{len(table)} trials diverged ({counts}: {named})"
    column = _lr_column(table)
    if column is None:
        fixed = params.get("lr")
        return head + (f"; lr was not searched (fixed at {fixed:.3g})" if finite(fixed) else "; lr was not searched") \
            + " — search a lower lr or clip gradients"
    lrs = [float(v) for v in diverged[column] if finite(v)]
    good = [float(v) for v in table[table["outcome"].isin(FINISHED)][column] if finite(v)]
    if not lrs:
        return head
    line = head + f" at {column[len('config/'):]} {_span(lrs)}"
    if good:
        line += f"; finished trials used {_span(good)}"
        if max(good) < min(lrs) and len(lrs) >= 2:      # one diverged trial is too little to bound lr
            line += f" — keep it below {min(lrs):.3g}"
    return line


def constant_objective(table, params: Mapping[str, Any]) -> str | None:
    values = [float(v) for v in table["objective_best"] if finite(v)]
    lasts = [float(v) for v in table["objective_last"] if finite(v)]
    if len(values) < 2 or len(set(values + lasts)) != 1:
        return None
    metric = table.attrs.get("objective", "the objective")
    return (f"{metric} was {values[0]:.4g} in all {len(values)} trials that reported it — it cannot rank "
            "them; check that the metric can move (e.g. a partial-credit accuracy instead of exact match)")


CHECKS = (dominant_component, no_active_triplets, divergence, constant_objective)


def diagnose(table, params: Mapping[str, Any] | None = None) -> list[str]:
    """Every diagnosis that fires on a report table; ``params`` are the run's fixed model params."""
    if table.empty:
        return []
    found = (check(table, params or {}) for check in CHECKS)
    return [line for line in found if line]
