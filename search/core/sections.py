"""The sections of a run config that need no model: objective, budget, scheduler, resources,
checkpoint and the trackers (``log``). Typed and strict: hpsearch.models.config.parse checks every
field's type and bounds, and an unknown key gets "did you mean". The whole config, which needs the
model to check its params and space, is hpsearch.core.config."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from hpsearch.core.objective import Rank
from hpsearch.models.config import ConfigError, bounds, parse


@dataclass(frozen=True)
class Objective:
    metric: str
    mode: Literal["min", "max"]
    # what ranks a trial (the report's order, the best config, the export): its best epoch, its
    # last epoch, or the mean of its last `window` epochs (hpsearch.core.objective.trial_value);
    # mean is for a noisy objective that has levelled off (BENCHMARKS.md, "Ranking trials")
    rank: Rank = "best"
    window: int = field(default=5, metadata=bounds(ge=1, doc="epochs averaged by rank: mean and warm_start_margin"))
    # the best warm-start point is the search's pick unless the first-ranked trial beats it, over
    # the mean of their last `window` epochs, by more than this many standard errors of the
    # objective's own epoch-to-epoch noise (core.warm_start.keeps_warm_start); 0: the ranking alone
    # (BENCHMARKS.md, "Ranking trials on a noisy objective")
    warm_start_margin: float = field(default=1.0, metadata=bounds(ge=0, doc="0: the ranking alone"))


@dataclass(frozen=True)
class Budget:
    num_samples: int = field(default=16, metadata=bounds(ge=1))
    max_epochs: int | None = field(default=None, metadata=bounds(ge=1))
    max_concurrent: int = field(default=0, metadata=bounds(ge=0, doc="0: as many as resources allow"))
    max_failures: int = field(default=1, metadata=bounds(ge=0))
    # stop starting trials once the last `converge_after` ranked trials did not raise the best
    # objective by more than `converge_delta` (relative); 0: run all num_samples (core.convergence)
    converge_after: int = field(default=0, metadata=bounds(ge=0))
    converge_delta: float = field(default=0.0, metadata=bounds(ge=0))


@dataclass(frozen=True)
class SchedulerConfig:
    grace_period: int = field(default=2, metadata=bounds(ge=1))
    reduction_factor: float = field(default=3.0, metadata=bounds(gt=1))
    # a rung stops nobody until this many other trials are recorded there (core.rungs)
    min_trials: int = field(default=1, metadata=bounds(ge=1))
    # what a rung compares: each trial's "best" value so far, or its "last" (Ray's ASHA); "best" got
    # more replayed searches within 1% of the best, with and without noise (benchmarks/rung_noise.py)
    compare: Literal["last", "best"] = "best"
    # the warm-start points run to the end unless a health rule stops them
    keep_warm_start: bool = True


@dataclass(frozen=True)
class Resources:
    cpu: float = field(default=1.0, metadata=bounds(gt=0))
    gpu: float = field(default=0.0, metadata=bounds(ge=0))


@dataclass(frozen=True)
class CheckpointConfig:
    interval: int = field(default=1, metadata=bounds(ge=1))


@dataclass(frozen=True)
class MlflowConfig:
    """Where MLflow runs go: ``tracking_uri`` "" is a file store in the run dir (RUN_DIR/mlruns),
    ``experiment`` "" the run's name."""
    tracking_uri: str = ""
    experiment: str = ""


@dataclass(frozen=True)
class LogConfig:
    """The trackers a search logs every trial to, besides its run dir's own files: TensorBoard event
    files in each trial's folder, and one MLflow run per trial (None: no MLflow)."""
    tensorboard: bool = False
    mlflow: MlflowConfig | None = None

    @property
    def trackers(self) -> tuple[str, ...]:
        """The trackers asked for, by their ``log`` key."""
        return tuple(name for name, on in (("tensorboard", self.tensorboard), ("mlflow", self.mlflow is not None))
                     if on)


def parse_log(raw: Any) -> LogConfig:
    """The ``log`` section: ``mlflow: true`` means MLflow with the defaults, ``false`` or null none,
    a mapping its settings (checked like any section: an unknown key gets "did you mean")."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"log: got {raw!r}, expected a mapping such as {{tensorboard: true, mlflow: true}}")
    values = dict(raw)
    mlflow = values.get("mlflow")
    if mlflow is True:
        values["mlflow"] = MlflowConfig()
    elif mlflow is False or mlflow is None:
        values.pop("mlflow", None)      # the default, None (a null given to parse would build the defaults)
    elif isinstance(mlflow, Mapping):
        values["mlflow"] = parse(MlflowConfig, mlflow, where="log.mlflow.")
    else:
        raise ConfigError(f"log.mlflow: got {mlflow!r}, expected true, false or "
                          "{tracking_uri: URI, experiment: NAME}")
    return parse(LogConfig, values, where="log.")


__all__ = ["Budget", "CheckpointConfig", "LogConfig", "MlflowConfig", "Objective", "Resources", "SchedulerConfig",
           "parse_log"]
