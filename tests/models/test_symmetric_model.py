"""SymmetricModel through the Model protocol: deterministic, restorable, learns, and evaluable
from the command line."""

from __future__ import annotations

import io
import json
import math

import pytest
import torch

from hpsearch.cli import main
from hpsearch.models.api import Model
from hpsearch.models.config import ConfigError
from hpsearch.models.symmetric.model import SymmetricModel
from tests.fixtures.cli import REPO

TINY = {"num_stories": 60, "hidden_dim": 16, "num_rules": 4, "batch_size": 16}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _run(model, epochs):
    rows = []
    for _ in range(epochs):
        row = model.train_epoch()
        row.update(model.evaluate("val"))
        rows.append(row)
    return rows


def test_same_params_and_seed_give_identical_metrics_and_another_seed_does_not():
    first = _run(SymmetricModel(TINY, "cpu", seed=3), 2)
    again = _run(SymmetricModel(TINY, "cpu", seed=3), 2)
    other = _run(SymmetricModel(TINY, "cpu", seed=4), 2)
    assert first == again
    assert first != other


def test_reports_python_floats_under_the_declared_names():
    model = SymmetricModel(TINY, "cpu", seed=0)
    assert isinstance(model, Model)
    train, val, test = model.train_epoch(), model.evaluate("val"), model.evaluate("test")
    assert set(train) | set(val) | set(test) == set(SymmetricModel.reported)
    assert all(k.startswith("test_") for k in test) and all(k.startswith("val_") for k in val)
    for value in (*train.values(), *val.values(), *test.values()):
        assert type(value) is float and math.isfinite(value)
    assert val["val_fact_acc"] == pytest.approx(
        (val["val_entity_acc"] + val["val_relation_acc"] + val["val_value_acc"]) / 3)
    with pytest.raises(ConfigError, match="split: got 'train'"):
        model.evaluate("train")


def test_state_dict_round_trip_continues_exactly():
    model = SymmetricModel(TINY, "cpu", seed=5)
    model.train_epoch()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    continued = _run(model, 2)

    buffer.seek(0)
    restored = SymmetricModel(TINY, "cpu", seed=5)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert restored.epoch == 1
    assert _run(restored, 2) == continued


def test_weights_for_other_data_are_refused_with_one_line():
    state = SymmetricModel(TINY, "cpu", seed=0).state_dict()
    other = SymmetricModel({**TINY, "num_stories": 80}, "cpu", seed=0)
    with pytest.raises(ConfigError, match=r"^weights: saved for vocab_size"):
        other.load_state_dict(state)


def test_a_short_seeded_run_lifts_fact_accuracy_far_above_chance():
    # chance: a span is two pointers among ~11 positions (~1%), a relation one of 13 (~8%)
    model = SymmetricModel({"num_stories": 150, "hidden_dim": 32, "num_rules": 8, "lr": 3e-3},
                           "cpu", seed=0)
    before = model.evaluate("val")["val_fact_acc"]
    after = _run(model, 6)[-1]
    assert before < 0.1                       # chance level (~0.04 here)
    assert after["val_fact_acc"] > 0.5        # > 10x chance after 6 short epochs
    assert after["val_relation_acc"] > 0.2    # chance: 1 of 13


@pytest.mark.slow
def test_train_then_evaluate_from_the_command_line(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text("model: symmetric\nseed: 0\nepochs: 1\ndevice: cpu\n"
                      "params: {num_stories: 60, hidden_dim: 16, num_rules: 4}\n", encoding="utf-8")
    assert main(["train", str(config), "--out", str(tmp_path / "run")]) == 0
    trained = json.loads((tmp_path / "run" / "metrics.json").read_text())["final"]
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "run"), "--json", str(tmp_path / "val.json")]) == 0
    printed = capsys.readouterr().out
    for key in ("val_entity_acc", "val_relation_acc", "val_value_acc", "val_fact_acc", "val_exact",
                "val_any", "val_gen_token_acc", "val_gen_exact", "val_cycle_acc"):
        assert key in printed
    assert json.loads((tmp_path / "val.json").read_text()) == pytest.approx(trained)
    assert main(["evaluate", str(tmp_path / "run"), "--split", "test"]) == 0
    assert "test_fact_acc" in capsys.readouterr().out


def test_bad_params_fail_on_the_command_line_with_one_line(capsys):
    assert main(["train", str(REPO / "configs" / "symmetric.yaml"), "--set", "num_rules=0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "params.num_rules: got 0" in err
