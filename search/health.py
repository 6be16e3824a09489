"""Health verdicts on a trial's metric history (pure: no torch, no ray).

Settings live here; the verdict functions are built on them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from models.config import bounds


@dataclass(frozen=True)
class ExplodingRule:
    enabled: bool = True
    factor: float = field(default=10.0, metadata=bounds(gt=1))
    patience: int = field(default=3, metadata=bounds(ge=1))
    rate: float = field(default=0.5, metadata=bounds(gt=0))


@dataclass(frozen=True)
class FlatlineRule:
    enabled: bool = True
    patience: int = field(default=3, metadata=bounds(ge=2))
    rel_tol: float = field(default=1e-4, metadata=bounds(ge=0))


@dataclass(frozen=True)
class CollapsedRule:
    enabled: bool = True
    patience: int = field(default=3, metadata=bounds(ge=1))


@dataclass(frozen=True)
class HealthConfig:
    nonfinite: bool = True
    exploding: ExplodingRule = field(default_factory=ExplodingRule)
    flatline: FlatlineRule = field(default_factory=FlatlineRule)
    collapsed: CollapsedRule = field(default_factory=CollapsedRule)
