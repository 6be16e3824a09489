"""hpsearch.models.triplet.model: it learns, it diagnoses the users' old loader, it is deterministic, and a
checkpoint continues exactly."""

import io
import math

import pytest
import torch

from hpsearch import models
from hpsearch.models.api import Model
from hpsearch.models.triplet.model import TripletModel

torch.set_num_threads(1)
CPU = torch.device("cpu")
SMALL = {"samples_per_class": 40, "hidden_dim": 32, "embedding_dim": 8, "batch_size": 32}


def test_is_a_model_and_declares_what_it_reports():
    model = models.build("triplet", SMALL, device="cpu", seed=0)
    assert isinstance(model, Model)
    row = {**model.train_epoch(), **model.evaluate()}
    assert set(row) == set(TripletModel.reported)
    assert all(type(v) is float for v in row.values())
    assert TripletModel.objective == ("val_recall_at_1", "max")
    assert set(TripletModel.collapse) <= set(TripletModel.reported)


def test_short_seeded_run_raises_recall_well_above_the_untrained_model():
    model = TripletModel({}, CPU, seed=0)                     # the default config and data
    untrained = model.evaluate()["val_recall_at_1"]
    for _ in range(4):
        row = model.train_epoch()
    trained = model.evaluate()["val_recall_at_1"]
    assert untrained < 0.3
    assert trained > untrained + 0.4
    assert 0 < row["train_active_triplets"] < 1 and row["train_batch_loss_std"] > 0


def test_users_old_loader_learns_nothing_and_pk_learns_on_the_same_budget():
    """16 classes, batches of 16. `random` deals one sample per class per batch: no triplet, loss 0
    on every batch, zero gradients, validation unchanged. `pk` (4 classes × 4) learns."""
    common = {"samples_per_class": 200, "batch_size": 16}
    rows = {}
    for sampler in ("random", "pk"):
        model = TripletModel({**common, "sampler": sampler}, CPU, seed=0)
        before = model.evaluate()["val_recall_at_1"]
        history = [model.train_epoch() for _ in range(3)]
        rows[sampler] = (before, history, model.evaluate()["val_recall_at_1"])

    before, history, after = rows["random"]
    for row in history:
        assert row["train_triplets"] == 0 and row["train_active_triplets"] == 0
        assert row["train_loss"] == 0 and row["train_batch_loss_std"] == 0 and row["train_grad_norm"] == 0
        assert math.isnan(row["train_pos_dist"])                   # no positive pair was ever seen
    assert after == before

    before, history, after = rows["pk"]
    for row in history:
        assert row["train_triplets"] > 0 and row["train_active_triplets"] > 0.3
        assert row["train_loss"] > 0 and row["train_batch_loss_std"] > 0
    assert after > before + 0.2


def test_same_params_and_seed_give_identical_metrics():
    a, b = (TripletModel(SMALL, CPU, seed=3) for _ in range(2))
    assert [a.train_epoch(), a.evaluate()] == [b.train_epoch(), b.evaluate()]
    c = TripletModel(SMALL, CPU, seed=4)
    assert c.train_epoch() != TripletModel(SMALL, CPU, seed=3).train_epoch()


def test_state_dict_round_trip_continues_identically():
    model = TripletModel(SMALL, CPU, seed=1)
    model.train_epoch()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)

    restored = TripletModel(SMALL, CPU, seed=1)
    fresh = TripletModel(SMALL, CPU, seed=1)
    restored.load_state_dict(state)
    assert restored.epoch == 1
    expected = [model.train_epoch(), model.evaluate()]
    assert [restored.train_epoch(), restored.evaluate()] == expected
    assert [fresh.train_epoch(), fresh.evaluate()] != expected     # without the state it differs
    for p, q in zip(model.net.parameters(), restored.net.parameters()):
        assert torch.equal(p, q)


def test_test_split_is_reported_with_test_prefix_or_refused_when_absent():
    model = TripletModel(SMALL, CPU, seed=0)
    assert set(model.evaluate("test")) == {k.replace("val_", "test_") for k in model.evaluate("val")}
    no_test = TripletModel({**SMALL, "test_fraction": 0.0}, CPU, seed=0)
    with pytest.raises(models.ConfigError, match="test_fraction"):
        no_test.evaluate("test")


def test_data_seed_fixes_the_data_across_run_seeds():
    a = TripletModel({**SMALL, "data_seed": 7}, CPU, seed=0)
    b = TripletModel({**SMALL, "data_seed": 7}, CPU, seed=1)
    c = TripletModel(SMALL, CPU, seed=1)
    assert torch.equal(a.data.val.x, b.data.val.x)
    assert not torch.equal(b.data.val.x, c.data.val.x)
