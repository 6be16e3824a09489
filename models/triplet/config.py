"""The triplet model's settings and declarations, importable without torch or numpy, so a bad
config is refused in a fraction of a second, before anything heavy is loaded.

``Config`` is parsed by :func:`models.config.parse`; ``objective``, ``reported`` and ``collapse``
are the declarations of models/api.py, read by the registry without importing the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from models.config import ConfigError, bounds

KS = (1, 2, 4, 8)   # recall@k reported for these k


@dataclass(frozen=True)
class TripletConfig:
    # data: synthetic (data_dir null) or an .npz / image folder
    data_dir: str | None = None
    data_seed: int | None = field(default=None, metadata=bounds(ge=0, doc="null: the run's seed"))
    num_classes: int = field(default=16, metadata=bounds(ge=2, doc="synthetic data"))
    samples_per_class: int = field(default=500, metadata=bounds(ge=2, doc="synthetic data"))
    input_dim: int = field(default=32, metadata=bounds(ge=2, doc="synthetic data"))
    image_size: int = field(default=32, metadata=bounds(ge=8, le=512, doc="image folders"))
    split: Literal["samples", "classes"] = "samples"
    val_fraction: float = field(default=0.2, metadata=bounds(gt=0, lt=1))
    test_fraction: float = field(default=0.2, metadata=bounds(ge=0, lt=1))
    # batches: pk draws P = batch_size // k classes × k samples; random deals one sample per class
    sampler: Literal["pk", "random"] = "pk"
    batch_size: int = field(default=64, metadata=bounds(ge=2))
    k: int = field(default=4, metadata=bounds(ge=2, doc="samples per class in a pk batch"))
    # loss
    mining: Literal["batch_all", "batch_hard", "semi_hard"] = "batch_all"
    margin: float = field(default=0.2, metadata=bounds(gt=0, le=2, doc="distances lie in [0, 2]"))
    # net and optimiser
    hidden_dim: int = field(default=128, metadata=bounds(ge=1))
    embedding_dim: int = field(default=32, metadata=bounds(ge=1))
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = field(default=2e-3, metadata=bounds(gt=0, le=10))
    weight_decay: float = field(default=0.0, metadata=bounds(ge=0))

    def validate(self, where: str = "params.") -> None:
        if self.val_fraction + self.test_fraction >= 1:
            raise ConfigError(f"{where}test_fraction: got {self.test_fraction}, expected val_fraction + "
                              f"test_fraction < 1 (val_fraction is {self.val_fraction})")
        if self.sampler == "pk" and self.batch_size % self.k:
            raise ConfigError(f"{where}batch_size: got {self.batch_size}, expected a multiple of "
                              f"k={self.k} with sampler 'pk' (a batch is P = batch_size // k classes × k)")
        if self.sampler == "pk" and self.batch_size // self.k < 2:
            raise ConfigError(f"{where}batch_size: got {self.batch_size}, expected at least 2 × k = "
                              f"{2 * self.k} with sampler 'pk' (a batch needs 2 classes for negatives)")
        if self.data_dir is None:
            names = tuple(str(c) for c in range(self.num_classes))
            counts = (self.samples_per_class,) * self.num_classes
        else:
            from models.triplet.data import inspect_source  # reads the files: numpy, Pillow

            source = inspect_source(self.data_dir, f"{where}data_dir")
            names, counts = source.class_names, source.class_counts
        data = f"{where}data_dir" if self.data_dir else f"{where}samples_per_class"
        check_class_counts(names, counts, self, data, prefix=where)


TRAIN_KEYS = ("train_loss", "train_loss_triplet", "train_active_triplets", "train_triplets",
              "train_pos_dist", "train_neg_dist", "train_emb_norm", "train_emb_std", "train_grad_norm",
              "train_batch_loss_std")
VAL_KEYS = tuple(f"val_recall_at_{k}" for k in KS) + ("val_map_at_r",)


Config = TripletConfig
objective = ("val_recall_at_1", "max")
reported = TRAIN_KEYS + VAL_KEYS
# at or below the floor for `patience` epochs means collapsed: every embedding in the same place,
# or not one valid triplet mined (no batch holds a positive pair: nothing to learn from). Zero
# *active* triplets is not collapse: a perfect fit satisfies every margin.
collapse = {"train_emb_std": 1e-3, "train_triplets": 0.0}


def split_counts(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int, int]:
    """(train, val, test) sizes for ``n`` items; the same arithmetic for samples and for classes."""
    n_val = int(math.floor(n * val_fraction + 0.5))
    n_test = int(math.floor(n * test_fraction + 0.5))
    return n - n_val - n_test, n_val, n_test


def check_class_counts(names: tuple[str, ...], counts: tuple[int, ...], cfg, where: str,
                       prefix: str = "params.") -> None:
    """Refuse, before any training, data that the split and sampler settings cannot use.

    ``cfg`` is the model's config (split, val_fraction, test_fraction, sampler, batch_size, k);
    ``where`` names the data (``params.data_dir`` or ``params.samples_per_class``).
    """
    pk = cfg.sampler == "pk"
    p = cfg.batch_size // cfg.k
    if len(counts) < 2:
        raise ConfigError(f"{where}: found {len(counts)} class; expected at least 2")
    if cfg.split == "classes":
        n_train, n_val, n_test = split_counts(len(counts), cfg.val_fraction, cfg.test_fraction)
        if n_val < 1 or (cfg.test_fraction > 0 and n_test < 1):
            raise ConfigError(f"{where}: {len(counts)} classes with split 'classes' and val_fraction "
                              f"{cfg.val_fraction}, test_fraction {cfg.test_fraction} leave "
                              f"{n_val} validation and {n_test} test classes; expected at least 1 each")
        if n_train < 2:
            raise ConfigError(f"{where}: split 'classes' leaves {n_train} training classes; expected at least 2")
        if pk and n_train < p:
            raise ConfigError(f"{prefix}batch_size: got {cfg.batch_size}, expected at most {n_train * cfg.k}: "
                              f"P = batch_size // k = {p} classes per batch, but split 'classes' leaves "
                              f"{n_train} training classes")
        small = [(name, c) for name, c in zip(names, counts) if c < 2 or (pk and c < cfg.k)]
        if small:
            name, c = small[0]
            need = max(2, cfg.k if pk else 2)
            raise ConfigError(f"{where}: class {name!r} has {c} samples, fewer than {need}"
                              + (f" (sampler 'pk' draws k={cfg.k} per class)" if pk else "")
                              + "; add samples, lower k or drop the class")
        n_rows = sum(counts) * n_train // len(counts)
    else:
        sizes = [split_counts(c, cfg.val_fraction, cfg.test_fraction) for c in counts]
        if pk:
            for name, c, (tr, _, _) in zip(names, counts, sizes):
                if tr < cfg.k:
                    raise ConfigError(f"{where}: class {name!r} has {tr} training samples (of {c}), fewer "
                                      f"than k={cfg.k} (sampler 'pk' draws k per class); add samples, "
                                      "lower k or val_fraction, or use sampler 'random'")
            if len(counts) < p:
                raise ConfigError(f"{prefix}batch_size: got {cfg.batch_size}, expected at most "
                                  f"{len(counts) * cfg.k}: P = batch_size // k = {p} classes per batch, "
                                  f"but the data has {len(counts)} classes")
        if not any(va >= 2 for _, va, _ in sizes):
            raise ConfigError(f"{where}: val_fraction {cfg.val_fraction} leaves no class with 2 validation "
                              "samples, so retrieval cannot be measured; raise val_fraction")
        if cfg.test_fraction > 0 and not any(te >= 2 for _, _, te in sizes):
            raise ConfigError(f"{where}: test_fraction {cfg.test_fraction} leaves no class with 2 test "
                              "samples, so retrieval cannot be measured; raise test_fraction or set it to 0")
        n_rows = sum(tr for tr, _, _ in sizes)
    if n_rows < cfg.batch_size:
        raise ConfigError(f"{where}: about {n_rows} training samples, fewer than batch_size "
                          f"{cfg.batch_size}; lower batch_size")
