"""`hpsearch run` before Ray: bad input exits 2 with one line and starts no Ray process; the
checks behind it (storage, run name, cluster address, modules to ship); the end-of-run summary."""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path

import pytest
import torch

from hpsearch.cli import main
from hpsearch.driver import cluster, preflight
from tests.fixtures.cli import HPSEARCH, free_port

TRIPLET_OK = {"model": "triplet", "epochs": 4, "space": {"lr": {"loguniform": [1e-4, 1e-1]}}}


def bad(**change):
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in TRIPLET_OK.items()}
    raw.update(change)
    return raw


BAD_INPUT = [
    ("unknown model", bad(model="tripplet"), [], "model: got 'tripplet' (did you mean 'triplet'?)"),
    ("unknown space key", bad(space={"lr_rate": {"uniform": [0.1, 0.2]}}), [], "space.lr_rate: not a parameter"),
    ("unknown spec kind", bad(space={"lr": {"logunifrom": [1e-4, 1e-1]}}), [],
     "space.lr.logunifrom: unknown spec kind (did you mean 'loguniform'?)"),
    ("low >= high", bad(space={"lr": {"uniform": [0.1, 0.01]}}), [], "space.lr.uniform: low 0.1 >= high 0.01"),
    ("log range low <= 0", bad(space={"lr": {"loguniform": [0, 0.1]}}), [],
     "space.lr.loguniform: low 0 <= 0; a log range needs low > 0"),
    ("empty choice", bad(space={"lr": {"choice": []}}), [], "space.lr.choice: got [], expected a non-empty list"),
    ("objective not reported", bad(objective={"metric": "val_accuracy", "mode": "max"}), [],
     "objective.metric: 'val_accuracy' is not reported by model 'triplet'"),
    ("mode", bad(objective={"metric": "val_recall_at_1", "mode": "maximum"}), [],
     "objective.mode: got 'maximum', expected one of 'min', 'max'"),
    ("grace > max_epochs", bad(scheduler={"grace_period": 5}), [],
     "scheduler.grace_period: got 5, expected a value <= max_epochs (4)"),
    ("--max-epochs below grace", bad(scheduler={"grace_period": 3}), ["--max-epochs", "2"],
     "scheduler.grace_period: got 3, expected a value <= max_epochs (2)"),
    ("--num-samples 0", bad(), ["--num-samples", "0"], "budget.num_samples: got 0, expected a value >= 1"),
    ("--set unknown", bad(), ["--set", "lrr=0.1"], "params.lrr: unknown key (did you mean 'lr'?)"),
    ("more CPUs than here", bad(resources={"cpu": 4096}), [], "resources.cpu: got 4096, but this machine has"),
    ("gpu without GPU", bad(resources={"gpu": 1}), [], "resources.gpu: got 1, but no CUDA GPU is visible"),
    ("cuda without gpu resource", bad(device="cuda"), [], "device: got 'cuda' with resources.gpu 0"),
    ("address not answering", bad(), ["--address", f"127.0.0.1:{free_port()}"], "--address: nothing answers at"),
    ("address malformed", bad(), ["--address", "head-node"], "--address: got 'head-node', expected 'auto'"),
    ("ray client address not answering", bad(), ["--address", f"ray://127.0.0.1:{free_port()}"],
     "--address: nothing answers at 127.0.0.1:"),
    ("ray client address malformed", bad(), ["--address", "ray://head"], "--address: got 'ray://head', expected 'auto'"),
    ("name with a path", bad(), ["--name", "../elsewhere"], "--name: got '../elsewhere'"),
    ("nothing to search", bad(space={}), [], "space: empty; expected at least one parameter to search"),
]


def refuse_to_start_ray(*args, **kwargs):
    raise AssertionError("ray.init was called: the refusal came after Ray started")


