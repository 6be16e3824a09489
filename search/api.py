"""hpsearch from Python: a search run, resumed or read back, and one config trained, with the same
checks, files and one-line errors as the ``hpsearch`` command.

    import hpsearch

    run = hpsearch.run("configs/quickstart.yaml", epochs=3, budget={"num_samples": 4})
    run.report()                      # the DataFrame `hpsearch report` prints
    run.best.row, run.best.config     # the best trial's row, and a config that trains it alone
    folders = run.export()            # RUN_DIR/best/1_<trial_id>/{config.yaml, model.pt}
    hpsearch.train(folders[0] / "config.yaml")      # the same objective again, without Ray
    hpsearch.load(run.run_dir).report()             # any run dir, read back later

A config is a YAML file's path or a dict of the same sections. Keyword overrides go on top: a dict
merges into the section of that name (its keys replace the section's), anything else sets that
top-level key. Everything else is the config's own checks (hpsearch.core.config), so a bad key or
value is refused with the one-line ConfigError the same YAML gets from the command, before Ray is
imported. Nothing here exits the process.

An interrupt (SIGINT: a notebook's interrupt button, Ctrl-C; or SIGTERM) while the search runs
stops it gracefully: its state is saved and ``run`` returns its Run with state "interrupted", which
``Run.resume()`` continues. An interrupt outside the search's loop (while Ray starts) raises
KeyboardInterrupt as usual; a run dir already made then says "interrupted" too.

The search, the results and torch are imported on first use, as the command's handlers are
(hpsearch.cli): ``import hpsearch``, which every ``hpsearch`` command does first, stays light.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from hpsearch.core import training
from hpsearch.core.config import RunConfig, build_config, read_config, trial_config
from hpsearch.core.numbers import as_float, finite, fmt
from hpsearch.core.outcomes import RANKED
from hpsearch.driver import preflight
from hpsearch.models.config import ConfigError

if TYPE_CHECKING:
    import pandas as pd

    from hpsearch.results.report import Run as RunRecord

DICT_SOURCE = "<dict>"        # a dict config's source in run.json
DICT_STEM = "search"          # a dict config's default run name: search-<date>-<time>
PLOTS = "plots"               # Run.plot's default folder in the run dir, as `hpsearch plot`'s


def read_source(config: str | os.PathLike[str] | Mapping[str, Any]) -> tuple[dict[str, Any], str, str]:
    """(the raw config, its source for messages and run.json, the stem of a default run name)."""
    if isinstance(config, Mapping):
        return dict(config), DICT_SOURCE, DICT_STEM
    if isinstance(config, (str, os.PathLike)):
        path = Path(config)
        return read_config(path), str(path), path.stem
    raise ConfigError(f"config: got {type(config).__name__}, expected a YAML file's path or a dict of sections")


def with_overrides(raw: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``raw`` with keyword overrides: a mapping merges into the section of that name (its keys
    replace the section's), anything else sets the key. Validation is the config's own."""
    out = dict(raw)
    for key, value in overrides.items():
        section = out.get(key)
        merge = isinstance(value, Mapping) and isinstance(section, Mapping)
        out[key] = {**section, **value} if merge else value
    return out


def call_text(function: str, config: Any, **arguments: Any) -> str:
    """The call as a user would type it, for run.json's ``command``."""
    shown = DICT_SOURCE if isinstance(config, Mapping) else repr(str(config))
    given = [f"{key}={value!r}" for key, value in arguments.items() if value is not None]
    return f"hpsearch.{function}({', '.join([shown, *given])})"


@dataclass(frozen=True, eq=False)    # a pandas Series has no single truth value to compare by
class Best:
    """A run's best trial: its report row, and a config that trains it alone (``hpsearch.train``).
    Retraining it reaches the same objective when torch uses the trial's thread count; ``Run.export``
    writes configs that carry it."""
    row: pd.Series              # the report's columns
    config: dict[str, Any]      # search.yaml with the trial's searched values, seed and ranked epoch
    column: str = "objective_best"  # the report column that ranked it (objective.rank)

    @property
    def trial_id(self) -> str:
        return str(self.row["trial_id"])

    def __repr__(self) -> str:
        return (f"Best(trial_id={self.trial_id!r}, outcome={self.row['outcome']!r}, "
                f"{self.column}={fmt(as_float(self.row[self.column]))}, epochs={self.config['epochs']})")


def best_of(record: RunRecord, table: pd.DataFrame) -> Best | None:
    """The report's first row when its objective ranks trials (a completed, ASHA-pruned or running
    trial with a finite objective); None while no trial has one."""
    if table.empty:
        return None
    row = table.iloc[0]
    if row["outcome"] not in RANKED or not finite(record.rank_value(row)):
        return None
    trial = next(t for t in record.trials if t.trial_id == row["trial_id"])
    seed = as_float(row["seed"])
    config = trial_config(record.raw, trial.config, None if seed is None else int(seed), int(record.rank_epoch(row)))
    return Best(row=row, config=config, column=record.rank_column)


