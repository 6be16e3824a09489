"""Plain training without Ray: the loop behind ``hpsearch train`` and the models' own tests."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from typing import Any

from hpsearch.models.api import Model


def format_metrics(metrics: dict[str, float], keys: Iterable[str] | None = None) -> str:
    """``name value`` pairs, four significant decimals, in a stable order."""
    parts = []
    for key in keys if keys is not None else metrics:
        value = metrics[key]
        if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
            text = str(value)
        elif isinstance(value, float) and value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            text = f"{value:.3e}"
        elif isinstance(value, float):
            text = f"{value:.4f}"
        else:
            text = str(value)
        parts.append(f"{key} {text}")
    return "  ".join(parts)


def epoch_line(epoch: int, epochs: int, row: dict[str, Any]) -> str:
    """One readable line per epoch: every train component, then every validation metric."""
    train = {k: v for k, v in row.items() if k.startswith("train_")}
    val = {k: v for k, v in row.items() if k.startswith("val_")}
    width = len(str(epochs))
    return (f"epoch {epoch:>{width}}/{epochs}  {format_metrics(train)}  |  {format_metrics(val)}"
            f"  ({row.get('epoch_s', 0.0):.1f}s)")


def fit(model: Model, epochs: int, start_epoch: int = 1,
        on_epoch: Callable[[int, dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Train ``epochs - start_epoch + 1`` epochs; after each, evaluate and call ``on_epoch(epoch, row)``.

    A row holds ``epoch``, every ``train_*`` and ``val_*`` value (Python floats) and ``epoch_s``.
    """
    history = []
    for epoch in range(start_epoch, epochs + 1):
        started = time.perf_counter()
        row: dict[str, Any] = {"epoch": epoch}
        row.update(model.train_epoch())
        row.update(model.evaluate("val"))
        row["epoch_s"] = time.perf_counter() - started
        history.append(row)
        if on_epoch is not None:
            on_epoch(epoch, row)
    return history
