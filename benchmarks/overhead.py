"""Overhead: what the search machinery costs on top of the training it runs.

    .venv/bin/python -m benchmarks.overhead             # writes its sections of BENCHMARKS.md
    .venv/bin/python -m benchmarks.overhead --only wall # one part (each part has its own section)

1. Epoch time under the trainable vs a plain loop, per model: the same params trained by
   ``hpsearch.models.fit.fit`` in a fresh Python process of its own (one torch thread, as a trial
   has; not in this one, whose Ray driver threads from the searches before share its CPU) and as a
   one-trial ``hpsearch run`` (Ray's ``time_this_iter_s``: train, evaluate, health verdict, report,
   checkpoint), alternated 3 times, the ratio of each pair's medians; first epochs (model build)
   left out. Checkpoints every epoch (the default, and
   configs/triplet.yaml, symmetric.yaml), every 2 (configs/quickstart.yaml) and at the end only.
2. Search wall time vs the ideal (trial compute / 2 slots) for trials of ~0.7 s and ~3 s of compute:
   quickstart trials whose compute is measured in a plain loop here; no ASHA rungs, so every trial
   does the same work. Also the ~3 s trials with 2 torch threads per trial (resources.cpu 2).
3. Bookkeeping over trivial trials (benchmarks.toy.Trivial): wall per trial with and without actor
   reuse, per extra report, against Optuna alone (study.optimize, same TPE, HyperbandPruner).
4. Where the driver's time goes: cProfile of a search of trivial trials, grouped by package.
5. Peak memory: PSS summed over every process of ``hpsearch run`` (2 trials) against one
   ``hpsearch train`` process (benchmarks.memory).
6. The fixed cost of a search, warm workers against the start before them (benchmarks.startup).
7. Bookkeeping as a search grows to 10,000 trivial trials: wall per trial and driver memory per
   window of 1,000 (benchmarks.scaling).

Every search measured here starts on a new local Ray whose prestarted workers are done importing
(benchmarks.harness.fresh_ray), as a search started by ``hpsearch run`` finds it; starting Ray is
not counted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import harness, profiles, scaling, startup, worker_profile
from benchmarks.common import Stamp, command_line, fmt, log, out_path, table, verdict, write_section
from benchmarks.harness import trivial_config
from benchmarks.memory import peak_memory

SIZES = {
    # wall: (trial compute goal s, trials, CPUs per trial)
    "full": {"rounds": 3, "epochs": 6, "both_intervals": True,
             "wall": ((0.7, 24, 1), (3.5, 12, 1), (3.5, 12, 2)), "trivial": 1000, "trivial_algorithms": 1000,
             "trivial_noreuse": 40,
             "reports": 10, "report_trials": 100, "optuna_trials": 1000, "profile_trials": 200,
             "startup_rounds": 5, "scaling": (10000, 1000), "tpe_sizes": (1000, 5000, 10000)},
    "smoke": {"rounds": 1, "epochs": 2, "both_intervals": False, "wall": ((0.7, 2, 1),), "trivial": 2, "trivial_algorithms": 0,
              "trivial_noreuse": 0, "reports": 2, "report_trials": 0, "optuna_trials": 5, "profile_trials": 0,
              "startup_rounds": 1, "scaling": (20, 10), "tpe_sizes": (10, 20)},
}


def model_cases(smoke: bool) -> list[tuple[str, str, dict[str, Any]]]:
    """(label, model, params) of each built-in model at the benchmark's scale."""
    from hpsearch.models import BUILTIN

    quick = harness.quickstart()["params"]
    if smoke:
        return [("triplet (quickstart data, 20 per class)", "triplet", {**quick, "samples_per_class": 20})]
    cases = [("triplet (quickstart data)", "triplet", quick)]
    if "symmetric" in BUILTIN:
        cases.append(("symmetric (100 stories)", "symmetric", {"num_stories": 100}))
    return cases


def plain_epochs(model: str, params: dict[str, Any], epochs: int, threads: int = 1) -> tuple[float, list[float]]:
    """(build seconds, per-epoch seconds) of ``hpsearch.models.fit.fit`` in this process."""
    import torch

    from hpsearch import models
    from hpsearch.models.fit import fit
    from hpsearch.tune.trainable import trial_seed

    torch.set_num_threads(threads)
    began = time.perf_counter()
    torch.manual_seed(trial_seed(0, 1))
    instance = models.build(model, params, device="cpu", seed=trial_seed(0, 1))
    build = time.perf_counter() - began
    rows = fit(instance, epochs)
    return build, [r["epoch_s"] for r in rows]


