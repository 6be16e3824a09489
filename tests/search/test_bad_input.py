"""The bad-input table: `hpsearch run` given a wrong config, option or place, in a fresh process.

Every case must end with exit code 2 and exactly one line on stderr naming the field, the value
and what is allowed, without ever importing Ray: the command runs with a ``ray`` package on
PYTHONPATH that ends any process importing it (tests/conftest.py, ``no_ray_env``), so a refusal
that comes back as exit 2 was made before Ray could start. The run is made with
``python -X importtime``: its import lines are set aside (they are not the command's output), and
they show which heavy packages the error path loaded:

- ``light`` cases must import neither torch nor numpy;
- ``model`` cases are refused by the model's own settings (its Config), whose module imports
  torch and numpy.

One positive case: ``lr: 1e-3`` (read by YAML 1.1 as the string '1e-3') is accepted as a number
everywhere it appears; that run is refused only for its run name, the last check.
"""

from __future__ import annotations

import os
import socket
import subprocess
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from hpsearch.core.config import load_config
from hpsearch.driver import cluster, preflight
from tests.fixtures.cli import HPSEARCH, PYTHON, RAY_IMPORTED, free_port
from tests.fixtures.cluster import LocalCluster, marked

PREFIX = "hpsearch run: error: "

TRIPLET = {"model": "triplet", "epochs": 4, "params": {"samples_per_class": 40, "hidden_dim": 16},
           "space": {"lr": {"loguniform": [1e-4, 1e-1]}}}
SYMMETRIC = {"model": "symmetric", "epochs": 3, "params": {"num_stories": 50},
             "space": {"lr": {"loguniform": [1e-4, 1e-2]}}}


def triplet(**change) -> dict:
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in TRIPLET.items()}
    for key, value in change.items():
        raw[key] = {**raw[key], **value} if isinstance(value, dict) and isinstance(raw.get(key), dict) else value
    return raw


def symmetric(**params) -> dict:
    return {**SYMMETRIC, "params": {**SYMMETRIC["params"], **params}}


def unwritable_storage(tmp: Path) -> str:
    """A storage path this user cannot create: under /proc for root (who may write anywhere
    else), under a read-only directory for anyone else."""
    if os.geteuid() == 0:
        return "/proc/hpsearch-runs"
    locked = tmp / "locked"
    locked.mkdir(mode=0o500)
    return str(locked / "runs")


@dataclass
class Case:
    id: str
    config: dict | str                  # a mapping (dumped as YAML) or YAML text as the user wrote it
    args: tuple[str, ...]
    expected: str                       # a substring of the one line
    kind: str = "light"                 # light | model


