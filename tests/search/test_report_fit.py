"""``hpsearch report`` on a person's screen and in a file: the printed report fits the terminal's
width and loses no reason; each trial carries its number, times and node; and ``--json`` reads
back into pandas, in one documented call, with every float exactly as the CSV has it."""

from __future__ import annotations

import json
import math
import subprocess

import pandas as pd
import pytest

from hpsearch.cli import main
from hpsearch.results.records import READ_CALL
from hpsearch.results.report import load_report
from tests.fixtures.cli import HPSEARCH, REPO, clean_env
from tests.fixtures.report_runs import PRECISE_LR, UNFOLDERED, every_reason, wide_run


def report(capsys, monkeypatch, width: int, *args: str) -> str:
    """What ``COLUMNS=<width> hpsearch report ARGS`` prints."""
    monkeypatch.setenv("COLUMNS", str(width))
    assert main(["report", *args]) == 0
    return capsys.readouterr().out


def flat(text: str) -> str:
    """Text with every run of whitespace made one space (undoes wrapping)."""
    return " ".join(text.split())


@pytest.mark.parametrize("width", [80, 120])
def test_the_printed_report_fits_the_terminal_and_keeps_the_first_columns(tmp_path, capsys, monkeypatch, width):
    out = report(capsys, monkeypatch, width, str(wide_run(tmp_path)))
    lines = out.splitlines()
    assert [line for line in lines if len(line) > width] == []
    header = lines[1].split()
    assert header[:4] == ["trial", "outcome", "objective_best", "epochs"]
    assert header[4:6] == ["lr", "hidden_dim"]                   # the searched parameters come next
    (left_out,) = [line for line in lines if line.startswith("not shown: ")]
    assert left_out.endswith("(--all-columns, --csv, --json have them)")
    assert "seed" not in header and ("seed" in left_out or "more" in left_out)


def test_a_searched_parameter_left_out_is_named_first(tmp_path, capsys, monkeypatch):
    """At 80 columns num_rules and w_parse do not fit: the "not shown" line names them before any
    other column, under the names the table would have used."""
    out = report(capsys, monkeypatch, 80, str(wide_run(tmp_path)))
    header = out.splitlines()[1].split()
    (left_out,) = [line for line in out.splitlines() if line.startswith("not shown: ")]
    assert "num_rules" not in header and left_out.startswith("not shown: num_rules, ")


def test_a_wider_terminal_shows_more_columns(tmp_path, capsys, monkeypatch):
    path = str(wide_run(tmp_path))
    narrow = report(capsys, monkeypatch, 80, path).splitlines()[1].split()
    wide = report(capsys, monkeypatch, 120, path).splitlines()[1].split()
    assert set(narrow) < set(wide) and {"num_rules", "w_parse", "train_loss"} <= set(wide) - set(narrow)


@pytest.mark.parametrize("width", [80, 120])
def test_every_reason_is_printed_in_full_under_the_table(tmp_path, capsys, monkeypatch, width):
    out = report(capsys, monkeypatch, width, str(wide_run(tmp_path)))
    assert "…" not in out
    reasons = flat(out[out.index("\nreasons:\n"):])
    for reason in every_reason():
        assert flat(reason) in reasons
    assert f"#4 pruned_flatline: {flat(every_reason()[1])}" in reasons      # named as the live table names it
    assert f"{UNFOLDERED} error: " in reasons                                 # no number: its Ray id


def test_without_a_terminal_the_report_fits_80_columns(tmp_path):
    path = wide_run(tmp_path)
    env = {k: v for k, v in clean_env().items() if k not in ("COLUMNS", "LINES")}
    done = subprocess.run([str(HPSEARCH), "report", str(path)], cwd=REPO, env=env, capture_output=True, text=True,
                          check=True)
    lines = done.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80 and "not shown: " in done.stdout


def test_all_columns_prints_every_column_and_every_reason_in_the_table(tmp_path, capsys, monkeypatch):
    path = wide_run(tmp_path)
    out = report(capsys, monkeypatch, 80, str(path), "--all-columns")
    header = out.splitlines()[1].split()
    assert header == list(load_report(path).columns)
    assert all(reason in out for reason in every_reason())                  # one line each, unwrapped
    assert "not shown: " not in out and max(len(line) for line in out.splitlines()) > 80


def test_the_trial_number_is_the_one_in_the_folder_name_and_the_live_table(tmp_path, capsys, monkeypatch):
    path = wide_run(tmp_path)
    table = load_report(path)
    assert table.columns[0] == "trial" and str(table["trial"].dtype) == "Int64"
    folders = {d.name.split("_")[2]: int(d.name.split("_")[1]) for d in path.glob("trial_*")}
    numbered = table[table["trial_id"] != UNFOLDERED]
    assert dict(zip(numbered["trial_id"], numbered["trial"])) == folders
    assert table.set_index("trial_id").loc[UNFOLDERED, "trial"] is pd.NA   # decided before Ray made a folder
    out = report(capsys, monkeypatch, 120, str(path))
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines()[2:2 + len(table)]}
    assert rows["#4"] == "pruned_flatline" and rows["#1"] == "completed" and rows[UNFOLDERED] == "error"


def test_started_ended_and_node_come_from_rays_result_rows(tmp_path):
    path = wide_run(tmp_path)
    table = load_report(path).set_index("trial")
    first = table.loc[1]                        # 6 epochs of 0.25 s, Ray's timestamp 1_700_000_000 + epoch
    assert first["started"] == pd.Timestamp(round(1_700_000_001 - 0.25), unit="s", tz="UTC")
    assert first["ended"] == pd.Timestamp(1_700_000_006, unit="s", tz="UTC")
    assert first["node"] == "host"
    csv = tmp_path / "t.csv"
    load_report(path).to_csv(csv, index=False)
    back = pd.read_csv(csv)
    assert back.loc[back["trial"] == 1, "ended"].item() == "2023-11-14 22:13:26+00:00"   # ISO-8601, UTC


def test_json_reads_back_in_one_pandas_call_with_the_csvs_floats_exactly(tmp_path, capsys, monkeypatch):
    path = wide_run(tmp_path)
    csv, js = tmp_path / "t.csv", tmp_path / "t.json"
    out = report(capsys, monkeypatch, 80, str(path), "--csv", str(csv), "--json", str(js))
    assert flat(READ_CALL) in flat(out)

    table = load_report(path)
    back = pd.read_json(js, orient="table", precise_float=True)            # README: the documented call
    from_csv = pd.read_csv(csv)
    assert list(back.columns) == list(table.columns)
    floats = [c for c in table.columns if table[c].dtype == "float64"]
    assert len(floats) > 10
    for column in floats:
        same = (back[column] == from_csv[column]) | (back[column].isna() & from_csv[column].isna())
        assert same.all(), column
    pd.testing.assert_frame_equal(back, table, check_exact=True)             # dtypes too: Int64, str, UTC times
    assert PRECISE_LR in back["config/lr"].tolist()
    assert math.inf in back["train_loss"].tolist()                            # an exploding loss stays inf

    data = json.loads(js.read_text(encoding="utf-8"))
    assert [row["trial"] for row in data["data"]] == [None if pd.isna(n) else int(n) for n in table["trial"]]
    assert data["summary"]["best"]["trial"] == 12 and data["summary"]["trials"] == 13


def test_the_readme_states_the_read_call(tmp_path):
    assert READ_CALL.replace("FILE", '"report.json"') in (REPO / "README.md").read_text(encoding="utf-8")
