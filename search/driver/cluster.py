"""Where a search runs: the cluster address and the storage every node must reach.

Each check raises a one-line ConfigError naming the option, the value and what is allowed, before
any Ray process starts: an address where no Ray head answers (a TCP connect and an HTTP/2 preface,
then the GCS's cluster id through Ray's standalone GCS client, which starts nothing), a storage directory
on this machine's own disk when the cluster has nodes elsewhere, a Ray Client address without
grpcio. Also the runtime env every Ray session of a search gets (``runtime_env``), with the
user-model files that travel to the workers (``py_modules``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from hpsearch.models import BUILTIN
from hpsearch.models.config import ConfigError
from hpsearch.tune.compat import GcsError, gcs_alive_node_addresses, gcs_answers

PROBE_TIMEOUT_S = 3.0
CLIENT_SCHEME = "ray://"
GCS_PORT = "the GCS port given to `ray start --head --port` (default 6379)"
CLIENT_PORT = "the Ray Client port of the head (`ray start --head --ray-client-server-port`, default 10001)"


def is_client(address: str | None) -> bool:
    """A Ray Client address (``ray://HOST:PORT``): the search then runs on the cluster (hpsearch.driver.client)."""
    return address is not None and address.startswith(CLIENT_SCHEME)


def _host_port(text: str, option: str, shown: str | None = None) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{option}: got {shown or text!r}, expected 'auto', HOST:PORT or ray://HOST:PORT")
    return host, int(port)


_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
_H2_SETTINGS = 0x4


def probe(host: str, port: int, option: str, timeout: float = PROBE_TIMEOUT_S, expected: str = GCS_PORT) -> None:
    """Refuse an address where nothing accepts a TCP connection within ``timeout`` seconds, and one
    that does not speak HTTP/2, as a Ray head's gRPC port does: its first frame answering the client
    preface is SETTINGS. A web server (say the dashboard port) is refused here in milliseconds
    instead of by a minute of Ray's retries."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            conn.sendall(_H2_PREFACE)
            head = b""
            while len(head) < 9:
                chunk = conn.recv(9 - len(head))
                if not chunk:
                    break
                head += chunk
            if len(head) == 9 and head[3] == _H2_SETTINGS:
                return
            shown = head[:12].decode("ascii", "replace").strip() or "it closed the connection"
            raise ConfigError(f"{option}: {host}:{port} answers but not as a Ray head (no gRPC: {shown!r}); "
                              f"expected {expected}")
    except socket.timeout:
        why = f"no answer within {timeout:g}s"
    except OSError as err:
        why = err.strerror or str(err)
    raise ConfigError(f"{option}: nothing answers at {host}:{port} ({why}); expected a running Ray "
                      "head (`ray start --head`)")


@contextlib.contextmanager
def _stderr_to_devnull():
    """Ray's C++ client logs its retries straight to file descriptor 2; a probe keeps them off the
    user's terminal (the probe's own verdict is the one line that matters)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def probe_gcs(address: str, option: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Ask whatever answers at ``address`` for its Ray cluster id: a Ray head's GCS port answers,
    anything else (a dashboard port, a proxy) is refused now rather than after a minute of retries.
    Uses Ray's standalone GCS client only (hpsearch.tune.compat.gcs_answers); nothing is started. A
    Ray without that client leaves the TCP probe above to decide alone."""
    try:
        with _stderr_to_devnull():
            gcs_answers(address, timeout)
    except GcsError as err:
        if err.auth:
            raise ConfigError(f"{option}: the Ray head at {address} refused the connection ({err}); "
                              "it uses token authentication: set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN "
                              "(or ~/.ray/auth_token) as on the head") from None
        raise ConfigError(f"{option}: {address} answers but not as a Ray head ({err}); expected "
                          "the GCS port given to `ray start --head --port` (default 6379)") from None


def cluster_node_addresses(address: str, timeout: float = PROBE_TIMEOUT_S) -> list[str]:
    """The IP addresses of the alive nodes of the Ray cluster whose GCS is at ``address`` (asked
    through Ray's standalone GCS client, hpsearch.tune.compat.gcs_alive_node_addresses; nothing is
    started)."""
    try:
        with _stderr_to_devnull():
            return gcs_alive_node_addresses(address, timeout)
    except GcsError as err:   # the address answered a moment ago; say what went wrong, in one line
        raise ConfigError(f"--address: could not list the nodes of the Ray cluster at {address} ({err})") from None


def this_machine_addresses() -> frozenset[str]:
    """Every IP address of this machine's network interfaces, loopback included."""
    import psutil

    found = {"127.0.0.1", "::1"}
    for entries in psutil.net_if_addrs().values():
        for entry in entries:
            if entry.family in (socket.AF_INET, socket.AF_INET6):
                found.add(entry.address.split("%", 1)[0])
    return frozenset(found)


# Filesystems that several machines mount at once (what a cluster's storage path has to be on).
NETWORK_FILESYSTEMS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "ceph", "fuse.ceph", "fuse.cephfs", "lustre", "gpfs", "beegfs",
    "glusterfs", "fuse.glusterfs", "ocfs2", "gfs2", "panfs", "wekafs", "afs", "fuse.sshfs", "fuse.juicefs",
    "fuse.s3fs", "fuse.gcsfuse", "fuse.mountpoint-s3", "fuse.rclone", "fuse.alluxio-fuse", "fuse.weka",
})


