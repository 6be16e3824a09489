"""Where a trial worker's CPU time goes: py-spy samples every Ray worker of this process's local Ray
while a search runs (the prestarted ones it finds as the search starts, and any trial worker that
appears later), and the samples are grouped by what the stack was doing (GROUPS).

py-spy (``pip install -e .[bench]``) reads the workers' stacks from outside; on a machine that
forbids it (no ptrace), ``sampled`` yields None and the profile says so.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks import harness

GROUPS = (  # (label, what a frame of the stack holds), the first that any frame matches wins; a
    # trial's training thread runs under Ray Tune's function trainable, so Tune comes after the rest
    ("checkpoints (save, hand to Tune)", ("save_checkpoint", "persist_current_checkpoint")),
    ("training and evaluation (model code, torch)", ("train_epoch (", "evaluate (")),
    ("imports", ("importlib",)),
    ("Ray Tune report (result to the driver, function-trainable plumbing)", ("ray/tune/", "ray/train/", "ray/air/")),
    ("hpsearch adapter (health, seeds, model build)", ("search/", "hpsearch/", "models/")),
    ("Ray core (worker loop, serialization)", ("ray/",)),
)


def _group(stack: str) -> str:
    """The group of one sampled stack (py-spy's raw format: frames ``name (file:line)`` joined by ``;``)."""
    for label, needles in GROUPS:
        if any(needle in stack for needle in needles):
            return label
    return "other (standard library, threads)"


@contextlib.contextmanager
def sampled(out: Path, rate: int = 100) -> Iterator[dict[str, Any] | None]:
    """Sample every Ray worker of this process while the block runs; on exit the dict holds
    ``groups`` (label -> samples) and ``workers`` (how many were sampled)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        yield None
        return
    result: dict[str, Any] = {"groups": Counter(), "workers": 0}
    running: list[tuple[subprocess.Popen, Path]] = []
    known: set[int] = set()
    stop = threading.Event()

    def attach() -> None:
        while not stop.is_set():
            for process in (p for p in harness.ray_workers() if p.pid not in known):
                known.add(process.pid)
                path = out / f"worker-{process.pid}.txt"
                running.append((subprocess.Popen([spy, "record", "--pid", str(process.pid), "--rate", str(rate),
                                                  "--format", "raw", "--output", str(path), "--nonblocking"],
                                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), path))
            stop.wait(0.2)

    watcher = threading.Thread(target=attach, daemon=True)
    watcher.start()
    try:
        yield result
    finally:
        stop.set()
        watcher.join()
        for spy_process, _ in running:     # py-spy writes its samples on SIGINT, as on Ctrl-C
            spy_process.send_signal(signal.SIGINT)
        for spy_process, path in running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                spy_process.wait(timeout=10)
            if not path.exists():
                continue
            lines = [line for line in path.read_text().splitlines() if line.strip()]
            if lines:
                result["workers"] += 1
            for line in lines:
                stack, _, count = line.rpartition(" ")
                result["groups"][_group(stack)] += int(count)


def describe(result: dict[str, Any] | None, what: str) -> str:
    if result is None:
        return f"Trial workers during {what}: not sampled (py-spy is not installed: `pip install -e .[bench]`)."
    total = sum(result["groups"].values())
    if not total:
        return f"Trial workers during {what}: py-spy got no samples (is ptrace allowed here?)."
    parts = ", ".join(f"{label} {n / total:.0%}" for label, n in result["groups"].most_common())
    return (f"Trial workers during {what} (py-spy, CPU samples of {result['workers']} workers, "
            f"by what the stack was doing): {parts}.")
