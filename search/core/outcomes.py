"""How a trial ended, and how a search ended: the one list of names every layer uses.

``Outcome`` is a ``str`` enum, so a member is written to JSON, compared and printed as its plain
name (``Outcome.COMPLETED == "completed"``); the tuples below group the names by what may be done
with a trial's objective.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path


class Outcome(str, Enum):
    COMPLETED = "completed"
    PRUNED_ASHA = "pruned_asha"
    PRUNED_FLATLINE = "pruned_flatline"
    PRUNED_EXPLODING = "pruned_exploding"
    PRUNED_NONFINITE = "pruned_nonfinite"
    PRUNED_COLLAPSED = "pruned_collapsed"
    ERROR = "error"
    RUNNING = "running"

    def __str__(self) -> str:
        return self.value


OUTCOMES_ALL = tuple(o.value for o in Outcome)
# stopped by a health rule: their objective never ranks a trial, and the sampler never learns it as a value
HEALTH_OUTCOMES = ("pruned_flatline", "pruned_exploding", "pruned_collapsed", "pruned_nonfinite")
# whose objective can be trusted to rank trials: a health-pruned trial's objective (a flatline that
# ranked first, a NaN) never makes it "best", and an errored trial's never does
RANKED = ("completed", "pruned_asha", "running")
# ended normally: their objective is a fair verdict on the config
FINISHED = ("completed", "pruned_asha")
# the training itself went wrong at this config
DIVERGED = ("pruned_exploding", "pruned_nonfinite")
# the health verdict (search.core.health) each health outcome stands for
VERDICT_OUTCOME = {"flatline": "pruned_flatline", "exploding": "pruned_exploding",
                   "collapsed": "pruned_collapsed", "nonfinite": "pruned_nonfinite"}

# a whole search, in run.json
RUN_JSON = "run.json"
RUN_STATES = ("running", "finished", "interrupted")


def recorded_state(run_dir: str | Path) -> str | None:
    """The state run.json records for the search in ``run_dir`` (one of RUN_STATES), or None when
    the file is missing or unreadable, is not a JSON object, or holds no such state."""
    try:
        info = json.loads((Path(run_dir) / RUN_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):                   # missing, unreadable, not UTF-8, not JSON
        return None
    state = info.get("state") if isinstance(info, dict) else None
    return state if state in RUN_STATES else None


__all__ = ["DIVERGED", "FINISHED", "HEALTH_OUTCOMES", "OUTCOMES_ALL", "RANKED", "RUN_JSON", "RUN_STATES",
           "VERDICT_OUTCOME", "Outcome", "recorded_state"]
