"""The live table while a search runs: on a terminal one view updated in place (the cursor moves
back over it), with the final table printed once at the end; in a log file, a pipe, Ray Client's
relay or a notebook (a stream that is not a TTY) plain lines with no escape codes."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import pytest

from hpsearch.driver.client import RelayStream
from hpsearch.tune import progress
from hpsearch.tune.progress import LiveTable, is_terminal

ESC = "\x1b"
CURSOR_UP = "\x1b[1A"


class FakeTerminal(io.StringIO):
    """A stream that says it is a TTY, keeping what is written to it."""

    def isatty(self) -> bool:
        return True


class NoOutcomes:
    def get(self, trial_id: str) -> None:
        return None


@dataclass
class FakeTrial:
    index: int
    config: dict = field(default_factory=dict)

    @property
    def trial_id(self) -> str:
        return f"id{self.index}"

    def __str__(self) -> str:
        return f"trial_{self.index}_{self.trial_id}"


@pytest.fixture(autouse=True)
def no_pause(monkeypatch):
    """The terminal view redrawn at every step of Tune, not four times a second."""
    monkeypatch.setattr(progress, "REFRESH_S", 0.0)


def run_three_trials(stream: io.StringIO) -> str:
    """Three trials reporting two epochs each, with a step of Tune after every report, then the
    final table: what the runner does. Returns what the stream got."""
    live = LiveTable("val_score", NoOutcomes(), interval_s=0.0, stream=stream)
    trials = [FakeTrial(i) for i in (1, 2, 3)]
    for trial in trials:
        live.on_trial_start(0, trials, trial)
    for epoch in (1, 2):
        for trial in trials:
            live.on_trial_result(0, trials, trial, {"epoch": epoch, "val_score": 0.1 * trial.index + epoch,
                                                    "train_loss": 1.0 / epoch, "health": "ok"})
            live.on_step_end(0, trials)
    for trial in trials:
        live.on_trial_complete(0, trials, trial)
    live.print_table()
    live.close()
    return stream.getvalue()


def test_a_stream_that_is_not_a_tty_gets_plain_lines():
    out = run_three_trials(io.StringIO())
    assert ESC not in out
    assert out.count("trial  status") == 7          # every step changed something, then the final table
    final = out.split("[")[-1]
    assert "3 trials: 0 running, 3 ended" in final
    assert [line.split()[:3] for line in final.splitlines()[2:]] == [
        ["#1", "completed", "2"], ["#2", "completed", "2"], ["#3", "completed", "2"]]


def test_a_terminal_gets_one_view_updated_in_place_and_the_final_table_once(monkeypatch):
    monkeypatch.setenv("TERM", "xterm-256color")
    out = run_three_trials(FakeTerminal())
    assert out.count(CURSOR_UP) >= 6                  # the view is drawn over itself, not printed again
    erased, _, after = out.rpartition(CURSOR_UP)
    assert "trial" in erased and "running" in erased  # the view showed the running trials
    final = after.split("\x1b[2K")[-1]
    assert final.count("3 trials: 0 running, 3 ended") == 1 and final.count("completed") == 3
    assert final.count("val_score") == 1


@pytest.mark.parametrize("stream", [io.StringIO(), RelayStream(relay=None, name="stdout")],
                         ids=["file", "Ray Client relay"])
def test_files_and_relays_are_not_terminals(stream):
    assert not is_terminal(stream)


def test_a_dumb_terminal_gets_plain_lines(monkeypatch):
    monkeypatch.setenv("TERM", "dumb")
    assert ESC not in run_three_trials(FakeTerminal())


def test_an_epoch_reported_again_after_a_restore_replaces_what_it_said_before():
    """A trial restored from its epoch-2 checkpoint reports epochs 3 and 4 again: the values the
    end-of-run summary ranks by hold each epoch once, the later report."""
    live = LiveTable("val_score", NoOutcomes(), interval_s=0.0, stream=io.StringIO())
    trial = FakeTrial(1)
    for epoch, value in [(1, 0.1), (2, 0.2), (3, 0.9), (4, 0.8), (3, 0.3), (4, 0.4), (5, 0.5)]:
        live.on_trial_result(0, [trial], trial, {"epoch": epoch, "val_score": value, "health": "ok"})
    assert live.rows[trial.trial_id].values == [0.1, 0.2, 0.3, 0.4, 0.5]


def test_a_table_restored_with_no_rows_prints_nothing_until_a_trial_reports():
    """A table marked changed before any trial has a row (a resumed search printed a header alone):
    a step of Tune prints nothing until a trial starts."""
    stream = io.StringIO()
    live = LiveTable("val_score", NoOutcomes(), interval_s=0.0, stream=stream)
    live._changed = True
    live.on_step_end(0, [])
    assert stream.getvalue() == ""
    trial = FakeTrial(1)
    live.on_trial_start(0, [trial], trial)
    live.on_step_end(0, [trial])
    assert "1 trials: 1 running, 0 ended" in stream.getvalue() and "#1" in stream.getvalue()
