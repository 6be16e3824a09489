"""A user's own package may be called ``models`` or ``search``, like folders of this repository:
hpsearch installs only the ``hpsearch`` namespace (``hpsearch.models`` is the repository's
models/, ``hpsearch`` its search/), so the names are the user's.

- From an empty directory, ``import models`` and ``import search`` fail, and ``import hpsearch``
  brings in neither name.
- From a project outside the repository holding ``<package>/__init__.py`` and ``<package>/mine.py``
  (the model in tests/fixtures/user_model.py), ``hpsearch train cfg.yaml`` and ``hpsearch run
  cfg.yaml`` with ``model: <package>.mine:MyModel`` both succeed, and the run records every trial's
  outcome. Slow: each run starts its own local Ray.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from hpsearch.core.rundir import read_outcomes
from hpsearch.results.report import read_run
from tests.fixtures import user_model
from tests.fixtures.cli import PYTHON, clean_env, hpsearch

USER_MODEL = Path(user_model.__file__).read_text(encoding="utf-8")

CONFIG = """\
model: {package}.mine:MyModel
seed: 1
epochs: 3
space:
  lr: {{loguniform: [0.01, 0.2]}}
  hidden: {{choice: [4, 8]}}
budget: {{num_samples: 2, max_concurrent: 1, max_failures: 0}}
resources: {{cpu: 1}}
scheduler: {{grace_period: 3}}   # no rung before the last epoch: both trials run to the end
"""


@pytest.mark.parametrize("statement, error", [
    ("import models", "ModuleNotFoundError: No module named 'models'"),
    ("import search", "ModuleNotFoundError: No module named 'search'"),
    ("import hpsearch, hpsearch.models", None),
    ("import sys, hpsearch.cli, hpsearch.core.config, hpsearch.models.config; "
     "assert not {'models', 'search'} & set(sys.modules), sorted({'models', 'search'} & set(sys.modules))", None),
])
def test_only_the_hpsearch_namespace_is_installed(statement, error, user_project):
    empty = user_project({})
    done = subprocess.run([str(PYTHON), "-c", statement], cwd=empty, env=clean_env(), capture_output=True, text=True,
                          timeout=120)
    if error is None:
        assert done.returncode == 0, done.stderr
    else:
        assert done.returncode == 1 and done.stderr.splitlines()[-1] == error, done.stderr


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("package", ["models", "search"])
def test_a_user_package_named_like_ours_trains_and_searches(package, user_project):
    project = user_project({f"{package}/__init__.py": "", f"{package}/mine.py": USER_MODEL,
                            "cfg.yaml": CONFIG.format(package=package)})

    trained = hpsearch("train", "cfg.yaml", "--out", "trained", cwd=project)
    assert trained.returncode == 0, trained.stdout + trained.stderr
    assert yaml.safe_load((project / "trained" / "config.yaml").read_text())["model"] == f"{package}.mine:MyModel"
    history = json.loads((project / "trained" / "metrics.json").read_text())["history"]
    assert [row["epoch"] for row in history] == [1, 2, 3] and all(0 <= row["val_acc"] <= 1 for row in history)

    searched = hpsearch("run", "cfg.yaml", "--name", "mine", cwd=project)
    assert searched.returncode == 0, searched.stdout + searched.stderr
    run_dir = project / "runs" / "mine"
    outcomes = read_outcomes(run_dir)
    assert len(outcomes) == 2 and {e["outcome"] for e in outcomes.values()} == {"completed"}, outcomes
    trials = read_run(run_dir).trials
    assert sorted(t.trial_id for t in trials) == sorted(outcomes)
    for trial in trials:
        assert [r["epoch"] for r in trial.rows] == [1, 2, 3]
        assert all(isinstance(r["val_acc"], float) for r in trial.rows)
    assert "outcomes: completed 2" in searched.stdout
