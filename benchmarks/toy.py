"""A model that trains nothing, for measuring what the search machinery itself costs.

``Trivial`` follows the Model protocol (models/api.py): every epoch returns a falling loss and a
rising score computed from ``x`` in microseconds, so a search over it is pure bookkeeping:
suggest, start, report, health verdict, checkpoint, scheduler, searcher, result files.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hpsearch.models.config import bounds


@dataclass(frozen=True)
class TrivialConfig:
    x: float = field(default=0.5, metadata=bounds(ge=0, le=1))


class Trivial:
    Config = TrivialConfig
    objective = ("val_score", "max")
    reported = ("train_loss", "train_batch_loss_std", "val_score")

    def __init__(self, params: Mapping[str, Any], device: Any, seed: int):
        self.x = float(params.get("x", 0.5))
        self.epoch = 0

    def train_epoch(self) -> dict[str, float]:
        self.epoch += 1
        return {"train_loss": 1.0 / (self.epoch + 1) + 0.01 * self.x, "train_batch_loss_std": 0.01}

    def evaluate(self, split: str = "val") -> dict[str, float]:
        return {f"{split}_score": self.x * (1 - math.exp(-self.epoch))}

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.epoch = int(state["epoch"])