class Run:
    """A search's run directory. Everything is read from its text files when asked (never a
    pickle), so a Run of a search still running elsewhere shows it as it is now."""

    def __init__(self, run_dir: str | Path, config: RunConfig | None = None) -> None:
        self.run_dir = Path(run_dir)
        self._config = config

    def _read(self) -> RunRecord:
        from hpsearch.results.report import read_run

        return read_run(self.run_dir)

    @property
    def name(self) -> str:
        return self.run_dir.name

    @property
    def state(self) -> str:
        """``running``, ``finished``, ``interrupted`` (also a run whose process was killed) or ``unknown``."""
        return self._read().state

    @property
    def config(self) -> RunConfig:
        """The search's validated config (the run dir's search.yaml, read once)."""
        if self._config is None:
            from hpsearch.core.rundir import SEARCH_YAML

            self._config = build_config(self._read().raw, source=str(self.run_dir / SEARCH_YAML), search=False)
        return self._config

    def report(self) -> pd.DataFrame:
        """One row per trial, best first: the pandas DataFrame ``hpsearch report`` prints
        (hpsearch.results.report)."""
        from hpsearch.results.report import build_table

        return build_table(self._read())

    @property
    def best(self) -> Best | None:
        """The best trial (``best_of``); None while no trial's objective ranks."""
        from hpsearch.results.report import build_table

        record = self._read()
        return best_of(record, build_table(record))

    def export(self, out: str | Path | None = None, top: int = 1, force: bool = False) -> list[Path]:
        """The ``top`` best finished trials' configs and weights, as ``hpsearch export`` writes them
        (default ``out``: RUN_DIR/best; one that holds files needs ``force``). Returns their folders;
        ``hpsearch.train(folder / "config.yaml")`` retrains one to the same objective."""
        from hpsearch.results.export import export

        return export(self.run_dir, top, out, force)

    def plot(self, out: str | Path | None = None, force: bool = False) -> list[Path]:
        """The PNGs ``hpsearch plot`` writes (default ``out``: RUN_DIR/plots; one that holds files
        needs ``force``). Returns their paths."""
        from hpsearch.results.plots import plot

        return plot(self.run_dir, out, force)

    def resume(self, address: str | None = None, *, stream: TextIO | None = None) -> Run:
        """Continue this interrupted search to its end, as ``hpsearch resume`` does (``address`` as
        for ``hpsearch.run``; with ``ray://`` the run dir is the path on the cluster). Returns this Run."""
        from hpsearch.driver.commands import resume_run_dir

        resume_run_dir(self.run_dir, address, stream)
        return self

    def __repr__(self) -> str:
        from hpsearch.results.report import build_table

        try:
            record = self._read()
        except ConfigError as err:
            return f"Run({self.name!r}, not readable here: {err})"
        table = build_table(record)
        counts = ", ".join(f"{n} {outcome}" for outcome, n in table["outcome"].value_counts().items())
        best = best_of(record, table)
        best_text = (f"; best {record.metric} {fmt(as_float(record.rank_value(best.row)))} "
                     f"(trial {best.trial_id})" if best is not None else "")
        return (f"Run({self.name!r}, {record.state}, {len(table)} trials" + (f": {counts}" if counts else "")
                + f"{best_text}; run_dir {str(self.run_dir)!r})")


def run(config: str | os.PathLike[str] | Mapping[str, Any], name: str | None = None, storage: str | None = None,
        address: str | None = None, *, stream: TextIO | None = None, **overrides: Any) -> Run:
    """Search ``config`` (a YAML path or a dict) with keyword ``overrides``, as ``hpsearch run``
    does: the same checks first (a one-line ConfigError), then the search in this process (or, with
    a ``ray://`` address, on the cluster's head). ``name``, ``storage`` and ``address`` are the
    command's options; ``stream`` takes the live table and the summary (default: sys.stdout): a
    view updated in place on a terminal, plain lines anywhere else (a notebook, a file, a pipe).
    Returns the Run, finished or interrupted."""
    from hpsearch.driver.commands import run_plan

    raw, source, stem = read_source(config)
    plan = preflight.plan_search(
        with_overrides(raw, overrides), source, name=name if name is not None else preflight.default_name(stem),
        storage=storage, address=address,
        command=call_text("run", config, name=name, storage=storage, address=address, **overrides))
    run_plan(plan, stream)
    return Run(plan.run_dir, plan.config)


def load(run_dir: str | Path) -> Run:
    """An existing run, read-only (hpsearch.results.report.read_run: text files, never a pickle); a
    ConfigError when ``run_dir`` is no run directory."""
    from hpsearch.results.report import read_run

    path = Path(run_dir).expanduser().resolve()
    read_run(path)
    return Run(path)


def train(config: str | os.PathLike[str] | Mapping[str, Any], out: str | Path | None = None, *,
          force: bool = False, **overrides: Any) -> dict[str, Any]:
    """Train one config (a YAML path, e.g. an exported config.yaml, or a dict) without Ray, as
    ``hpsearch train`` does, with keyword ``overrides`` as for ``run``. ``out`` gets model.pt,
    config.yaml and metrics.json (None: nothing is written). Returns the metrics (metrics.json's
    content); torch's thread count is as it was afterwards."""
    raw, source, _ = read_source(config)
    checked = build_config(with_overrides(raw, overrides), source=source, search=False)
    with training.torch_threads_kept():
        return training.train_config(checked, out, force)


__all__ = ["Best", "ConfigError", "Run", "load", "run", "train"]
