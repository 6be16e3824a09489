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

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import yaml

from hpsearch.core.rundir import read_outcomes, read_trial_results
from hpsearch.results.report import load_report, read_run

REPO = Path(__file__).resolve().parents[2]
PYTHON = Path(sys.executable)
HPSEARCH = PYTHON.with_name("hpsearch")
RAY = PYTHON.with_name("ray")
MARK = "HPSEARCH_TEST_RAY"
NODE_ID_FILE = re.compile(r"[a-z_]+_port_(?P<id>[0-9a-f]{56})")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:g}s")


def marked(prefix: str) -> list[psutil.Process]:
    """Live processes whose environment holds ``HPSEARCH_TEST_RAY`` starting with ``prefix``."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get(MARK, "").startswith(prefix) and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (psutil.Error, OSError):
            continue
    return found


def kill_all(prefix: str, timeout: float = 10.0) -> list[psutil.Process]:
    """SIGKILL every process marked ``prefix`` until none is left; returns any that survive."""
    deadline = time.monotonic() + timeout
    alive = marked(prefix)
    while alive and time.monotonic() < deadline:
        kill_now(alive, timeout=2)
        alive = marked(prefix)
    return alive


def kill_now(processes: list[psutil.Process], timeout: float) -> None:
    """SIGKILL each process (one already gone is fine) and wait up to ``timeout`` for them."""
    for process in processes:
        try:
            process.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(processes, timeout=timeout)


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "PYTHONPATH")}
    env.update(RAY_USAGE_STATS_ENABLED="0", **extra)
    return env


class RayNode:
    """`ray start ... --block` in its own session (process group) and temp dir."""

    def __init__(self, name: str, args: list[str], root: Path, logs: Path, env: dict[str, str]):
        self.name, self.temp_dir = name, root / name
        self.tag = env[MARK]
        self.log_path = logs / f"ray-{name}.log"
        self.log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [str(RAY), "start", *args, f"--temp-dir={self.temp_dir}", "--disable-usage-stats", "--block"],
            cwd=root, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_started(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "Ray runtime started" in self.log_path.read_text(errors="replace"):
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"`ray start` for {self.name} exited: {self.log_path.read_text()[-2000:]}")
            time.sleep(0.2)
        raise RuntimeError(f"`ray start` for {self.name} did not finish within {timeout}s")

    @property
    def node_id(self) -> str:
        """The node's id, from the port files Ray writes into the node's session dir."""
        for path in (self.temp_dir / "session_latest").iterdir():
            match = NODE_ID_FILE.fullmatch(path.name)
            if match:
                return match.group("id")
        raise RuntimeError(f"no node id in {self.temp_dir / 'session_latest'}")


class LocalCluster:
    """A head (`--port`, 1 CPU, no dashboard, token auth) and, optionally, a second node with 1 CPU,
    both on this machine. ``stop()`` kills exactly the processes the cluster started."""

    def __init__(self, logs: Path, workers: int = 1, client: bool = False):
        self.root = Path(tempfile.mkdtemp(prefix="hps-", dir="/tmp"))   # short: Unix socket paths
        self.logs = logs
        self.tag = f"cluster-{secrets.token_hex(6)}"
        self.port = free_port()
        self.client_port = free_port()   # the Ray Client server's, when ``client``
        self.token = secrets.token_hex(16)
        self.env = base_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.token,
                            RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0", PYTHONPATH=str(REPO))
        self.nodes: list[RayNode] = []
        try:
            head = self._node("head", ["--head", f"--port={self.port}", "--num-cpus=1", "--node-ip-address=127.0.0.1",
                                       "--include-dashboard=false",
                                       *([f"--ray-client-server-port={self.client_port}"] if client else [])])
            head.wait_started()
            if client:   # `ray start` reports the head up before its Ray Client server listens
                wait_listening(self.client_port)
            for i in range(workers):
                self._node(f"node{i + 1}", [f"--address=127.0.0.1:{self.port}", "--num-cpus=1",
                                            "--node-ip-address=127.0.0.1"]).wait_started()
        except BaseException:
            self.stop()
            raise

    def _node(self, name: str, args: list[str]) -> RayNode:
        node = RayNode(name, args, self.root, self.logs, dict(self.env, **{MARK: f"{self.tag}:{name}"}))
        self.nodes.append(node)
        return node

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client_env(self, role: str, **extra: str) -> dict[str, str]:
        """The environment for a client of this cluster (holds the token), marked as ours."""
        return dict(self.env, **{MARK: f"{self.tag}:{role}"}, **extra)

    def stop(self) -> list[psutil.Process]:
        """SIGTERM each `ray start`, then SIGKILL whatever the cluster started that is left."""
        for node in reversed(self.nodes):
            try:
                os.killpg(node.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for node in self.nodes:
            try:
                node.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        survivors = kill_all(self.tag)
        for node in self.nodes:
            if node.process.poll() is None:
                node.process.kill()
                node.process.wait(timeout=10)
            node.log.close()
        if not survivors:
            shutil.rmtree(self.root, ignore_errors=True)
        return survivors


def write_config(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def trial_rows(run_dir: Path) -> dict[str, list[dict]]:
    return {d.name: read_trial_results(d) for d in sorted(run_dir.glob("trial_*"))}


CLUSTER_SEARCH = {
    "model": "tests.fixtures.toy_models:Scripted", "seed": 2, "epochs": 10,
    "params": {"epoch_sleep": 0.6},
    "space": {"quality": {"uniform": [0.2, 0.9]}},
    "budget": {"num_samples": 4, "max_concurrent": 2, "max_failures": 2},
    "scheduler": {"grace_period": 10},
    "checkpoint": {"interval": 2},
}


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_search_on_a_two_node_cluster_survives_losing_a_node(tmp_path):
    cluster = LocalCluster(tmp_path)
    try:
        head, worker = cluster.nodes
        head_id, worker_id = head.node_id, worker.node_id
        config = write_config(tmp_path / "search.yaml", CLUSTER_SEARCH)
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
            for name, rows in trial_rows(run_dir).items() if run_dir.exists() else ():
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
def test_a_local_search_opens_no_dashboard_port_and_its_gcs_wants_the_sessions_token(tmp_path):
    """Ray binds its gRPC ports on every interface (there is no setting to bind them to loopback);
    what keeps a local search to itself is no dashboard and token authentication on those ports."""
    tag = f"local-{secrets.token_hex(6)}"
    ray_tmp = Path(tempfile.mkdtemp(prefix="hps-", dir="/tmp"))
    config = write_config(tmp_path / "search.yaml", dict(CLUSTER_SEARCH, epochs=6, params={"epoch_sleep": 0.5},
                                                          budget={"num_samples": 2, "max_failures": 0},
                                                          scheduler={"grace_period": 6}))
    env = base_env(**{MARK: tag, "RAY_TMPDIR": str(ray_tmp)})
    driver = subprocess.Popen([str(HPSEARCH), "run", str(config), "--name", "local", "--storage",
                               str(tmp_path / "runs")], cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        run_dir = tmp_path / "runs" / "local"
        deadline = time.monotonic() + 120
        while driver.poll() is None and time.monotonic() < deadline and not any(trial_rows(run_dir).values()
                                                                                 if run_dir.exists() else ()):
            time.sleep(0.2)
        session = list(ray_tmp.glob("ray/session_2*"))
        ours = marked(tag)
        ports = listening(ours)
        dashboards = {p.pid: " ".join(p.cmdline()) for p in ours if "dashboard/dashboard.py" in " ".join(p.cmdline())}
        assert len(session) == 1, session
        gcs_port = int(next(session[0].glob("gcs_server_port_*")).read_text().strip())
        refused = subprocess.run([str(PYTHON), "-c", GCS_PROBE, f"127.0.0.1:{gcs_port}"],
                                 env=base_env(RAY_AUTH_MODE="disabled"), capture_output=True, text=True, timeout=60)
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