CASES = [
    Case("unknown key", triplet(budget={"num_sampels": 4}), (),
         "budget.num_sampels: unknown key (did you mean 'num_samples'?); "
         "allowed: converge_after, converge_delta, max_concurrent"),
    Case("unknown model setting", triplet(params={"hiden_dim": 8}), (),
         "params.hiden_dim: unknown key (did you mean 'hidden_dim'?)", "model"),
    Case("bool where an int belongs", triplet(budget={"num_samples": True}), (),
         "budget.num_samples: got True, expected an integer"),
    Case("float where an int belongs", triplet(epochs=2.5), (), "epochs: got 2.5, expected an integer"),
    Case("float where a model int belongs", triplet(params={"hidden_dim": 64.0}), (),
         "params.hidden_dim: got 64.0, expected an integer", "model"),
    Case("non-positive size", triplet(params={"hidden_dim": 0}), (),
         "params.hidden_dim: got 0, expected a value >= 1", "model"),
    Case("non-positive size in the space", triplet(space={"embedding_dim": {"int": [0, 64]}}), (),
         "space.embedding_dim: got 0, expected a value >= 1", "model"),
    Case("non-positive max_epochs", triplet(budget={"max_epochs": 0}), (),
         "budget.max_epochs: got 0, expected a value >= 1"),
    Case("empty choices", triplet(space={"mining": {"choice": []}}), (),
         "space.mining.choice: got [], expected a non-empty list"),
    Case("NaN", triplet(params={"lr": float("nan")}), (), "params.lr: got nan, expected a finite number"),
    Case("inf", triplet(space={"lr": {"loguniform": [1e-5, float("inf")]}}), (),
         "space.lr.loguniform[1]: got inf, expected a finite number"),
    Case("negative loss weight", symmetric(w_parse=-1.0), (), "params.w_parse: got -1.0, expected a value >= 0",
         "model"),
    Case("all-zero loss weights", symmetric(w_parse=0, w_generate=0, w_cycle=0), (),
         "params.w_parse, params.w_generate, params.w_cycle: got 0.0, 0.0, 0.0; expected at least one weight > 0",
         "model"),
    Case("batch larger than the training set",
         triplet(params={"num_classes": 4, "samples_per_class": 10, "sampler": "random", "batch_size": 64}), (),
         "params.samples_per_class: 24 training samples, fewer than batch_size 64", "model"),
    Case("grace_period > max_epochs", triplet(scheduler={"grace_period": 5}), (),
         "scheduler.grace_period: got 5, expected a value <= max_epochs (4)"),
    Case("reduction_factor <= 1", triplet(scheduler={"reduction_factor": 1}), (),
         "scheduler.reduction_factor: got 1.0, expected a value > 1"),
    Case("num_samples < 1", triplet(), ("--num-samples", "0"), "budget.num_samples: got 0, expected a value >= 1"),
    Case("GPU asked, none present", triplet(resources={"gpu": 1}), (),
         "resources.gpu: got 1, but no CUDA GPU is visible on this machine"),
    Case("address that does not answer", triplet(), ("--address", f"127.0.0.1:{free_port()}"),
         "--address: nothing answers at 127.0.0.1:"),
    Case("Ray Client address that does not answer", triplet(), ("--address", f"ray://127.0.0.1:{free_port()}"),
         "--address: nothing answers at 127.0.0.1:"),
    Case("unwritable storage", triplet(), ("--storage", "{unwritable}"), "--storage: '{unwritable}' "),
    Case("run name with a path separator", triplet(), ("--name", "a/b"), "--name: got 'a/b', expected letters"),
    Case("run name ..", triplet(), ("--name", ".."), "--name: got '..', expected letters"),
    Case("run name escaping the storage", triplet(), ("--name", "../elsewhere"), "--name: got '../elsewhere'"),
    # positive: YAML 1.1 reads 1e-3 as a string; it is a number to hpsearch, so the only error left
    # is the run name, taken by the run dir the test makes first
    Case("lr: 1e-3 is a number", textwrap.dedent("""\
         model: triplet
         epochs: 4
         params: {samples_per_class: 40, hidden_dim: 16, lr: 1e-3}
         space:
           lr: {loguniform: [1e-5, 1e-1]}
         warm_start:
           - {lr: 3e-4}
         """), ("--name", "taken"), "--name: a run named 'taken' already exists", "model"),
]


@dataclass
class Outcome:
    code: int
    lines: list[str]                    # stderr without the import-time lines
    imported: set[str]                  # the heavy packages imported at the top level


HEAVY = ("torch", "ray")
MODEL_IMPORTS = ("torch", "numpy")      # what a built-in model's module brings in


def run_cli(argv: list[str], cwd: Path, env: dict[str, str], prelude: str = "") -> Outcome:
    """``hpsearch ARGV`` under ``python -X importtime``; ``prelude``, a line of Python, runs first."""
    if prelude:
        command = [str(PYTHON), "-X", "importtime", "-c",
                   f"import sys; {prelude}; from hpsearch.cli import main; sys.exit(main(sys.argv[1:]))", *argv]
    else:
        command = [str(PYTHON), "-X", "importtime", str(HPSEARCH), *argv]
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    lines, imported = [], set()
    for line in done.stderr.splitlines():
        if line.startswith("import time:"):
            name = line.split("|")[-1]
            if name.strip() in HEAVY + MODEL_IMPORTS and name == " " + name.strip():   # top level only
                imported.add(name.strip())
        else:
            lines.append(line)
    assert done.returncode != RAY_IMPORTED, "\n".join(lines)            # the stack that imported Ray
    return Outcome(done.returncode, lines, imported)


