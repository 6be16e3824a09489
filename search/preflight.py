"""Everything ``hpsearch run`` checks before a Ray process starts.

Each check raises a one-line ConfigError naming the option, the value and what is allowed: the
config itself (search.config), an empty space, the run name, the storage directory, an existing
run of the same name, more CPUs or GPUs than this machine has, a cluster address where no Ray head
answers. Imports neither ray nor torch at module level.
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
from typing import Any
from urllib.parse import urlparse

from models.config import ConfigError
from search.config import RunConfig, load_config

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


def storage_dir(storage: str | None) -> Path:
    """A local directory (created if missing) that this process can write to. ``file://`` URIs are
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


def check_cpu(config: RunConfig, address: str | None) -> None:
    """A trial asking for more CPUs than this machine has would wait forever on a local Ray."""
    cpus = os.cpu_count() or 1
    if address is None and config.resources.cpu > cpus:
        raise ConfigError(f"resources.cpu: got {config.resources.cpu:g}, but this machine has {cpus} CPUs; "
                          f"expected at most {cpus} (or --address of a cluster with bigger nodes)")


def check_gpu(config: RunConfig, address: str | None) -> None:
    if config.device == "cuda" and config.resources.gpu == 0:
        raise ConfigError("device: got 'cuda' with resources.gpu 0; expected resources.gpu > 0 "
                          "(Ray gives a trial a GPU only when it asks for one) or device 'auto'/'cpu'")
    if config.resources.gpu > 0 and address is None:
        import torch

        if not torch.cuda.is_available():
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

    ``ray://`` (Ray Client) is refused: Tune would then run on the head, away from this process,
    and the live table, the summary and the run's state would stay empty here. Running hpsearch
    on the cluster itself (``ray job submit ... -- hpsearch run ... --address auto``) keeps them."""
    if address is None or address == "local":
        return None
    option, given = ("--address auto", auto_address()) if address == "auto" else ("--address", address)
    if given.startswith("ray://"):
        raise ConfigError(f"{option}: got {given!r}; Ray Client (ray://) addresses are not supported, expected "
                          "HOST:PORT of the head's GCS, or run on the cluster: `ray job submit --address "
                          "http://HEAD:8265 --working-dir . -- hpsearch run CONFIG --address auto`")
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
    """Load and check everything ``hpsearch run`` needs; nothing here starts Ray."""
    config_path = Path(args.config)
    config = load_config(config_path, overrides(args))
    if not config.space:
        raise ConfigError("space: empty; expected at least one parameter to search "
                          "(a single configuration is `hpsearch train`)")
    name = check_name(args.name) if args.name is not None else default_name(config_path)
    address = check_address(args.address)
    check_cpu(config, address)
    check_gpu(config, address)
    storage = storage_dir(args.storage)
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
