"""Everything ``hpsearch run`` checks before a Ray process starts.

Each check raises a one-line ConfigError naming the option, the value and what is allowed: the
run name, the storage directory, a cluster address where no Ray head answers, a storage directory
that the cluster's other machines cannot reach, the config itself (search.config), an empty space,
more CPUs or GPUs than this machine has, an existing run of the same name. The cheap checks come
first and import neither torch nor ray; only the model's own checks import the model (and torch),
and only an address that answers imports Ray's GCS client (which starts no process).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import socket
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlparse

from models.config import ConfigError
from search.config import RunConfig, build_config, check_sections, read_config

DEFAULT_STORAGE = "runs"
PROBE_TIMEOUT_S = 3.0
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._=+-]*")


@dataclass(frozen=True)
class Plan:
    """A validated search, ready to hand to Ray."""
    config: RunConfig
    config_path: Path
    name: str
    storage: Path
    address: str | None               # None: a new local Ray; else what ray.init(address=) gets
    runtime_env: dict[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    @property
    def run_dir(self) -> Path:
        return self.storage / self.name


def overrides(args: Any) -> list[str]:
    """``--set`` plus the shorthand options, as ``key=value`` overrides."""
    out = list(getattr(args, "set", None) or [])
    if getattr(args, "num_samples", None) is not None:
        out.append(f"budget.num_samples={args.num_samples}")
    if getattr(args, "max_epochs", None) is not None:
        out.append(f"budget.max_epochs={args.max_epochs}")
    return out


def check_name(name: str) -> str:
    if not name or not _NAME.fullmatch(name) or ".." in name:
        raise ConfigError(f"--name: got {name!r}, expected letters, digits and . _ - = + "
                          "(no path separators, no '..', not starting with . or -)")
    return name


def default_name(config_path: Path) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]", "-", config_path.stem).lstrip(".-") or "search"
    return f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def storage_path(storage: str | None) -> Path:
    """The storage directory as an absolute path, checked without creating anything: not a file,
    and writable (or creatable: its nearest existing parent is writable). ``file://`` URIs are
    read as paths; other schemes are refused (the run dir holds files hpsearch writes itself)."""
    text = storage if storage is not None else DEFAULT_STORAGE
    if "://" in text:
        parsed = urlparse(text)
        if parsed.scheme != "file":
            raise ConfigError(f"--storage: got {text!r}, expected a directory or a file:// URI "
                              "(on a cluster: a shared filesystem path every node mounts)")
        text = parsed.path
    path = Path(text).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--storage: {str(path)!r} exists and is not a directory")
    existing = next(p for p in (path, *path.parents) if p.exists())
    what = "is not writable" if existing == path else f"cannot be created ({str(existing)!r} is not writable)"
    if not existing.is_dir():
        raise ConfigError(f"--storage: {str(path)!r} cannot be created ({str(existing)!r} is a file); "
                          "expected a directory this user can write to")
    try:  # a directory made and removed at once: the honest test (root passes os.access anywhere)
        tempfile.TemporaryDirectory(dir=existing, prefix=".hpsearch-write-test-").cleanup()
    except OSError as err:
        raise ConfigError(f"--storage: {str(path)!r} {what} ({err.strerror or err}); expected a directory "
                          "this user can write to") from None
    return path


def storage_dir(storage: str | None) -> Path:
    """``storage_path``, created if missing and proven writable by writing a file there."""
    path = storage_path(storage)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".hpsearch-write-test-"):
            pass
    except OSError as err:
        raise ConfigError(f"--storage: {str(path)!r} is not writable ({err.strerror or err})") from None
    return path


def check_new_run(run_dir: Path) -> None:
    if run_dir.exists():
        raise ConfigError(f"--name: a run named {run_dir.name!r} already exists at {str(run_dir)!r}; "
                          f"choose another --name, or continue it with `hpsearch resume {run_dir}`")


def check_cpu(config: RunConfig | Any, address: str | None) -> None:
    """A trial asking for more CPUs than this machine has would wait forever on a local Ray."""
    cpus = os.cpu_count() or 1
    if address is None and config.resources.cpu > cpus:
        raise ConfigError(f"resources.cpu: got {config.resources.cpu:g}, but this machine has {cpus} CPUs; "
                          f"expected at most {cpus} (or --address of a cluster with bigger nodes)")


def gpu_visible() -> bool:
    """torch.cuda.is_available(), answered without importing torch where the answer is plainly
    no: CUDA_VISIBLE_DEVICES empty or -1, or (on Linux) no NVIDIA, AMD or WSL GPU device node."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    if sys.platform.startswith("linux"):
        dev = Path("/dev")
        if not (any(dev.glob("nvidia[0-9]*")) or (dev / "kfd").exists() or (dev / "dxg").exists()):
            return False
    import torch

    return torch.cuda.is_available()


def check_gpu(config: RunConfig | Any, address: str | None) -> None:
    if config.device == "cuda" and config.resources.gpu == 0:
        raise ConfigError("device: got 'cuda' with resources.gpu 0; expected resources.gpu > 0 "
                          "(Ray gives a trial a GPU only when it asks for one) or device 'auto'/'cpu'")
    if config.resources.gpu > 0 and address is None:
        if not gpu_visible():
            raise ConfigError(f"resources.gpu: got {config.resources.gpu:g}, but no CUDA GPU is visible "
                              "on this machine; expected 0, or --address of a cluster with GPUs")