def assert_refused(outcome: Outcome, expected: str, kind: str) -> None:
    assert outcome.code == 2, outcome
    assert len(outcome.lines) == 1 and outcome.lines[0].startswith(PREFIX), outcome.lines
    assert expected in outcome.lines[0], outcome.lines[0]
    assert "ray" not in outcome.imported, outcome.imported
    if kind == "light":
        assert not outcome.imported & {*HEAVY, *MODEL_IMPORTS}, outcome.imported


def test_a_command_that_imports_ray_under_no_ray_env_is_stopped(no_ray_env, tmp_path):
    """So that the refusals below, which must never import Ray, can fail."""
    done = subprocess.run([str(PYTHON), "-c", "import ray; print('imported')"], cwd=tmp_path, env=no_ray_env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == RAY_IMPORTED and "imported" not in done.stdout
    assert "ray was imported:" in done.stderr and '"<string>", line 1' in done.stderr


@pytest.mark.slow
def test_a_good_config_reaches_ray_and_is_stopped_there_under_no_ray_env(no_ray_env, config_file, tmp_path):
    """The same for the command itself: past every check, `hpsearch run` imports Ray."""
    config = config_file(triplet())
    done = subprocess.run([str(HPSEARCH), "run", str(config), "--storage", str(tmp_path / "runs")], cwd=tmp_path,
                          env=no_ray_env, capture_output=True, text=True, timeout=120)
    assert done.returncode == RAY_IMPORTED, done.stdout + done.stderr
    assert "ray was imported:" in done.stderr and "hpsearch" in done.stderr


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=[pytest.mark.slow] if c.kind == "model" else [])
                                  for c in CASES])
def test_bad_input_is_one_line_exit_2_and_never_imports_ray(case, tmp_path, config_file, no_ray_env):
    if case.id == "GPU asked, none present" and preflight.gpu_visible():
        pytest.skip("a GPU is visible here")
    config = config_file(case.config)
    (tmp_path / "runs" / "taken").mkdir(parents=True)
    unwritable = unwritable_storage(tmp_path) if case.id == "unwritable storage" else ""
    args = [a.format(unwritable=unwritable) for a in case.args]
    if "--storage" not in args:
        args += ["--storage", str(tmp_path / "runs")]
    outcome = run_cli(["run", str(config), *args], tmp_path, no_ray_env)
    assert_refused(outcome, case.expected.format(unwritable=unwritable), case.kind)


def test_lr_written_1e_3_is_read_as_the_number(config_file):
    """The positive case's config, loaded in-process: every 1e-3-style string became a float."""
    text = next(c.config for c in CASES if c.id == "lr: 1e-3 is a number")
    assert yaml.safe_load(text)["params"]["lr"] == "1e-3"                      # what YAML 1.1 makes of it
    config = load_config(config_file(text))
    assert config.params["lr"] == 1e-3 and type(config.params["lr"]) is float
    assert (config.space["lr"].low, config.space["lr"].high) == (1e-5, 1e-1)
    assert config.warm_start == ({"lr": 3e-4},) and type(config.warm_start[0]["lr"]) is float