def filesystem_type(path: Path, mounts: str | None = None) -> str | None:
    """The type of the filesystem holding ``path``, from ``/proc/mounts`` (or the text given);
    None where that table cannot be read (not Linux)."""
    if mounts is None:
        try:
            mounts = Path("/proc/mounts").read_text(encoding="utf-8")
        except OSError:
            return None
    best, kind = "", None
    target = str(path)
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind


def check_shared_storage(storage: Path, address: str, nodes: list[str], local: frozenset[str],
                         fstype: str | None) -> None:
    """A storage directory on this machine's own disk cannot hold the results of trials that run
    on other machines: refuse it when some node of the cluster is elsewhere, unless the directory
    is on a network filesystem (or its filesystem cannot be told)."""
    remote = [ip for ip in nodes if ip not in local]
    if not remote or fstype is None or fstype in NETWORK_FILESYSTEMS:
        return
    shown = ", ".join(remote[:4]) + (f" and {len(remote) - 4} more" if len(remote) > 4 else "")
    raise ConfigError(f"--storage: {str(storage)!r} is on this machine's own disk ({fstype}), but the Ray "
                      f"cluster at {address} has nodes on other machines ({shown}); expected a directory "
                      "every node mounts at the same path (NFS, CephFS, Lustre, ...)")


def check_cluster_storage(storage: Path, address: str | None) -> None:
    """``check_shared_storage`` for the cluster at ``address`` (as check_address returned it);
    nothing to check for a local Ray."""
    if address is None:
        return
    given = auto_address() if address == "auto" else address
    check_shared_storage(storage, given, cluster_node_addresses(given), this_machine_addresses(),
                         filesystem_type(storage))


def auto_address() -> str:
    """Where ``ray.init(address='auto')`` would connect: RAY_ADDRESS, else the address file the last
    ``ray start`` wrote in Ray's default temp dir."""
    env = os.environ.get("RAY_ADDRESS", "").strip()
    if env:
        return env
    path = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
    text = path.read_text(encoding="utf-8").strip() if path.is_file() else ""
    if not text:
        raise ConfigError(f"--address: got 'auto', but no Ray cluster was found (RAY_ADDRESS is unset and "
                          f"{path} does not exist); start one with `ray start --head` or give HOST:PORT")
    return text


