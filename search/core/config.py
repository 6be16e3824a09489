"""The typed, validated run config: one YAML file for ``hpsearch train``, ``run`` and exports.

    model: symmetric                 # built-in name or package.module:Factory
    seed: 0
    epochs: 30                       # length of one training run (hpsearch train)
    device: auto                     # auto | cpu | cuda
    algorithm: auto                  # auto | random | tpe | rung-tpe (what suggests the next config)
    params: {...}                    # the model's flat config: data + fixed hyperparameters
    objective: {metric: val_fact_acc, mode: max, rank: best}   # rank: best | last | mean (window: 5);
                                     # warm_start_margin: 1 (the warm start stands unless beaten)
    space: {lr: {loguniform: [1e-5, 1e-1]}, ...}
    warm_start: [{lr: 3.0e-4, ...}]  # points tried first
    budget: {num_samples: 32, max_epochs: 30, max_concurrent: 2, converge_after: 0}
    scheduler: {grace_period: 2, reduction_factor: 3, compare: best, min_trials: 1, keep_warm_start: true}
    health: {flatline: {patience: 3}, ...}
    resources: {cpu: 1, gpu: 0}
    checkpoint: {interval: 1}
    log: {tensorboard: true, mlflow: true}   # trackers, off unless asked for (hpsearch.tune.trackers)

Loaded with ``yaml.safe_load``; every error is a one-line ConfigError naming field, value and what
is allowed, raised before any Ray process starts. Imports neither torch nor ray.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from hpsearch import models
from hpsearch.core.convergence import Convergence
from hpsearch.core.health import HealthConfig, collapse_floors
from hpsearch.core.objective import MODES
from hpsearch.core.sections import (
    Budget,
    CheckpointConfig,
    LogConfig,
    MlflowConfig,
    Objective,
    Resources,
    SchedulerConfig,
    parse_log,
)
from hpsearch.core.space import Spec, parse_space
from hpsearch.models.config import ConfigError, as_dict, bounds, did_you_mean, field_types, parse, unknown_key_error

# What suggests the next config (hpsearch.tune.samplers). ``auto`` is rung-tpe: replayed on the
# triplet, symmetric and real-data (MLP on digits) grids, 50 seeds, 2 and 8 trials at a time
# (benchmarks/algorithms.py), it got more seeds within 1% of each grid's best than TPE on every grid,
# at up to 1.2x TPE's epochs on the triplet grid.
ALGORITHMS = ("auto", "random", "tpe", "rung-tpe")
AUTO_ALGORITHM = "rung-tpe"
Algorithm = Literal["auto", "random", "tpe", "rung-tpe"]


@dataclass(frozen=True)
class RunConfig:
    model: str
    params: dict[str, Any]
    objective: Objective
    seed: int = 0
    epochs: int = 10
    device: Literal["auto", "cpu", "cuda"] = "auto"
    algorithm: Algorithm = "auto"
    space: dict[str, Spec] = field(default_factory=dict)
    warm_start: tuple[dict[str, Any], ...] = ()
    budget: Budget = field(default_factory=Budget)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    resources: Resources = field(default_factory=Resources)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)
    exported: dict[str, Any] | None = None  # provenance written by `hpsearch export`; informational

    @property
    def sampler(self) -> str:
        """The algorithm the search runs: ``algorithm``, with ``auto`` resolved."""
        return AUTO_ALGORITHM if self.algorithm == "auto" else self.algorithm

    @property
    def convergence(self) -> Convergence:
        """The search's stopping rule (``budget.converge_after``, ``budget.converge_delta``), on
        the trials' values as ``objective.rank`` ranks them."""
        return Convergence(self.budget.converge_after, self.budget.converge_delta, self.objective.rank,
                           self.objective.window)

    @property
    def max_epochs(self) -> int:
        return self.budget.max_epochs if self.budget.max_epochs is not None else self.epochs

    def to_dict(self) -> dict[str, Any]:
        """Plain data that ``load_config`` reads back to an equal RunConfig."""
        out: dict[str, Any] = {
            "model": self.model, "seed": self.seed, "epochs": self.epochs, "device": self.device,
            "params": dict(self.params), "objective": as_dict(self.objective),
        }
        if self.algorithm != "auto":
            out["algorithm"] = self.algorithm
        if self.space:
            out["space"] = {name: spec_to_yaml(s) for name, s in self.space.items()}
        if self.warm_start:
            out["warm_start"] = [dict(p) for p in self.warm_start]
        for name in ("budget", "scheduler", "health", "resources", "checkpoint"):
            out[name] = as_dict(getattr(self, name))
        if self.log != LogConfig():     # written only when a tracker is on
            out["log"] = as_dict(self.log)
        if self.exported is not None:
            out["exported"] = dict(self.exported)
        return out


SECTIONS = {f.name for f in dataclasses.fields(RunConfig)}


def spec_to_yaml(spec: Spec) -> dict[str, Any]:
    if spec.kind == "choice":
        return {"choice": list(spec.choices)}
    out: dict[str, Any] = {spec.kind: [spec.low, spec.high]}
    if spec.log:
        out["log"] = True
    return out


