"""Export: the best trials' configs and weights, which retrain and re-evaluate to the same result;
bad input; and no pickle in a run dir is ever executed."""

from __future__ import annotations

import io
import json
import math
import pickle
from pathlib import Path

import pytest
import torch
import yaml

from hpsearch import models
from hpsearch.cli import main
from hpsearch.core.config import load_config
from hpsearch.models.fit import fit
from hpsearch.tune.trainable import as_metrics, cpu_threads, save_checkpoint, trial_seed
from tests.fixtures.payloads import Payload
from tests.fixtures.rundir_factory import FakeTrial, checkpoint_file, make_run

# Tiny versions of the built-in models: (fixed params, searched values, space).
TINY = {
    "triplet": ({"num_classes": 6, "samples_per_class": 20, "input_dim": 16, "batch_size": 12, "k": 3,
                 "embedding_dim": 8},
                {"lr": 3e-3, "hidden_dim": 32},
                {"lr": {"loguniform": [1e-4, 1e-1]}, "hidden_dim": {"choice": [16, 32]}}),
    "symmetric": ({"num_stories": 40, "batch_size": 8, "hidden_dim": 16},
                  {"lr": 1e-2},
                  {"lr": {"loguniform": [1e-4, 1e-1]}}),
}
RUN_SEED = 7
EPOCHS = 3


def trained_checkpoints(name: str, fixed: dict, searched: dict, seed: int,
                        scratch: Path) -> tuple[list[dict], dict[int, bytes]]:
    """A trial trained as hpsearch.tune.trainable does it (trial seed, CPU share of 1 thread, models.build,
    hpsearch.models.fit.fit, save_checkpoint after every epoch), without Ray. Returns (history, epoch -> bytes)."""
    torch.set_num_threads(cpu_threads(1.0))
    full = {**fixed, **searched}
    torch.manual_seed(seed)
    model = models.build(name, full, device="cpu", seed=seed)
    rows, saved = [], {}

    def on_epoch(epoch, row):
        rows.append(as_metrics(row))
        directory = scratch / f"{name}-{epoch}"
        directory.mkdir(parents=True)
        saved[epoch] = save_checkpoint(directory, model, rows, seed, full).read_bytes()

    fit(model, EPOCHS, on_epoch=on_epoch)
    return rows, saved


@pytest.fixture
def real_run(tmp_path):
    """A factory-made run dir holding one real trial of a built-in model."""
    def make(name: str) -> tuple[Path, dict]:
        fixed, searched, space = TINY[name]
        seed = trial_seed(RUN_SEED, 1)
        rows, saved = trained_checkpoints(name, fixed, searched, seed, tmp_path / "scratch")
        metrics = [{k: v for k, v in r.items() if k.startswith(("train_", "val_"))} for r in rows]
        trial = FakeTrial("abcde_00000", dict(searched), metrics, "completed", "reached max_epochs", seed=seed,
                          checkpoints=saved)
        metric, mode = models.declared(name, "objective")
        path = make_run(tmp_path, [trial], model=name, params=fixed, objective=(metric, mode), space=space,
                        max_epochs=EPOCHS, epochs=EPOCHS, seed=RUN_SEED)
        return path, {"rows": rows, "seed": seed, "metric": metric, "mode": mode}

    return make


