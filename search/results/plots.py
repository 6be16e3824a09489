"""``hpsearch plot``: PNGs of a run (matplotlib, Agg; no display needed).

- ``curves.png``: the objective and ``train_loss`` per epoch, one line per trial coloured by
  outcome, an ``x`` where a pruned or failed trial was stopped;
- ``components.png``: every ``train_loss_<component>`` per epoch of the best trials (one panel each);
- ``params.png``: each trial's ranking value (``objective.rank``: its best epoch by default) against
  each searched parameter (one panel each).

:func:`build_figures` returns the figures (so their lines can be inspected) and
:func:`save_figures` writes them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from hpsearch.core.training import prepare_out_dir
from hpsearch.models.config import ConfigError
from hpsearch.results.records import trial_label
from hpsearch.results.report import Run, Trial, build_table, read_run

COLORS = {
    "completed": "tab:green", "pruned_asha": "tab:blue", "pruned_flatline": "tab:gray",
    "pruned_exploding": "tab:red", "pruned_nonfinite": "black", "pruned_collapsed": "tab:purple",
    "error": "tab:brown", "running": "tab:orange",
}
BEST_TRIALS = 3


def _color(outcome: str) -> str:
    return COLORS.get(outcome, "tab:pink")


def _legend(ax, outcomes: list[str]) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=_color(o), label=o) for o in dict.fromkeys(outcomes)]
    if handles:
        ax.legend(handles=handles, fontsize="small")


def _log_if_wide(ax, values: list[float]) -> None:
    finite = [v for v in values if math.isfinite(v)]
    if finite and min(finite) > 0 and max(finite) / min(finite) > 100:
        ax.set_yscale("log")


def _stop_point(trial: Trial, xs: list[int], ys: list[float]) -> tuple[int, float] | None:
    """Where a stopped trial's curve ends: its recorded stop epoch (else its last epoch), at the
    last finite value up to there."""
    if trial.outcome in ("completed", "running") or not xs:
        return None
    stop = trial.stop_epoch if trial.stop_epoch is not None else xs[-1]
    points = [(x, y) for x, y in zip(xs, ys) if x <= stop and math.isfinite(y)]
    return points[-1] if points else None


def curves_figure(run: Run):
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(12, 4.5), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, key in zip(axes, (run.metric, "train_loss")):
        seen, everything = [], []
        for trial in run.trials:
            xs, ys = trial.series(key)
            if not xs:
                continue
            ax.plot(xs, ys, color=_color(trial.outcome), alpha=0.8, linewidth=1.2, marker=".", markersize=4)
            everything += ys
            seen.append(trial.outcome)
            stop = _stop_point(trial, xs, ys)
            if stop is not None:
                ax.scatter([stop[0]], [stop[1]], marker="x", s=40, color=_color(trial.outcome), zorder=3)
        if key == "train_loss":
            _log_if_wide(ax, everything)
        ax.set(xlabel="epoch", ylabel=key, title=f"{key} ({run.mode})" if key == run.metric else key)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        _legend(ax, seen)
    return fig


def components_figure(run: Run, table):
    """None when the model reports no loss components."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    components = [c for c in table.columns if c.startswith("train_loss_")]
    by_id = {t.trial_id: t for t in run.trials}
    chosen = [(by_id[row["trial_id"]], trial_label(row)) for _, row in table.iterrows()
              if by_id[row["trial_id"]].rows][:BEST_TRIALS]
    if not components or not chosen:
        return None
    fig = Figure(figsize=(5 * len(chosen), 4), layout="constrained")
    axes = fig.subplots(1, len(chosen), squeeze=False)[0]
    for ax, (trial, label) in zip(axes, chosen):
        everything = []
        for name in components:
            xs, ys = trial.series(name)
            ax.plot(xs, ys, label=name[len("train_loss_"):], marker=".", markersize=4)
            everything += ys
        _log_if_wide(ax, everything)
        ax.set(xlabel="epoch", ylabel="loss component", title=f"{label} ({trial.outcome})")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize="small")
    return fig


def params_figure(run: Run, table):
    """None when no parameter was searched."""
    from matplotlib.figure import Figure

    names = [n for n in run.space if f"config/{n}" in table.columns]
    if not names:
        return None
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig = Figure(figsize=(4.5 * cols, 3.8 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[len(names):]:
        ax.set_visible(False)
    for ax, name in zip(axes, names):
        spec = (run.raw.get("space") or {}).get(name) or {}
        points = [(v, float(y), o) for v, y, o in zip(table[f"config/{name}"], table[table.attrs["rank"]],
                                                      table["outcome"])
                  if v is not None and isinstance(y, float) and math.isfinite(y)]
        if "choice" in spec:
            labels = [str(c) for c in spec["choice"]]
            xs: list[Any] = [labels.index(str(v)) if str(v) in labels else -1 for v, _, _ in points]
            ax.set_xticks(range(len(labels)), labels)
        else:
            xs = [float(v) for v, _, _ in points]
            if "loguniform" in spec or spec.get("log"):
                ax.set_xscale("log")
        ax.scatter(xs, [y for _, y, _ in points], c=[_color(o) for _, _, o in points], s=24)
        ax.set(xlabel=name, ylabel=f"{run.metric}, {table.attrs['ranked_by']}")
        _legend(ax, [o for _, _, o in points])
    return fig


def build_figures(run: Run, table=None) -> dict[str, Any]:
    """name -> matplotlib Figure for every plot the run supports. The figures are built as
    ``Figure`` objects, never through pyplot, so no backend is chosen or changed (a notebook's inline
    plots keep working)."""
    if table is None:
        table = build_table(run)
    figures = {"curves": curves_figure(run), "components": components_figure(run, table),
               "params": params_figure(run, table)}
    return {name: fig for name, fig in figures.items() if fig is not None}


def save_figures(figures: dict[str, Any], out: str | Path, dpi: int = 100) -> list[Path]:
    paths = []
    for name, fig in figures.items():
        path = Path(out) / f"{name}.png"
        fig.savefig(path, dpi=dpi)
        paths.append(path)
    return paths


def plot(run_dir: str | Path, out: str | Path | None = None, force: bool = False) -> list[Path]:
    """Write every plot of the run as PNG into ``out`` (default RUN_DIR/plots; one that holds files
    needs ``force``); return their paths."""
    run = read_run(run_dir)
    if not any(trial.rows for trial in run.trials):
        raise ConfigError(f"run_dir: no trial in {str(run.path)!r} has reported an epoch yet; nothing to plot")
    return save_figures(build_figures(run), prepare_out_dir(out or run.path / "plots", force))


WHY_NOT = {"components": "the model reports no loss components (train_loss_*)",
           "params": "no parameter was searched"}


def plot_command(args) -> int:
    paths = plot(args.run_dir, args.out, args.force)
    for path in paths:
        print(f"wrote {path}")
    for name in sorted(set(WHY_NOT) - {p.stem for p in paths}):
        print(f"{name}.png: not written: {WHY_NOT[name]}")
    return 0