def plain_epochs_apart(model: str, params: dict[str, Any], epochs: int) -> list[float]:
    """Per-epoch seconds of ``plain_epochs`` run in a fresh Python process (no Ray in it)."""
    code = ("import json, sys\nfrom benchmarks.overhead import plain_epochs\n"
            "print(json.dumps(plain_epochs(*json.loads(sys.argv[1]))[1]))")
    done = subprocess.run([sys.executable, "-c", code, json.dumps([model, params, epochs])], cwd=harness.ROOT,
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def trainable_epochs(work: Path, tag: str, raw: dict) -> tuple[list[float], list[float], float]:
    """(time_this_iter_s, the epoch_s the trial measured itself, search wall) of a one-trial search."""
    from hpsearch.results.report import read_run

    config = harness.write_config(work / f"{tag}.yaml", raw)
    plan = harness.plan_for(config, work / "runs", tag)
    wall, code = harness.run_search(plan)
    log(f"{tag}: one-trial search {wall:.1f} s")
    if code != 0:
        raise RuntimeError(f"{tag}: hpsearch run exited {code}")
    rows = read_run(plan.run_dir).trials[0].rows
    return [float(r["time_this_iter_s"]) for r in rows], [float(r["epoch_s"]) for r in rows], wall


def epoch_ratio(work: Path, size: dict, smoke: bool) -> tuple[str, list]:
    from hpsearch.core.config import CheckpointConfig, load_config

    default = CheckpointConfig().interval
    quick = load_config(harness.ROOT / "configs" / "quickstart.yaml").checkpoint.interval
    E = size["epochs"] + 1
    rows, checks, profiles = [], [], []
    for label, model, params in model_cases(smoke):
        for interval in sorted({default, quick, E}) if size["both_intervals"] else [default]:
            ratios, plain_med, tune_med, inside_med = [], [], [], []
            for r in range(size["rounds"]):
                plain = plain_epochs_apart(model, params, E)
                sample = interval == default and r == 0    # one worker profile per model, as shipped
                if sample:
                    harness.fresh_ray(model)                # its workers ready, so no imports in the profile
                with worker_profile.sampled(work) if sample else contextlib.nullcontext() as workers:
                    tuned, inside, _ = trainable_epochs(work, f"epoch-{model}-{interval}-{r}",
                                                        harness.model_config(model, params, E, interval))
                if sample:
                    profiles.append(worker_profile.describe(workers, f"the {label} trial, checkpoint every epoch"))
                p, t, i = statistics.median(plain[1:]), statistics.median(tuned[1:]), statistics.median(inside[1:])
                ratios.append(t / p)
                plain_med.append(p), tune_med.append(t), inside_med.append(i)
            ratio = statistics.median(ratios)
            what = "every epoch" if interval == 1 else ("at the end only" if interval >= E else f"every {interval} epochs")
            note = " (default)" if interval == default else (" (quickstart)" if interval == quick else "")
            rows.append([label, what + note,
                         f"{statistics.median(plain_med) * 1000:.0f}", f"{statistics.median(tune_med) * 1000:.0f}",
                         f"{(statistics.median(tune_med) - statistics.median(inside_med)) * 1000:.1f}",
                         fmt(ratio), f"{min(ratios):.3f}-{max(ratios):.3f}"])
            if interval == default:
                checks.append([f"trainable epoch / plain epoch, {label}", fmt(ratio), "<= 1.02", verdict(ratio, 1.02)])
    header = ["model", "checkpoint", "plain epoch ms", "trainable epoch ms",
              "adapter ms/epoch (report+health+ckpt)", "ratio (median)", "ratio range"]
    return table(header, rows) + "\n\n" + "\n\n".join(profiles), checks


def _plain_trial(params: dict[str, Any], epochs: int, threads: int, repeats: int) -> float:
    compute = []
    for _ in range(repeats):
        build, per_epoch = plain_epochs("triplet", params, epochs, threads=threads)
        compute.append(build + sum(per_epoch))
    return statistics.median(compute)


def wall_vs_ideal(work: Path, size: dict, smoke: bool) -> tuple[str, list]:
    """Quickstart trials of ~0.7 s and ~3 s compute against the ideal: Σ one-thread trial compute / 2
    cores. The ~3 s trials again with 2 CPUs (2 torch threads) per trial, one at a time, against the
    same ideal. A one-trial search of trivial trials gives the fixed cost of a search."""
    params = harness.quickstart()["params"]
    if smoke:
        params = {**params, "samples_per_class": 20}
    repeats = 1 if smoke else 3
    build, epochs = plain_epochs("triplet", params, 3)
    per_epoch = statistics.median(epochs)
    interval = harness.quickstart()["checkpoint"]["interval"]
    rows, checks, calibrated = [], [], {}
    for goal, n, cpu in size["wall"]:
        if goal not in calibrated:  # epochs for ~goal s of one-thread compute, checked once and rescaled
            E = max(1, round((goal - build) / per_epoch))
            trial_s = _plain_trial(params, E, 1, repeats)
            if not smoke and abs(trial_s - goal) > 0.25 * goal:
                E = max(1, round(E * goal / trial_s))
                trial_s = _plain_trial(params, E, 1, repeats)
            calibrated[goal] = (E, trial_s)
        E, trial_s = calibrated[goal]
        threads_s = trial_s if cpu == 1 else _plain_trial(params, E, cpu, repeats)
        raw = harness.model_config("triplet", params, E, interval, cpu=cpu)
        raw["budget"]["num_samples"] = n
        config = harness.write_config(work / f"wall-{goal}-{cpu}.yaml", raw)
        walls = []
        for r in range(repeats):          # each on a new Ray; the median, and the range beside it
            harness.fresh_ray()
            wall, code = harness.run_search(harness.plan_for(config, work / "runs", f"wall-{goal}-{cpu}-{r}"))
            log(f"wall: {n} trials of ~{goal} s, {cpu} cpu: {wall:.1f} s (plain trial {trial_s:.2f} s, "
                f"{threads_s:.2f} s with {cpu} threads)")
            if code != 0:
                raise RuntimeError(f"wall-{goal}-{cpu}: hpsearch run exited {code}")
            walls.append(wall)
        wall = statistics.median(walls)
        ideal = n * trial_s / 2
        ratio = wall / ideal
        slots = 2 // cpu
        rows.append([f"{trial_s:.2f} s ({E} epochs)", n, f"{cpu} ({slots} at a time)", f"{threads_s:.2f}",
                     f"{ideal:.1f}", f"{wall:.1f} ({min(walls):.1f}-{max(walls):.1f})", fmt(ratio),
                     f"{(wall - ideal) / n * slots:.2f}"])
        if cpu == 1:
            limit = 1.3 if goal < 1 else 1.1
            checks.append([f"search wall / ideal, {trial_s:.2f} s trials", fmt(ratio), f"<= {limit}",
                           verdict(ratio, limit)])
    fixed = harness.write_config(work / "wall-fixed.yaml", trivial_config(1, 1))
    harness.fresh_ray()
    fixed_s, _ = harness.run_search(harness.plan_for(fixed, work / "runs", "wall-fixed"))
    header = ["plain trial, 1 thread", "trials", "CPUs (threads) per trial", "plain trial with those threads s",
              "ideal s (1-thread compute / 2 cores)", f"search wall s (median of {repeats}, range)", "wall / ideal",
              "extra s per trial per slot"]
    text = table(header, rows)
    text += (f"\n\nFixed cost of a search (one trivial trial, 1 epoch, Ray up and its workers idle): "
             f"{fixed_s:.1f} s; it is part of every search wall above (the next section measures it apart).")
    return text, checks


def optuna_alone(trials: int, reports: int) -> float:
    """Seconds per trivial trial of study.optimize (TPE multivariate + HyperbandPruner, in memory)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0, multivariate=True),
                                pruner=optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(reports, 1)))

    def objective(trial: Any) -> float:
        x = trial.suggest_float("x", 0.0, 1.0)
        value = 0.0
        for step in range(1, reports + 1):
            value = x * step
            trial.report(value, step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return value

    began = time.perf_counter()
    study.optimize(objective, n_trials=trials)
    return (time.perf_counter() - began) / trials


def bookkeeping(work: Path, size: dict) -> tuple[str, list]:
    rows, checks = [], []
    runs = [("hpsearch, actor reuse (shipped: `auto`, rung-tpe)", size["trivial"], 1, True, "auto"),
            ("hpsearch, actor reuse, `algorithm: tpe`", size["trivial_algorithms"], 1, True, "tpe"),
            ("hpsearch, actor reuse, `algorithm: random`", size["trivial_algorithms"], 1, True, "random"),
            ("hpsearch, no actor reuse", size["trivial_noreuse"], 1, False, "auto"),
            (f"hpsearch, actor reuse, {size['reports']} reports per trial", size["report_trials"], size["reports"], True,
             "auto")]
    per_trial = {}
    for label, n, reports, reuse, algorithm in runs:
        if n == 0:  # the smoke run: the shipped search only
            continue
        tag = f"trivial-{n}-{reports}-{reuse}-{algorithm}"
        config = harness.write_config(work / f"{tag}.yaml", {**trivial_config(n, reports), "algorithm": algorithm})
        harness.fresh_ray()
        wall, code = harness.run_search(harness.plan_for(config, work / "runs", tag), reuse)
        if algorithm == "auto":
            per_trial[(reuse, reports)] = wall / n
        log(f"bookkeeping: {label}: {n} trials in {wall:.1f} s")
        if code != 0:
            raise RuntimeError(f"{label}: hpsearch run exited {code}")
        rows.append([label, n, reports, f"{wall:.1f}", f"{wall / n * 1000:.0f}"])
    for reports in (1, size["reports"]):
        seconds = optuna_alone(size["optuna_trials"], reports)
        per_trial[("optuna", reports)] = seconds
        rows.append([f"Optuna alone, {reports} report(s) per trial", size["optuna_trials"], reports,
                     f"{seconds * size['optuna_trials']:.1f}", f"{seconds * 1000:.1f}"])
    ms = per_trial[(True, 1)] * 1000
    checks.append([f"bookkeeping per trivial trial over {size['trivial']} trials (actor reuse)", f"{ms:.0f} ms",
                   "<= 25 ms", verdict(ms, 25)])
    text = table(["search", "trials", "reports per trial", "wall s", "ms per trial (wall / trials, 2 slots)"], rows)
    if (True, size["reports"]) in per_trial:
        per_report = (per_trial[(True, size["reports"])] - per_trial[(True, 1)]) / (size["reports"] - 1)
        text += (f"\n\nPer extra report (hpsearch, from the 1- and {size['reports']}-report runs): "
                 f"{per_report * 1000:.1f} ms of wall per report per trial.")
    return text, checks


PARTS = {  # part -> section title
    "epoch": "Overhead: epoch time under the trainable vs a plain loop",
    "wall": "Overhead: search wall time vs ideal (2 cores)",
    "bookkeeping": "Overhead: bookkeeping per trivial trial",
    "profile": "Overhead: where the driver's time goes",
    "memory": "Overhead: peak memory",
    "fixed": "Overhead: fixed cost of a search",
    "scaling": "Overhead: bookkeeping as a search grows",
}
NO_RAY_HERE = ("memory", "fixed")   # their own processes, each with its own Ray: before this one starts Ray


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (the smoke test)")
    parser.add_argument("--out", help="markdown file for the sections (default BENCHMARKS.md)")
    parser.add_argument("--only", nargs="*", choices=list(PARTS), help="run only these parts")
    args = parser.parse_args(argv)
    size = SIZES["smoke" if args.smoke else "full"]
    parts = sorted(args.only or list(PARTS), key=lambda p: p not in NO_RAY_HERE)
    harness.cwd_root()
    printed = []
    with tempfile.TemporaryDirectory(prefix="hpsearch-overhead-") as tmp:
        work = Path(tmp)
        ray_started = False
        for part in parts:  # memory first when asked: its own processes, before this one holds Ray
            stamp = Stamp(command_line("benchmarks.overhead", [*(["--smoke"] if args.smoke else []), "--only", part]))
            if part == "memory":
                text, checks = peak_memory(work, args.smoke)
            elif part == "fixed":
                text, checks = startup.measure(work, size["startup_rounds"])
            else:
                if not ray_started:
                    log(f"local Ray up in {harness.start_ray():.1f} s (not counted in any figure)")
                    ray_started = True
                if part == "epoch":
                    text, checks = epoch_ratio(work, size, args.smoke)
                elif part == "wall":
                    text, checks = wall_vs_ideal(work, size, args.smoke)
                elif part == "bookkeeping":
                    text, checks = bookkeeping(work, size)
                elif part == "scaling":
                    trials, window = size["scaling"]
                    text, checks = scaling.measure(work, trials, window, tpe_sizes=size["tpe_sizes"])
                else:
                    text = profiles.worker_and_driver(work, args.smoke)
                    if size["profile_trials"]:
                        harness.fresh_ray("triplet")
                        text = profiles.driver(work, size["profile_trials"]) + "\n\n" + text
                    checks = []
            log(f"{part} measured")
            if checks:
                text += "\n\n" + table(["target", "measured", "target", ""], checks)
            write_section(f"overhead-{part}", PARTS[part], text, stamp, out_path(args.out))
            printed.append(f"## {PARTS[part]}\n\n{text}")
    print("\n\n".join(printed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