@pytest.mark.parametrize("name", ["triplet", "symmetric"])
def test_export_retrains_and_reevaluates_to_the_trials_objective(real_run, tmp_path, name, capsys, one_torch_thread):
    run, trial = real_run(name)
    metric = trial["metric"]
    out = tmp_path / "best"
    assert main(["export", str(run), "--out", str(out)]) == 0
    (folder,) = out.iterdir()
    assert folder.name == "1_abcde_00000" and sorted(p.name for p in folder.iterdir()) == ["config.yaml", "model.pt"]

    config = load_config(folder / "config.yaml")
    fixed, searched, _ = TINY[name]
    assert trial["mode"] == "max"
    best = max(trial["rows"], key=lambda r: r[metric])       # the earliest epoch on a tie, as export picks
    assert config.model == name and config.seed == trial["seed"] and config.epochs == best["epoch"]
    assert {k: config.params[k] for k in {**fixed, **searched}} == {**fixed, **searched}
    assert config.space == {} and config.objective.metric == metric
    assert config.exported["trial_id"] == "abcde_00000" and config.exported["epoch"] == best["epoch"]
    assert config.exported["objective"]["value"] == best[metric]
    assert set(config.exported["versions"]) >= {"python", "torch"}

    # retrain without Ray; float sums depend on the thread count, so it runs with the trial's
    assert config.exported["threads"] == 1
    torch.set_num_threads(2)
    retrained = tmp_path / "retrained"
    assert main(["train", str(folder / "config.yaml"), "--out", str(retrained), "--device", "cpu"]) == 0
    assert torch.get_num_threads() == 1
    result = json.loads((retrained / "metrics.json").read_text())
    last = result["history"][-1]
    assert last["epoch"] == best["epoch"]
    assert abs(last[metric] - best[metric]) <= 1e-6
    for key, value in best.items():
        if key.startswith("val_"):
            assert abs(last[key] - value) <= 1e-6, key

    # evaluate the exported weights: the same metrics, no training
    evaluated = tmp_path / "eval.json"
    torch.set_num_threads(2)
    assert main(["evaluate", str(folder), "--device", "cpu", "--json", str(evaluated)]) == 0
    metrics = json.loads(evaluated.read_text())
    assert abs(metrics[metric] - best[metric]) <= 1e-6
    assert {k: pytest.approx(v, abs=1e-6) for k, v in metrics.items()} == \
        {k: v for k, v in best.items() if k.startswith("val_")}
    assert torch.get_num_threads() == 1
    capsys.readouterr()


# --- choosing what to export, from hand-made checkpoints -------------------------------------

def _state(epoch: int) -> dict:
    """A checkpoint payload in the trainable's format with a recognisable tensor."""
    return {"model": {"w": torch.full((2,), float(epoch))}, "history": [{"epoch": e} for e in range(1, epoch + 1)],
            "seed": 5, "epoch": epoch, "params": {}}


def _run_with_checkpoints(tmp_path, **kwargs):
    trials = [
        # best epoch 2 of 3 (0.9), checkpoints at 1, 2 and 3
        FakeTrial("aaaaa_00000", {"lr": 1e-3}, _obj([0.5, 0.9, 0.8]), "completed", seed=11,
                  checkpoints={1: _state(1), 2: _state(2), 3: _state(3)}),
        # better than everything, but exploded: never exported
        FakeTrial("aaaaa_00001", {"lr": 5e-2}, _obj([0.95, 0.99]), "pruned_exploding", seed=12,
                  checkpoints={2: _state(2)}),
        # pruned by ASHA at 0.7, checkpoint at its last epoch only
        FakeTrial("aaaaa_00002", {"lr": 1e-4}, _obj([0.6, 0.7]), "pruned_asha", seed=13, checkpoints={2: _state(2)}),
        # completed, but Ray kept only the epoch-3 checkpoint (0.75), not the best epoch 1 (0.85)
        FakeTrial("aaaaa_00003", {"lr": 3e-4}, _obj([0.85, 0.7, 0.75]), "completed", seed=14,
                  checkpoints={3: _state(3)}),
    ]
    return make_run(tmp_path, trials, max_epochs=3, **kwargs)


def _obj(values):
    return [{"train_loss": 1.0, "val_recall_at_1": v} for v in values]


def test_top_k_picks_finished_trials_and_their_best_checkpoint_on_disk(tmp_path, capsys):
    run = _run_with_checkpoints(tmp_path)
    assert main(["export", str(run), "--top", "5"]) == 0
    out = capsys.readouterr().out
    folders = sorted((run / "best").iterdir())
    assert [f.name for f in folders] == ["1_aaaaa_00000", "2_aaaaa_00003", "3_aaaaa_00002"]
    expected = [(11, 2, 0.9, "completed"), (14, 3, 0.75, "completed"), (13, 2, 0.7, "pruned_asha")]
    for folder, (seed, epoch, value, outcome) in zip(folders, expected):
        raw = yaml.safe_load((folder / "config.yaml").read_text())
        assert (raw["seed"], raw["epochs"], raw["exported"]["objective"]["value"], raw["exported"]["outcome"]) == \
            (seed, epoch, value, outcome)
        assert torch.load(folder / "model.pt", weights_only=True)["w"].tolist() == [float(epoch)] * 2
    assert "only 3 finished trial(s) have a checkpoint; exported 3 of the 5 asked" in out
    # aaaaa_00003's best epoch 1 (0.85) was not kept: the log says what was exported instead
    assert ("the report ranks it at epoch 1 (objective_best 0.85), which has no checkpoint on disk; epoch 3 is "
            "the best kept, and this config retrains to it") in out
    assert out.count("which has no checkpoint on disk") == 1


