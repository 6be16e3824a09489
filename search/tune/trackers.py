"""The trackers a search logs its trials to when the config's ``log`` section asks (off by default):

    log:
      tensorboard: true            # event files in each trial's folder: tensorboard --logdir RUN_DIR
      mlflow: true                 # one MLflow run per trial, in a file store at RUN_DIR/mlruns
      # mlflow: {tracking_uri: http://mlflow:5000, experiment: my-search}

Both are Ray Tune's own logger callbacks. TensorBoard is Tune's ``TBXLoggerCallback`` unchanged:
every numeric value of a report becomes a scalar ``ray/tune/<key>`` at step ``training_iteration``
(the epoch), strings such as ``health`` are left out, and the trial's searched values go to the
HPARAMS tab when it ends; Tune writes the files in its staging folder and copies them into the run
dir with each snapshot of the search. MLflow is Tune's ``MLflowLoggerCallback`` with what hpsearch
adds: the trial's seed as a param (with its searched values), every numeric value of each report
as a metric at step ``training_iteration`` (not the config, which is in the params), and the
trial's ``outcome`` and ``reason`` from the run's OutcomeLog as tags when it ends
(hpsearch.tune.mlflow_trials, imported only when asked for). The callbacks run after
hpsearch.tune.progress.OutcomeRecorder, so an outcome is on record by then: the scheduler records
a pruning before Tune stops the trial, the recorder ``completed`` and ``error``.

Whether the tracker's library is installed is checked before Ray starts
(hpsearch.driver.preflight.check_trackers).
"""

from __future__ import annotations

from pathlib import Path

from ray.tune import Callback

from hpsearch.core.rundir import OutcomeLog
from hpsearch.core.sections import LogConfig, MlflowConfig

MLFLOW_STORE = "mlruns"        # the default MLflow file store, in the run dir


def mlflow_uri(settings: MlflowConfig, run_dir: Path) -> str:
    """The MLflow tracking URI: the one configured, or a file store in the run dir (resume
    finds it there again)."""
    return settings.tracking_uri or (Path(run_dir).resolve() / MLFLOW_STORE).as_uri()


def make_trackers(log: LogConfig, run_dir: Path, run_name: str, outcomes: OutcomeLog) -> list[Callback]:
    """The Tune callbacks for the trackers ``log`` asks for (none by default). MLflow's experiment
    is ``log.mlflow.experiment``, or the run's name. MLflow (seconds of imports) is imported only
    when asked for."""
    from ray.tune.logger import TBXLoggerCallback

    callbacks: list[Callback] = []
    if log.tensorboard:
        callbacks.append(TBXLoggerCallback())
    if log.mlflow is not None:
        from hpsearch.tune.mlflow_trials import MlflowTrials

        callbacks.append(MlflowTrials(outcomes, mlflow_uri(log.mlflow, run_dir),
                                      log.mlflow.experiment or run_name, run_name))
    return callbacks
