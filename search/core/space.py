"""Search-space specs as they read in YAML, and their Optuna distributions.

    space:
      lr:         {loguniform: [1.0e-5, 1.0e-1]}
      w_cycle:    {uniform: [0.0, 1.0]}
      hidden_dim: {int: [16, 256], log: true}
      mining:     {choice: [batch_all, batch_hard, semi_hard]}

Every key must be a parameter of the model, and every value the space can produce must be a value
the model accepts: both are checked here, before anything runs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable

from hpsearch.models.config import ConfigError, coerce, did_you_mean

KINDS = ("loguniform", "uniform", "int", "choice")


@dataclass(frozen=True)
class Spec:
    kind: str                      # one of KINDS
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    def to_optuna(self) -> Any:
        import optuna.distributions as d

        if self.kind == "choice":
            return d.CategoricalDistribution(list(self.choices))
        if self.kind == "int":
            return d.IntDistribution(int(self.low), int(self.high), log=self.log)
        return d.FloatDistribution(float(self.low), float(self.high), log=self.kind == "loguniform")

    def edge_values(self) -> list[Any]:
        """Values the spec can produce that the model must accept (bounds, every choice)."""
        if self.kind == "choice":
            return list(self.choices)
        return [self.low, self.high]

    def contains(self, value: Any) -> bool:
        if self.kind == "choice":
            return any(value == c and type(value) is type(c) for c in self.choices)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind == "int" and not float(value).is_integer():
            return False
        return self.low <= value <= self.high

    def describe(self) -> str:
        if self.kind == "choice":
            return "one of " + ", ".join(map(repr, self.choices))
        log = " (log)" if self.log and self.kind == "int" else ""
        return f"{self.kind} in [{self.low}, {self.high}]{log}"


def _bound(value: Any, where: str) -> int | float:
    """A range bound read as the config reads any float (``coerce``: a number or a YAML 1.1 string
    such as ``"1e-5"``, finite, not a bool); an int stays an int, so a message shows it as written."""
    number = coerce(value, float, where)
    return value if isinstance(value, int) else number


def parse_spec(name: str, raw: Any) -> Spec:
    where = f"space.{name}"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: got {raw!r}, expected a mapping such as "
                          "{loguniform: [1e-5, 1e-1]} or {choice: [a, b]}")
    kinds = [k for k in raw if k in KINDS]
    extra = [k for k in raw if k not in KINDS and k != "log"]
    if extra:
        key = str(extra[0])
        raise ConfigError(f"{where}.{key}: unknown spec kind{did_you_mean(key, KINDS + ('log',))}; "
                          f"allowed: {', '.join(KINDS)} (and log with int)")
    if len(kinds) != 1:
        raise ConfigError(f"{where}: got {dict(raw)!r}, expected exactly one of {', '.join(KINDS)}")
    kind = kinds[0]
    args = raw[kind]
    log = raw.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{where}.log: got {log!r}, expected true or false")
    if log and kind != "int":
        raise ConfigError(f"{where}.log: got true with {kind}, expected log only with int "
                          "(use loguniform for floats)")
    if kind == "choice":
        if not isinstance(args, (list, tuple)) or not args:
            raise ConfigError(f"{where}.choice: got {args!r}, expected a non-empty list")
        for i, c in enumerate(args):
            if isinstance(c, float) and not math.isfinite(c):
                raise ConfigError(f"{where}.choice[{i}]: got {c!r}, expected a finite value")
            if not isinstance(c, (str, int, float, bool)) and c is not None:
                raise ConfigError(f"{where}.choice[{i}]: got {c!r}, expected a scalar")
        if len(set(map(repr, args))) != len(args):
            raise ConfigError(f"{where}.choice: got {args!r}, expected distinct values")
        return Spec("choice", choices=tuple(args))
    if not isinstance(args, (list, tuple)) or len(args) != 2:
        raise ConfigError(f"{where}.{kind}: got {args!r}, expected [low, high]")
    low = _bound(args[0], f"{where}.{kind}[0]")
    high = _bound(args[1], f"{where}.{kind}[1]")
    if kind == "int":
        for i, v in enumerate((low, high)):
            if not float(v).is_integer():
                raise ConfigError(f"{where}.int[{i}]: got {v!r}, expected an integer")
        low, high = int(low), int(high)
    if low >= high:
        raise ConfigError(f"{where}.{kind}: low {low!r} >= high {high!r}; expected low < high")
    if (kind == "loguniform" or log) and low <= 0:
        raise ConfigError(f"{where}.{kind}: low {low!r} <= 0; a log range needs low > 0")
    if kind != "int":
        low, high = float(low), float(high)
    return Spec(kind, low=low, high=high, log=log)


def parse_space(raw: Any, check_param: Callable[[str, Any], None] | None = None,
                allowed: Any = None) -> dict[str, Spec]:
    """Parse ``space``. ``allowed`` (names) rejects unknown keys; ``check_param(name, value)``
    raises ConfigError when the model refuses a value the space can produce."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"space: got {raw!r}, expected a mapping of parameter -> spec")
    space = {}
    for name, spec_raw in raw.items():
        name = str(name)
        if allowed is not None and name not in allowed:
            raise ConfigError(f"space.{name}: not a parameter of the model{did_you_mean(name, allowed)}; "
                              f"allowed: {', '.join(sorted(allowed))}")
        spec = parse_spec(name, spec_raw)
        if check_param is not None:
            for value in spec.edge_values():
                check_param(name, value)
        space[name] = spec
    return space
