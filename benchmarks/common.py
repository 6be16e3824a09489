"""What every benchmark shares: the machine and versions it ran on, markdown tables, summary
statistics, and the writer that replaces one benchmark's section of BENCHMARKS.md.

A section lives between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``; a script rewrites its
own section only, so the hand-written text around the sections stays as it is.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import logging
import math
import os
import platform
import re
import shlex
import sys
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from hpsearch.core import numbers

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
DATA = Path(__file__).resolve().parent / "data"

# Set before anything imports Ray: no usage-stats banner, trials keep the working directory.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def versions() -> dict[str, str]:
    """The package versions a figure was measured with (the same helper exports use)."""
    from hpsearch.core.training import versions as package_versions

    return package_versions()


def load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def machine() -> str:
    mem = memory_gib()
    mem_text = f", {mem:.0f} GiB RAM" if mem else ""
    return f"{cpu_model()}, {os.cpu_count()} cores{mem_text}, {platform.system()} {platform.release()}"


def command_line(module: str, argv: Sequence[str] | None = None) -> str:
    """How to re-run a benchmark: ``.venv/bin/python -m MODULE ARGS``."""
    args = list(sys.argv[1:] if argv is None else argv)
    return " ".join(shlex.quote(a) for a in [".venv/bin/python", "-m", module, *args])


class Stamp:
    """When and where a measurement ran: made at the start, closed at the end (load both times)."""

    def __init__(self, command: str):
        self.command = command
        self.started = _dt.datetime.now().astimezone()
        self.load_start = load()

    def lines(self) -> list[str]:
        ended = _dt.datetime.now().astimezone()
        minutes = (ended - self.started).total_seconds() / 60
        v = versions()
        return [
            f"- date: {self.started:%Y-%m-%d %H:%M %Z} ({minutes:.1f} min)",
            f"- machine: {machine()}; load average (1/5/15 min) at start {self.load_start}, at end {load()}",
            "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
            f"- command: `{self.command}`",
        ]


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    def cell(value: Any) -> str:
        return fmt(value) if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(value: float, digits: int = 3) -> str:
    """A figure in a benchmark table: NaN is ``n/a`` (not measured), +inf ``never`` (a search that
    never got there); any other value as hpsearch.core.numbers.fmt writes it."""
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    if isinstance(value, float) and value == math.inf:
        return "never"
    return numbers.fmt(value, digits)


def quantiles(values: Sequence[float], qs: Sequence[float] = (25, 50, 75)) -> list[float]:
    """Linear-interpolated percentiles that keep +inf (a search that never got there) meaningful."""
    ordered = sorted(values)
    if not ordered:
        return [math.nan for _ in qs]
    out = []
    for q in qs:
        position = (len(ordered) - 1) * q / 100.0
        low = math.floor(position)
        high = min(low + 1, len(ordered) - 1)
        a, b = ordered[low], ordered[high]
        weight = position - low
        out.append(a if weight == 0 or a == b else (math.inf if math.isinf(b) else a + (b - a) * weight))
    return out


def median(values: Sequence[float]) -> float:
    return quantiles(values, (50,))[0]


def verdict(measured: float, target: float, better: str = "lower") -> str:
    """'met' or 'missed by N%' for a measured value against its target."""
    if measured is None or (isinstance(measured, float) and math.isnan(measured)):
        return "not measured"
    ok = measured <= target if better == "lower" else measured >= target
    if ok:
        return "met"
    if target == 0:
        return f"missed ({fmt(measured)} vs 0)"
    if math.isinf(measured):
        return "missed (never reached)"
    by = (measured / target - 1) if better == "lower" else (1 - measured / target)
    return f"missed by {by:.1%}" if by < 0.1 else f"missed by {by:.0%}"


_MARK = "<!-- bench:{name} -->"
_END = "<!-- /bench:{name} -->"


def write_section(name: str, title: str, body: str, stamp: Stamp, path: Path | None = None) -> Path:
    """Replace (or append) the section ``name`` of the markdown file ``path`` (default BENCHMARKS.md)."""
    path = Path(path) if path is not None else BENCHMARKS_MD
    block = "\n".join([_MARK.format(name=name), f"## {title}", "", *stamp.lines(), "", body.rstrip(),
                       _END.format(name=name)])
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        pattern = re.compile(re.escape(_MARK.format(name=name)) + r".*?" + re.escape(_END.format(name=name)),
                             re.DOTALL)
        if pattern.search(text):
            text = pattern.sub(lambda _: block, text, count=1)
        else:
            text = text.rstrip() + ("\n\n" if text.strip() else "") + block + "\n"
        path.write_text(text, encoding="utf-8")
    with contextlib.suppress(OSError):
        path.with_name(path.name + ".lock").unlink()
    return path


_T0 = None


def quiet_worker() -> None:
    """In a benchmark's worker process: no Python warnings, and Optuna and Ray log errors only."""
    import optuna

    warnings.filterwarnings("ignore")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    logging.getLogger("ray").setLevel(logging.ERROR)


def log(message: str) -> None:
    """A progress line on stderr with the seconds since the first one."""
    import time

    global _T0
    now = time.perf_counter()
    _T0 = now if _T0 is None else _T0
    print(f"[{now - _T0:7.1f}s] {message}", file=sys.stderr, flush=True)


def out_path(value: str | None) -> Path:
    return Path(value) if value else BENCHMARKS_MD
