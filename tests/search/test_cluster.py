"""A real two-node Ray cluster on this machine, and what a local search exposes to the network.

- ``hpsearch run --address`` against a head and a second node (each `ray start` with 1 CPU, its own
  temp dir and process group, token authentication): trials run on both nodes; the second node is
  killed mid-search (every process it started, SIGKILL) and its trials finish on the head from
  their checkpoints; the report shows every epoch once.
- A local search (no --address) opens no dashboard port, and its GCS refuses a client that does
  not hold the session's token.

Every Ray process a test starts carries ``HPSEARCH_TEST_RAY=<tag>`` in its environment (Ray's
daemons and workers inherit it from `ray start` or the driver); the tests stop exactly those
processes and check that none is left. `ray stop` is never used: it would stop every Ray on the
machine. All slow.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from hpsearch.core.rundir import read_outcomes
from hpsearch.results.report import load_report, read_run
from tests.fixtures.cli import HPSEARCH, PYTHON, REPO, clean_env
from tests.fixtures.cluster import MARK, LocalCluster, kill_all, marked, trial_rows
from tests.fixtures.toy_models import SCRIPTED

CLUSTER_SEARCH = {
    "model": SCRIPTED, "seed": 2, "epochs": 10,
    "params": {"epoch_sleep": 0.6},
    "space": {"quality": {"uniform": [0.2, 0.9]}},
    "budget": {"num_samples": 4, "max_concurrent": 2, "max_failures": 2},
    "scheduler": {"grace_period": 10},
    "checkpoint": {"interval": 2},
}


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_search_on_a_two_node_cluster_survives_losing_a_node(tmp_path, config_file):
    cluster = LocalCluster(tmp_path)
    try:
        head, worker = cluster.nodes
        head_id, worker_id = head.node_id, worker.node_id
        config = config_file(CLUSTER_SEARCH)
        run_dir = tmp_path / "runs" / "cluster"
        out = (tmp_path / "hpsearch.out").open("w")
        started = time.monotonic()
        driver = subprocess.Popen(
            [str(HPSEARCH), "run", str(config), "--name", "cluster", "--storage", str(tmp_path / "runs"),
             "--address", cluster.address], cwd=REPO, env=cluster.client_env("driver"), stdout=out,
            stderr=subprocess.STDOUT)
        # kill the second node once one of its trials has reported epoch 3 (a checkpoint at 2)
        victim, killed_at = None, None
        while driver.poll() is None and victim is None and time.monotonic() - started < 150:
            for name, rows in trial_rows(run_dir).items():
                if any(r.get("node_id") == worker_id and r["epoch"] >= 3 for r in rows):
                    victim = name
                    doomed = marked(worker.tag)
                    assert doomed and all(p.pid != driver.pid for p in doomed)
                    for process in doomed:
                        process.kill()
                    killed_at = max(r["epoch"] for r in rows if r.get("node_id") == worker_id)
                    break
            time.sleep(0.1)
        assert victim is not None, "no trial of the second node reached epoch 3"
        assert kill_all(worker.tag, timeout=15) == []                 # the node is gone, all of it
        code = driver.wait(timeout=240)
        out.close()
        elapsed = time.monotonic() - started
        text = (tmp_path / "hpsearch.out").read_text()
        assert code == 0, text
    finally:
        survivors = cluster.stop()
    assert survivors == [] and marked(cluster.tag) == []

    rows = trial_rows(run_dir)
    nodes_used = {r["node_id"] for trial in rows.values() for r in trial}
    assert nodes_used == {head_id, worker_id}                          # trials ran on both nodes
    # the killed node's trial went on on the head, from its checkpoint: resumed at an odd epoch
    # (checkpoints every 2), without skipping, and finished
    moved = rows[victim]
    on_head = [r for r in moved if r["node_id"] == head_id]
    assert on_head and on_head[0]["iterations_since_restore"] == 1
    assert on_head[0]["epoch"] % 2 == 1 and on_head[0]["epoch"] <= killed_at + 1
    assert on_head[-1]["epoch"] == 10
    outcomes = read_outcomes(run_dir)
    assert len(outcomes) == 4 and {e["outcome"] for e in outcomes.values()} == {"completed"}
    report = load_report(run_dir)
    assert list(report["epochs"]) == [10] * 4 and set(report["outcome"]) == {"completed"}
    for trial in read_run(run_dir).trials:                             # every epoch once in the report
        assert [r["epoch"] for r in trial.rows] == list(range(1, 11))
    print(f"cluster search: {elapsed:.0f}s; second node killed at epoch {killed_at} of {victim}; "
          f"resumed on the head at epoch {on_head[0]['epoch']}")


def listening(processes: list[psutil.Process]) -> dict[int, list[tuple[str, int]]]:
    """pid -> the TCP (ip, port) pairs it listens on."""
    found = {}
    for process in processes:
        try:
            found[process.pid] = [(c.laddr.ip, c.laddr.port) for c in process.net_connections("tcp")
                                  if c.status == psutil.CONN_LISTEN]
        except psutil.Error:
            pass
    return found


def driver_env(pid: int) -> dict[str, str]:
    """The environment the search's driver runs with (where its Ray finds the session's token)."""
    env = psutil.Process(pid).environ()
    return {k: v for k, v in env.items() if k != MARK}


GCS_PROBE = """
import sys
from ray import _raylet
try:
    _raylet.InnerGcsClient.standalone(sys.argv[1], None, 3000).get_all_node_info(timeout=3)
