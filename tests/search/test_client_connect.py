"""Connecting to a Ray Client server (``--address ray://``): which failures are tried again and
which are refused at once with one line. ``ray.init`` is replaced by a scripted one."""

from __future__ import annotations

import pytest
import ray

from hpsearch.driver import client
from hpsearch.models.config import ConfigError

ADDRESS = "ray://127.0.0.1:10001"
SERVER_DIED = ConnectionAbortedError(
    "Initialization failure from server:\nTraceback (most recent call last):\n  ...\n"
    "RuntimeError: Starting Ray client server failed. See ray_client_server_23001.err for detailed logs.\n")


def scripted_init(monkeypatch, failures: list[BaseException]) -> list[dict]:
    """``ray.init`` raises each of ``failures`` in turn, then connects; returns its calls."""
    calls: list[dict] = []

    def init(**kwargs):
        calls.append(kwargs)
        if len(calls) <= len(failures):
            raise failures[len(calls) - 1]

    monkeypatch.setattr(ray, "init", init)
    return calls


@pytest.mark.parametrize("failures", [
    [SERVER_DIED],
    [SERVER_DIED, RuntimeError("Starting Ray client server failed. See ray_client_server_23002.err")],
    [SERVER_DIED] * (client.CONNECT_TRIES - 1),
])
def test_a_per_client_server_that_fails_to_start_is_tried_again(monkeypatch, failures):
    calls = scripted_init(monkeypatch, failures)
    pauses: list[float] = []
    client.connect(ADDRESS, {"env_vars": {}}, pause=pauses.append)
    assert len(calls) == len(failures) + 1
    assert all(call["address"] == ADDRESS and call["runtime_env"] == {"env_vars": {}} for call in calls)
    assert pauses == [2 ** i for i in range(len(failures))]


def test_the_last_failure_to_start_a_server_is_refused_in_one_line(monkeypatch):
    calls = scripted_init(monkeypatch, [SERVER_DIED] * client.CONNECT_TRIES)
    with pytest.raises(ConfigError) as caught:
        client.connect(ADDRESS, {}, pause=lambda s: None)
    assert len(calls) == client.CONNECT_TRIES
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"--address: could not connect to the Ray Client server at {ADDRESS}")
    assert "Starting Ray client server failed" in message


@pytest.mark.parametrize("error", [
    ConnectionError("ray client connection timeout"),
    ConnectionAbortedError("Initialization failure from server:\nAuthenticationError: invalid token"),
    ValueError("invalid address"),
    RuntimeError("Version mismatch"),
])
def test_other_failures_are_refused_at_once(monkeypatch, error):
    calls = scripted_init(monkeypatch, [error])
    with pytest.raises(ConfigError, match="--address: could not connect"):
        client.connect(ADDRESS, {}, pause=lambda s: pytest.fail("no second try"))
    assert len(calls) == 1
