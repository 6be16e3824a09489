"""hpsearch: hyperparameter search on Ray Tune and Optuna that prunes flatlined, exploding and NaN
trials and says why.

From Python (hpsearch.api)::

    import hpsearch

    run = hpsearch.run("configs/quickstart.yaml", epochs=3)   # a Run: report(), best, export(), plot()
    hpsearch.load("runs/<name>").report()                     # a run dir read back, never unpickled
    hpsearch.train("runs/<name>/best/1_<trial>/config.yaml")  # one config without Ray: its metrics

From a shell: the ``hpsearch`` command (hpsearch.cli). Importing the package imports neither torch
nor Ray.
"""

from importlib.metadata import version

from hpsearch.api import Best, Run, load, run, train
from hpsearch.models.config import ConfigError

__version__ = version("hpsearch")

__all__ = ["Best", "ConfigError", "Run", "__version__", "load", "run", "train"]
