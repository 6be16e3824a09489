"""Strict, typed configuration: a mapping in, a frozen dataclass out, or a one-line ConfigError.

Every user-facing setting in hpsearch (a model's params, each section of a search YAML) is a
dataclass whose fields carry their constraints in ``field(metadata=...)``:

    @dataclass(frozen=True)
    class Config:
        lr: float = field(default=1e-3, metadata=bounds(gt=0))
        mining: Literal["batch_all", "batch_hard"] = "batch_hard"

``parse(Config, mapping, where="params")`` checks names (unknown keys get "did you mean"), types
(an int field refuses bools and floats; a float field takes ints and numeric strings such as
``"1e-3"``, which YAML 1.1 reads as a string), allowed values and bounds, and NaN/inf. Every
error names the field, the value and what is allowed, on one line.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Union


class ConfigError(ValueError):
    """A user's setting is wrong. The message is one line that names field, value and what is allowed."""


def bounds(*, gt: float | None = None, ge: float | None = None, lt: float | None = None,
           le: float | None = None, doc: str = "") -> dict[str, Any]:
    """Field metadata for numeric bounds, e.g. ``field(default=1, metadata=bounds(ge=1))``."""
    return {"gt": gt, "ge": ge, "lt": lt, "le": le, "doc": doc}


def did_you_mean(name: str, allowed: typing.Iterable[str]) -> str:
    """' (did you mean 'x'?)' when a close match exists, else ''."""
    close = difflib.get_close_matches(name, list(allowed), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_key_error(where: str, key: str, allowed: typing.Iterable[str]) -> ConfigError:
    allowed = sorted(allowed)
    return ConfigError(f"{where}{key}: unknown key{did_you_mean(key, allowed)}; "
                       f"allowed: {', '.join(allowed)}")


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        tp, getattr(tp, "__name__", str(tp)))


def _bounds_text(meta: Mapping[str, Any]) -> str:
    parts = [f"{op} {meta[key]}" for key, op in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))
             if meta.get(key) is not None]
    return " and ".join(parts)


def coerce(value: Any, tp: Any, name: str) -> Any:
    """Convert ``value`` to type ``tp`` or raise ConfigError naming ``name``."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return coerce(value, option, name)
            except ConfigError:
                pass
        raise ConfigError(f"{name}: got {value!r}, expected {_describe(tp)}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if any(value == a and type(value) is type(a) for a in allowed):
            return value
        hint = did_you_mean(str(value), [str(a) for a in allowed])
        raise ConfigError(f"{name}: got {value!r}, expected {_describe(tp)}{hint}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{name}: got {value!r}, expected null")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{name}: got {value!r}, expected true or false")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name}: got {value!r}, expected an integer")
        return value
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{name}: got {value!r}, expected a number")
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{name}: got {value!r}, expected a number") from None
        if not isinstance(value, (int, float)):
            raise ConfigError(f"{name}: got {value!r}, expected a number")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{name}: got {value!r}, expected a finite number")
        return value
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{name}: got {value!r}, expected a string")
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{name}: got {value!r}, expected a mapping")
        return dict(value)
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}: got {value!r}, expected a list")
        args = typing.get_args(tp)
        item = args[0] if args else Any
        return tuple(coerce(v, item, f"{name}[{i}]") for i, v in enumerate(value))
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return parse(tp, value, where=f"{name}.")
    raise TypeError(f"unsupported config type {tp!r} for {name}")


def check_bounds(value: Any, meta: Mapping[str, Any], name: str) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    ok = all((
        meta.get("gt") is None or value > meta["gt"],
        meta.get("ge") is None or value >= meta["ge"],
        meta.get("lt") is None or value < meta["lt"],
        meta.get("le") is None or value <= meta["le"],
    ))
    if not ok:
        raise ConfigError(f"{name}: got {value!r}, expected a value {_bounds_text(meta)}")


def field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def parse(cls: type, mapping: Any, where: str = "") -> Any:
    """Build dataclass ``cls`` from ``mapping``; ``where`` prefixes field names ("params.")."""
    if mapping is None:
        mapping = {}
    if dataclasses.is_dataclass(mapping) and isinstance(mapping, cls):
        return mapping
    if not isinstance(mapping, Mapping):
        label = where.rstrip(".") or cls.__name__
        raise ConfigError(f"{label}: got {mapping!r}, expected a mapping of settings")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = field_types(cls)
    values: dict[str, Any] = {}
    for key, raw in mapping.items():
        if key not in fields:
            raise unknown_key_error(where, str(key), fields)
        value = coerce(raw, hints[key], f"{where}{key}")
        check_bounds(value, fields[key].metadata, f"{where}{key}")
        values[key] = value
    for name, f in fields.items():
        if name not in values and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{where}{name}: missing; it is required")
    obj = cls(**values)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate(where)
    return obj


def as_dict(obj: Any) -> dict[str, Any]:
    """A dataclass config as plain YAML/JSON-safe data (tuples become lists)."""
    def plain(v: Any) -> Any:
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v
    return {k: plain(v) for k, v in dataclasses.asdict(obj).items()}
