"""Peak memory of a 2-trial search against one plain training process.

Both run as the user runs them, in their own process trees: ``hpsearch run`` (which starts its own
local Ray: GCS, raylet, workers) and ``hpsearch train``. Every ``INTERVAL_S`` the PSS of the
process and all its descendants is summed (psutil ``memory_full_info().pss``: shared pages divided
among the processes that share them, so the sum is what the tree really occupies); the peak of the
sums is compared.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import harness
from benchmarks.common import table, verdict
from benchmarks.harness import trivial_config

INTERVAL_S = 0.25


def sample_peak(argv: list[str], cwd: Path) -> tuple[float, dict[str, int], float, int]:
    """Run ``argv``; (peak PSS bytes of its tree, PSS by process name at the peak, seconds, exit code)."""
    began = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak, names = 0, {}
    while proc.poll() is None:
        total, by_name = harness.pss_tree(proc.pid)
        if total > peak:
            peak, names = total, by_name
        time.sleep(INTERVAL_S)
    err = proc.stderr.read() if proc.stderr else ""
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} exited {proc.returncode}: {err.strip()[-500:]}")
    return peak, names, time.perf_counter() - began, proc.returncode


def peak_memory(work: Path, smoke: bool) -> tuple[str, list[list[Any]]]:
    """The quickstart search (2 trials) against ``hpsearch train`` of the quickstart config; the
    smoke run uses benchmarks.toy.Trivial for both instead."""
    if smoke:
        raw = trivial_config(2, 2)
    else:
        raw = harness.quickstart(warm_start=[])
        raw["budget"] = {**raw["budget"], "num_samples": 2}
    config = harness.write_config(work / "memory.yaml", raw)
    cli = [sys.executable, "-m", "hpsearch.cli"]
    plain, plain_names, plain_s, _ = sample_peak([*cli, "train", str(config), "--out", str(work / "plain")], harness.ROOT)
    search, search_names, search_s, _ = sample_peak(
        [*cli, "run", str(config), "--name", "memory", "--storage", str(work / "runs")], harness.ROOT)
    ratio = search / plain
    mib = 2 ** 20
    top = sorted(search_names.items(), key=lambda kv: -kv[1])[:8]
    rows = [["`hpsearch train` (one process)", f"{plain / mib:.0f}", f"{plain_s:.0f}", "1.00"],
            ["`hpsearch run`, 2 trials (every process of the tree)", f"{search / mib:.0f}", f"{search_s:.0f}",
             f"{ratio:.2f}"]]
    text = table(["run", "peak PSS MiB", "seconds", "x plain"], rows)
    text += "\n\nAt the search's peak, by process: " + ", ".join(f"{n} {b / mib:.0f} MiB" for n, b in top) + "."
    checks = [["peak memory, 2-trial search / one plain training process", f"{ratio:.2f}", "<= 2.0",
               verdict(ratio, 2.0)]]
    return text, checks