def check_address(address: str | None) -> str | None:
    """The address to hand to ray.init, after checking a Ray head answers there; None for local.

    ``auto`` and ``HOST:PORT`` join the cluster from this process (its GCS is asked for its id).
    ``ray://HOST:PORT`` (Ray Client) is returned as given once something speaks gRPC there and
    grpcio is installed: under Ray Client, Tune would build its loop as an actor on the head, apart
    from this process's scheduler, searcher and run dir, so hpsearch runs the whole search on the
    head instead (hpsearch.driver.client) and only relays its output and signals here."""
    if address is None or address == "local":
        return None
    option, given = ("--address auto", auto_address()) if address == "auto" else ("--address", address)
    if is_client(given):
        host, port = _host_port(given[len(CLIENT_SCHEME):], option, shown=given)
        if importlib.util.find_spec("grpc") is None:
            raise ConfigError(f"{option}: got {given!r}, a Ray Client address, but grpcio is not installed here; "
                              "install it with `pip install -c constraints.txt -e '.[cluster]'`, or give HOST:PORT "
                              f"of {GCS_PORT}")
        probe(host, port, option, expected=CLIENT_PORT)
        return given
    if "://" in given:
        raise ConfigError(f"{option}: got {given!r}, expected 'auto', HOST:PORT or ray://HOST:PORT")
    host, port = _host_port(given, option)
    probe(host, port, option)
    probe_gcs(f"{host}:{port}", option)
    return address


def client_storage(storage: str | None) -> Path:
    """The storage directory under Ray Client: the head writes the run dir, so it is a path on the
    cluster, given and absolute (``file://`` URIs read as paths). The head checks it can write
    there, and that no run of the same name exists, before the search starts."""
    text = storage or ""
    if text.startswith("file://"):
        text = urlparse(text).path
    if not text.startswith("/"):
        raise ConfigError(f"--storage: got {storage!r}; with a ray:// address the search runs on the cluster's "
                          "head and writes its run dir there: expected an absolute directory every node mounts "
                          "(e.g. --storage /shared/runs)")
    return Path(text)


def _installed(origin: Path) -> bool:
    roots = {Path(p).resolve() for p in (sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"])}
    return any(root in origin.resolve().parents for root in roots)


def model_modules(model: str) -> list[str]:
    """For a model given as ``package.module:Factory`` that is not an installed distribution, the
    file or package directory to ship to Ray workers (``runtime_env.py_modules``)."""
    if ":" not in model:
        return []
    top = model.partition(":")[0].split(".")[0]
    spec = importlib.util.find_spec(top)
    if spec is None or spec.origin in (None, "built-in", "frozen"):
        return []
    origin = Path(spec.origin)
    if _installed(origin):
        return []
    return [str(origin.parent if spec.submodule_search_locations else origin)]


# What a trial's worker imports before it trains: Ray Tune's function trainable, hpsearch's adapter,
# torch, and what they import only when first used: torch._dynamo (torch.optim loads it at a model's
# first optimizer step, over a second) and the modules of Ray's serializers (pydantic.v1,
# starlette.datastructures, when installed), registered as the worker takes its first task. A local
# Ray imports them in the workers it prestarts, while the driver assembles the search (a py-spy
# profile of a trial worker, benchmarks/worker_profile.py, shows what is left).
WORKER_MODULES = ("ray.tune", "torch", "torch._dynamo", "pydantic.v1", "starlette.datastructures",
                  "hpsearch.tune.trainable")


def worker_modules(model: str) -> list[str]:
    """The modules a local Ray's workers import before their first trial: those of WORKER_MODULES
    installed here, and a built-in ``model``'s module (a user's model module may be importable only
    once the worker has joined the job, which puts the driver's sys.path on its own)."""
    own = [BUILTIN[model].partition(":")[0]] if model in BUILTIN else []
    # the top-level package only: finding a submodule would import its parent (torch) right here
    return [name for name in WORKER_MODULES if importlib.util.find_spec(name.partition(".")[0]) is not None] + own


def runtime_env(model: str | None = None) -> dict[str, Any]:
    """The ``runtime_env`` of every Ray session hpsearch starts or joins: trials keep the driver's
    working directory (RAY_CHDIR_TO_TRIAL_DIR=0, so relative data paths keep their meaning), and
    the files of a user ``model`` that is not installed travel to the workers (``py_modules``,
    ``model_modules``). ``model`` None: nothing to ship (a local Ray imports it from here)."""
    env: dict[str, Any] = {"env_vars": {"RAY_CHDIR_TO_TRIAL_DIR": "0"}}
    modules = model_modules(model) if model else []
    if modules:
        env["py_modules"] = modules
    return env
