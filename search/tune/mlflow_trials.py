"""MLflow for a search whose ``log`` section asks for it (hpsearch.tune.trackers.make_trackers):
Tune's MLflow logger with the trial's seed, outcome and reason. A module of its own, so a search
without MLflow never imports it (seconds, with MLflow 3).
"""

from __future__ import annotations

import os
from typing import Any

from ray.air.integrations.mlflow import MLflowLoggerCallback

from hpsearch.core.rundir import OutcomeLog


def allow_file_store(tracking_uri: str) -> None:
    """MLflow 3 refuses a file store (a path or a ``file:`` URI) unless ``MLFLOW_ALLOW_FILE_STORE``
    is set. It is hpsearch's default store, and what a path in ``log.mlflow.tracking_uri`` asks
    for, so it is allowed in this process, unless the variable is set already."""
    if "://" not in tracking_uri or tracking_uri.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")


class MlflowTrials(MLflowLoggerCallback):
    """Tune's MLflow logger, one MLflow run per trial (tagged ``trial_name`` and ``trial_id``), plus
    the trial's seed as a param and its outcome and reason as tags. The run of a trial the search
    stopped short of its end (a signal) ends as KILLED; ``hpsearch resume`` continues the trial in a
    new run of the same experiment, with the same tags."""

    def __init__(self, outcomes: OutcomeLog, tracking_uri: str, experiment: str, run_name: str):
        super().__init__(tracking_uri=tracking_uri, experiment_name=experiment, tags={"hpsearch_run": run_name})
        self.outcomes, self.run_name = outcomes, run_name
        self._run_ids: dict[str, str] = {}       # trial_id -> this session's MLflow run of the trial
        self._seeded: set[str] = set()           # trials whose seed is logged
        self._open: set[str] = set()             # trials whose run this session started and has not ended

    def setup(self, *args: Any, **kwargs: Any) -> None:
        allow_file_store(self.tracking_uri)
        super().setup(*args, **kwargs)

    def _client(self) -> Any:
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri)

    def _run_id(self, trial: Any) -> str | None:
        """The MLflow run Tune started for ``trial`` in this session: the newest of this search's
        runs tagged with its name."""
        if trial.trial_id not in self._run_ids:
            client = self._client()
            experiment = client.get_experiment_by_name(self.experiment_name)
            if experiment is None:
                return None
            mine = f"tags.trial_name = '{trial}' and tags.hpsearch_run = '{self.run_name}'"
            runs = client.search_runs([experiment.experiment_id], filter_string=mine,
                                      order_by=["attributes.start_time DESC"], max_results=1)
            if not runs:
                return None
            self._run_ids[trial.trial_id] = runs[0].info.run_id
        return self._run_ids[trial.trial_id]

    def log_trial_start(self, trial: Any) -> None:
        super().log_trial_start(trial)
        run_id = self._run_id(trial)
        if run_id is not None:
            self._client().set_tag(run_id, "trial_id", trial.trial_id)
            self._open.add(trial.trial_id)

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        # the config is logged as params; Tune would also log it as metrics config/<name>
        super().log_trial_result(iteration, trial, {k: v for k, v in result.items() if k != "config"})
        seed = result.get("seed")
        if seed is None or trial.trial_id in self._seeded:
            return
        run_id = self._run_id(trial)
        if run_id is not None:
            self._client().log_param(run_id, "seed", seed)
            self._seeded.add(trial.trial_id)

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        entry = self.outcomes.get(trial.trial_id)
        run_id = self._run_id(trial)
        if entry is not None and run_id is not None:
            client = self._client()
            client.set_tag(run_id, "outcome", entry["outcome"])
            client.set_tag(run_id, "reason", entry.get("reason") or "")
        self._open.discard(trial.trial_id)
        super().log_trial_end(trial, failed)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        """A search stopped before its trials ended (a signal): their runs end as KILLED, not left
        RUNNING; ``hpsearch resume`` continues each such trial in a new run."""
        for trial in trials:
            run_id = self._run_ids.get(trial.trial_id)
            if trial.trial_id in self._open and run_id is not None:
                self._client().set_terminated(run_id, status="KILLED")
        self._open.clear()
        super().on_experiment_end(trials, **info)
