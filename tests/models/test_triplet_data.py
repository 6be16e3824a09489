"""hpsearch.models.triplet.data and .samplers: synthetic data, splits, the two samplers, and both data_dir
formats."""

import numpy as np
import pytest
import torch

from hpsearch.models.triplet.data import split_indices, standardise, synthetic
from hpsearch.models.triplet.metrics import retrieval_metrics
from hpsearch.models.triplet.model import TripletModel
from hpsearch.models.triplet.samplers import InterleavedSampler, PKSampler

torch.set_num_threads(1)
CPU = torch.device("cpu")


# ----------------------------------------------------------------------------- synthetic

def test_synthetic_is_deterministic_per_seed():
    x1, y1 = synthetic(16, 20, 32, seed=5)
    x2, y2 = synthetic(16, 20, 32, seed=5)
    x3, _ = synthetic(16, 20, 32, seed=6)
    assert x1.shape == (320, 32) and x1.dtype == np.float32
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert not np.allclose(x1, x3)
    assert np.bincount(y1).tolist() == [20] * 16


def test_synthetic_default_is_neither_linearly_separable_nor_solved_by_raw_neighbours():
    """A linear softmax classifier fitted to convergence on the default kind of data (fewer
    samples, to stay fast) stays far from separating it, and nearest neighbours in input space
    mostly find another class: a model has to learn a non-linear embedding."""
    x, y = synthetic(16, 200, 32, seed=0)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    w = torch.zeros(32, 16, requires_grad=True)
    b = torch.zeros(16, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w + b, y)
        loss.backward()
        return loss

    opt.step(closure)
    train_accuracy = ((x @ w + b).argmax(1) == y).float().mean().item()
    assert train_accuracy < 0.75
    assert retrieval_metrics(x, y)["recall_at_1"] < 0.5


# ----------------------------------------------------------------------------- splits

def test_samples_split_holds_out_a_fraction_of_every_class():
    y = np.repeat(np.arange(4), [10, 20, 30, 40])
    train, val, test = split_indices(y, "samples", 0.2, 0.1, np.random.default_rng(0))
    assert sorted(np.concatenate([train, val, test]).tolist()) == list(range(100))
    assert np.bincount(y[val]).tolist() == [2, 4, 6, 8]
    assert np.bincount(y[test]).tolist() == [1, 2, 3, 4]


def test_classes_split_holds_out_whole_classes():
    y = np.repeat(np.arange(10), 5)
    train, val, test = split_indices(y, "classes", 0.2, 0.2, np.random.default_rng(0))
    parts = [set(y[rows].tolist()) for rows in (train, val, test)]
    assert [len(p) for p in parts] == [6, 2, 2]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert len(train) + len(val) + len(test) == 50


# ----------------------------------------------------------------------------- standardisation

def pixels(n=1000, seed=0):
    """Digit-like rows: two ordinary features, a border pixel lit in 3 of ``n`` rows, a pixel that
    is 0 in training and lit only in the last (held-out) row, and a constant feature."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 5), dtype=np.float32)
    x[:, 0] = rng.uniform(0, 16, n)
    x[:, 1] = rng.normal(8, 3, n)
    x[[10, 20, 30], 2] = 16.0
    x[-1, 3] = 16.0
    x[:, 4] = 7.0
    return x, np.arange(n - 1)                                     # training rows: all but the last


def test_standardise_keeps_plain_z_scores_of_ordinary_features():
    x, train = pixels()
    z = standardise(x, train)
    plain = (x[:, :2] - x[train, :2].mean(0)) / x[train, :2].std(0)
    np.testing.assert_allclose(z[:, :2], plain, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(standardise(x, train, max_z=None)[:, :2], z[:, :2])


def test_a_near_constant_feature_is_not_blown_up():
    x, train = pixels()
    assert np.abs(standardise(x, train, max_z=None)[train, 2]).max() > 15   # plain z-scores: ~18
    z = standardise(x, train)
    assert np.abs(z[train, 2]).max() == pytest.approx(6.0, rel=1e-5)
    assert np.abs(z[:, 2]).max() <= 6.0 + 1e-5


def test_a_heavy_tailed_feature_keeps_its_outliers():
    """A continuous feature with far outliers (tumour areas, incomes) is not floored: its outliers
    carry signal, and only a feature at one value in most rows is."""
    rng = np.random.default_rng(0)
    x = rng.lognormal(0, 1, size=(1000, 1)).astype(np.float32)
    plain = standardise(x, np.arange(1000), max_z=None)
    assert np.abs(plain).max() > 10
    np.testing.assert_array_equal(standardise(x, np.arange(1000)), plain)


def test_a_feature_constant_in_training_becomes_zero_everywhere():
    x, train = pixels()
    for max_z in (6.0, None):
        z = standardise(x, train, max_z)
        assert not z[:, 3:].any()                                  # not 16, not 16 / tiny
        assert np.isfinite(z).all() and z.dtype == np.float32


def test_standardise_is_unit_free_per_feature():
    """Changing one feature's units (x 1000, + 5) changes nothing: every feature is scaled by its
    own statistics, never by another feature's."""
    x, train = pixels()
    moved = x.copy()
    moved[:, 2] = moved[:, 2] * 1000 + 5
    np.testing.assert_allclose(standardise(moved, train), standardise(x, train), atol=1e-4)


def test_synthetic_data_keeps_its_plain_z_scores():
    """The floor never binds on the synthetic data: its runs are what they were."""
    x, y = synthetic(16, 150, 32, seed=0)
    train, _, _ = split_indices(y, "samples", 0.2, 0.2, np.random.default_rng(0))
    np.testing.assert_array_equal(standardise(x, train), standardise(x, train, max_z=None))