def _check_finite(value: Any, where: str) -> None:
    """NaN/inf anywhere in a config is refused (YAML reads .nan and .inf)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}: got {value!r}, expected a finite number")
    if isinstance(value, Mapping):
        for k, v in value.items():
            _check_finite(v, f"{where}.{k}" if where else str(k))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_finite(v, f"{where}[{i}]")


def _param_checker(model: str, params: dict[str, Any]):
    """A function that raises when the model refuses ``name: value`` (via its declared Config)."""
    config_cls = models.declared(model, "Config")
    if config_cls is None:
        return None, None

    def check(name: str, value: Any, where: str = "space") -> None:
        trial = dict(params)
        trial[name] = value
        try:
            parse(config_cls, trial, where="params.")
        except ConfigError as err:
            message = str(err)
            prefix = f"params.{name}: "
            if message.startswith(prefix):  # the searched value itself is refused
                raise ConfigError(f"{where}.{name}: {message[len(prefix):]}") from None
            raise ConfigError(f"{where}.{name}={value!r}: {message}") from None

    return check, set(field_types(config_cls))


def build_config(raw: Any, source: str = "config", *, search: bool = True) -> RunConfig:
    """Validate a raw mapping (from YAML) into a RunConfig.

    Everything that does not depend on the model (sections, the space's own shape, the objective's
    mode, grace_period against max_epochs) is checked first: those errors come before the model's
    module (and with it torch) is imported, so they come back in a fraction of a second.

    ``search``: the config is for a search (``hpsearch run``), so every value the space can produce
    is checked against the model (with ``params``, and with the data: a batch_size the data cannot
    fill is refused). False for a single configuration (``hpsearch train``, ``evaluate``): the
    space's shape and parameter names are still checked, its values are not, since they are never
    used."""
    sections, top = check_sections(raw, source, search=search)
    model, objective_raw = raw["model"], raw.get("objective")
    params = models.validate_params(model, raw.get("params") or {})
    default = models.declared(model, "objective")
    if objective_raw is None and default is not None:
        objective_raw = {"metric": default[0], "mode": default[1]}
    if objective_raw is None:
        raise ConfigError("objective: missing; this model declares no default, "
                          "expected {metric: NAME, mode: min|max}")
    objective = parse(Objective, objective_raw, where="objective.")
    reported = models.declared(model, "reported")
    if reported is not None and objective.metric not in reported:
        raise ConfigError(f"objective.metric: {objective.metric!r} is not reported by model {model!r}"
                          f"{did_you_mean(objective.metric, reported)}; it reports: "
                          f"{', '.join(sorted(reported))}")
    floors = collapse_floors(models.declared(model, "collapse"), f"model {model!r}")
    unreported = sorted(set(floors) - set(reported or floors))
    if unreported:
        raise ConfigError(f"model {model!r}: collapse: {unreported[0]!r} is not a metric it reports"
                          f"{did_you_mean(unreported[0], reported)}; it reports: {', '.join(sorted(reported))}")

    check, allowed = _param_checker(model, params)
    space = parse_space(raw.get("space"), check_param=check if search else None, allowed=allowed)
    points = _warm_start(raw.get("warm_start") or [], space)
    return RunConfig(model=model, params=params, objective=objective, space=space,
                     warm_start=tuple(points), seed=top.seed, epochs=top.epochs, device=top.device,
                     algorithm=top.algorithm, exported=top.exported, **sections)


def check_sections(raw: Any, source: str = "config", *, search: bool = True) -> tuple[dict[str, Any], "_TopLevel"]:
    """The parts of a raw config that need no model: ``({budget, scheduler, health, resources,
    checkpoint, log}, top level)``, after checking the section names, NaN/inf anywhere, that a model is
    named, grace_period <= max_epochs (``search`` only), the space's own shape and the objective's
    mode. Imports nothing heavy, so a mistake here is reported at once."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: got {type(raw).__name__}, expected a mapping of sections")
    for key in raw:
        if key not in SECTIONS:
            raise unknown_key_error("", str(key), SECTIONS)
    _check_finite(raw, "")
    if "model" not in raw:
        raise ConfigError("model: missing; expected 'triplet', 'symmetric' or 'package.module:Factory'")
    params_raw = raw.get("params") or {}
    if not isinstance(params_raw, Mapping):
        raise ConfigError(f"params: got {params_raw!r}, expected a mapping of the model's settings")
    rest = {k: raw[k] for k in ("seed", "epochs", "device", "algorithm", "exported") if k in raw}
    sections = {}
    for name, cls in (("budget", Budget), ("scheduler", SchedulerConfig), ("health", HealthConfig),
                      ("resources", Resources), ("checkpoint", CheckpointConfig)):
        sections[name] = parse(cls, raw.get(name) or {}, where=f"{name}.")
    sections["log"] = parse_log(raw.get("log"))
    top = parse(_TopLevel, rest)
    max_epochs = sections["budget"].max_epochs or top.epochs
    # a search (a space to explore) must reach its first rung; a single training run has no rungs
    if search and raw.get("space") and sections["scheduler"].grace_period > max_epochs:
        raise ConfigError(f"scheduler.grace_period: got {sections['scheduler'].grace_period}, expected a "
                          f"value <= max_epochs ({max_epochs})")
    parse_space(raw.get("space"))                   # its own shape; checked against the model later
    if raw.get("objective") is not None:
        parse(Objective, raw["objective"], where="objective.")
    return sections, top


