"""hpsearch.core.config: one YAML file -> a validated RunConfig, or one line naming what is wrong."""

from __future__ import annotations

import pytest

from hpsearch.core.config import build_config, dump_config, load_config
from hpsearch.models.config import ConfigError
from tests.fixtures.toy_models import MINIMAL, SCRIPTED, Scripted

TOY = f"""
model: {SCRIPTED}
seed: 3
epochs: 6
params: {{quality: 0.8, onset: 2}}
space:
  lr: {{loguniform: [1.0e-4, 1.0e-1]}}
  onset: {{int: [1, 5]}}
  curve: {{choice: [healthy, nan]}}
warm_start:
  - {{lr: 1.0e-3, onset: 3.0}}
budget: {{num_samples: 4, max_epochs: 5}}
scheduler: {{grace_period: 2, reduction_factor: 2}}
health: {{flatline: {{patience: 4}}}}
resources: {{cpu: 0.5}}
checkpoint: {{interval: 2}}
"""


def base(**sections):
    raw = {"model": SCRIPTED, "objective": {"metric": "val_score", "mode": "max"}}
    raw.update(sections)
    return raw


def test_a_training_config_without_a_space_has_no_rungs_to_reach():
    """`hpsearch train` of a 1-epoch config is not refused for the scheduler's default grace period."""
    assert build_config(base(epochs=1)).epochs == 1


def test_a_full_config_loads_typed_and_round_trips_through_search_yaml(tmp_path, config_file):
    config = load_config(config_file(TOY))
    assert config.params["quality"] == 0.8 and config.params["curve"] == "healthy"   # defaults filled in
    assert config.objective.metric == "val_score" and config.objective.mode == "max"  # the model's default
    assert config.max_epochs == 5 and config.epochs == 6
    assert config.space["onset"].to_optuna().low == 1
    assert config.warm_start == ({"lr": 1e-3, "onset": 3},)
    assert type(config.warm_start[0]["onset"]) is int
    assert config.health.flatline.patience == 4 and config.resources.cpu == 0.5
    dump_config(config, tmp_path / "again.yaml")
    assert load_config(tmp_path / "again.yaml") == config


def test_overrides_reach_params_and_sections(config_file):
    path = config_file(TOY)
    config = load_config(path, ["quality=0.5", "budget.num_samples=9", "seed=11",
                                "space.lr.loguniform=[1e-5, 1e-2]"])
    assert config.params["quality"] == 0.5
    assert config.budget.num_samples == 9 and config.seed == 11
    assert config.space["lr"].low == 1e-5


@pytest.mark.parametrize("raw, expected", [
    (base(sapce={}), "sapce: unknown key (did you mean 'space'?)"),
    (base(params={"qualty": 0.5}), "params.qualty: unknown key (did you mean 'quality'?)"),
    (base(params=[1, 2]), "params: got [1, 2], expected a mapping"),
    (base(params={"quality": 2}), "params.quality: got 2.0, expected a value > 0 and <= 1"),
    (base(objective={"metric": "val_scor", "mode": "max"}),
     "objective.metric: 'val_scor' is not reported by model"),
    (base(objective={"metric": "val_score", "mode": "maximise"}), "objective.mode: got 'maximise', expected one of"),
    (base(objective={"metric": "val_score", "mode": "max", "rank": "avg"}),
     "objective.rank: got 'avg', expected one of 'best', 'last', 'mean'"),
    (base(objective={"metric": "val_score", "mode": "max", "rank": "mean", "window": 0}),
     "objective.window: got 0, expected a value >= 1"),
    (base(objective={"metric": "val_score", "mode": "max", "windw": 3}), "objective.windw: unknown key (did you mean 'window'?)"),
    (base(space={"quality": {"uniform": [0.5, 2.0]}}), "space.quality: got 2.0, expected a value > 0 and <= 1"),
    (base(space={"lr": {"loguniform": [1e-4, 1e-1]}}, warm_start=[{"lr": 1.0}]),
     "warm_start[0].lr: got 1.0, expected loguniform in [0.0001, 0.1]"),
    (base(space={"lr": {"loguniform": [1e-4, 1e-1]}}, warm_start=[{"onset": 2}]),
     "warm_start[0].onset: unknown key"),
    (base(scheduler={"grace_period": 8}, epochs=5, space={"onset": {"int": [1, 4]}}),
     "scheduler.grace_period: got 8, expected a value <= max_epochs (5)"),
    (base(budget={"num_samples": 0}), "budget.num_samples: got 0, expected a value >= 1"),
    (base(resources={"cpu": 0}), "resources.cpu: got 0.0, expected a value > 0"),
    (base(health={"flatline": {"patience": 1}}), "health.flatline.patience: got 1"),
    (base(seed=float("nan")), "seed: got nan, expected a finite number"),
    (base(model="tripplet"), "model: got 'tripplet' (did you mean 'triplet'?)"),
    (base(model="no_such_module_xyz:Factory"), "model: cannot import 'no_such_module_xyz'"),
])
def test_bad_configs_fail_with_one_line(raw, expected):
    with pytest.raises(ConfigError) as err:
        build_config(raw)
    assert str(err.value).startswith(expected), str(err.value)
    assert "\n" not in str(err.value)


