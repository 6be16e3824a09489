"""The report's summary: counts per outcome, compute saved, the best trial, parameter importance
and diagnoses; and the readable table ``hpsearch report`` prints."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

from hpsearch.core.numbers import finite, fmt, one_line
from hpsearch.core.objective import direction
from hpsearch.core.outcomes import FINISHED, OUTCOMES_ALL, RANKED
from hpsearch.core.rundir import STUDY_FILE, STUDY_NAME, study_storage
from hpsearch.results.diagnose import diagnose
from hpsearch.results.report import Run, build_table, read_run

COMPACT_METRICS = ("train_loss",)
REASON_WIDTH = 60


def importance(run: Run, table) -> tuple[dict[str, float], str]:
    """(parameter -> importance, where it came from). Optuna's default evaluator over the complete
    trials of the stored study; over the report's finished trials (objective_best) when the study is
    missing, unreadable or holds fewer than two complete trials."""
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
            if len(complete) >= 2 and params:
                values = optuna.importance.get_param_importances(study, params=params)
                return dict(values), f"{len(complete)} complete trials of the study in {STUDY_FILE}"
            note = f"{STUDY_FILE} holds {len(complete)} complete trials"
        except Exception as err:   # a damaged or foreign journal: the report's rows still serve
            note = f"{STUDY_FILE} could not be read ({type(err).__name__}: {one_line(err, 80)})"
    return _importance_from_table(run, table, note)


def _importance_from_table(run: Run, table, note: str) -> tuple[dict[str, float], str]:
    import optuna

    from hpsearch.core.space import parse_spec

    specs = {name: parse_spec(name, run.raw["space"][name]) for name in run.space}
    distributions = {name: spec.to_optuna() for name, spec in specs.items()}
    study = optuna.create_study(direction=direction(run.mode))
    for _, row in table[table["outcome"].isin(FINISHED)].iterrows():
        value = row["objective_best"]
        params = {name: _plain(row.get(f"config/{name}")) for name in run.space}
        if not finite(value) or any(v is None for v in params.values()):
            continue
        params = {n: (int(v) if specs[n].kind == "int" else v) for n, v in params.items()}
        if not all(specs[n].contains(v) for n, v in params.items()):
            continue
        study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, value=float(value)))
    used = len(study.trials)
    source = f"the report's {used} finished trials (objective_best); {note}"
    if used < 2:
        return {}, f"needs at least 2 finished trials; {source}"
    return dict(optuna.importance.get_param_importances(study)), source


def summarize(run: Run, table) -> dict[str, Any]:
    """Plain data (JSON-safe): what ``hpsearch report`` prints under the table."""
    counts = Counter(table["outcome"])
    ordered = {o: counts[o] for o in OUTCOMES_ALL if counts[o]}
    ordered.update({o: n for o, n in counts.items() if o not in ordered})
    spent = int(table["epochs"].fillna(0).sum())
    trials = max(run.num_samples, len(table))
    budget = trials * run.max_epochs
    best = None
    ranked = table[[finite(v) and o in RANKED for v, o in zip(table["objective_best"], table["outcome"])]]
    if not ranked.empty:
        top = ranked.iloc[0]
        best = {"trial_id": top["trial_id"], "outcome": top["outcome"], "value": float(top["objective_best"]),
                "epoch": int(top["best_epoch"]),
                "config": {c[len("config/"):]: _plain(top[c]) for c in table.columns if c.startswith("config/")}}
    values, source = importance(run, table)
    params = run.raw.get("params") or {}
    return {
        "run_dir": str(run.path), "model": run.model, "objective": run.metric, "mode": run.mode,
        "state": run.state, "trials": len(table), "outcomes": ordered,
        "running": int(counts["running"]), "epochs_spent": spent, "epoch_budget": budget,
        "budget_trials": trials, "max_epochs": run.max_epochs,
        "compute_saved": (1 - spent / budget) if budget else 0.0,
        "best": best, "importance": values, "importance_source": source,
        "diagnoses": diagnose(table, params if isinstance(params, dict) else {}),
    }


def _plain(value: Any) -> Any:
    """A table cell as plain JSON-safe data: a numpy scalar as its Python value, NaN as None."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def render(summary: dict[str, Any]) -> str:
    lines = [f"run {summary['run_dir']} · model {summary['model']} · objective {summary['objective']} "
             f"({summary['mode']}) · state {summary['state']}"]
    counts = ", ".join(f"{o} {n}" for o, n in summary["outcomes"].items())
    lines.append(f"trials: {summary['trials']}" + (f" — {counts}" if counts else ""))
    if summary["state"] == "interrupted":
        lines.append(f"the run was interrupted: {summary['running']} trial(s) without an outcome are shown as "
                     f"running; `hpsearch resume {summary['run_dir']}` continues it")
    lines.append(f"epochs: {summary['epochs_spent']} of {summary['epoch_budget']} without pruning "
                 f"({summary['budget_trials']} trials × {summary['max_epochs']} epochs): "
                 f"{summary['compute_saved']:.0%} of the compute saved")
    best = summary["best"]
    if best is None:
        lines.append("best: no trial has a finite objective yet")
    else:
        config = " ".join(f"{k}={fmt(v)}" for k, v in best["config"].items())
        lines.append(f"best: {best['trial_id']} ({best['outcome']}) {summary['objective']} {best['value']:.6g} "
                     f"at epoch {best['epoch']}" + (f" · {config}" if config else ""))
    if summary["importance"]:
        ranked = sorted(summary["importance"].items(), key=lambda kv: -kv[1])
        lines.append(f"importance for {summary['objective']} (over {summary['importance_source']}): "
                     + ", ".join(f"{k} {v:.2f}" for k, v in ranked))
    else:
        lines.append(f"importance: not computed ({summary['importance_source']})")
    if summary["diagnoses"]:
        lines.append("diagnoses:")
        lines.extend(f"  - {d}" for d in summary["diagnoses"])
    return "\n".join(lines)


def format_table(table, all_columns: bool = False) -> str:
    """The table as text: compact by default (ids, outcome, objective, searched params, train_loss,
    time, reason), every column with ``all_columns``."""
    import pandas as pd

    if table.empty:
        return "(no trials yet)"
    if all_columns:
        shown = table
    else:
        keep = ["trial_id", "outcome", "epochs", "objective_best", "best_epoch", "objective_last",
                *[c for c in table.columns if c.startswith("config/")],
                *[c for c in COMPACT_METRICS if c in table.columns], "time_s", "reason"]
        shown = table[keep].copy()
        shown["reason"] = [r if len(r) <= REASON_WIDTH else r[:REASON_WIDTH - 1] + "…" for r in shown["reason"]]
    metric = table.attrs.get("objective", "objective")
    with pd.option_context("display.max_columns", None, "display.width", 250, "display.max_colwidth", 200,
                           "display.float_format", fmt):
        return f"objective = {metric} ({table.attrs.get('mode', '')})\n" + shown.to_string(index=False)


def report_command(args) -> int:
    run = read_run(args.run_dir)
    table = build_table(run)
    summary = summarize(run, table)
    print(format_table(table, all_columns=args.all_columns))
    print()
    print(render(summary))
    if args.csv:
        table.to_csv(args.csv, index=False)
        print(f"wrote {args.csv}")
    if args.json:
        records = json.loads(table.to_json(orient="records"))
        Path(args.json).write_text(json.dumps({"summary": summary, "trials": records}, indent=2,
                                              default=str), encoding="utf-8")
        print(f"wrote {args.json}")
    return 0
