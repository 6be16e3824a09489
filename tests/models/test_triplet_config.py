"""Bad triplet input fails early with a one-line ConfigError naming the problem: through
models.build, through hpsearch.core.config.build_config (before anything trains) and through the CLI."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from hpsearch import models
from hpsearch.cli import main
from hpsearch.core.config import build_config, load_config
from hpsearch.models.config import ConfigError
from hpsearch.models.triplet.splits import class_order


def npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def empty_dir(tmp):
    (tmp / "empty").mkdir()
    return str(tmp / "empty")


def class_folder_without_images(tmp):
    (tmp / "images" / "cat").mkdir(parents=True)
    (tmp / "images" / "cat" / "readme.txt").write_text("no pictures here")
    return str(tmp / "images")


X = np.zeros((10, 3), dtype=np.float32)
FEW = np.array([0] * 6 + [1] * 4)            # class 1: 4 samples, 3 of them for training

# (case, params from a tmp dir, words the one-line message must contain)
CASES = [
    ("missing data_dir", lambda t: {"data_dir": str(t / "nowhere")},
     ["params.data_dir", "nowhere", "does not exist"]),
    ("empty folder", lambda t: {"data_dir": empty_dir(t)}, ["params.data_dir", "is empty"]),
    ("class folder without images", lambda t: {"data_dir": class_folder_without_images(t)},
     ["params.data_dir", "'cat'", "no PNG/JPEG"]),
    ("npz without y", lambda t: {"data_dir": npz(t / "a.npz", x=X)},
     ["params.data_dir", "has no array 'y' (it holds x)"]),
    ("npz lengths differ", lambda t: {"data_dir": npz(t / "b.npz", x=X, y=np.zeros(9, dtype=np.int64))},
     ["params.data_dir", "x has 10 rows but y has 9"]),
    ("npz float labels", lambda t: {"data_dir": npz(t / "c.npz", x=X, y=np.zeros(10))},
     ["params.data_dir", "y has", "integer"]),
    ("class below k", lambda t: {"data_dir": npz(t / "d.npz", x=X, y=FEW), "k": 4, "batch_size": 8,
                                 "val_fraction": 0.2, "test_fraction": 0.0},
     ["params.data_dir", "class '1'", "3 training samples", "fewer than k=4", "k=2 works"]),
    ("synthetic class below k", lambda t: {"samples_per_class": 5, "k": 4},
     ["params.samples_per_class", "fewer than k=4"]),
    ("test split without pairs", lambda t: {"samples_per_class": 10, "test_fraction": 0.1},
     ["params.samples_per_class", "test_fraction 0.1", "no class with 2 test samples"]),
    ("unknown key", lambda t: {"embeding_dim": 8}, ["params.embeding_dim", "did you mean 'embedding_dim'"]),
    ("embedding_dim < 1", lambda t: {"embedding_dim": 0}, ["params.embedding_dim", "got 0", ">= 1"]),
    ("batch not a multiple of k", lambda t: {"batch_size": 30, "k": 4},
     ["params.batch_size", "got 30", "multiple of k=4"]),
    ("one class per pk batch", lambda t: {"batch_size": 4, "k": 4}, ["params.batch_size", "2 × k"]),
    ("random batch above the training set", lambda t: {"num_classes": 4, "samples_per_class": 10,
                                                       "sampler": "random", "batch_size": 64},
     ["params.samples_per_class", "24 training samples, fewer", "batch_size 24 works"]),
    ("max_z below 1", lambda t: {"max_z": 0.5}, ["params.max_z", "got 0.5", ">= 1"]),
    ("unknown mining", lambda t: {"mining": "hard"}, ["params.mining", "'hard'", "batch_all"]),
    ("margin above 2", lambda t: {"margin": 3.0}, ["params.margin", "<= 2"]),
    ("fractions sum to 1", lambda t: {"val_fraction": 0.5, "test_fraction": 0.5},
     ["params.test_fraction", "< 1"]),
]


def check_message(message, words):
    assert "\n" not in message
    for word in words:
        assert word in message, (word, message)


@pytest.mark.parametrize("make, words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_params_fail_in_models_build_and_in_build_config(tmp_path, make, words):
    params = make(tmp_path)
    with pytest.raises(ConfigError) as err:
        models.build("triplet", params, device="cpu", seed=0)
    check_message(str(err.value), words)
    with pytest.raises(ConfigError) as err:
        build_config({"model": "triplet", "params": params})
    check_message(str(err.value), words)


def test_a_search_space_that_can_produce_a_refused_value_is_refused():
    with pytest.raises(ConfigError) as err:
        build_config({"model": "triplet", "space": {"embedding_dim": {"int": [0, 8]}}})
    check_message(str(err.value), ["space.embedding_dim", "got 0", ">= 1"])


SHIPPED = Path(__file__).resolve().parents[2] / "configs" / "triplet.yaml"


def three_classes(path, per_class=10, seed=0):
    """A small real-valued 3-class .npz: fewer classes than the shipped batch of 16 x 4 asks for."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(3), per_class)
    x = rng.normal(size=(len(y), 5)) + 3 * np.eye(3, 5)[y]
    np.savez(path, x=x.astype(np.float32), y=y)
    return str(path)


