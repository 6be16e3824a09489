"""Model throughput: training samples per second of each built-in model on the CPU.

    .venv/bin/python -m benchmarks.throughput           # writes its section of BENCHMARKS.md

``train_epoch`` only (no evaluation), after one warm-up epoch, with 1 and 2 torch threads (a trial
gets ``floor(resources.cpu)`` threads) at the batch size the configs use, then at other batch sizes
with 1 thread: when samples/s grows in step with the batch size, the fixed cost of each batch
(Python, op dispatch, autograd bookkeeping) is what limits it, not arithmetic. The top operators
of a torch.profiler run say where the time goes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

from benchmarks import harness
from benchmarks.common import Stamp, command_line, log, out_path, table, write_section
from hpsearch.models.config import ConfigError

SIZES = {"full": {"epochs": 3, "threads": (1, 2), "batches": (16, 32, 64, 128), "symmetric": {"num_stories": 300}},
         "smoke": {"epochs": 1, "threads": (1,), "batches": (16,), "symmetric": {"num_stories": 20}}}


def cases(smoke: bool) -> list[tuple[str, str, dict[str, Any]]]:
    from hpsearch.models import BUILTIN

    quick = harness.quickstart()["params"]
    if smoke:
        quick = {**quick, "samples_per_class": 20}
    out = [("triplet", "quickstart data", quick)]
    if "symmetric" in BUILTIN:
        size = SIZES["smoke" if smoke else "full"]["symmetric"]
        out.append(("symmetric", f"{size['num_stories']} stories", dict(size)))
    return out


def samples_per_epoch(model: Any, name: str) -> int:
    import torch

    if name == "triplet":
        return int(model.sampler.epoch(torch.Generator().manual_seed(0)).numel())
    return len(model.splits["train"])


def measure(name: str, params: dict[str, Any], threads: int, epochs: int) -> tuple[float, float]:
    """(samples/s, seconds per epoch) of train_epoch, median over ``epochs`` after a warm-up."""
    import torch

    from hpsearch import models

    torch.set_num_threads(threads)
    model = models.build(name, params, device="cpu", seed=0)
    n = samples_per_epoch(model, name)
    model.train_epoch()
    times = []
    for _ in range(epochs):
        began = time.perf_counter()
        model.train_epoch()
        times.append(time.perf_counter() - began)
    seconds = statistics.median(times)
    return n / seconds, seconds


def top_ops(name: str, params: dict[str, Any], limit: int = 6) -> str:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from hpsearch import models

    torch.set_num_threads(1)
    model = models.build(name, params, device="cpu", seed=0)
    model.train_epoch()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        began = time.perf_counter()
        model.train_epoch()
        wall = time.perf_counter() - began
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events) / 1e6
    parts = [f"{e.key} {e.self_cpu_time_total / 1e6 / wall:.0%}" for e in events[:limit]]
    return (f"{', '.join(parts)}; all operators {total / wall:.0%} of the epoch's wall time (profiled, "
            f"so slower than above)")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (the smoke test)")
    parser.add_argument("--out", help="markdown file for the section (default BENCHMARKS.md)")
    args = parser.parse_args(argv)
    size = SIZES["smoke" if args.smoke else "full"]
    stamp = Stamp(command_line("benchmarks.throughput", argv))
    rows, scans, profiles = [], [], []
    for name, scale, params in cases(args.smoke):
        from hpsearch import models

        batch = models.validate_params(name, params)["batch_size"]
        per_thread = {}
        for threads in size["threads"]:
            rate, seconds = measure(name, params, threads, size["epochs"])
            per_thread[threads] = rate
            rows.append([name, scale, batch, threads, f"{rate:,.0f}", f"{seconds:.3f}",
                         f"{rate / per_thread[1]:.2f}x"])
            log(f"{name} {threads} thread(s): {rate:.0f} samples/s")
        scan, refused = [], []
        for b in size["batches"]:
            try:
                models.validate_params(name, {**params, "batch_size": b})
            except ConfigError as err:   # e.g. more classes per batch than the data has
                refused.append(f"{b} ({str(err).partition(': ')[2]})")
                continue
            rate, _ = measure(name, {**params, "batch_size": b}, 1, size["epochs"])
            scan.append(f"{b}: {rate:,.0f}")
        scans.append(f"- {name}, 1 thread, samples/s by batch size: " + ", ".join(scan)
                     + (f"; refused by the model's settings: {'; '.join(refused)}" if refused else ""))
        profiles.append(f"- {name}: " + top_ops(name, params))
    body = ["CPU only: no GPU was lent to this run.", "",
            table(["model", "scale", "batch size", "torch threads", "train samples/s", "s per epoch",
                   "vs 1 thread"], rows),
            "", "What limits it:", "", *scans, "", "Top operators by own CPU time (1 thread):", "", *profiles]
    write_section("throughput", "Model throughput", "\n".join(body), stamp, out_path(args.out))
    print("\n".join(body))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
