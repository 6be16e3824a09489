"""``hpsearch run`` and ``hpsearch resume`` from the command line: a search on a local Ray or a
Ray cluster's GCS runs here (hpsearch.driver.runner); one given a Ray Client address
(``ray://HOST:PORT``) runs on the cluster's head, its output and signals relayed
(hpsearch.driver.client)."""

from __future__ import annotations

from typing import Any

from hpsearch.driver import client, preflight, runner
from hpsearch.driver.cluster import check_address, is_client


def run_command(args: Any) -> int:
    plan = preflight.plan(args)
    if is_client(plan.address):
        return client.run(plan)
    return runner.run(plan)


def resume_command(args: Any) -> int:
    address = check_address(args.address)
    if is_client(address):
        return client.resume(args.run_dir, address)
    return runner.resume(args.run_dir, address=address)


__all__ = ["resume_command", "run_command"]
