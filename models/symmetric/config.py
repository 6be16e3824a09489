"""The symmetric model's settings and declarations, importable without torch, so a bad config is
refused in a fraction of a second, before anything heavy is loaded.

``Config`` is parsed by :func:`hpsearch.models.config.parse`; ``objective``, ``reported`` and ``collapse``
are the declarations of models/api.py, read by the registry without importing the model.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

from hpsearch.models.config import ConfigError, bounds
from hpsearch.models.symmetric.stories import split_sizes

COMPONENTS = ("parse", "generate", "cycle_forward", "cycle_backward")   # the loss's named parts


@dataclass(frozen=True)
class SymmetricConfig:
    num_stories: int = field(default=1000, metadata=bounds(ge=10, doc="generated stories"))
    data_dir: str | None = None  # a .jsonl file or a directory of them; None: generated stories
    val_fraction: float = field(default=0.15, metadata=bounds(gt=0, lt=0.5))
    test_fraction: float = field(default=0.15, metadata=bounds(gt=0, lt=0.5))
    batch_size: int = field(default=32, metadata=bounds(ge=1))
    lr: float = field(default=3e-4, metadata=bounds(gt=0))
    hidden_dim: int = field(default=128, metadata=bounds(ge=2))
    num_rules: int = field(default=16, metadata=bounds(ge=1))
    w_parse: float = field(default=1.0, metadata=bounds(ge=0))
    w_generate: float = field(default=1.0, metadata=bounds(ge=0))
    w_cycle: float = field(default=0.5, metadata=bounds(ge=0))
    grad_clip: float = field(default=1.0, metadata=bounds(ge=0, doc="max gradient norm; 0: no clipping"))
    cpu_threads: int = field(default=1, metadata=bounds(ge=0, doc="torch threads on CPU; 0: leave as is"))

    def validate(self, where: str = "") -> None:
        if self.w_parse == 0 and self.w_generate == 0 and self.w_cycle == 0:
            raise ConfigError(f"{where}w_parse, {where}w_generate, {where}w_cycle: got 0.0, 0.0, 0.0; "
                              "expected at least one weight > 0 (otherwise nothing is trained)")
        name = "data_dir" if self.data_dir is not None else "num_stories"
        count = (_check_data_dir(self.data_dir, *_stamp(self.data_dir), where=f"{where}data_dir")
                 if self.data_dir is not None else self.num_stories)
        train, val, test = split_sizes(count, self.val_fraction, self.test_fraction)
        if train < 1:
            raise ConfigError(f"{where}{name}: {count} stories leave none for training after the split "
                              f"({val} for validation at val_fraction {self.val_fraction}, {test} for test at "
                              f"test_fraction {self.test_fraction}); expected more stories or smaller fractions")


def _stamp(path: str) -> tuple[int, int]:
    try:
        stat = Path(path).stat()
    except OSError:
        return (0, 0)
    return stat.st_mtime_ns, stat.st_size


@functools.lru_cache(maxsize=8)
def _check_data_dir(path: str, mtime_ns: int, size: int, where: str) -> int:
    """Read and validate once per file version (configs are parsed many times)."""
    from hpsearch.models.symmetric.data import read_data_dir  # the data module brings torch

    return len(read_data_dir(path, where))


PARSE_KEYS = ("entity_acc", "relation_acc", "value_acc", "fact_acc", "exact", "any")
EVAL_KEYS = ("loss", *PARSE_KEYS, "gen_token_acc", "gen_exact", "cycle_acc", "rules_used")
TRAIN_KEYS = ("train_loss", *(f"train_loss_{c}" for c in COMPONENTS), "train_grad_norm",
              "train_batch_loss_std")


Config = SymmetricConfig
objective = ("val_fact_acc", "max")
reported = (*TRAIN_KEYS, *(f"val_{k}" for k in EVAL_KEYS), *(f"test_{k}" for k in EVAL_KEYS))
collapse: dict[str, float] = {}
