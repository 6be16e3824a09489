"""``hpsearch run --address ray://`` (Ray Client) against a real head on this machine, with token
authentication: the search runs on the head, prints here, stops on SIGINT here and resumes. Slow.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from hpsearch.core.rundir import read_outcomes
from hpsearch.results.report import read_run
from tests.fixtures.cli import HPSEARCH
from tests.fixtures.cluster import LocalCluster, marked, trial_rows
from tests.fixtures.toy_models import SCRIPTED


def server_logs(cluster: LocalCluster) -> str:
    """The head's Ray Client server logs, for a failure message."""
    logs = cluster.nodes[0].temp_dir / "session_latest" / "logs"
    return "".join(f"\n--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                   for p in sorted(logs.glob("ray_client_server*.err")))


def curve(trial_dir: Path) -> str | None:
    params = trial_dir / "params.json"
    return json.loads(params.read_text())["curve"] if params.is_file() else None


CLIENT_SEARCH = {
    "model": SCRIPTED, "seed": 4, "epochs": 8,
    "params": {"epoch_sleep": 0.5},
    "space": {"curve": {"choice": ["healthy", "constant"]}, "quality": {"uniform": [0.2, 0.9]}},
    "warm_start": [{"curve": "constant"}, {"curve": "healthy", "quality": 0.9}],
    "budget": {"num_samples": 4, "max_concurrent": 1},
    "scheduler": {"grace_period": 8},
    "checkpoint": {"interval": 1},
}


@pytest.mark.slow
@pytest.mark.timeout(360)
def test_a_ray_client_search_runs_on_the_head_stops_on_sigint_and_resumes(tmp_path, config_file):
    """``--address ray://``: the search runs on the head (one process: a flatline trial is recorded
    once, as pruned, never also as completed), its live output and summary print here, SIGINT here
    stops it gracefully there (exit 130), and ``hpsearch resume --address ray://`` finishes it
    without redoing an epoch."""
    cluster = LocalCluster(tmp_path, workers=0, client=True)
    address = f"ray://127.0.0.1:{cluster.client_port}"
    run_dir = tmp_path / "runs" / "viaclient"
    try:
        config = config_file(CLIENT_SEARCH)
        first = subprocess.Popen(
            [str(HPSEARCH), "run", str(config), "--name", "viaclient", "--storage", str(tmp_path / "runs"),
             "--address", address], cwd=tmp_path, env=cluster.client_env("client"),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 150   # SIGINT once the healthy warm start has reported epoch 3
        while first.poll() is None and time.monotonic() < deadline:
            if any(curve(run_dir / name) == "healthy" and len(trial) >= 3 for name, trial in trial_rows(run_dir).items()):
                break
            time.sleep(0.1)
        assert first.poll() is None, first.communicate()[0] + server_logs(cluster)
        first.send_signal(signal.SIGINT)
        text, _ = first.communicate(timeout=120)
        assert first.returncode == 130, text
        assert f"on Ray cluster at {address}" in text                 # the header, printed on the head
        again = f"hpsearch resume {run_dir} --address {address}"
        assert f"interrupted by SIGINT; its state is saved: continue it with `{again}`" in text
        assert "Stop signal received" not in text                       # Ray's own log lines stay out
        assert read_run(run_dir).state == "interrupted"
        done_before = {name: len(rows) for name, rows in trial_rows(run_dir).items()}
        ended_before = set(read_outcomes(run_dir))

        second = subprocess.run([str(HPSEARCH), "resume", str(run_dir), "--address", address], cwd=tmp_path,
                                env=cluster.client_env("resume"), capture_output=True, text=True, timeout=180)
        assert second.returncode == 0, second.stdout + second.stderr + server_logs(cluster)
    finally:
        survivors = cluster.stop()
    assert survivors == [] and marked(cluster.tag) == []

    assert "search finished: 4 trials" in second.stdout and "outcomes: " in second.stdout, second.stdout
    assert read_run(run_dir).state == "finished"
    outcomes = read_outcomes(run_dir)
    rows = trial_rows(run_dir)
    assert len(outcomes) == 4 == len(rows)
    # Every epoch is there; a trial that had ended is untouched; the trial training when SIGINT came
    # repeats at most its last reported epoch (a result Tune had logged but whose checkpoint it had
    # not yet registered when it saved its state: the resumed trial starts from the checkpoint
    # before it, as a resumed local search does), and the report counts that epoch once.
    for name, trial in rows.items():
        epochs = [r["epoch"] for r in trial]
        assert sorted(set(epochs)) == list(range(1, max(epochs) + 1)), (name, epochs)
        assert len(epochs) - len(set(epochs)) <= 1, (name, epochs)
        assert len(set(epochs)) >= done_before.get(name, 0)
        if name.split("_", 2)[2] in ended_before:
            assert len(epochs) == done_before[name], (name, epochs)        # ended: never run again
    report = {t.trial_id: [r["epoch"] for r in t.rows] for t in read_run(run_dir).trials}
    assert all(epochs == list(range(1, len(epochs) + 1)) for epochs in report.values()), report
    stuck = [o for o in outcomes.values() if o["outcome"] == "pruned_flatline"]
    assert stuck and all(o["epoch"] <= 3 for o in stuck)             # recorded once, as pruned
    assert {o["outcome"] for o in outcomes.values()} <= {"completed", "pruned_flatline"}
