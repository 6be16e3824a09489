"""hpsearch.models.triplet.data and .samplers: synthetic data, splits, the two samplers, and both data_dir
formats."""

import numpy as np
import torch

from hpsearch.models.triplet.data import split_indices, synthetic
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
