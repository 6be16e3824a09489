"""Model registry: ``"triplet"``, ``"symmetric"`` or ``"package.module:Factory"``.

Nothing here imports torch, Ray or the models themselves until a model is asked for, so
validating a config stays fast.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping
from typing import Any

from hpsearch.models.config import ConfigError, as_dict, did_you_mean, parse

BUILTIN = {
    "triplet": "hpsearch.models.triplet.model:TripletModel",
    "symmetric": "hpsearch.models.symmetric.model:SymmetricModel",
}
# A built-in model's settings and declarations (Config, objective, reported, collapse) live in a
# module that imports neither torch nor numpy, so a config is checked in a fraction of a second.
SPECS = {
    "triplet": "hpsearch.models.triplet.config",
    "symmetric": "hpsearch.models.symmetric.config",
}


def resolve(name: str) -> Any:
    """The factory for a built-in name or an import path ``package.module:Factory``."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"model: got {name!r}, expected {' or '.join(map(repr, BUILTIN))} "
                          "or 'package.module:Factory'")
    target = BUILTIN.get(name, name)
    if ":" not in target:
        raise ConfigError(f"model: got {name!r}{did_you_mean(name, BUILTIN)}; expected "
                          f"{' or '.join(map(repr, BUILTIN))} or 'package.module:Factory'")
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(f"model: cannot import {module_name!r} for {name!r}: {err}{_found_elsewhere(module_name)}") from None
    try:
        factory = getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"model: module {module_name!r} has no attribute {attr!r}") from None
    if not callable(factory):
        raise ConfigError(f"model: {name!r} is not callable")
    return factory


def _found_elsewhere(module_name: str) -> str:
    """Where the top package of ``module_name`` was found, when it imported but the rest did not: the
    usual cause is another package of the same name earlier on ``sys.path`` than the user's own."""
    top = module_name.partition(".")[0]
    found = sys.modules.get(top)
    if top == module_name or found is None:
        return ""
    where = list(getattr(found, "__path__", None) or [getattr(found, "__file__", None) or "?"])
    return f" ('{top}' was found at {', '.join(map(str, where))}; is another package named '{top}' shadowing yours?)"


def spec(name: str) -> Any:
    """Where a model's declarations are read: the light spec module of a built-in model, else the
    factory itself (a user model's own import is the price of checking it)."""
    if name in SPECS:
        return importlib.import_module(SPECS[name])
    return resolve(name)


def validate_params(name: str, params: Mapping[str, Any] | None, where: str = "params.") -> dict[str, Any]:
    """Check ``params`` against the factory's declared ``Config`` (if any); return the full mapping
    with defaults filled in. Raises a one-line ConfigError."""
    config_cls = getattr(spec(name), "Config", None)
    if config_cls is None:
        return dict(params or {})
    return as_dict(parse(config_cls, dict(params or {}), where=where))


def build(name: str, params: Mapping[str, Any], device: Any = "cpu", seed: int = 0) -> Any:
    """Make a model: validate ``params``, then call the factory."""
    import torch

    factory = resolve(name)
    full = validate_params(name, params)
    return factory(full, torch.device(device), int(seed))


def declared(name: str, attribute: str, default: Any = None) -> Any:
    """A model's optional declaration (``objective``, ``reported``, ``collapse``, ``Config``)."""
    return getattr(spec(name), attribute, default)


__all__ = ["BUILTIN", "SPECS", "ConfigError", "build", "declared", "resolve", "spec", "validate_params"]
