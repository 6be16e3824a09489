"""PNG plots: the right number of curves per panel, valid images, and --out handling."""

from __future__ import annotations

import math

import pytest
from PIL import Image

from hpsearch.cli import main
from hpsearch.results.plots import build_figures, save_figures
from hpsearch.results.report import read_run
from tests.fixtures.rundir_factory import FakeTrial, history, make_run

SPACE = {"lr": {"loguniform": [1e-5, 1e-1]}, "w_parse": {"uniform": [0.0, 2.0]},
         "hidden_dim": {"choice": [32, 64, 128]}}
COMPONENTS = {"parse": (3.0, 1.0), "generate": (2.0, 1.0), "cycle_forward": (1.0, 0.5)}


def plotted_run(root):
    """Five trials: two complete, one ASHA-pruned, one exploded to NaN, one still running."""
    spec = [("completed", 4, (0.2, 0.8)), ("completed", 4, (0.2, 0.6)), ("pruned_asha", 2, (0.1, 0.2)),
            ("pruned_nonfinite", 3, (0.1, 0.3)), (None, 1, (0.1, 0.1))]
    trials = []
    for i, (outcome, n, obj) in enumerate(spec):
        rows = history(n, objective="val_fact_acc", obj=obj, components=COMPONENTS)
        if outcome == "pruned_nonfinite":
            rows[-1].update(train_loss=math.nan, val_fact_acc=math.nan)
        trials.append(FakeTrial(f"ab00000{i}_0000{i}", {"lr": 10.0 ** -(i + 1), "w_parse": 0.5,
                                                        "hidden_dim": [32, 64, 128][i % 3]},
                                rows, outcome, seed=i))
    return make_run(root, trials, model="symmetric", objective=("val_fact_acc", "max"), space=SPACE, max_epochs=4)


def test_figures_hold_one_curve_per_trial_component_and_parameter(tmp_path):
    figures = build_figures(read_run(plotted_run(tmp_path)))
    assert set(figures) == {"curves", "components", "params"}

    objective_ax, loss_ax = figures["curves"].axes
    assert objective_ax.get_ylabel() == "val_fact_acc" and loss_ax.get_ylabel() == "train_loss"
    assert len(objective_ax.get_lines()) == 5 and len(loss_ax.get_lines()) == 5
    # a stop marker for the two stopped trials (ASHA at epoch 2, NaN at epoch 3: marked at its last finite value)
    marks = [float(v) for c in objective_ax.collections for v in c.get_offsets()[0]]
    assert marks == pytest.approx([2.0, 0.2, 2.0, 0.2])
    colors = {line.get_color() for line in objective_ax.get_lines()}
    assert colors == {"tab:green", "tab:blue", "black", "tab:orange"}
    assert [t.get_text() for t in objective_ax.get_legend().get_texts()] == [
        "completed", "pruned_asha", "pruned_nonfinite", "running"]

    panels = figures["components"].axes
    assert len(panels) == 3                                   # the three best trials
    assert [len(ax.get_lines()) for ax in panels] == [3, 3, 3]
    assert panels[0].get_title() == "#1 (completed)"                # named as the report names it

    params = figures["params"].axes
    assert [ax.get_xlabel() for ax in params if ax.get_visible()] == ["lr", "w_parse", "hidden_dim"]
    assert [len(ax.collections[0].get_offsets()) for ax in params if ax.get_visible()] == [5, 5, 5]
    assert params[0].get_xscale() == "log"


def test_pngs_are_valid_images(tmp_path):
    out = tmp_path / "plots"
    out.mkdir()
    paths = save_figures(build_figures(read_run(plotted_run(tmp_path))), out)
    assert sorted(p.name for p in paths) == ["components.png", "curves.png", "params.png"]
    for path in paths:
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size[0] > 300 and image.size[1] > 200


def test_plot_command_refuses_an_out_dir_with_files_unless_forced(tmp_path, capsys):
    run = plotted_run(tmp_path)
    assert main(["plot", str(run)]) == 0
    assert sorted(p.name for p in (run / "plots").iterdir()) == ["components.png", "curves.png", "params.png"]
    assert main(["plot", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "already holds files" in err and "--force" in err
    assert main(["plot", str(run), "--force"]) == 0


def test_nothing_to_plot_is_one_line(tmp_path, capsys):
    run = make_run(tmp_path, [FakeTrial("ab000000_00000", {"lr": 1e-3}, [], None)])
    assert main(["plot", str(run), "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nothing to plot" in err


def test_a_plot_left_out_is_named_with_the_reason(tmp_path, capsys):
    """A model with no loss components and a run with nothing searched: curves.png only, and the
    command says which plots it did not write and why."""
    trials = [FakeTrial("ab000000_00000", {}, [{"train_loss": 1.0, "val_recall_at_1": 0.5}], "completed")]
    run = make_run(tmp_path, trials, space={})
    assert main(["plot", str(run)]) == 0
    out = capsys.readouterr().out
    assert sorted(p.name for p in (run / "plots").iterdir()) == ["curves.png"]
    assert "components.png: not written: the model reports no loss components (train_loss_*)" in out
    assert "params.png: not written: no parameter was searched" in out
