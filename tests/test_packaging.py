"""What `pip install .` puts on a user's machine: one package, ``hpsearch``, holding every module of
search/ and models/; no top-level ``models`` or ``search`` that would shadow a user's own package."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.fixtures.cli import REPO

FOLDERS = {"search": "hpsearch", "models": "hpsearch/models"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "-q", "-w", str(out)], check=True, capture_output=True,
                   timeout=300)
    (path,) = out.glob("hpsearch-*.whl")
    return path


def test_the_wheel_holds_one_package_with_every_module(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    tops = {name.split("/")[0] for name in names}
    assert {top for top in tops if not top.endswith(".dist-info")} == {"hpsearch"}
    expected = {f"{FOLDERS[folder]}/{path.relative_to(REPO / folder).as_posix()}"
                for folder in FOLDERS for path in (REPO / folder).rglob("*.py") if "__pycache__" not in path.parts}
    assert expected - names == set()


def test_installed_hpsearch_imports_and_shadows_nothing(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check", "-q",
                    "--target", str(target), str(wheel)], check=True, capture_output=True, timeout=300)
    empty = tmp_path / "elsewhere"
    empty.mkdir()

    def python(code: str) -> subprocess.CompletedProcess:
        # -S keeps this venv's editable finder out; the venv's packages come back through PYTHONPATH
        site = [p for p in sys.path if p.endswith("site-packages")]
        return subprocess.run([sys.executable, "-S", "-c", code], cwd=empty, capture_output=True, text=True,
                              env={"PYTHONPATH": ":".join([str(target), *site])}, timeout=120)

    done = python("import hpsearch, hpsearch.cli, hpsearch.models.triplet.model, hpsearch.core.health; "
                  "print(hpsearch.__file__)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith(str(target))
    for name in ("models", "search"):
        done = python(f"import {name}")
        assert "ModuleNotFoundError" in done.stderr, (name, done.stderr)