@pytest.mark.parametrize("case, raw, extra, expected", BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input_exits_2_with_one_line_before_ray_starts(case, raw, extra, expected, tmp_path, capsys, config_file,
                                                           monkeypatch):
    if case == "gpu without GPU" and torch.cuda.is_available():
        pytest.skip("a GPU is visible here")
    import ray

    monkeypatch.setattr(ray, "init", refuse_to_start_ray)
    config = config_file(raw)
    code = main(["run", str(config), "--storage", str(tmp_path / "runs"), *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("hpsearch run: error: ")
    assert expected in err, err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_good_config_gets_as_far_as_starting_ray(tmp_path, config_file, monkeypatch):
    """So that the table above can fail: past every check, `hpsearch run` calls ray.init."""
    import ray

    monkeypatch.setattr(ray, "init", refuse_to_start_ray)
    with pytest.raises(AssertionError, match="ray.init was called"):
        main(["run", str(config_file(TRIPLET_OK)), "--storage", str(tmp_path / "runs")])


@pytest.mark.parametrize("written, hint", [
    ('{"state": "finished"}', "read it with `hpsearch report"),
    ('{"state": "interrupted"}', "continue it with `hpsearch resume"),
    ('{"state": "running"}', "when it is no longer running, continue it with `hpsearch resume"),
    ("not json", None), ("[1, 2]", None), ("null", None),
])
def test_an_existing_run_is_refused_never_overwritten(tmp_path, capsys, config_file, written, hint):
    """The refusal says what the run can still be used for: a finished one read (resume refuses
    it), an interrupted or killed one resumed; without a readable run.json, neither (resume refuses
    that too)."""
    config = config_file(TRIPLET_OK)
    run_dir = tmp_path / "runs" / "mine"
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(written, encoding="utf-8")
    assert main(["run", str(config), "--storage", str(tmp_path / "runs"), "--name", "mine"]) == 2
    err = capsys.readouterr().err
    assert "a run named 'mine' already exists" in err and len(err.strip().splitlines()) == 1
    if hint is None:
        assert "hpsearch resume" not in err and "hpsearch report" not in err
    else:
        assert f"{hint} {run_dir}`" in err
    assert (run_dir / "run.json").read_text(encoding="utf-8") == written


def test_storage_that_is_a_file_or_a_remote_uri_is_refused(tmp_path):
    (tmp_path / "afile").write_text("x", encoding="utf-8")
    with pytest.raises(preflight.ConfigError, match="exists and is not a directory"):
        preflight.storage_dir(str(tmp_path / "afile"))
    with pytest.raises(preflight.ConfigError, match="expected a directory or a file:// URI"):
        preflight.storage_dir("s3://bucket/runs")
    assert preflight.storage_dir(f"file://{tmp_path}/runs") == (tmp_path / "runs").resolve()


def test_address_auto_without_a_cluster_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path))
    with pytest.raises(preflight.ConfigError, match="--address: got 'auto', but no Ray cluster was found"):
        cluster.check_address("auto")
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{free_port()}\n", encoding="utf-8")
    with pytest.raises(preflight.ConfigError, match="--address auto: nothing answers at 127.0.0.1"):
        cluster.check_address("auto")


def test_ray_client_storage_is_an_absolute_path_on_the_cluster():
    """Under Ray Client the head writes the run dir: a path relative to this machine means nothing there."""
    assert cluster.client_storage("/shared/runs") == Path("/shared/runs")
    assert cluster.client_storage("file:///shared/runs") == Path("/shared/runs")
    for given in (None, "runs", "s3://bucket/runs"):
        with pytest.raises(preflight.ConfigError, match=rf"^--storage: got {re.escape(repr(given))}; with a ray:// "
                                                        "address .* expected an absolute directory every node mounts"):
            cluster.client_storage(given)


def test_ray_client_address_without_grpcio_says_what_to_install(monkeypatch):
    real = cluster.importlib.util.find_spec
    monkeypatch.setattr(cluster.importlib.util, "find_spec", lambda name, *a: None if name == "grpc" else real(name, *a))
    with pytest.raises(preflight.ConfigError, match=r"^--address: got 'ray://127\.0\.0\.1:10001', a Ray Client "
                                                    r"address, but grpcio is not installed here; install it with"):
        cluster.check_address("ray://127.0.0.1:10001")


def refuse_to_ask_ray(address: str, option: str, timeout: float = 0) -> None:
    raise AssertionError(f"Ray's GCS client was asked about {address}")


def test_an_address_that_answers_but_is_not_a_ray_head_is_refused(monkeypatch):
    """A web server where the Ray head should be (the dashboard port is a common slip): refused by
    hpsearch's own probe, never handed to Ray's GCS client (which retries for a minute)."""
    import http.server
    import threading

    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setattr(cluster, "probe_gcs", refuse_to_ask_ray)
    try:
        with pytest.raises(preflight.ConfigError) as err:
            cluster.check_address(f"127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
        server.server_close()
    assert str(err.value).startswith(f"--address: 127.0.0.1:{server.server_port} answers but not as a Ray head")
    assert "\n" not in str(err.value)


def test_a_user_module_outside_site_packages_is_shipped_to_workers(tmp_path, monkeypatch):
    (tmp_path / "my_user_model.py").write_text("class Model:\n    pass\n", encoding="utf-8")
    (tmp_path / "userpkg").mkdir()
    (tmp_path / "userpkg" / "__init__.py").write_text("", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert cluster.model_modules("my_user_model:Model") == [str(tmp_path / "my_user_model.py")]
    assert cluster.model_modules("userpkg.models:Net") == [str(tmp_path / "userpkg")]
    assert cluster.model_modules("triplet") == []
    assert cluster.model_modules("optuna.samplers:TPESampler") == []     # installed: nothing to ship


def test_the_cli_refuses_bad_input_in_a_fresh_process_without_importing_ray(tmp_path, config_file, no_ray_env):
    config = config_file(bad(model="tripplet"))
    done = subprocess.run([str(HPSEARCH), "run", str(config)], capture_output=True, text=True, cwd=tmp_path,
                          env=no_ray_env, timeout=60)
    assert done.returncode == 2, done.stderr            # not RAY_IMPORTED: Ray was never imported
    assert done.stderr.splitlines() == ["hpsearch run: error: model: got 'tripplet' (did you mean 'triplet'?); "
                                        "expected 'triplet' or 'symmetric' or 'package.module:Factory'"]
    assert not (tmp_path / "runs").exists()


def test_the_summary_never_ranks_a_health_pruned_trial_and_gives_a_reason_per_kind():
    from hpsearch.tune.progress import TrialRow, summary

    rows = {
        "a": TrialRow("a", "#1", values=[0.99, 0.99], epoch=2, config={"lr": 0.1}),      # flatlined, "best"
        "b": TrialRow("b", "#2", values=[0.5, 0.7], epoch=2, config={"lr": 0.01}),
        "c": TrialRow("c", "#3", values=[0.4], epoch=1, config={"lr": 0.001}),
        "d": TrialRow("d", "#4", values=[float("nan")], epoch=1, config={"lr": 3.0}),
    }
    outcomes = {"a": {"outcome": "pruned_flatline", "reason": "train_loss 0.1 unchanged over epochs 1-3"},
                "b": {"outcome": "completed", "reason": ""},
                "c": {"outcome": "pruned_asha", "reason": "val_acc 0.4 below rung cutoff 0.5 at epoch 1"},
                "d": {"outcome": "pruned_nonfinite", "reason": "train_loss is nan at epoch 1"}}
    text = summary(rows, outcomes, "val_acc", "max", "runs/x")
    ranked = text.split("best trials")[1].split("outcomes:")[0]
    assert "#2" in ranked and "#3" in ranked and "#1" not in ranked and "#4" not in ranked
    assert ranked.index("#2") < ranked.index("#3")
    assert "outcomes: completed 1, pruned_asha 1, pruned_flatline 1, pruned_nonfinite 1" in text
    assert "pruned_flatline   e.g. #1: train_loss 0.1 unchanged over epochs 1-3" in text
    assert text.splitlines()[-2] == "run dir: runs/x"



def test_end_of_run_summary_ranks_as_objective_rank_says():
    from hpsearch.tune.progress import TrialRow, summary

    rows = {
        "a": TrialRow("a", "#1", values=[0.5, 0.95, 0.6, 0.6], epoch=4, config={"lr": 0.1}),   # one lucky epoch
        "b": TrialRow("b", "#2", values=[0.7, 0.8, 0.8, 0.8], epoch=4, config={"lr": 0.01}),
    }
    outcomes = {"a": {"outcome": "completed", "reason": ""}, "b": {"outcome": "completed", "reason": ""}}
    by_best = summary(rows, outcomes, "val_acc", "max", "runs/x").split("best trials")[1]
    by_mean = summary(rows, outcomes, "val_acc", "max", "runs/x", rank="mean", window=3).split("best trials")[1]
    assert by_best.index("#1") < by_best.index("#2") and "0.95" in by_best
    assert by_mean.startswith(" by val_acc (max; the mean of its last 3 epochs), health-pruned")
    assert by_mean.index("#2") < by_mean.index("#1") and "0.95" not in by_mean
