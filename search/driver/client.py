"""Ray Client (``--address ray://HOST:PORT``): the search runs on the cluster's head node, and this
process relays its output and the signals it gets.

Under Ray Client, Tune builds its loop as an actor on the head (ray/tune/tuner.py), apart from the
process that built the scheduler, the searcher and the callbacks: the live table and the summary
would stay empty here, and each of them would get its own pickled copy of the run's OutcomeLog (a
pruned trial then recorded again as completed). So the whole of ``hpsearch run`` (or ``resume``)
runs as one task pinned to the head, in one process, as it does on a laptop:

    this process                          the head node
    ray.init("ray://HOST:PORT")   ──────▶ drive(): storage checks, then hpsearch.driver.runner as usual
    prints what the Relay holds   ◀────── its stdout and stderr, line by line, into a Relay actor
    SIGINT / SIGTERM ──▶ Relay    ──────▶ a watcher thread there hands it to the search's handler

The run dir is written by the head, so ``--storage`` is an absolute path on the cluster (a shared
filesystem every node mounts; hpsearch.driver.cluster.client_storage). The search lives as long as this
connection: if this process dies, Ray ends the job and the search stops where its last snapshot
was; ``hpsearch resume RUN_DIR --address ray://HOST:PORT`` continues it. A search that must outlive
the laptop is a job instead (``ray job submit``, README).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import yaml

from hpsearch.core.numbers import one_line
from hpsearch.core.rundir import SEARCH_YAML
from hpsearch.driver import cluster, preflight, runner
from hpsearch.driver.signals import GracefulStop, signals_kept
from hpsearch.models.config import ConfigError

POLL_S = 0.25


class Relay:
    """The mailbox between the driver task and the client: output chunks one way, signal numbers
    the other. A Ray actor with no CPU of its own, on the head next to the task."""

    def __init__(self) -> None:
        self._chunks: list[tuple[str, str]] = []
        self._signals: list[int] = []

    def write(self, stream: str, text: str) -> None:
        self._chunks.append((stream, text))

    def take(self) -> list[tuple[str, str]]:
        chunks, self._chunks = self._chunks, []
        return chunks

    def send_signal(self, signum: int) -> None:
        self._signals.append(signum)

    def signals(self, since: int) -> list[int]:
        return self._signals[since:]


class RelayStream(io.TextIOBase):
    """A text stream whose lines go to the Relay (each complete line at once, the rest on flush)."""

    def __init__(self, relay: Any, name: str) -> None:
        super().__init__()
        self.relay, self.name = relay, name
        self._pending: list[str] = []
        self._lock = threading.RLock()   # the search's signal handler may print mid-write

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self._lock:
            self._pending.append(text)
            if "\n" in text:
                self._send()
        return len(text)

    def flush(self) -> None:
        with self._lock:
            self._send()

    def _send(self) -> None:
        if self._pending:
            text, self._pending = "".join(self._pending), []
            self.relay.write.remote(self.name, text)


def forward_signals(relay: Any, done: threading.Event) -> None:
    """In the driver task: hand each signal the client relays to the search's own handler
    (runner.GracefulStop, which holds SIGTERM while the search runs); until it is installed the
    signal waits (the checks before the search are short, and a signal then would kill the worker)."""
    import ray

    seen, pending = 0, []
    while not done.wait(POLL_S):
        new = ray.get(relay.signals.remote(seen))
        seen += len(new)
        pending += new
        handler = signal.getsignal(signal.SIGTERM)
        while pending and isinstance(handler, GracefulStop):
            handler.relay(pending.pop(0))


def drive(verb: str, target: Any, relay: Any, address: str) -> tuple[int, str]:
    """The task on the head: ``run`` a Plan or ``resume`` a run dir there, its output relayed.
    Returns (exit code, the one-line error of a refused check or '')."""
    import ray

    out, err = RelayStream(relay, "stdout"), RelayStream(relay, "stderr")
    done = threading.Event()
    watcher = threading.Thread(target=forward_signals, args=(relay, done), name="hpsearch-signals", daemon=True)
    watcher.start()
    try:
        logging.getLogger("ray").setLevel(logging.ERROR)   # as ray.init(logging_level=ERROR) does locally
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            gcs = ray.get_runtime_context().gcs_address
            if verb == "resume":
                return runner.resume(target, address=gcs, stream=out, shown_address=address), ""
            storage = preflight.storage_dir(str(target.storage))
            cluster.check_cluster_storage(storage, gcs)
            preflight.check_new_run(storage / target.name)
            return runner.run(dataclasses.replace(target, storage=storage), stream=out), ""
    except ConfigError as error:
        return 2, str(error)
    except KeyboardInterrupt:   # a second signal: stopped at once, the last saved state stands
        return 130, ""
    except Exception as error:   # shown as one line here; the head's worker log has the traceback
        logging.getLogger(__name__).exception("hpsearch %s on the head failed", verb)
        return 1, f"the search on the head failed: {type(error).__name__}: {one_line(error)}"
    finally:
        done.set()
        out.flush()
        err.flush()
        ray.get(relay.signals.remote(0))   # the Relay runs this caller's calls in order: every line is in


# The head's proxy now and then fails to start the per-client server it hands a new connection to
# (ray/util/client/server/proxier.py: the process has exited when it looks); Ray Client reports it
# as a ConnectionAbortedError whose text holds the proxy's traceback. A new connection gets a new
# server on another port, so that failure is tried again, after 1, 2, 4 and 8 s.
CONNECT_TRIES = 5
SERVER_START_FAILED = "Starting Ray client server failed"


def connect(address: str, runtime_env: dict[str, Any], pause: Callable[[float], None] = time.sleep) -> None:
    import ray

    for attempt in range(1, CONNECT_TRIES + 1):
        try:
            ray.init(address=address, runtime_env=runtime_env, logging_level=logging.ERROR, log_to_driver=False)
            return
        except (ConnectionError, RuntimeError, ValueError) as error:
            if attempt == CONNECT_TRIES or SERVER_START_FAILED not in str(error):
                refuse_connection(address, error)
            pause(2 ** (attempt - 1))


def refuse_connection(address: str, error: BaseException) -> NoReturn:
    raise ConfigError(f"--address: could not connect to the Ray Client server at {address}: "
                      f"{one_line(error, last=True)} (a cluster with token authentication "
                      "also wants RAY_AUTH_MODE=token and RAY_AUTH_TOKEN here, as on the head)") from None


def head_node_id() -> str:
    import ray

    for node in ray.nodes():
        if node.get("Alive") and "node:__internal_head__" in node.get("Resources", {}):
            return node["NodeID"]
    raise ConfigError("--address: the Ray cluster reports no live head node")


def show(chunks: list[tuple[str, str]]) -> None:
    for name, text in chunks:
        stream = sys.stderr if name == "stderr" else sys.stdout
        stream.write(text)
        stream.flush()


def remote(verb: str, target: Any, address: str, runtime_env: dict[str, Any]) -> int:
    """Run ``drive(verb, target)`` on the head of the cluster at ``address``, printing its output
    here as it comes and relaying SIGINT / SIGTERM; returns its exit code."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    try:
        connect(address, runtime_env)   # inside: a Ctrl-C while connecting still disconnects
        on_head = NodeAffinitySchedulingStrategy(head_node_id(), soft=False)
        relay = ray.remote(Relay).options(num_cpus=0, scheduling_strategy=on_head).remote()
        task = ray.remote(drive).options(num_cpus=0, max_retries=0, scheduling_strategy=on_head).remote(
            verb, target, relay, address)
        with signals_kept() as got:
            sent = 0
            try:
                while True:
                    ready, _ = ray.wait([task], timeout=POLL_S)
                    while sent < len(got):   # one at a time: a signal may land while one is sent
                        relay.send_signal.remote(got[sent])
                        sent += 1
                    show(ray.get(relay.take.remote()))
                    if ready:
                        break
                code, error = ray.get(task)
                show(ray.get(relay.take.remote()))
            except (ray.exceptions.RayError, ConnectionError) as lost:
                print(f"hpsearch: lost the search on the cluster ({type(lost).__name__}: {one_line(lost)}); its state "
                      f"is saved as of its last snapshot: `hpsearch resume RUN_DIR --address {address}`",
                      file=sys.stderr, flush=True)
                return 1
    finally:
        ray.shutdown()
    if code == 2 and error:
        raise ConfigError(error)
    if error:
        print(f"hpsearch: {error}", file=sys.stderr, flush=True)
    return code


def run(plan: Any) -> int:
    """``hpsearch run --address ray://...``: the checked plan, searched on the head."""
    return remote("run", plan, plan.address, plan.runtime_env)


def resume(run_dir: str | Path, address: str) -> int:
    """``hpsearch resume RUN_DIR --address ray://...``: RUN_DIR is the run's path on the cluster."""
    if not str(run_dir).startswith("/"):
        raise ConfigError(f"RUN_DIR: got {str(run_dir)!r}; with a ray:// address the search resumes on the "
                          "cluster's head: expected the run dir's absolute path there (as the search printed it)")
    return remote("resume", str(run_dir), address, resume_runtime_env(Path(run_dir)))


def resume_runtime_env(run_dir: Path) -> dict[str, Any]:
    """The job's runtime env for a resumed search: a user model's files ship again when this machine
    sees the run dir (a shared filesystem mounted here too); otherwise the model must be importable
    on the cluster as it is."""
    model = None
    with contextlib.suppress(OSError, yaml.YAMLError, AttributeError):
        model = str(yaml.safe_load((run_dir / SEARCH_YAML).read_text(encoding="utf-8")).get("model", ""))
    return cluster.runtime_env(model)