def test_rank_mean_exports_each_trials_last_checkpoint_best_mean_first(tmp_path, capsys):
    # means of all epochs (window 5 > 3): 0.733 (aaaaa_00000), 0.65 (aaaaa_00002), 0.767 (aaaaa_00003)
    run = _run_with_checkpoints(tmp_path, rank={"rank": "mean"})
    assert main(["export", str(run), "--top", "5"]) == 0
    capsys.readouterr()
    folders = sorted((run / "best").iterdir())
    assert [f.name for f in folders] == ["1_aaaaa_00003", "2_aaaaa_00000", "3_aaaaa_00002"]
    expected = [(14, 3, 0.75, (0.85 + 0.7 + 0.75) / 3), (11, 3, 0.8, (0.5 + 0.9 + 0.8) / 3), (13, 2, 0.7, 0.65)]
    for folder, (seed, epoch, value, mean) in zip(folders, expected):
        raw = yaml.safe_load((folder / "config.yaml").read_text())
        objective = raw["exported"]["objective"]
        assert (raw["seed"], raw["epochs"], objective["value"]) == (seed, epoch, value)
        assert (objective["ranked_by"], objective["window"], objective["ranked_value"]) == ("mean", 5, pytest.approx(mean))
        assert raw["objective"]["rank"] == "mean"      # a search from the exported config ranks alike
        assert torch.load(folder / "model.pt", weights_only=True)["w"].tolist() == [float(epoch)] * 2


@pytest.mark.parametrize("rank, expected", [
    # the latest checkpoint (epoch 4; epoch 5 was not kept), valued as the ranking values it there
    ({"rank": "last"}, [("bbbbb_00000", 4, 0.8, 0.8), ("bbbbb_00001", 3, 0.7, 0.7)]),
    # mean of 2: (0.7 + 0.8) / 2 at epoch 4; the other trial has a NaN in every window: not exported
    ({"rank": "mean", "window": 2}, [("bbbbb_00000", 4, 0.8, 0.75)]),
])
def test_rank_last_or_mean_values_the_latest_checkpoint_kept(tmp_path, capsys, rank, expected):
    trials = [
        FakeTrial("bbbbb_00000", {"lr": 1e-3}, _obj([0.5, 0.6, 0.7, 0.8, 0.9]), "completed", seed=21,
                  checkpoints={2: _state(2), 4: _state(4)}),
        FakeTrial("bbbbb_00001", {"lr": 1e-4}, _obj([0.6, math.nan, 0.7]), "pruned_asha", seed=22,
                  checkpoints={2: _state(2), 3: _state(3)}),
    ]
    run = make_run(tmp_path, trials, max_epochs=5, rank=rank)
    assert main(["export", str(run), "--top", "5"]) == 0
    capsys.readouterr()
    folders = sorted((run / "best").iterdir())
    assert [f.name.split("_", 1)[1] for f in folders] == [trial_id for trial_id, *_ in expected]
    for folder, (_, epoch, value, ranked) in zip(folders, expected):
        raw = yaml.safe_load((folder / "config.yaml").read_text())
        assert (raw["epochs"], raw["exported"]["objective"]["value"]) == (epoch, value)
        assert raw["exported"]["objective"]["ranked_value"] == pytest.approx(ranked)


def test_exported_config_merges_run_params_with_searched_values(tmp_path):
    run = _run_with_checkpoints(tmp_path, params={"margin": 0.3, "lr": 1.0})
    assert main(["export", str(run)]) == 0
    config = load_config(run / "best" / "1_aaaaa_00000" / "config.yaml")
    assert config.params["margin"] == 0.3 and config.params["lr"] == 1e-3
    assert config.exported["searched"] == {"lr": 1e-3}
    assert config.exported["checkpoint"] == "trial_0001_aaaaa_00000/checkpoint_000001/" + checkpoint_file()


