"""hpsearch.models.config: the strict parser every user-facing setting goes through."""

import sys
from dataclasses import dataclass, field
from typing import Literal

import pytest

from hpsearch import models
from hpsearch.models.config import ConfigError, as_dict, bounds, parse


@dataclass(frozen=True)
class Inner:
    patience: int = field(default=3, metadata=bounds(ge=1))


@dataclass(frozen=True)
class Example:
    lr: float = field(default=1e-3, metadata=bounds(gt=0))
    hidden_dim: int = field(default=64, metadata=bounds(ge=1))
    mining: Literal["batch_all", "batch_hard"] = "batch_hard"
    data_dir: str | None = None
    verbose: bool = False
    inner: Inner = field(default_factory=Inner)


def test_defaults_and_numeric_strings():
    cfg = parse(Example, {"lr": "1e-3", "hidden_dim": 8, "inner": {"patience": 5}})
    assert cfg.lr == pytest.approx(1e-3) and isinstance(cfg.lr, float)
    assert cfg.hidden_dim == 8 and cfg.inner.patience == 5
    assert as_dict(cfg)["inner"] == {"patience": 5}


def test_int_is_accepted_for_float():
    assert parse(Example, {"lr": 1}).lr == 1.0


@pytest.mark.parametrize("raw, expected", [
    ({"lr": -1}, "params.lr: got -1.0, expected a value > 0"),
    ({"lr": "fast"}, "params.lr: got 'fast', expected a number"),
    ({"lr": float("nan")}, "params.lr: got nan, expected a finite number"),
    ({"lr": True}, "params.lr: got True, expected a number"),
    ({"hidden_dim": 8.5}, "params.hidden_dim: got 8.5, expected an integer"),
    ({"hidden_dim": True}, "params.hidden_dim: got True, expected an integer"),
    ({"hidden_dim": 0}, "params.hidden_dim: got 0, expected a value >= 1"),
    ({"mining": "batch_al"}, "params.mining: got 'batch_al', expected one of 'batch_all', 'batch_hard' "
                             "(did you mean 'batch_all'?)"),
    ({"lrr": 0.1}, "params.lrr: unknown key (did you mean 'lr'?)"),
    ({"inner": {"patience": 0}}, "params.inner.patience: got 0, expected a value >= 1"),
    ({"verbose": "yes"}, "params.verbose: got 'yes', expected true or false"),
])
def test_errors_are_one_line_and_name_field_value_and_allowed(raw, expected):
    with pytest.raises(ConfigError) as err:
        parse(Example, raw, where="params.")
    message = str(err.value)
    assert message.startswith(expected)
    assert "\n" not in message


def test_not_a_mapping():
    with pytest.raises(ConfigError, match="expected a mapping"):
        parse(Example, [1, 2], where="params.")


def test_registry_resolves_import_paths_and_refuses_unknown_names():
    assert models.resolve("hpsearch.models.config:parse") is parse
    with pytest.raises(ConfigError, match="did you mean 'triplet'"):
        models.resolve("triplett")
    with pytest.raises(ConfigError, match="cannot import 'no_such_pkg.mod'"):
        models.resolve("no_such_pkg.mod:Factory")
    with pytest.raises(ConfigError, match="has no attribute 'Nope'"):
        models.resolve("hpsearch.models.config:Nope")


def test_a_shadowed_package_is_named_with_where_it_was_found(tmp_path, monkeypatch):
    """A user's models/mine.py next to another package named ``models`` earlier on sys.path: the
    error says which ``models`` was imported, which is the cause."""
    for root, files in ((tmp_path / "first", {"__init__.py": ""}), (tmp_path / "mine", {"__init__.py": "", "mine.py": ""})):
        (root / "models").mkdir(parents=True)
        for name, text in files.items():
            (root / "models" / name).write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path / "mine"))
    monkeypatch.syspath_prepend(str(tmp_path / "first"))
    monkeypatch.delitem(sys.modules, "models", raising=False)
    with pytest.raises(ConfigError, match=r"No module named 'models\.mine' \('models' was found at .*first/models; "
                                          r"is another package named 'models' shadowing yours\?\)"):
        models.resolve("models.mine:MyModel")
    monkeypatch.delitem(sys.modules, "models", raising=False)


def test_user_factory_without_config_passes_params_through():
    assert models.validate_params("hpsearch.models.config:parse", {"anything": 1}) == {"anything": 1}
