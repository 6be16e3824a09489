"""The scheduler's state on disk as a whole file plus a log of changes (hpsearch.core.rundir.StateLog):
what a crash at any point leaves is read back as exactly the changes that reached the disk, once each."""

from __future__ import annotations

import json

import pytest

from hpsearch.core.rundir import SCHEDULER_CHANGES, SCHEDULER_STATE, StateLog


def store(tmp_path) -> StateLog:
    return StateLog(tmp_path / SCHEDULER_STATE, tmp_path / SCHEDULER_CHANGES)


def test_nothing_written_reads_as_none(tmp_path):
    assert store(tmp_path).read() == (None, [])


def test_the_whole_then_the_changes_after_it_in_order(tmp_path):
    log = store(tmp_path)
    log.write({"rungs": [], "n": 0})
    log.append([{"trial": "a"}, {"trial": "b"}])
    log.append([{"trial": "c"}])
    state, changes = store(tmp_path).read()
    assert state == {"rungs": [], "n": 0}
    assert [c["trial"] for c in changes] == ["a", "b", "c"] and log.pending == 3
    log.write({"rungs": [], "n": 3})                     # the whole replaces the changes it holds
    assert store(tmp_path).read() == ({"rungs": [], "n": 3}, [])
    assert (tmp_path / SCHEDULER_CHANGES).read_text() == "" and log.pending == 0


def test_a_crash_between_the_whole_write_and_emptying_the_log_applies_nothing_twice(tmp_path):
    log = store(tmp_path)
    log.write({"n": 0})
    log.append([{"trial": "a"}, {"trial": "b"}])
    kept = (tmp_path / SCHEDULER_CHANGES).read_text()
    log.write({"n": 2})
    (tmp_path / SCHEDULER_CHANGES).write_text(kept)      # the log as the crash left it
    assert store(tmp_path).read() == ({"n": 2}, [])
    again = store(tmp_path)                              # a resumed search goes on numbering after them
    again.append([{"trial": "c"}])
    assert [c["trial"] for c in store(tmp_path).read()[1]] == ["c"]


def test_a_torn_last_line_is_left_out_and_cut_before_the_next_append(tmp_path):
    log = store(tmp_path)
    log.write({"n": 0})
    log.append([{"trial": "a"}])
    with (tmp_path / SCHEDULER_CHANGES).open("a") as fh:
        fh.write('{"trial": "b", "se')                 # killed mid-append
    assert [c["trial"] for c in store(tmp_path).read()[1]] == ["a"]
    resumed = store(tmp_path)
    resumed.append([{"trial": "c"}])
    assert [c["trial"] for c in store(tmp_path).read()[1]] == ["a", "c"] and resumed.pending == 2
    assert all(json.loads(line) for line in (tmp_path / SCHEDULER_CHANGES).read_text().splitlines())


@pytest.mark.parametrize("text, message", [("[1, 2]", "got list, expected a JSON object"),
                                           ('{"rungs": [', "JSONDecodeError")])
def test_a_whole_file_that_is_no_object_is_an_error(tmp_path, text, message):
    (tmp_path / SCHEDULER_STATE).parent.mkdir()
    (tmp_path / SCHEDULER_STATE).write_text(text)
    with pytest.raises(ValueError, match=message):
        store(tmp_path).read()
