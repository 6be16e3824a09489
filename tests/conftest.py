"""Fixtures the test modules share. The plain helpers behind them live in tests/fixtures/: toy
models (toy_models.py), a user's model (user_model.py), run dirs with known contents
(rundir_factory.py), a pickle payload (payloads.py), subprocess helpers and the console-script
paths (cli.py), real Ray clusters (cluster.py) and in-process searches (searches.py). No test
module imports another."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import searches
from tests.fixtures.cli import block_ray, clean_env, write_config


@pytest.fixture(autouse=True)
def terminal_width(monkeypatch: pytest.MonkeyPatch) -> None:
    """Printed reports fit the terminal they run in; tests see the same width in any terminal (a
    test about fitting sets its own COLUMNS)."""
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("LINES", "50")


@pytest.fixture(scope="module")
def ray_session() -> Iterator[None]:
    """One local Ray (2 CPUs, no dashboard) for the in-process searches of a test module; shut down
    when the module is done."""
    import ray

    searches.start_local_ray(num_cpus=2)
    yield
    ray.shutdown()


@pytest.fixture
def run_search(ray_session: None, tmp_path: Path) -> Callable[..., tuple[int, str, Path]]:
    """``run_search(raw, name, *overrides, during=None) -> (exit code, live output, run dir)``: a
    search in this process on the module's Ray session (tests.fixtures.searches.run_search), its
    config, output and run dir under ``tmp_path``."""
    def run(raw: dict[str, Any], name: str, *overrides: str,
            during: Callable[[Path], None] | None = None) -> tuple[int, str, Path]:
        return searches.run_search(tmp_path, raw, name, *overrides, during=during)

    return run


@pytest.fixture
def config_file(tmp_path: Path) -> Callable[..., Path]:
    """``config_file(raw, name="search.yaml") -> path``: a config in ``tmp_path``, from a mapping
    (dumped as YAML) or from YAML text as a user wrote it."""
    def write(raw: dict[str, Any] | str, name: str = "search.yaml") -> Path:
        return write_config(tmp_path / name, raw)

    return write


@pytest.fixture
def no_ray_env(tmp_path: Path) -> dict[str, str]:
    """An environment for a subprocess in which ``import ray`` ends the process with exit code
    tests.fixtures.cli.RAY_IMPORTED, printing who imported it: a command that exits otherwise never
    imported Ray, so it cannot have started any."""
    return clean_env(PYTHONPATH=str(block_ray(tmp_path / "blocked")))


@pytest.fixture
def user_project(tmp_path_factory: pytest.TempPathFactory) -> Callable[[dict[str, str]], Path]:
    """``user_project({relative path: text}) -> directory``: a user's project in a fresh temporary
    directory outside the repository, holding exactly those files."""
    def make(files: dict[str, str]) -> Path:
        root = tmp_path_factory.mktemp("project")
        for relative, text in files.items():
            path = root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        return root

    return make


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """torch on one thread for the test (float sums depend on the thread count), restored after."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