@pytest.mark.parametrize("argv, message", [
    (["--top", "0"], "--top: got 0, expected an integer >= 1"),
    (["--top", "-2"], "--top: got -2, expected an integer >= 1"),
])
def test_top_below_one_is_refused(tmp_path, capsys, argv, message):
    assert main(["export", str(_run_with_checkpoints(tmp_path)), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_an_out_dir_holding_files_is_refused_without_force(tmp_path, capsys):
    run = _run_with_checkpoints(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["export", str(run), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "already holds files" in err
    assert main(["export", str(run), "--out", str(out), "--force"]) == 0
    assert (out / "keep.txt").read_text() == "mine" and (out / "1_aaaaa_00000" / "model.pt").is_file()


def test_export_with_force_replaces_an_earlier_export_and_leaves_the_rest(tmp_path, capsys):
    """A second export with --force leaves one folder per rank: the first export's folders of other
    trials are removed (two rank-1 configs would match best/1_*), anything else in the folder stays."""
    run = _run_with_checkpoints(tmp_path)
    assert main(["export", str(run), "--top", "3"]) == 0
    best = run / "best"
    (best / "notes.txt").write_text("mine")
    (best / "1_mine").mkdir()                                   # not an export's folder: no config.yaml
    (best / "9_other").mkdir()
    (best / "9_other" / "config.yaml").write_text("model: triplet\n")   # a config, but not exported
    other = best / "3_bbbbb_00000"                                  # another run's export, same folder
    other.mkdir()
    (other / "config.yaml").write_text(yaml.safe_dump(
        {"model": "triplet", "exported": {"run_dir": str(tmp_path / "elsewhere"), "rank": 3, "trial_id": "bbbbb_00000"}}))
    (other / "model.pt").write_bytes(b"")
    capsys.readouterr()
    assert main(["export", str(run), "--top", "1", "--force"]) == 0
    out = capsys.readouterr().out
    assert sorted(f.name for f in best.iterdir()) == ["1_aaaaa_00000", "1_mine", "3_bbbbb_00000", "9_other", "notes.txt"]
    assert "2_aaaaa_00003: removed, written by an earlier export of this run" in out
    assert (best / "notes.txt").read_text() == "mine"


def test_nothing_to_export_is_one_line(tmp_path, capsys):
    trials = [FakeTrial("bbbbb_00000", {"lr": 1e-3}, _obj([0.5]), "pruned_flatline", checkpoints={1: _state(1)}),
              FakeTrial("bbbbb_00001", {"lr": 1e-2}, _obj([0.4]), "completed"),          # no checkpoint
              FakeTrial("bbbbb_00002", {"lr": 1e-4}, _obj([0.3]), None, checkpoints={1: _state(1)})]
    run = make_run(tmp_path, trials)
    assert main(["report", str(run)]) == 0
    capsys.readouterr()
    assert main(["export", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nothing to export" in err
    assert not (run / "best").exists()


def test_export_of_a_path_that_is_not_a_run_dir_is_one_line(tmp_path, capsys):
    assert main(["export", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is not a run directory" in err


# --- pickles are never executed --------------------------------------------------------------

def test_planted_pickles_are_never_executed(tmp_path, capsys):
    """The payload is live (tests/search/test_untrusted.py shows it running when unpickled)."""
    marker = tmp_path / "PWNED"
    evil = pickle.dumps(Payload(marker))
    buffer = io.BytesIO()
    torch.save({"model": Payload(marker), "epoch": 2}, buffer)    # a checkpoint whose model state is a payload
    trials = [FakeTrial("ccccc_00000", {"lr": 1e-3}, _obj([0.5, 0.9]), "completed", seed=1,
                      checkpoints={2: buffer.getvalue()})]
    run = make_run(tmp_path, trials)
    trial_dir = run / "trial_0001_ccccc_00000"
    for path in (run / "tuner.pkl", run / "searcher-state-2025.pkl", run / "experiment_state-2025.pkl",
                 trial_dir / "params.pkl", trial_dir / "error.pkl", trial_dir / "checkpoint_000000" / "extra.pkl"):
        path.write_bytes(evil)

    assert main(["report", str(run)]) == 0
    assert main(["plot", str(run), "--out", str(tmp_path / "plots")]) == 0
    assert main(["export", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot be loaded as weights only" in err
    assert not marker.exists()