def _host_port(text: str, option: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{option}: got {text!r}, expected 'auto' or HOST:PORT")
    return host, int(port)


_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
_H2_SETTINGS = 0x4


def probe(host: str, port: int, option: str, timeout: float = PROBE_TIMEOUT_S) -> None:
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
                              "expected the GCS port given to `ray start --head --port` (default 6379)")
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
    Uses ray._raylet's client only; nothing is started."""
    from ray import _raylet

    standalone = getattr(getattr(_raylet, "InnerGcsClient", None), "standalone", None)
    if standalone is None:  # a Ray without this call: the TCP probe above decides alone
        return
    try:
        with _stderr_to_devnull():
            standalone(address, None, int(timeout * 1000))
    except Exception as err:  # every failure becomes the one-line error below
        first = (str(err).splitlines() or [type(err).__name__])[0]
        if "token" in str(err).lower() or "auth" in type(err).__name__.lower():
            raise ConfigError(f"{option}: the Ray head at {address} refused the connection ({first[:120]}); "
                              "it uses token authentication: set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN "
                              "(or ~/.ray/auth_token) as on the head") from None
        raise ConfigError(f"{option}: {address} answers but not as a Ray head ({first[:120]}); expected "
                          "the GCS port given to `ray start --head --port` (default 6379)") from None


def cluster_node_addresses(address: str, timeout: float = PROBE_TIMEOUT_S) -> list[str]:
    """The IP addresses of the alive nodes of the Ray cluster whose GCS is at ``address`` (asked
    through ray._raylet's GCS client; nothing is started)."""
    from ray import _raylet

    try:
        with _stderr_to_devnull():
            client = _raylet.InnerGcsClient.standalone(address, None, int(timeout * 1000))
            nodes = client.get_all_node_info(timeout=timeout)
    except Exception as err:  # the address answered a moment ago; say what went wrong, in one line
        first = (str(err).splitlines() or [type(err).__name__])[0]
        raise ConfigError(f"--address: could not list the nodes of the Ray cluster at {address} ({first[:120]})") from None
    return sorted({info.node_manager_address for info in nodes.values() if info.state == 0})  # 0: ALIVE


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

    ``ray://`` (Ray Client) is refused. Under Ray Client, ``Tuner`` builds its TunerInternal as an
    actor on the head (ray/tune/tuner.py: ``_force_on_current_node(ray.remote(TunerInternal))``),
    so the Tune loop, the searcher, the scheduler and every callback run there, not here: the live
    table and the summary would stay empty in this process, run.json and search.yaml would be
    written here while the results are written on the head, and the actor's constructor arguments
    are pickled one by one, so the scheduler and the outcome recorder would each get their own copy
    of the run's OutcomeLog (a pruned trial then recorded again as completed). Running hpsearch on
    the cluster itself (``ray job submit ... -- hpsearch run ... --address auto``) or joining the
    head's GCS port (``--address HOST:PORT``) keeps all of it in one process."""
    if address is None or address == "local":
        return None
    option, given = ("--address auto", auto_address()) if address == "auto" else ("--address", address)
    if given.startswith("ray://"):
        raise ConfigError(f"{option}: got {given!r}; Ray Client (ray://) addresses are not supported (the search "
                          "loop would run on the head, apart from this run's files); expected HOST:PORT of the "
                          "head's GCS port (`ray start --head --port`, default 6379), or run hpsearch on the "
                          "cluster: `ray job submit --address http://HEAD:8265 --working-dir . -- hpsearch run "
                          "CONFIG --address auto`")
    if "://" in given:
        raise ConfigError(f"{option}: got {given!r}, expected 'auto' or HOST:PORT")
    host, port = _host_port(given, option)
    probe(host, port, option)
    probe_gcs(f"{host}:{port}", option)
    return address


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


def plan(args: Any) -> Plan:
    """Load and check everything ``hpsearch run`` needs; nothing here starts Ray. The checks run
    cheapest first: the run name, the storage path, the address, the config's own sections, the
    resources, and only then the model's settings (which import the model, and with it torch)."""
    config_path = Path(args.config)
    name = check_name(args.name) if args.name is not None else default_name(config_path)
    storage = storage_path(args.storage)
    address = check_address(args.address)
    check_cluster_storage(storage, address)
    raw = read_config(config_path, overrides(args))
    sections, top = check_sections(raw, str(config_path))
    wanted = SimpleNamespace(device=top.device, resources=sections["resources"])
    check_cpu(wanted, address)
    check_gpu(wanted, address)
    config = build_config(raw, source=str(config_path))
    if not config.space:
        raise ConfigError("space: empty; expected at least one parameter to search "
                          "(a single configuration is `hpsearch train`)")
    storage = storage_dir(str(storage))
    check_new_run(storage / name)
    warnings = []
    runtime_env: dict[str, Any] = {"env_vars": {"RAY_CHDIR_TO_TRIAL_DIR": "0"}}
    if address is not None:
        modules = model_modules(config.model)
        if modules:
            runtime_env["py_modules"] = modules
        warnings.append(f"storage {storage} must be reachable by every node of the cluster at the same "
                        "path (a shared filesystem); trial results and checkpoints are written there")
    return Plan(config=config, config_path=config_path, name=name, storage=storage, address=address,
                runtime_env=runtime_env, warnings=tuple(warnings))


def command_line() -> str:
    return " ".join(sys.argv)
