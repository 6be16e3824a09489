"""``--set`` is strict about sections: a dotted key whose first part is no section is refused with
"did you mean" (for a built-in model and for a user's model without a Config alike, which would
otherwise take it as a param), a bare key still means ``params.KEY``, and ``params.x.y`` still
reaches into params. The Python API's keyword overrides refuse an unknown section the same way."""

from __future__ import annotations

import pytest

import hpsearch
from hpsearch.cli import main
from hpsearch.core.config import apply_overrides
from hpsearch.models.config import ConfigError
from tests.fixtures.cli import hpsearch as run_cli
from tests.fixtures.toy_models import MINIMAL

SPACE = {"lr": {"loguniform": [1e-4, 1e-1]}}
BUILT_IN = {"model": "triplet", "epochs": 4, "space": SPACE}
USER_MODEL = {"model": MINIMAL, "epochs": 4, "objective": {"metric": "val_acc", "mode": "max"},
              "space": {"x": {"uniform": [0.1, 0.9]}}}
MISTYPED = "--set: schedular.grace_period: unknown section 'schedular' (did you mean 'scheduler'?)"


def refuse_to_start_ray(*args, **kwargs):
    raise AssertionError("ray.init was called: the refusal came after Ray started")


@pytest.mark.parametrize("raw", [BUILT_IN, USER_MODEL], ids=["built-in", "user model"])
def test_a_mistyped_section_is_refused_with_did_you_mean(raw, tmp_path, capsys, config_file, monkeypatch):
    import ray

    monkeypatch.setattr(ray, "init", refuse_to_start_ray)
    code = main(["run", str(config_file(raw)), "--storage", str(tmp_path / "runs"),
                 "--set", "schedular.grace_period=3"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith(f"hpsearch run: error: {MISTYPED}"), err
    assert not (tmp_path / "runs").exists()


def test_the_command_exits_2_with_one_line(tmp_path, config_file):
    result = run_cli("run", str(config_file(USER_MODEL)), "--set", "schedular.grace_period=3", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [result.stderr.rstrip("\n")]
    assert MISTYPED in result.stderr


def test_train_refuses_it_too(tmp_path, capsys, config_file):
    assert main(["train", str(config_file(USER_MODEL)), "--set", "schedular.grace_period=3"]) == 2
    assert MISTYPED in capsys.readouterr().err


def test_bare_keys_and_params_paths_still_work():
    raw = apply_overrides({"params": {"a": {"b": 1}}}, ["lr=0.1", "params.a.c=2", "seed=4", "scheduler.grace_period=3"])
    assert raw == {"params": {"lr": 0.1, "a": {"b": 1, "c": 2}}, "seed": 4, "scheduler": {"grace_period": 3}}


def test_the_api_refuses_an_unknown_section_keyword(tmp_path):
    with pytest.raises(ConfigError, match=r"^schedular: unknown key \(did you mean 'scheduler'\?\)"):
        hpsearch.run(USER_MODEL, storage=str(tmp_path / "runs"), schedular={"grace_period": 3})
