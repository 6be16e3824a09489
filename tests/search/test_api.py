"""hpsearch from Python (hpsearch.api) as a notebook uses it: a search from a dict with keyword
overrides, its report, best trial, export, plots, a retrain of the exported config, the run read
back, an interrupt and a resume (slow: real Ray); bad input refused with the command's one-line
error before Ray is imported; and the command line's --version and help texts."""

from __future__ import annotations

import argparse
import importlib.metadata
import io
import os
import signal
import threading
from collections.abc import Iterator

import pandas as pd
import pytest
import torch
import yaml

import hpsearch
from hpsearch.cli import _parser, main
from hpsearch.core.rundir import read_run_info
from tests.fixtures.api import TINY_SEARCH, python
from tests.fixtures.cli import clean_env, write_config

# --- before Ray: refusals, load, import cost -------------------------------------------------

BAD_INPUT = [
    # (case, function, config, keyword overrides, the same config as YAML, the one-line error)
    ("unknown key in a dict", "run", {**TINY_SEARCH, "budget": {"num_sample": 2}}, {},
     {**TINY_SEARCH, "budget": {"num_sample": 2}}, "budget.num_sample: unknown key (did you mean 'num_samples'?)"),
    ("unknown keyword", "run", TINY_SEARCH, {"epochz": 4},
     {**TINY_SEARCH, "epochz": 4}, "epochz: unknown key (did you mean 'epochs'?)"),
    ("keyword merged into a section", "run", TINY_SEARCH, {"budget": {"num_samples": 0}},
     {**TINY_SEARCH, "budget": {"num_samples": 0, "max_failures": 0}}, "budget.num_samples: got 0, expected a value >= 1"),
    ("unknown keyword to train", "train", TINY_SEARCH, {"sed": 1},
     {**TINY_SEARCH, "sed": 1}, "sed: unknown key (did you mean 'seed'?)"),
]


@pytest.mark.parametrize("case, function, config, overrides, as_yaml, expected", BAD_INPUT,
                         ids=[c[0] for c in BAD_INPUT])
def test_bad_input_is_the_commands_one_line_error_before_ray_is_imported(case, function, config, overrides, as_yaml,
                                                                        expected, tmp_path, no_ray_env, capsys):
    storage = tmp_path / "runs"
    where = f"storage={str(storage)!r}, " if function == "run" else ""
    done = python(f"""
        import sys
        import hpsearch
        try:
            hpsearch.{function}({config!r}, {where}**{overrides!r})
        except hpsearch.ConfigError as err:
            print(err)
        print("ray imported:", "ray" in sys.modules)
        """, env=no_ray_env)
    assert done.returncode == 0, done.stderr
    message, imported = done.stdout.splitlines()
    assert message.startswith(expected) and imported == "ray imported: False"
    assert not storage.exists()

    # the same config as YAML, given to the command: the same line
    extra = ["--storage", str(storage)] if function == "run" else []
    assert main([function, str(write_config(tmp_path / "same.yaml", as_yaml)), *extra]) == 2
    assert capsys.readouterr().err == f"hpsearch {function}: error: {message}\n"


def test_a_config_is_a_yaml_path_or_a_dict(tmp_path):
    with pytest.raises(hpsearch.ConfigError, match=r"^config: got int, expected a YAML file's path or a dict"):
        hpsearch.run(3, storage=str(tmp_path))
    with pytest.raises(hpsearch.ConfigError, match=r"^config: '.*nowhere\.yaml' is not a file$"):
        hpsearch.train(tmp_path / "nowhere.yaml")


