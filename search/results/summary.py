"""The report's summary: counts per outcome, compute saved, the best trial, parameter importance
and diagnoses; and what ``hpsearch report`` prints: the table and the summary, fitted to the
terminal's width (``hpsearch.results.text``), with the reasons in full under the table."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from hpsearch.core.advice import edge_of_range
from hpsearch.core.numbers import finite, fmt, one_line
from hpsearch.core.objective import direction, rank_phrase
from hpsearch.core.outcomes import OUTCOMES_ALL, RANKED
from hpsearch.core.rundir import STUDY_FILE, STUDY_NAME, study_storage
from hpsearch.core.space import parse_space, parse_spec
from hpsearch.models.config import ConfigError
from hpsearch.results import text
from hpsearch.results.diagnose import diagnose
from hpsearch.results.records import READ_CALL, cell, report_json, trial_label
from hpsearch.results.report import Run, build_table, read_run

# The printed table's columns, most useful first; the searched parameters come after HEAD_FIRST and
# the loss components after train_loss. Every other column is in --all-columns, --csv and --json.
HEAD_FIRST = ("trial", "outcome", "objective_best", "epochs")    # and the rank column (attrs["rank"])
AFTER_PARAMS = ("train_loss", "train_loss_*", "objective_last", "best_epoch", "time_s", "node", "trial_id",
                "started", "ended")
LEFT_OUT_SUFFIX = " (--all-columns, --csv, --json have them)"


def importance(run: Run, table) -> tuple[dict[str, float], str]:
    """(parameter -> importance, where it came from). Optuna's default evaluator over the complete
    trials of the stored study; over the report's completed trials (their ranking column) when the
    study is missing or unreadable. None below ``importance_minimum`` trials: an importance estimated
    from a handful of trials ranks parameters by chance. Only trials that ran the whole budget: a best
    value at a rung is not comparable with one at the last epoch."""
    import optuna

    if not run.space:
        return {}, "no parameter was searched"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    note = f"{STUDY_FILE} is missing"
    if (run.path / STUDY_FILE).is_file():
        try:
            study = optuna.load_study(study_name=STUDY_NAME, storage=study_storage(run.path))
            complete = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                        if t.value is not None and finite(t.value)]
            params = [p for p in run.space if all(p in t.params for t in complete)]
            if len(complete) >= importance_minimum(run.space) and params:
                values = optuna.importance.get_param_importances(study, params=params)
                return dict(values), f"{len(complete)} complete trials of the study in {STUDY_FILE}"
            return {}, (f"{len(complete)} complete trials in {STUDY_FILE}; it needs at least "
                        f"{importance_minimum(run.space)} ({len(run.space)} searched parameters)")
        except (OSError, ValueError, KeyError, TypeError, RuntimeError, optuna.exceptions.OptunaError) as err:
            # a damaged or foreign journal, or a study importance cannot be read from: the report's rows still serve
            note = f"{STUDY_FILE} could not be read ({type(err).__name__}: {one_line(err, 80)})"
    return _importance_from_table(run, table, note)


def _importance_from_table(run: Run, table, note: str) -> tuple[dict[str, float], str]:
    import optuna

    specs = {name: parse_spec(name, run.raw["space"][name]) for name in run.space}
    distributions = {name: spec.to_optuna() for name, spec in specs.items()}
    study = optuna.create_study(direction=direction(run.mode))
    for _, row in table[table["outcome"] == "completed"].iterrows():
        value = run.rank_value(row)
        params = {name: cell(row.get(f"config/{name}")) for name in run.space}
        if not finite(value) or any(v is None for v in params.values()):
            continue
        params = {n: (int(v) if specs[n].kind == "int" else v) for n, v in params.items()}
        if not all(specs[n].contains(v) for n, v in params.items()):
            continue
        study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, value=float(value)))
    used = len(study.trials)
    source = f"the report's {used} completed trials ({run.rank_column}); {note}"
    if used < importance_minimum(run.space):
        return {}, f"needs at least {importance_minimum(run.space)} completed trials; {source}"
    return dict(optuna.importance.get_param_importances(study)), source


def importance_minimum(space) -> int:
    """Trials that ran the whole budget needed before importance is shown: 8, or 2 per searched
    parameter when there are more than 4."""
    return max(8, 2 * len(space))


def summarize(run: Run, table) -> dict[str, Any]:
    """Plain data (JSON-safe): what ``hpsearch report`` prints under the table."""
    counts = Counter(table["outcome"])
    ordered = {o: counts[o] for o in OUTCOMES_ALL if counts[o]}
    ordered.update({o: n for o, n in counts.items() if o not in ordered})
    spent = int(table["epochs"].fillna(0).sum())
    trials = max(run.num_samples, len(table))
    budget = trials * run.max_epochs
    best = None
    column = run.rank_column
    ranked = table[[finite(v) and o in RANKED for v, o in zip(table[column], table["outcome"])]]
    if not ranked.empty:
        top = ranked.iloc[0]
        best = {"trial": cell(top["trial"]), "trial_id": top["trial_id"], "outcome": top["outcome"],
                "value": float(top[column]), "epoch": int(run.rank_epoch(top)), "rank": run.rank,
                "window": run.window, "why": table.attrs.get("returned", ""),
                "config": {c[len("config/"):]: cell(top[c]) for c in table.columns if c.startswith("config/")}}
    values, source = importance(run, table)
    params = run.raw.get("params") or {}
    return {
        "run_dir": str(run.path), "model": run.model, "objective": run.metric, "mode": run.mode,
        "state": run.state, "stopped_early": run.stopped_early, "trials": len(table), "outcomes": ordered,
        "running": int(counts["running"]), "epochs_spent": spent, "epoch_budget": budget,
        "budget_trials": trials, "max_epochs": run.max_epochs,
        # only for a search that ended: an interrupted one has epochs still to run
        "compute_saved": ((1 - spent / budget) if budget else 0.0) if run.state == "finished" else None,
        "best": best, "importance": values, "importance_source": source,
        "diagnoses": diagnose(table, params if isinstance(params, dict) else {}),
        "advice": range_advice(run, ranked),
    }


def range_advice(run: Run, ranked) -> list[str]:
    """Edge-of-range advice (hpsearch.core.advice) over the trials whose objective can rank them,
    best first; none for a space that no longer parses (a run dir from another version)."""
    try:
        space = parse_space(run.raw.get("space") or {})
    except ConfigError:
        return []
    names = [f"config/{name}" for name in space]
    if not all(name in ranked.columns for name in names):
        return []
    best_first = [{name: cell(row[f"config/{name}"]) for name in space} for _, row in ranked.iterrows()]
    return edge_of_range(space, best_first)


def render(summary: dict[str, Any], width: int | None = None) -> str:
    """The summary as text, every line wrapped to ``width`` (default: the terminal's)."""
    width = text.terminal_width() if width is None else width
    lines = [f"run {summary['run_dir']} · model {summary['model']} · objective {summary['objective']} "
             f"({summary['mode']}) · state {summary['state']}"]
    counts = ", ".join(f"{o} {n}" for o, n in summary["outcomes"].items())
    lines.append(f"trials: {summary['trials']}" + (f" — {counts}" if counts else ""))
    if summary.get("stopped_early"):
        lines.append(f"stopped early (budget.converge_after): {summary['stopped_early']}")
    if summary["state"] == "interrupted":
        lines.append(f"the run was interrupted: {summary['running']} trial(s) without an outcome are shown as "
                     f"running; `hpsearch resume {summary['run_dir']}` continues it")
    without = f"{summary['epoch_budget']} without pruning ({summary['budget_trials']} trials × {summary['max_epochs']} epochs)"
    if summary["compute_saved"] is None:
        lines.append(f"epochs: {summary['epochs_spent']} so far, of up to {without}; the search has not ended")
    else:
        lines.append(f"epochs: {summary['epochs_spent']} of {without}: {summary['compute_saved']:.0%} of the compute saved")
    best = summary["best"]
    if best is None:
        lines.append("best: no trial has a finite objective yet")
    else:
        config = " ".join(f"{k}={fmt(v)}" for k, v in best["config"].items())
        who = best["trial_id"] if best.get("trial") is None else f"#{best['trial']} {best['trial_id']}"
        at = (f"at epoch {best['epoch']}" if best["rank"] == "best"
              else f"({rank_phrase(best['rank'], best['window'])}, to epoch {best['epoch']})")
        lines.append(f"best: {who} ({best['outcome']}) {summary['objective']} {best['value']:.6g} {at}"
                     + (f" · {config}" if config else ""))
        if best.get("why"):
            lines.append(f"  {best['why']}")
    if summary["importance"]:
        ranked = sorted(summary["importance"].items(), key=lambda kv: -kv[1])
        lines.append(f"importance for {summary['objective']} (over {summary['importance_source']}): "
                     + ", ".join(f"{k} {v:.2f}" for k, v in ranked))
    else:
        lines.append(f"importance: not computed ({summary['importance_source']})")
    if summary["diagnoses"]:
        lines.append("diagnoses:")
        lines.extend(f"  - {d}" for d in summary["diagnoses"])
    if summary.get("advice"):
        lines.append("ranges to widen:")
        lines.extend(f"  - {a}" for a in summary["advice"])
    return text.wrap_all(lines, width)


def _column(table, name: str, header: str) -> text.Column:
    """One column of the printed table: trials as ``trial_label``, timestamps as ISO-8601 UTC to
    the second, other cells through ``fmt``, a missing value as ``-``; numbers aligned right."""
    import pandas as pd

    values = table[name]
    if name == "trial":
        return text.Column(header, tuple(trial_label(row) for _, row in table.iterrows()))
    if pd.api.types.is_datetime64_any_dtype(values):
        return text.Column(header, tuple("-" if pd.isna(v) else v.strftime("%Y-%m-%dT%H:%M:%SZ") for v in values))
    right = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    return text.Column(header, tuple(fmt(cell(v)) for v in values), right=right)


def compact_columns(table) -> list[tuple[str, str]]:
    """(column, header) of the columns the fitted table may show, most useful first. A searched
    parameter is headed by its bare name unless that names another column too."""
    names = list(table.columns)
    params = [c for c in names if c.startswith("config/")]
    taken = set(names)
    head = list(HEAD_FIRST)
    if table.attrs.get("rank", head[2]) not in head:      # the column that ranks the rows, first
        head.insert(2, table.attrs["rank"])
    order: list[tuple[str, str]] = [(c, c) for c in head if c in taken]
    for column in params:
        bare = column[len("config/"):]
        order.append((column, column if bare in taken else bare))
    for entry in AFTER_PARAMS:
        if entry.endswith("*"):
            order.extend((c, c) for c in names if c.startswith(entry[:-1]))
        elif entry in taken and entry not in head:
            order.append((entry, entry))
    return order


def reason_lines(table, width: int) -> list[str]:
    """``reasons:`` and, for each trial that has one, ``#N outcome: reason`` in full, wrapped."""
    lines = [f"  {trial_label(row)} {row['outcome']}: {row['reason']}" for _, row in table.iterrows()
             if isinstance(row["reason"], str) and row["reason"]]
    if not lines:
        return []
    return [out for line in ["reasons:", *lines] for out in text.wrap(line, width)]


def format_table(table, all_columns: bool = False, width: int | None = None) -> str:
    """The table as text. By default it fits ``width`` (the terminal's when None): the columns of
    ``compact_columns`` that fit, in that order; one line naming the columns left out; and every
    trial's reason in full under the table, wrapped. ``all_columns``: every column of the
    DataFrame under its own name, reasons in the table, however wide the lines get."""
    if table.empty:
        return "(no trials yet)"
    width = text.terminal_width() if width is None else width
    title = f"objective = {table.attrs.get('objective', 'objective')} ({table.attrs.get('mode', '')})"
    if table.attrs.get("rank", "objective_best") != "objective_best":
        title += f", each trial ranked by {table.attrs['ranked_by']}"
    if all_columns:
        return "\n".join([title, *text.grid([_column(table, name, name) for name in table.columns])])
    candidates = compact_columns(table)
    kept = text.fit([_column(table, name, header) for name, header in candidates], width)
    headers = {column.header for column in kept}
    shown = {name for name, header in candidates if header in headers}
    offered = {name for name, _ in candidates}
    left_out = ([header for name, header in candidates if name not in shown]      # what the table would show first
                + [name for name in table.columns if name not in offered and name != "reason"])
    lines = [*text.wrap(title, width), *text.grid(kept)]
    if left_out:
        lines.append(text.listing("not shown: ", left_out, LEFT_OUT_SUFFIX, width))
    return "\n".join([*lines, *reason_lines(table, width)])


def report_command(args) -> int:
    """``hpsearch report``: the fitted table and the summary on stdout; ``--csv`` / ``--json``
    write every column (the JSON with the summary, hpsearch.results.records)."""
    width = text.terminal_width()
    run = read_run(args.run_dir)
    table = build_table(run)
    summary = summarize(run, table)
    print(format_table(table, all_columns=args.all_columns, width=width))
    print()
    print(render(summary, width))
    if args.csv:
        table.to_csv(args.csv, index=False)
        print(text.wrap_all([f"wrote {args.csv}"], width))
    if args.json:
        Path(args.json).write_text(report_json(table, summary), encoding="utf-8")
        print(text.wrap_all([f"wrote {args.json}", f"  ({READ_CALL} reads it back exactly)"], width))
    return 0
