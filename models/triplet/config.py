"""The triplet model's settings and declarations, importable without torch or numpy, so a bad
config is refused in a fraction of a second, before anything heavy is loaded.

``Config`` is parsed by :func:`hpsearch.models.config.parse`; ``objective``, ``reported`` and ``collapse``
are the declarations of models/api.py, read by the registry without importing the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from hpsearch.models.config import ConfigError, bounds
from hpsearch.models.triplet.splits import check_class_counts

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
    # inputs: z-scores with training statistics; a feature at one value in most rows (a border
    # pixel) is scaled so that its rare values land within max_z (data.py standardise)
    max_z: float | None = field(default=6.0, metadata=bounds(ge=1, doc="null: plain z-scores"))
    # batches: pk draws P = batch_size // k classes (at most the training classes) × k samples;
    # random deals one sample per class
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
            from hpsearch.models.triplet.data import inspect_source  # reads the files: numpy, Pillow

            source = inspect_source(self.data_dir, f"{where}data_dir")
            names, counts = source.class_names, source.class_counts
        data = f"{where}data_dir" if self.data_dir else f"{where}samples_per_class"
        check_class_counts(names, counts, self, data)


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


