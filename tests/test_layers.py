"""The package's layers, as installed: imports point one way (the contracts in pyproject.toml,
checked by import-linter) and no module reaches itself again through its imports.

The repository keeps ``search/`` and ``models/`` at its top level and pyproject.toml maps them to
``hpsearch`` and ``hpsearch.models``. import-linter finds a package's modules by walking its folder,
so the check runs on a copy of the tree laid out as it installs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.cli import REPO

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def installed_view(root: Path) -> Path:
    """``root/hpsearch`` laid out as the wheel installs it: search/ as hpsearch, models/ inside it."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "search", root / "hpsearch", ignore=ignore)
    shutil.copytree(REPO / "models", root / "hpsearch" / "models", ignore=ignore)
    return root


def lint(view: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT_IMPORTS), "--config", str(REPO / "pyproject.toml"), "--no-cache"],
                          cwd=view, env={"PYTHONPATH": str(view), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=300)


CYCLES = """
import json, grimp
graph = grimp.build_graph("hpsearch", cache_dir=None)
cycles = []
for module in sorted(graph.modules):
    for imported in sorted(graph.find_modules_directly_imported_by(module)):
        back = graph.find_shortest_chain(importer=imported, imported=module)
        if back:
            cycles.append([module, *back])
print(json.dumps(cycles))
"""


def import_cycles(view: Path) -> list[list[str]]:
    """Every direct import a -> b inside hpsearch where b also reaches a, as the chain back (in a
    fresh interpreter, so ``hpsearch`` is the copy in ``view``)."""
    done = subprocess.run([sys.executable, "-c", CYCLES], cwd=view, env={"PYTHONPATH": str(view)},
                          capture_output=True, text=True, timeout=300, check=True)
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def view(tmp_path_factory) -> Path:
    return installed_view(tmp_path_factory.mktemp("installed"))


def test_the_layer_contracts_hold(view):
    done = lint(view)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 kept, 0 broken" in done.stdout


def test_no_module_imports_itself_through_others(view):
    assert import_cycles(view) == []


@pytest.mark.parametrize("module, line", [
    ("hpsearch/core/objective.py", "from hpsearch.driver import runner"),     # core reaching up
    ("hpsearch/results/report.py", "import ray"),                             # results reaching Ray
    ("hpsearch/models/api.py", "import optuna"),                              # models leaving PyTorch
])
def test_an_import_against_the_layers_is_caught(tmp_path, module, line):
    view = installed_view(tmp_path)
    path = view / module
    path.write_text(path.read_text(encoding="utf-8") + f"\n{line}  # noqa\n", encoding="utf-8")
    done = lint(view)
    assert done.returncode != 0
    assert "BROKEN" in done.stdout


def test_a_cycle_is_caught(tmp_path):
    view = installed_view(tmp_path)
    path = view / "hpsearch" / "core" / "objective.py"
    path.write_text(path.read_text(encoding="utf-8") + "\nfrom hpsearch.core import config  # noqa\n",
                    encoding="utf-8")
    assert any(chain[0] == "hpsearch.core.objective" for chain in import_cycles(view))
