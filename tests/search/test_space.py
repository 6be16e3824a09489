"""hpsearch.core.space: YAML space specs -> Optuna distributions, and the one-line errors for bad specs."""

from __future__ import annotations

import optuna.distributions as d
import pytest

from hpsearch.core.space import parse_space, parse_spec
from hpsearch.models.config import ConfigError

SCRIPTED_PARAMS = {"curve", "quality", "onset", "lr", "epoch_sleep"}


@pytest.mark.parametrize("raw, expected", [
    ({"loguniform": [1e-5, 1e-1]}, d.FloatDistribution(1e-5, 1e-1, log=True)),
    ({"loguniform": ["1e-5", "1e-1"]}, d.FloatDistribution(1e-5, 1e-1, log=True)),   # YAML 1.1 strings
    ({"uniform": [0, 1]}, d.FloatDistribution(0.0, 1.0)),
    ({"int": [16, 256], "log": True}, d.IntDistribution(16, 256, log=True)),
    ({"int": [2.0, 8]}, d.IntDistribution(2, 8)),
    ({"choice": ["batch_all", "batch_hard"]}, d.CategoricalDistribution(["batch_all", "batch_hard"])),
])
def test_specs_map_to_optuna_distributions(raw, expected):
    assert parse_spec("p", raw).to_optuna() == expected


@pytest.mark.parametrize("raw, expected", [
    ({"logunifrom": [1e-5, 1e-1]}, "space.p.logunifrom: unknown spec kind (did you mean 'loguniform'?)"),
    ({"uniform": [1, 1]}, "space.p.uniform: low 1 >= high 1; expected low < high"),
    ({"uniform": [2, 1]}, "space.p.uniform: low 2 >= high 1"),
    ({"loguniform": [0, 1]}, "space.p.loguniform: low 0 <= 0; a log range needs low > 0"),
    ({"int": [0, 8], "log": True}, "space.p.int: low 0 <= 0; a log range needs low > 0"),
    ({"choice": []}, "space.p.choice: got [], expected a non-empty list"),
    ({"choice": ["a", "a"]}, "space.p.choice: got ['a', 'a'], expected distinct values"),
    ({"uniform": [0, 1, 2]}, "space.p.uniform: got [0, 1, 2], expected [low, high]"),
    ({"uniform": [0, float("inf")]}, "space.p.uniform[1]: got inf, expected a finite number"),
    ({"int": [1.5, 4]}, "space.p.int[0]: got 1.5, expected an integer"),
    ({"uniform": [0, 1], "log": True}, "space.p.log: got true with uniform, expected log only with int"),
    ({"uniform": [0, 1], "choice": [1]}, "space.p: got {'uniform': [0, 1], 'choice': [1]}, expected exactly one"),
    ("0.1", "space.p: got '0.1', expected a mapping"),
])
def test_bad_specs_fail_with_one_line_naming_field_and_value(raw, expected):
    with pytest.raises(ConfigError) as err:
        parse_spec("p", raw)
    assert str(err.value).startswith(expected)
    assert "\n" not in str(err.value)


def test_unknown_parameter_gets_did_you_mean():
    with pytest.raises(ConfigError, match=r"space.qualty: not a parameter of the model \(did you mean 'quality'\?\)"):
        parse_space({"qualty": {"uniform": [0.1, 0.9]}}, allowed=SCRIPTED_PARAMS)


def test_every_value_the_space_can_produce_is_checked_with_the_model():
    seen = []

    def check(name, value):
        seen.append((name, value))
        if name == "quality" and value > 1:
            raise ConfigError(f"space.{name}: got {value!r}, expected a value <= 1")

    parse_space({"curve": {"choice": ["nan", "explode"]}, "onset": {"int": [1, 5]}}, check_param=check)
    assert seen == [("curve", "nan"), ("curve", "explode"), ("onset", 1), ("onset", 5)]
    with pytest.raises(ConfigError, match="space.quality: got 2.0"):
        parse_space({"quality": {"uniform": [0.5, 2.0]}}, check_param=check)


def test_contains_respects_kind_and_bounds():
    lr = parse_spec("lr", {"loguniform": [1e-4, 1e-1]})
    assert lr.contains(1e-3) and not lr.contains(1.0) and not lr.contains("1e-3")
    n = parse_spec("n", {"int": [1, 4]})
    assert n.contains(3) and n.contains(3.0) and not n.contains(2.5) and not n.contains(True)
    c = parse_spec("c", {"choice": [1, "a"]})
    assert c.contains(1) and c.contains("a") and not c.contains(1.0) and not c.contains(True)