@pytest.mark.parametrize("split, classes", [("samples", 16), ("classes", 10)])
def test_pk_batch_draws_every_training_class_when_p_asks_for_more(split, classes, capsys):
    """batch_size 128 with k 4 asks for P = 32 classes; the training split holds fewer, so each
    batch holds all of them, k each, and the model says so on stderr."""
    params = {"split": split, "batch_size": 128, "k": 4, "samples_per_class": 20, "hidden_dim": 8,
              "embedding_dim": 4}
    build_config({"model": "triplet", "params": params})
    model = models.build("triplet", params, device="cpu", seed=0)
    assert (model.sampler.p, model.sampler.k) == (classes, 4)
    batch = model.sampler.epoch(torch.Generator().manual_seed(0))[0]
    assert torch.bincount(model.data.train.y[batch]).tolist() == [4] * classes
    assert f"batches are {classes} x 4 = {classes * 4}" in capsys.readouterr().err
    assert model.train_epoch()["train_triplets"] > 0


def test_shipped_config_trains_on_a_3_class_npz_without_edits(tmp_path, capsys):
    data = three_classes(tmp_path / "three.npz")
    code = main(["train", str(SHIPPED), "--set", f"data_dir={data}", "--epochs", "1",
                 "--device", "cpu", "--out", str(tmp_path / "out")])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "out" / "model.pt").is_file()
    assert "batches are 3 x 4 = 12" in capsys.readouterr().err


def test_train_ignores_search_only_values_a_search_refuses(tmp_path, capsys):
    """A space value the data cannot take (random batches of 64 from 18 training samples) and a
    grace_period past the epochs refuse a search; `train` uses neither and trains."""
    raw = {"model": "triplet", "epochs": 2, "device": "cpu",
           "params": {"data_dir": three_classes(tmp_path / "three.npz"), "sampler": "random", "batch_size": 16,
                      "hidden_dim": 8, "embedding_dim": 4},
           "space": {"batch_size": {"choice": [16, 64]}}}
    with pytest.raises(ConfigError) as err:
        build_config(raw)
    check_message(str(err.value), ["space.batch_size=64", "18 training samples, fewer", "fewer than batch_size 64"])
    late = {**raw, "space": {"lr": {"loguniform": [1e-4, 1e-2]}}, "scheduler": {"grace_period": 3}}
    with pytest.raises(ConfigError, match="scheduler.grace_period: got 3"):
        build_config(late)
    for i, config in enumerate((raw, late)):
        path = tmp_path / f"config{i}.yaml"
        path.write_text(yaml.safe_dump(config))
        assert load_config(path).space                          # train and evaluate read it so
        assert main(["train", str(path), "--out", str(tmp_path / f"out{i}")]) == 0, capsys.readouterr().err
        with pytest.raises(ConfigError):
            load_config(path, search=True)


def test_cli_train_exits_2_with_one_line(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({"model": "triplet", "params": {"data_dir": str(tmp_path / "gone")}}))
    assert main(["train", str(config), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hpsearch train: error: params.data_dir:") and "does not exist" in err
    assert "\n" not in err
    assert not (tmp_path / "out").exists()


def test_shipped_config_loads_with_the_users_setting_as_a_warm_start():
    config = load_config(SHIPPED)
    assert config.model == "triplet" and config.objective.metric == "val_recall_at_1"
    assert config.params["sampler"] == "pk"
    users = config.warm_start[0]
    assert users["sampler"] == "random" and users["batch_size"] == 16
    assert set(users) == set(config.space)
    assert {"lr", "hidden_dim", "embedding_dim", "margin", "mining", "sampler", "batch_size"} <= set(config.space)


def test_a_class_split_that_can_leave_too_few_rows_for_a_batch_is_refused_whatever_the_seed(tmp_path):
    """Four classes of 2 and one of 100, whole classes held out: a seed that holds out the big class
    leaves 8 training rows, no batch of 64. Refused before training (the smallest training split the
    seed can draw), where it used to pass on the average and fail in the first epoch."""
    y = np.repeat(np.arange(5), [2, 2, 2, 2, 100])
    x = np.random.default_rng(0).normal(size=(len(y), 3)).astype(np.float32)
    np.savez(tmp_path / "skewed.npz", x=x, y=y)
    params = {"data_dir": str(tmp_path / "skewed.npz"), "split": "classes", "sampler": "random",
              "batch_size": 64, "val_fraction": 0.2, "test_fraction": 0.0}
    for seed in (3, 5):
        with pytest.raises(ConfigError) as err:
            models.build("triplet", params, device="cpu", seed=seed)
        check_message(str(err.value), ["params.data_dir", "as few as 8 training samples", "split 'classes'",
                                       "batch_size 8 works"])
    built = models.build("triplet", {**params, "batch_size": 8}, device="cpu", seed=3)
    assert all(math.isfinite(v) for v in built.train_epoch().values())


def test_a_class_split_fixed_by_data_seed_is_checked_as_it_falls(tmp_path):
    """With data_seed the held-out classes are fixed: a split that keeps the big class for training
    is not refused for what another seed could have left."""
    y = np.repeat(np.arange(5), [2, 2, 2, 2, 100])
    x = np.random.default_rng(0).normal(size=(len(y), 3)).astype(np.float32)
    np.savez(tmp_path / "skewed.npz", x=x, y=y)
    params = {"data_dir": str(tmp_path / "skewed.npz"), "split": "classes", "sampler": "random",
              "batch_size": 64, "val_fraction": 0.2, "test_fraction": 0.0}
    kept = [s for s in range(20) if 4 not in class_order(5, s)[4:]]        # the big class trains
    lost = [s for s in range(20) if 4 in class_order(5, s)[4:]]            # the big class is held out
    assert kept and lost
    built = models.build("triplet", {**params, "data_seed": kept[0]}, device="cpu", seed=7)
    assert all(math.isfinite(v) for v in built.train_epoch().values())
    with pytest.raises(ConfigError, match="params.data_dir: 8 training samples, fewer than batch_size 64"):
        models.build("triplet", {**params, "data_seed": lost[0]}, device="cpu", seed=7)
