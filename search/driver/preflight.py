"""Everything ``hpsearch run`` (and ``hpsearch.run``) checks before a Ray process starts.

Each check raises a one-line ConfigError naming the option, the value and what is allowed: the
run name, the storage directory, a cluster address where no Ray head answers, a storage directory
that the cluster's other machines cannot reach, the config itself (hpsearch.core.config), a tracker
(``log:``) whose library is not installed, an empty space,
more CPUs or GPUs than this machine has, an existing run of the same name. The cheap checks come
first and import neither torch nor ray; only the model's own checks import the model (and torch),
and only an address that answers imports Ray's GCS client (which starts no process).
"""

from __future__ import annotations

import importlib
import os
import re
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlparse

from hpsearch.core.config import LogConfig, RunConfig, build_config, check_sections, read_config
from hpsearch.core.outcomes import recorded_state
from hpsearch.driver.cluster import check_address, check_cluster_storage, client_storage, is_client, runtime_env
from hpsearch.models.config import ConfigError

DEFAULT_STORAGE = "runs"
# a tracker of the config's log section -> (the module it needs, the extra that installs it)
TRACKERS = {"tensorboard": ("tensorboardX", "tensorboard"), "mlflow": ("mlflow", "mlflow")}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._=+-]*")


@dataclass(frozen=True)
class Plan:
    """A validated search, ready to hand to Ray."""
    config: RunConfig
    source: str                       # the config file's path, or "<dict>" (hpsearch.run), for run.json
    name: str
    storage: Path
    address: str | None               # None: a new local Ray; else what ray.init(address=) gets
    runtime_env: dict[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    command: str = field(default_factory=lambda: " ".join(sys.argv))   # as typed, for run.json

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


def default_name(stem: str) -> str:
    """``<stem>-<date>-<time>``: a run name from a config file's stem, safe as a folder name."""
    stem = re.sub(r"[^A-Za-z0-9._-]", "-", stem).lstrip(".-") or "search"
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
    """Refuse a run dir that exists; the hint says what can be done with it: a finished run can be
    read, an interrupted or killed one resumed; anything else (no readable run.json) neither."""
    if not run_dir.exists():
        return
    state = recorded_state(run_dir)
    then = {"finished": f", or read it with `hpsearch report {run_dir}`",
            "interrupted": f", or continue it with `hpsearch resume {run_dir}`",
            "running": f", or, when it is no longer running, continue it with `hpsearch resume {run_dir}`"}
    raise ConfigError(f"--name: a run named {run_dir.name!r} already exists at {str(run_dir)!r}"
                      f"{f' ({state})' if state else ''}; choose another --name{then.get(state, '')}")


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


def check_trackers(log: LogConfig) -> None:
    """Each tracker the config's ``log`` section asks for must be importable here, where its Tune
    callback runs (the driver: this process, or the head under Ray Client). Imported only when asked
    for, so a search without trackers never pays for them."""
    for name in log.trackers:
        module, extra = TRACKERS[name]
        try:
            importlib.import_module(module)
        except ImportError:
            raise ConfigError(f"log.{name}: {module} is not installed; expected it installed "
                              f"(pip install \"hpsearch[{extra}]\") or log.{name}: false") from None


def plan(args: Any) -> Plan:
    """``hpsearch run``'s command line: the config file with ``--set`` and the shorthand options
    applied, checked by ``plan_search``."""
    config_path = Path(args.config)
    raw = read_config(config_path, overrides(args))
    name = args.name if args.name is not None else default_name(config_path.stem)
    return plan_search(raw, str(config_path), name=name, storage=args.storage, address=args.address,
                       command=" ".join(sys.argv))


def plan_search(raw: Mapping[str, Any], source: str, *, name: str, storage: str | None, address: str | None,
                command: str) -> Plan:
    """Check everything a search of the raw config ``raw`` needs; nothing here starts Ray. Shared by
    ``hpsearch run`` and ``hpsearch.run``: ``source`` names where ``raw`` came from (a file's path, or
    ``<dict>``) and ``command`` what the user typed, both for run.json. The checks run cheapest
    first: the run name, the storage path, the address, the config's own sections, the resources,
    and only then the model's settings (which import the model, and with it torch). Under Ray
    Client (``ray://``) the storage is a directory on the cluster: the head checks it and refuses an
    existing run there (hpsearch.driver.client)."""
    name = check_name(name)
    address = check_address(address)
    remote = is_client(address)
    storage_at = client_storage(storage) if remote else storage_path(storage)
    if not remote:
        check_cluster_storage(storage_at, address)
    sections, top = check_sections(raw, source)
    if not remote:    # under Ray Client the trackers run on the head, which checks them (hpsearch.driver.runner)
        check_trackers(sections["log"])
    wanted = SimpleNamespace(device=top.device, resources=sections["resources"])
    check_cpu(wanted, address)
    check_gpu(wanted, address)
    config = build_config(raw, source=source)
    if not config.space:
        raise ConfigError("space: empty; expected at least one parameter to search "
                          "(a single configuration is `hpsearch train`)")
    if not remote:
        storage_at = storage_dir(str(storage_at))
        check_new_run(storage_at / name)
    warnings = []
    if address is not None:
        warnings.append(f"storage {storage_at} must be reachable by every node of the cluster at the same "
                        "path (a shared filesystem); trial results and checkpoints are written there")
    return Plan(config=config, source=source, name=name, storage=storage_at, address=address,
                runtime_env=runtime_env(config.model if address is not None else None), warnings=tuple(warnings),
                command=command)
