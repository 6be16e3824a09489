"""`hpsearch run` before Ray: bad input exits 2 with one line and starts no Ray process; the
checks behind it (storage, run name, cluster address, modules to ship); the end-of-run summary."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import torch
import yaml

from hpsearch.cli import main
from hpsearch.driver import cluster, preflight

HPSEARCH = Path(sys.executable).with_name("hpsearch")
RAY_DAEMONS = ("raylet", "gcs_server")


def write_yaml(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def ray_daemons() -> set[int]:
    """Ray daemons that are descendants of this test process."""
    return {p.pid for p in psutil.Process().children(recursive=True)
            if p.is_running() and p.name() in RAY_DAEMONS}


TRIPLET_OK = {"model": "triplet", "epochs": 4, "space": {"lr": {"loguniform": [1e-4, 1e-1]}}}


def bad(**change):
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in TRIPLET_OK.items()}
    raw.update(change)
    return raw


def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]     # closed again: nothing listens there


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
    ("address not answering", bad(), ["--address", f"127.0.0.1:{dead_port()}"], "--address: nothing answers at"),
    ("address malformed", bad(), ["--address", "head-node"], "--address: got 'head-node', expected 'auto'"),
    ("ray client address not answering", bad(), ["--address", f"ray://127.0.0.1:{dead_port()}"],
     "--address: nothing answers at 127.0.0.1:"),
    ("ray client address malformed", bad(), ["--address", "ray://head"], "--address: got 'ray://head', expected 'auto'"),
    ("name with a path", bad(), ["--name", "../elsewhere"], "--name: got '../elsewhere'"),
    ("nothing to search", bad(space={}), [], "space: empty; expected at least one parameter to search"),
]


@pytest.fixture(scope="module")
def warm_imports():
    """Import what a config check needs once, so each case times the check itself."""
    from hpsearch import models

    models.resolve("triplet")


@pytest.mark.parametrize("case, raw, extra, expected", BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input_exits_2_with_one_line_before_ray_starts(case, raw, extra, expected, tmp_path, capsys,
                                                           warm_imports):
    if case == "gpu without GPU" and torch.cuda.is_available():
        pytest.skip("a GPU is visible here")
    import ray

    config = write_yaml(tmp_path / "search.yaml", raw)
    before = ray_daemons()
    started = time.perf_counter()
    code = main(["run", str(config), "--storage", str(tmp_path / "runs"), *extra])
    elapsed = time.perf_counter() - started
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("hpsearch run: error: ")
    assert expected in err, err
    assert not ray.is_initialized() and ray_daemons() <= before
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    assert elapsed < 2.0, f"{case} took {elapsed:.2f}s"


def test_an_existing_run_is_refused_never_overwritten(tmp_path, capsys):
    config = write_yaml(tmp_path / "search.yaml", TRIPLET_OK)
    run_dir = tmp_path / "runs" / "mine"
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text('{"state": "finished"}', encoding="utf-8")
    assert main(["run", str(config), "--storage", str(tmp_path / "runs"), "--name", "mine"]) == 2
    err = capsys.readouterr().err
    assert "a run named 'mine' already exists" in err and f"hpsearch resume {run_dir}" in err
    assert (run_dir / "run.json").read_text(encoding="utf-8") == '{"state": "finished"}'


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
    (tmp_path / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{dead_port()}\n", encoding="utf-8")
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


def test_an_address_that_answers_but_is_not_a_ray_head_is_refused(capsys):
    """A web server where the Ray head should be (the dashboard port is a common slip)."""
    import http.server
    import threading

    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        started = time.perf_counter()
        with pytest.raises(preflight.ConfigError) as err:
            cluster.check_address(f"127.0.0.1:{server.server_port}")
        elapsed = time.perf_counter() - started
    finally:
        server.shutdown()
        server.server_close()
    assert str(err.value).startswith(f"--address: 127.0.0.1:{server.server_port} answers but not as a Ray head")
    assert "\n" not in str(err.value) and elapsed < cluster.PROBE_TIMEOUT_S + 3


def test_a_user_module_outside_site_packages_is_shipped_to_workers(tmp_path, monkeypatch):
    (tmp_path / "my_user_model.py").write_text("class Model:\n    pass\n", encoding="utf-8")
    (tmp_path / "userpkg").mkdir()
    (tmp_path / "userpkg" / "__init__.py").write_text("", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert cluster.model_modules("my_user_model:Model") == [str(tmp_path / "my_user_model.py")]
    assert cluster.model_modules("userpkg.models:Net") == [str(tmp_path / "userpkg")]
    assert cluster.model_modules("triplet") == []
    assert cluster.model_modules("optuna.samplers:TPESampler") == []     # installed: nothing to ship


def test_the_cli_refuses_bad_input_in_a_fresh_process_quickly(tmp_path):
    config = write_yaml(tmp_path / "search.yaml", bad(model="tripplet"))
    started = time.perf_counter()
    done = subprocess.run([str(HPSEARCH), "run", str(config)], capture_output=True, text=True, cwd=tmp_path,
                          timeout=60)
    elapsed = time.perf_counter() - started
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["hpsearch run: error: model: got 'tripplet' (did you mean 'triplet'?); "
                                        "expected 'triplet' or 'symmetric' or 'package.module:Factory'"]
    assert elapsed < 5.0, f"{elapsed:.2f}s"
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