def _warm_start(warm: Any, space: dict[str, Spec]) -> list[dict[str, Any]]:
    if not isinstance(warm, Sequence) or isinstance(warm, (str, bytes)):
        raise ConfigError(f"warm_start: got {warm!r}, expected a list of points")
    points = []
    for i, point in enumerate(warm):
        where = f"warm_start[{i}]"
        if not isinstance(point, Mapping):
            raise ConfigError(f"{where}: got {point!r}, expected a mapping of parameter -> value")
        clean = {}
        for name, value in point.items():
            if name not in space:
                raise unknown_key_error(f"{where}.", str(name), space)
            if isinstance(value, str) and space[name].kind != "choice":
                try:
                    value = float(value)
                except ValueError:
                    pass
            if not space[name].contains(value):
                raise ConfigError(f"{where}.{name}: got {value!r}, expected {space[name].describe()}")
            clean[name] = int(value) if space[name].kind == "int" else value
        points.append(clean)
    return points


@dataclass(frozen=True)
class _TopLevel:
    seed: int = field(default=0, metadata=bounds(ge=0))
    epochs: int = field(default=10, metadata=bounds(ge=1))
    device: Literal["auto", "cpu", "cuda"] = "auto"
    algorithm: Algorithm = "auto"
    exported: dict[str, Any] | None = None


def parse_override(text: str) -> tuple[list[str], Any]:
    """``--set key=value``: a dotted path and a YAML-parsed value. A bare key means ``params.key``
    unless it names a top-level section; a dotted key starts with a section (``params.x.y`` too), so
    ``schedular.grace_period`` is refused with "did you mean 'scheduler'" instead of landing in
    ``params`` unnoticed."""
    if "=" not in text:
        raise ConfigError(f"--set: got {text!r}, expected key=value")
    key, _, value = text.partition("=")
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise ConfigError(f"--set: got {text!r}, expected key=value")
    if len(path) > 1 and path[0] not in SECTIONS:
        raise ConfigError(f"--set: {'.'.join(path)}: unknown section {path[0]!r}{did_you_mean(path[0], SECTIONS)}; "
                          f"a dotted key starts with a section ({', '.join(sorted(SECTIONS))}), "
                          f"a bare KEY means params.KEY")
    if path[0] not in SECTIONS:
        path = ["params", *path]
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    return path, parsed


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    out = dict(raw)
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            child = node.get(part)
            child = dict(child) if isinstance(child, Mapping) else {}
            node[part] = child
            node = child
        node[path[-1]] = value
    return out


def trial_config(raw: Mapping[str, Any], searched: Mapping[str, Any], seed: int | None, epochs: int) -> dict[str, Any]:
    """A search's raw config (search.yaml as written) as one trial's own, which trains that trial
    alone: the trial's ``searched`` values in ``params``, its ``seed``, ``epochs``, and no space,
    warm-start points or ``exported`` provenance of a config the search started from."""
    space = raw.get("space") or {}
    config = {key: value for key, value in raw.items() if key not in ("space", "warm_start", "exported")}
    config["params"] = {**(raw.get("params") or {}), **{n: searched[n] for n in space if n in searched}}
    config["epochs"] = epochs
    if seed is not None:
        config["seed"] = seed
    return config


def read_yaml(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config: {str(path)!r} is not a file")
    try:
        with path.open(encoding="utf-8") as fh:
            return yaml.safe_load(fh)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"config: {str(path)!r} is not valid YAML{where}: {problem}") from None


def read_config(path: str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """A config file as a raw mapping with ``--set`` overrides applied (not yet validated)."""
    raw = read_yaml(path)
    if raw is None:
        raise ConfigError(f"config: {str(path)!r} is empty")
    if not isinstance(raw, Mapping):
        raise ConfigError(f"config: {str(path)!r} holds {type(raw).__name__}, expected a mapping of sections")
    return apply_overrides(dict(raw), overrides)


def load_config(path: str | Path, overrides: Sequence[str] = (), *, search: bool = False) -> RunConfig:
    """Read, override (``--set``) and validate a config file to train or evaluate its one
    configuration; ``search=True`` also checks the space's values against the model, as a search
    needs (see ``build_config``)."""
    return build_config(read_config(path, overrides), source=str(path), search=search)


def dump_config(config: RunConfig, path: str | Path) -> None:
    with Path(path).open("w", encoding="utf-8") as fh:
        yaml.safe_dump(config.to_dict(), fh, sort_keys=False)


__all__ = ["Budget", "CheckpointConfig", "ConfigError", "LogConfig", "MODES", "MlflowConfig", "Objective", "Resources",
           "RunConfig", "SchedulerConfig", "build_config", "check_sections", "dump_config", "load_config", "read_config",
           "trial_config"]