def test_file_errors_name_the_file_and_line(tmp_path, config_file):
    with pytest.raises(ConfigError, match=r"is not a file"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match=r"is empty"):
        load_config(config_file("", "empty.yaml"))
    with pytest.raises(ConfigError, match=r"holds list, expected a mapping"):
        load_config(config_file("- a\n- b\n", "list.yaml"))
    with pytest.raises(ConfigError, match=r"broken.yaml' is not valid YAML at line 2: found character"):
        load_config(config_file("model: x\n\tseed: 3\n", "broken.yaml"))


def test_a_model_without_a_default_objective_needs_one():
    with pytest.raises(ConfigError, match="objective: missing; this model declares no default"):
        build_config({"model": MINIMAL})
    config = build_config({"model": MINIMAL, "objective": {"metric": "val_acc", "mode": "max"}})
    assert config.params == {}   # no declared Config: params pass through, the first report is checked


@pytest.mark.parametrize("given, algorithm, sampler", [
    ({}, "auto", "rung-tpe"), ({"algorithm": "random"}, "random", "random"),
    ({"algorithm": "rung-tpe"}, "rung-tpe", "rung-tpe"), ({"algorithm": "tpe"}, "tpe", "tpe"),
])
def test_the_algorithm_is_chosen_in_the_config_and_kept_in_the_run_dir(tmp_path, given, algorithm, sampler):

    raw = {"model": "hpsearch.models.config:parse", "objective": {"metric": "val_acc", "mode": "max"},
           "space": {"lr": {"loguniform": [1e-4, 1e-1]}}, **given}
    config = build_config(raw)
    assert (config.algorithm, config.sampler) == (algorithm, sampler)
    dump_config(config, tmp_path / "search.yaml")
    assert load_config(tmp_path / "search.yaml") == config


def test_an_unknown_algorithm_is_one_line_naming_the_choices():
    from hpsearch.core.config import build_config

    with pytest.raises(ConfigError, match=r"^algorithm: .*'bohb'.*'rung-tpe'"):
        build_config({"model": "hpsearch.models.config:parse", "objective": {"metric": "val_acc", "mode": "max"},
                      "algorithm": "bohb"})


@pytest.mark.parametrize("collapse, expected", [
    ({"val_score": "low"}, "collapse: got 'val_score': 'low', expected metric name -> finite floor"),
    ({"val_scor": 0.01}, "collapse: 'val_scor' is not a metric it reports (did you mean 'val_score'?)"),
    ([("val_score", 0.01)], "collapse: got [('val_score', 0.01)], expected a mapping"),
])
def test_a_bad_collapse_declaration_is_refused_before_any_trial(monkeypatch, collapse, expected):
    """A user model's ``collapse`` is checked with the config, naming the model, not in every trial."""
    monkeypatch.setattr(Scripted, "collapse", collapse, raising=False)
    with pytest.raises(ConfigError) as err:
        build_config(base())
    assert str(err.value).startswith(f"model {SCRIPTED!r}: {expected}"), str(err.value)


def test_a_good_collapse_declaration_passes(monkeypatch):
    monkeypatch.setattr(Scripted, "collapse", {"val_score": 1e-3}, raising=False)
    assert build_config(base()).model == SCRIPTED