def test_load_refuses_what_is_not_a_run_dir(tmp_path):
    with pytest.raises(hpsearch.ConfigError, match=r"^run_dir: '.*missing' is not a directory"):
        hpsearch.load(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(hpsearch.ConfigError, match=r"^run_dir: '.*empty' is not a run directory \(no search.yaml\)"):
        hpsearch.load(tmp_path / "empty")


def test_import_hpsearch_stays_light():
    """No torch, Ray, Optuna or pandas: `import hpsearch` is on the path of every `hpsearch` command."""
    done = python("""
        import sys
        import hpsearch
        print(sorted(name for name in ("torch", "ray", "optuna", "pandas") if name in sys.modules))
        """, env=clean_env())
    assert done.returncode == 0, done.stderr
    assert done.stdout == "[]\n"


# --- the command line: --version, help on every argument -----------------------------------

def test_version_is_the_installed_distributions(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert hpsearch.__version__ == importlib.metadata.version("hpsearch")
    assert capsys.readouterr().out == f"hpsearch {hpsearch.__version__}\n"


def parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """``parser`` and every subcommand's parser, depth first."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from parsers(sub)


def test_every_argument_of_every_command_has_help():
    walked = list(parsers(_parser()))
    assert {p.prog for p in walked} >= {"hpsearch", "hpsearch run", "hpsearch report", "hpsearch evaluate"}
    missing = [f"{p.prog} {a.option_strings or a.dest}" for p in walked for a in p._actions
               if not (a.help or "").strip()]
    missing += [f"hpsearch {c.dest}" for p in walked for a in p._actions
                if isinstance(a, argparse._SubParsersAction) for c in a._choices_actions if not (c.help or "").strip()]
    assert missing == []


# --- with Ray: a notebook's session -----------------------------------------------------------

@pytest.mark.slow
def test_a_search_from_a_dict_reports_exports_and_retrains_to_its_objective(tmp_path):
    shown = io.StringIO()
    run = hpsearch.run(TINY_SEARCH, name="nb", storage=str(tmp_path / "runs"), stream=shown,
                       seed=4, budget={"num_samples": 3})
    assert run.state == "finished" and run.name == "nb" and run.run_dir == tmp_path / "runs" / "nb"
    assert run.config.seed == 4 and run.config.budget.num_samples == 3 and run.config.budget.max_failures == 0
    info = read_run_info(run.run_dir)
    assert info["config"] == "<dict>" and info["command"].startswith("hpsearch.run(<dict>, name='nb', ")
    printed = shown.getvalue()   # plain lines, as a notebook shows them
    assert printed.startswith("hpsearch run nb: ") and "\x1b" not in printed and "3 trials" in printed

    table = run.report()
    assert len(table) == 3 and set(table["outcome"]) == {"completed"}
    best = run.best
    assert best.trial_id == table["trial_id"].iloc[0]
    assert best.row["objective_best"] == table["objective_best"].iloc[0]
    assert best.config["params"]["quality"] == table["config/quality"].iloc[0] and "space" not in best.config

    (folder,) = run.export()
    assert folder == run.run_dir / "best" / f"1_{best.trial_id}"
    exported = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8"))
    assert exported["exported"]["trial_id"] == best.trial_id
    threads = torch.get_num_threads()
    metrics = hpsearch.train(folder / "config.yaml", out=tmp_path / "retrained")
    assert metrics["objective"]["final"] == pytest.approx(best.row["objective_best"], rel=1e-9)
    assert metrics["objective"]["final"] == pytest.approx(exported["exported"]["objective"]["value"], rel=1e-9)
    assert (tmp_path / "retrained" / "model.pt").is_file() and torch.get_num_threads() == threads
    again = hpsearch.train(best.config)          # nothing written; the same objective
    assert again["objective"]["final"] == pytest.approx(best.row["objective_best"], rel=1e-9)

    assert sorted(p.name for p in run.plot()) == ["curves.png", "params.png"]

    loaded = hpsearch.load(run.run_dir)
    pd.testing.assert_frame_equal(loaded.report(), table)
    assert loaded.config == run.config and loaded.state == "finished"
    assert repr(loaded).startswith("Run('nb', finished, 3 trials: 3 completed; best val_score ")


@pytest.mark.slow
def test_rank_mean_picks_by_the_mean_and_its_config_retrains_to_the_last_epoch(tmp_path):
    shown = io.StringIO()
    run = hpsearch.run({**TINY_SEARCH, "objective": {"metric": "val_score", "mode": "max", "rank": "mean", "window": 2}},
                       name="mean", storage=str(tmp_path / "runs"), stream=shown, budget={"num_samples": 3})
    assert "best trials by val_score (max; the mean of its last 2 epochs)" in shown.getvalue()   # the end-of-run text
    table = run.report()
    assert table.attrs["rank"] == "objective_mean"
    assert table["objective_mean"].tolist() == sorted(table["objective_mean"].tolist(), reverse=True)
    best = run.best
    assert best.trial_id == table["trial_id"].iloc[0] and best.config["epochs"] == best.row["epochs"] == 3
    (folder,) = run.export()
    exported = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8"))["exported"]
    assert exported["epoch"] == 3 and exported["objective"]["ranked_value"] == pytest.approx(best.row["objective_mean"])
    metrics = hpsearch.train(folder / "config.yaml")
    assert metrics["objective"]["final"] == pytest.approx(best.row["objective_last"], rel=1e-9)


@pytest.mark.slow
def test_an_interrupted_search_returns_its_run_and_resumes_to_the_end(tmp_path):
    run_dir = tmp_path / "runs" / "stopped"
    done = threading.Event()

    def interrupt_after_a_first_epoch() -> None:   # the interrupt button, once a trial has reported
        while not done.wait(0.05):
            if any(p.stat().st_size for p in run_dir.glob("trial_*/result.json")):
                os.kill(os.getpid(), signal.SIGINT)
                return

    watcher = threading.Thread(target=interrupt_after_a_first_epoch, daemon=True)
    watcher.start()
    try:
        run = hpsearch.run(TINY_SEARCH, name="stopped", storage=str(tmp_path / "runs"), stream=io.StringIO(),
                           epochs=4, params={"epoch_sleep": 0.5}, scheduler={"grace_period": 4})
    finally:
        done.set()
        watcher.join()
    assert run.state == "interrupted"
    assert set(run.report()["outcome"]) <= {"running", "completed"}

    shown = io.StringIO()
    assert run.resume(stream=shown) is run
    assert run.state == "finished" and shown.getvalue().startswith("hpsearch resume stopped: ")
    table = run.report()
    assert len(table) == 2 and set(table["outcome"]) == {"completed"} and set(table["epochs"]) == {4}


@pytest.mark.parametrize("argv, expected", [
    (["run", "x.yaml", "--max-epochs", "abc"], "hpsearch run: error: --max-epochs: got 'abc', expected an integer"),
    (["run", "x.yaml", "--num-sample", "4"],
     "hpsearch run: error: unrecognized arguments: --num-sample 4 (did you mean '--num-samples'?)"),
    (["train", "x.yaml", "--epoch", "3"],          # no abbreviation is taken for the option it starts
     "hpsearch train: error: unrecognized arguments: --epoch 3 (did you mean '--epochs'?)"),
    (["runn", "x.yaml"], "hpsearch: error: got command 'runn', expected one of 'train', "),
    (["evaluate", "w", "--split", "tset"], "hpsearch evaluate: error: argument --split: invalid choice: 'tset'"),
    (["report"], "hpsearch report: error: the following arguments are required: run_dir"),
])
def test_a_bad_command_line_is_one_line_naming_the_command_and_what_is_allowed(capsys, argv, expected):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    err = capsys.readouterr().err
    assert exited.value.code == 2
    assert err.startswith(expected) and err.count("\n") == 1, err
    assert err.rstrip().endswith("--help` lists what is allowed")
    if argv[0] == "runn":
        assert "(did you mean 'run'?)" in err
