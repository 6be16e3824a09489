"""Run dirs and exported folders from someone else: nothing in them is ever executed, and nothing
the user already has is overwritten without --force.

- Every torch.load in models/ and search/ reads with ``weights_only=True``, YAML is read with
  safe_load only, np.load never allows pickles (checked in the source), and the read-only commands
  (report, plot, export, and the run-dir reader under them) never unpickle at all.
- A checkpoint or weights file holding a pickle payload is refused, not run, by the trainable's
  restore and by `hpsearch evaluate` (report/plot/export: tests/search/test_export.py).
- `hpsearch export` and `hpsearch plot`, run a second time into the same place, refuse to write
  over the first result unless --force is given.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
import yaml

from hpsearch.cli import main
from hpsearch.models.config import ConfigError
from tests.fixtures.cli import REPO
from tests.fixtures.payloads import Payload
from tests.fixtures.rundir_factory import FakeTrial, make_run

SOURCES = sorted([*REPO.joinpath("models").rglob("*.py"), *REPO.joinpath("search").rglob("*.py")])
READERS = ("search/results/report.py", "search/results/plots.py", "search/results/export.py", "search/results/summary.py",
           "search/results/diagnose.py",
           "search/core/rundir.py")


def calls(path: Path) -> list[ast.Call]:
    return [node for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path)))
            if isinstance(node, ast.Call)]


def dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


def test_every_torch_load_reads_weights_only():
    loads = {}
    for path in SOURCES:
        for call in calls(path):
            if dotted(call.func) == "torch.load":
                flag = next((k.value for k in call.keywords if k.arg == "weights_only"), None)
                loads[f"{path.relative_to(REPO)}:{call.lineno}"] = isinstance(flag, ast.Constant) and flag.value is True
    # one place loads torch files, with weights_only=True; trainable, export and evaluate go through it
    assert {k.split(":")[0] for k in loads} == {"search/core/training.py"}
    assert [where for where, safe in loads.items() if not safe] == []
    for user in ("search/tune/trainable.py", "search/results/export.py", "search/core/training.py"):
        assert any(dotted(c.func).endswith("load_trusted_tensors") for c in calls(REPO / user)), user


def test_yaml_is_read_safely_and_numpy_never_unpickles():
    """YAML only through safe_load (yaml.load/full_load/unsafe_load can build Python objects), and
    no np.load(allow_pickle=True), anywhere in models/ or search/."""
    unsafe = []
    for path in SOURCES:
        for call in calls(path):
            name = dotted(call.func)
            if name in ("yaml.load", "yaml.full_load", "yaml.unsafe_load", "yaml.load_all"):
                unsafe.append(f"{path.relative_to(REPO)}:{call.lineno} {name}")
            if any(k.arg == "allow_pickle" and not (isinstance(k.value, ast.Constant) and k.value.value is False)
                   for k in call.keywords):
                unsafe.append(f"{path.relative_to(REPO)}:{call.lineno} {name}(allow_pickle=...)")
    assert unsafe == []


@pytest.mark.parametrize("reader", READERS)
def test_the_read_only_commands_never_unpickle(reader):
    """No pickle/cloudpickle/joblib load, no Ray result reader (ExperimentAnalysis, ResultGrid and
    Tuner.restore unpickle what is in the run dir) in the modules behind report, plot and export."""
    banned = ("pickle.load", "pickle.loads", "cloudpickle.load", "cloudpickle.loads", "joblib.load",
              "ExperimentAnalysis", "Tuner.restore", "tune.Tuner.restore", "ResultGrid")
    source = REPO / reader
    found = [f"{reader}:{c.lineno} {dotted(c.func)}" for c in calls(source)
             if dotted(c.func).endswith(banned) or dotted(c.func) in banned]
    text = source.read_text(encoding="utf-8")
    assert found == [] and "import cloudpickle" not in text and "ExperimentAnalysis(" not in text


def planted(path: Path, marker: Path) -> Path:
    torch.save({"model": Payload(marker), "history": [], "epoch": 1}, path)
    return path


def test_the_planted_payload_runs_when_unpickled(tmp_path):
    """So that the tests below, which expect it never to run, can fail."""
    marker = tmp_path / "PWNED"
    torch.load(planted(tmp_path / "state.pt", marker), weights_only=False)
    assert marker.is_dir()


def test_a_trial_restoring_a_planted_checkpoint_refuses_it(tmp_path):
    from hpsearch.core.rundir import CHECKPOINT_FILE
    from hpsearch.tune.trainable import load_checkpoint

    marker = tmp_path / "PWNED"
    planted(tmp_path / CHECKPOINT_FILE, marker)
    with pytest.raises(ConfigError, match="cannot be loaded as weights only"):
        load_checkpoint(tmp_path)
    assert not marker.exists()


def test_evaluate_refuses_planted_weights(tmp_path):
    from hpsearch.core.config import load_config
    from hpsearch.core.training import evaluate

    marker = tmp_path / "PWNED"
    folder = tmp_path / "exported"
    folder.mkdir()
    (folder / "config.yaml").write_text(yaml.safe_dump({
        "model": "triplet", "epochs": 1, "params": {"num_classes": 4, "samples_per_class": 12, "input_dim": 8,
                                                    "batch_size": 8, "k": 2, "hidden_dim": 8, "embedding_dim": 4}}))
    torch.save(Payload(marker), folder / "model.pt")
    with pytest.raises(ConfigError, match="weights: .* cannot be loaded as weights only"):
        evaluate(folder / "model.pt", load_config(folder / "config.yaml"), "val", "cpu")
    assert not marker.exists()


def checkpointed_run(tmp_path: Path) -> Path:
    state = {"model": {"w": torch.ones(2)}, "history": [{"epoch": 1}, {"epoch": 2}], "seed": 5, "epoch": 2,
             "params": {}}
    history = [{"train_loss": 1.0, "val_recall_at_1": 0.4}, {"train_loss": 0.8, "val_recall_at_1": 0.6}]
    return make_run(tmp_path, [FakeTrial("ddddd_00000", {"lr": 1e-3}, history, "completed", seed=5,
                                         checkpoints={2: state})])


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("command, out", [("export", "best"), ("plot", "plots")])
def test_a_second_export_or_plot_never_overwrites_without_force(command, out, tmp_path, capsys):
    run = checkpointed_run(tmp_path)
    assert main([command, str(run)]) == 0
    first = snapshot(run / out)
    assert first
    victim = next(p for p in sorted((run / out).rglob("*")) if p.is_file())
    victim.write_bytes(b"the user's own edit")                 # what a silent overwrite would destroy
    edited = snapshot(run / out)
    capsys.readouterr()
    assert main([command, str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and "already holds files; choose another path or pass --force" in err
    assert snapshot(run / out) == edited
    assert main([command, str(run), "--force"]) == 0
    assert victim.read_bytes() != b"the user's own edit"        # --force does write over it