def test_an_address_that_accepts_but_never_answers_is_refused_when_the_probe_gives_up(tmp_path, config_file,
                                                                                        no_ray_env):
    """A port where the connection is accepted (by the kernel's backlog) and nothing ever replies:
    the probe gives up after its own timeout (made 0.5 s here) with one line, without ever
    reaching Ray's client and its minutes of retries."""
    config = config_file(triplet())
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        outcome = run_cli(["run", str(config), "--storage", str(tmp_path / "runs"), "--address", f"127.0.0.1:{port}"],
                          tmp_path, no_ray_env, prelude="import functools, hpsearch.driver.cluster as c; "
                                                        "c.probe = functools.partial(c.probe, timeout=0.5)")
    assert outcome.code == 2 and outcome.lines == [
        f"{PREFIX}--address: nothing answers at 127.0.0.1:{port} (no answer within 0.5s); "
        "expected a running Ray head (`ray start --head`)"], outcome
    assert not outcome.imported & set(HEAVY), outcome


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_local_storage_path_is_refused_for_a_cluster_with_nodes_on_other_machines(tmp_path, config_file):
    """A real Ray head on loopback. Seen from a machine that owns none of the nodes' addresses (the
    one fact the test changes: ``this_machine_addresses`` returns nothing), a storage directory on
    the local disk is refused; seen from here, where the node runs, it is accepted. Asking the
    head for its nodes imports Ray's GCS client and starts nothing: Ray's temp dir stays empty."""
    storage = tmp_path / "runs"
    if cluster.filesystem_type(storage) in cluster.NETWORK_FILESYSTEMS:
        pytest.skip("the test's tmp dir is on a network filesystem")
    config = config_file(triplet())
    (storage / "taken").mkdir(parents=True)
    ray_tmp = tmp_path / "raytmp"
    ray_tmp.mkdir()
    ray_cluster = LocalCluster(tmp_path, workers=0)
    try:
        env = ray_cluster.client_env("cli", RAY_TMPDIR=str(ray_tmp))
        argv = ["run", str(config), "--storage", str(storage), "--address", ray_cluster.address, "--name", "taken"]
        elsewhere = run_cli(argv, tmp_path, env, prelude="import hpsearch.driver.cluster as c; "
                                                          "c.this_machine_addresses = lambda: frozenset()")
        here = run_cli(argv, tmp_path, env)
    finally:
        survivors = ray_cluster.stop()
    assert survivors == [] and marked(ray_cluster.tag) == []
    assert elsewhere.code == 2 and len(elsewhere.lines) == 1, elsewhere
    assert elsewhere.lines[0].startswith(f"{PREFIX}--storage: '{storage}' is on this machine's own disk (")
    assert f"but the Ray cluster at {ray_cluster.address} has nodes on other machines (" in elsewhere.lines[0]
    assert not any(ray_tmp.iterdir())                           # no Ray session was started here
    assert "torch" not in elsewhere.imported                     # refused before the config's model
    # from this machine the same storage passes, and the run is refused only for its name
    assert here.code == 2 and here.lines[-1].startswith(f"{PREFIX}--name: a run named 'taken' already exists"), here


def test_filesystem_type_reads_the_longest_mount_point():
    mounts = textwrap.dedent("""\
        /dev/vda / ext4 rw 0 0
        server:/export /mnt/shared nfs4 rw 0 0
        server:/export/x /mnt/shared/x\\040y cifs rw 0 0
        """)
    assert cluster.filesystem_type(Path("/home/me/runs"), mounts) == "ext4"
    assert cluster.filesystem_type(Path("/mnt/shared/runs"), mounts) == "nfs4"
    assert cluster.filesystem_type(Path("/mnt/shared/x y/runs"), mounts) == "cifs"
    assert cluster.filesystem_type(Path("/mnt/sharedness"), mounts) == "ext4"


@pytest.mark.parametrize("nodes, fstype, refused", [
    (["10.0.0.5"], "ext4", False),                   # every node is this machine
    (["10.0.0.5", "10.0.0.6"], "ext4", True),        # one elsewhere, a local disk
    (["10.0.0.5", "10.0.0.6"], "nfs4", False),       # one elsewhere, a shared filesystem
    (["10.0.0.6"], "overlay", True),
    (["10.0.0.6"], None, False),                     # the filesystem cannot be told: left to Ray's own check
])
def test_shared_storage_rule(nodes, fstype, refused):
    check = lambda: cluster.check_shared_storage(Path("/data/runs"), "10.0.0.5:6379", nodes,  # noqa: E731
                                                   frozenset({"127.0.0.1", "10.0.0.5"}), fstype)
    if refused:
        with pytest.raises(preflight.ConfigError, match=r"has nodes on other machines \(10\.0\.0\.6\)"):
            check()
    else:
        check()
