"""Params are typed and strict: bad ones fail with one line naming field, value and what is allowed."""

from __future__ import annotations

import pytest

from hpsearch import models
from hpsearch.core.config import build_config, load_config
from hpsearch.models.config import ConfigError, parse
from hpsearch.models.symmetric.data import write_jsonl
from hpsearch.models.symmetric.model import SymmetricConfig, SymmetricModel
from hpsearch.models.symmetric.stories import generate_stories
from tests.fixtures.cli import REPO


def _error(params) -> str:
    with pytest.raises(ConfigError) as err:
        parse(SymmetricConfig, params, where="params.")
    message = str(err.value)
    assert "\n" not in message
    return message


def test_defaults_are_the_users_settings():
    c = parse(SymmetricConfig, {}, where="params.")
    assert (c.num_stories, c.batch_size, c.lr, c.hidden_dim, c.num_rules) == (1000, 32, 3e-4, 128, 16)
    assert (c.w_parse, c.w_generate, c.w_cycle) == (1.0, 1.0, 0.5)


def test_num_rules_zero_is_refused():
    message = _error({"num_rules": 0})
    assert message.startswith("params.num_rules: got 0") and ">= 1" in message


def test_a_negative_weight_is_refused():
    message = _error({"w_cycle": -0.5})
    assert message.startswith("params.w_cycle: got -0.5") and ">= 0" in message


def test_all_weights_zero_is_refused():
    message = _error({"w_parse": 0, "w_generate": 0.0, "w_cycle": 0})
    assert "w_parse" in message and "w_generate" in message and "w_cycle" in message
    assert "0.0, 0.0, 0.0" in message and "at least one weight > 0" in message


def test_one_weight_left_is_enough():
    assert parse(SymmetricConfig, {"w_parse": 0, "w_generate": 0, "w_cycle": 0.1}).w_cycle == 0.1


def test_unknown_key_gets_did_you_mean():
    assert "did you mean 'hidden_dim'" in _error({"hiden_dim": 64})


def test_registry_and_declarations():
    assert models.resolve("symmetric") is SymmetricModel
    assert SymmetricModel.objective == ("val_fact_acc", "max")
    for key in ("train_loss", "train_loss_parse", "train_loss_generate", "train_loss_cycle_forward",
                "train_loss_cycle_backward", "train_grad_norm", "train_batch_loss_std", "val_fact_acc",
                "val_exact", "val_any", "val_gen_token_acc", "val_gen_exact", "val_cycle_acc",
                "test_fact_acc"):
        assert key in SymmetricModel.reported


def test_the_shipped_config_loads_with_its_search_part():
    config = load_config(REPO / "configs" / "symmetric.yaml")
    assert config.model == "symmetric"
    assert (config.objective.metric, config.objective.mode) == ("val_fact_acc", "max")
    assert config.params["num_rules"] == 16 and config.params["lr"] == 3e-4
    assert {"lr", "hidden_dim", "num_rules", "w_parse", "w_generate", "w_cycle", "batch_size"} <= set(config.space)
    assert config.space["lr"].kind == "loguniform" and config.space["batch_size"].kind == "choice"
    assert [p["lr"] for p in config.warm_start] == [3e-4, 1e-4]
    for point in config.warm_start:
        assert point["hidden_dim"] == 128 and point["num_rules"] == 16 and point["w_cycle"] == 0.5


def test_a_bad_override_fails_before_anything_runs():
    with pytest.raises(ConfigError, match=r"^params\.num_rules: got 0"):
        load_config(REPO / "configs" / "symmetric.yaml", ["num_rules=0"])


def test_too_few_stories_for_the_split_are_refused_with_the_config(tmp_path):
    """Two stories in a file, or 10 generated with fractions near a half, leave none for training:
    refused when the config is parsed (before a search starts), naming the field and the split."""
    write_jsonl(generate_stories(2, 0), tmp_path / "two.jsonl")
    raw = {"model": "symmetric", "params": {"data_dir": str(tmp_path / "two.jsonl")},
           "space": {"lr": {"loguniform": [1e-4, 1e-2]}}}
    with pytest.raises(ConfigError) as err:
        build_config(raw)
    assert str(err.value).startswith("params.data_dir: 2 stories leave none for training after the split "
                                     "(1 for validation at val_fraction 0.15, 1 for test at test_fraction 0.15)")
    message = _error({"num_stories": 10, "val_fraction": 0.49, "test_fraction": 0.49})
    assert message.startswith("params.num_stories: 10 stories leave none for training")
    write_jsonl(generate_stories(3, 0), tmp_path / "three.jsonl")
    assert parse(SymmetricConfig, {"data_dir": str(tmp_path / "three.jsonl")}).data_dir.endswith("three.jsonl")