def test_images_are_standardised_per_channel():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(20, 3, 4, 4)).astype(np.float32) * np.array([1, 10, 100], np.float32)[:, None, None]
    z = standardise(x, np.arange(20))
    assert z.shape == x.shape
    np.testing.assert_allclose(z.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=(0, 2, 3)), 1, rtol=1e-4)


def test_model_inputs_follow_max_z(tmp_path):
    x, _ = pixels(200)
    y = np.repeat(np.arange(4), 50)
    np.savez(tmp_path / "pixels.npz", x=x, y=y)
    params = {"data_dir": str(tmp_path / "pixels.npz"), "hidden_dim": 8, "embedding_dim": 4, "batch_size": 8}
    bounded = TripletModel(params, CPU, seed=0)
    plain = TripletModel(dict(params, max_z=None), CPU, seed=0)
    assert bounded.data.train.x.abs().max() <= 6.0 + 1e-5
    assert plain.data.train.x.abs().max() > 6.0


# ----------------------------------------------------------------------------- samplers

def test_pk_sampler_gives_p_classes_times_k_distinct_samples_per_batch():
    labels = torch.from_numpy(np.repeat(np.arange(7), [4, 5, 9, 4, 12, 6, 4]))   # uneven, min = K
    sampler = PKSampler(labels, p=3, k=4)
    batches = sampler.epoch(torch.Generator().manual_seed(0))
    assert batches.shape == (len(labels) // 12, 12)
    for batch in batches:
        assert len(set(batch.tolist())) == 12                                      # no repeated sample
        classes, counts = labels[batch].unique(return_counts=True)
        assert len(classes) == 3 and counts.tolist() == [4, 4, 4]
        assert (labels[batch].reshape(3, 4) == labels[batch].reshape(3, 4)[:, :1]).all()  # grouped


def test_pk_sampler_is_deterministic_per_generator_and_varies_across_epochs():
    labels = torch.arange(8).repeat_interleave(6)
    sampler = PKSampler(labels, p=4, k=3)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    first = sampler.epoch(g1)
    assert torch.equal(first, sampler.epoch(g2))
    assert not torch.equal(first, sampler.epoch(g1))


def test_random_sampler_batches_of_at_most_c_hold_distinct_classes_and_no_positive_pair():
    """The users' loader: 16 classes, batches of 16 -> one sample per class, nothing to mine."""
    labels = torch.arange(16).repeat_interleave(30)
    sampler = InterleavedSampler(labels, batch_size=16)
    batches = sampler.epoch(torch.Generator().manual_seed(0))
    assert batches.shape == (30, 16)
    assert len(set(batches.flatten().tolist())) == 480                             # each sample once
    for batch in batches:
        assert sorted(labels[batch].tolist()) == list(range(16))


def test_random_sampler_larger_batches_wrap_into_the_next_round_and_hold_positives():
    labels = torch.arange(16).repeat_interleave(30)
    batches = InterleavedSampler(labels, batch_size=32).epoch(torch.Generator().manual_seed(0))
    for batch in batches:
        assert torch.bincount(labels[batch], minlength=16).tolist() == [2] * 16


def test_random_sampler_orders_differ_between_epochs():
    labels = torch.arange(4).repeat_interleave(5)
    sampler = InterleavedSampler(labels, batch_size=4)
    g = torch.Generator().manual_seed(0)
    assert not torch.equal(sampler.epoch(g), sampler.epoch(g))


# ----------------------------------------------------------------------------- data_dir formats

def test_npz_data_dir_trains_and_evaluates(tmp_path):
    x, y = synthetic(6, 12, 10, seed=0)
    np.savez(tmp_path / "points.npz", x=x.astype(np.float64), y=(y * 10 + 3).astype(np.int32))
    params = {"data_dir": str(tmp_path), "batch_size": 8, "k": 4, "hidden_dim": 16, "embedding_dim": 4}
    model = TripletModel(params, CPU, seed=0)
    assert model.data.input_shape == (10,)
    assert len(model.data.train.y) + len(model.data.val.y) + len(model.data.test.y) == 72
    assert model.data.train.y.unique().tolist() == list(range(6))                 # labels renumbered
    assert model.train_epoch()["train_triplets"] > 0
    assert set(model.evaluate()) == {"val_recall_at_1", "val_recall_at_2", "val_recall_at_4",
                                     "val_recall_at_8", "val_map_at_r"}
    same = TripletModel(dict(params, data_dir=str(tmp_path / "points.npz")), CPU, seed=0)  # the file itself
    assert torch.equal(same.data.val.x, model.data.val.x)


def test_image_folder_data_dir_trains_a_cnn(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, name in enumerate(["cat", "dog", "eel"]):
        (tmp_path / name).mkdir()
        for i in range(6):
            pixels = np.clip(rng.normal(60 * (c + 1), 30, size=(20 + i, 24, 3)), 0, 255).astype(np.uint8)
            suffix = ".png" if i % 2 else ".jpg"
            Image.fromarray(pixels).save(tmp_path / name / f"{i}{suffix}")
    (tmp_path / "eel" / "notes.txt").write_text("not an image")
    params = {"data_dir": str(tmp_path), "image_size": 16, "batch_size": 4, "k": 2, "hidden_dim": 16,
              "embedding_dim": 4, "val_fraction": 0.34, "test_fraction": 0.0}
    model = TripletModel(params, CPU, seed=0)
    assert model.data.input_shape == (3, 16, 16)
    assert len(model.data.train.y) + len(model.data.val.y) == 18
    row = model.train_epoch()
    assert row["train_triplets"] > 0 and all(type(v) is float for v in row.values())
    assert 0.0 <= model.evaluate()["val_recall_at_1"] <= 1.0
