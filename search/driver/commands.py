"""A search started or resumed, from the command line (``hpsearch run``, ``hpsearch resume``) or from
Python (hpsearch.api): a search on a local Ray or a Ray cluster's GCS runs here
(hpsearch.driver.runner); one given a Ray Client address (``ray://HOST:PORT``) runs on the
cluster's head, its output and signals relayed (hpsearch.driver.client)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TextIO

from hpsearch.driver import client, preflight, runner
from hpsearch.driver.cluster import check_address, is_client


def run_plan(plan: preflight.Plan, stream: TextIO | None = None) -> int:
    """Search a checked plan to its end; returns the exit code (hpsearch.driver.runner.run).
    ``stream`` takes the live table and the summary (default: sys.stdout when the search starts);
    under Ray Client the head's output is printed here on sys.stdout and sys.stderr as it comes."""
    if is_client(plan.address):
        return client.run(plan)
    return runner.run(plan, stream=stream)


def resume_run_dir(run_dir: str | Path, address: str | None, stream: TextIO | None = None) -> int:
    """Continue the interrupted search in ``run_dir``; ``address`` as the user gave it (checked
    here once). Returns the exit code; ``stream`` as for ``run_plan``."""
    checked = check_address(address)
    if is_client(checked):
        return client.resume(run_dir, checked)
    return runner.resume(run_dir, address=checked, stream=stream)


def run_command(args: Any) -> int:
    return run_plan(preflight.plan(args))


def resume_command(args: Any) -> int:
    return resume_run_dir(args.run_dir, args.address)


__all__ = ["resume_command", "resume_run_dir", "run_command", "run_plan"]