except Exception as err:
    print("refused:", type(err).__name__, str(err).splitlines()[0][:200])
    sys.exit(3)
print("answered")
"""


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_local_search_opens_no_dashboard_port_and_its_gcs_wants_the_sessions_token(tmp_path, config_file):
    """Ray binds its gRPC ports on every interface (there is no setting to bind them to loopback);
    what keeps a local search to itself is no dashboard and token authentication on those ports."""
    tag = f"local-{secrets.token_hex(6)}"
    ray_tmp = Path(tempfile.mkdtemp(prefix="hps-", dir="/tmp"))
    config = config_file(dict(CLUSTER_SEARCH, epochs=6, params={"epoch_sleep": 0.5},
                              budget={"num_samples": 2, "max_failures": 0}, scheduler={"grace_period": 6}))
    env = clean_env(**{MARK: tag, "RAY_TMPDIR": str(ray_tmp)})
    driver = subprocess.Popen([str(HPSEARCH), "run", str(config), "--name", "local", "--storage",
                               str(tmp_path / "runs")], cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        run_dir = tmp_path / "runs" / "local"
        deadline = time.monotonic() + 120
        while driver.poll() is None and time.monotonic() < deadline and not any(trial_rows(run_dir).values()):
            time.sleep(0.2)
        session = list(ray_tmp.glob("ray/session_2*"))
        ours = marked(tag)
        ports = listening(ours)
        dashboards = {p.pid: " ".join(p.cmdline()) for p in ours if "dashboard/dashboard.py" in " ".join(p.cmdline())}
        assert len(session) == 1, session
        gcs_port = int(next(session[0].glob("gcs_server_port_*")).read_text().strip())
        refused = subprocess.run([str(PYTHON), "-c", GCS_PROBE, f"127.0.0.1:{gcs_port}"],
                                 env=clean_env(RAY_AUTH_MODE="disabled"), capture_output=True, text=True, timeout=60)
        allowed = subprocess.run([str(PYTHON), "-c", GCS_PROBE, f"127.0.0.1:{gcs_port}"],
                                 env=dict(driver_env(driver.pid), RAY_AUTH_MODE="token"), capture_output=True,
                                 text=True, timeout=60)
        output, _ = driver.communicate(timeout=150)
    finally:
        if driver.poll() is None:
            driver.kill()
        survivors = kill_all(tag)
        if not survivors:
            shutil.rmtree(ray_tmp, ignore_errors=True)
    assert driver.returncode == 0, output
    assert survivors == [] and marked(tag) == []
    assert ours
    # Ray keeps a head process without its web frontend (usage stats only): it listens nowhere
    assert all("--disable-frontend" in cmd and not ports.get(pid) for pid, cmd in dashboards.items()), dashboards
    assert all(port != 8265 for pairs in ports.values() for _, port in pairs), ports
    assert any(port == gcs_port for pairs in ports.values() for _, port in pairs), (gcs_port, ports)
    assert refused.returncode == 3 and "refused:" in refused.stdout, refused.stdout + refused.stderr
    assert allowed.stdout.strip() == "answered", allowed.stdout + allowed.stderr    # so the refusal is the token's
    print(f"without the token: {refused.stdout.strip()}")
