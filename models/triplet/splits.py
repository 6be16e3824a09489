"""How the triplet data splits into train, val and test, and the refusal of data the split and the
sampler cannot use: plain arithmetic shared by the config (checked before training) and the data
loader."""

from __future__ import annotations

import math

import numpy as np

from hpsearch.models.config import ConfigError


def split_counts(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int, int]:
    """(train, val, test) sizes for ``n`` items; the same arithmetic for samples and for classes."""
    n_val = int(math.floor(n * val_fraction + 0.5))
    n_test = int(math.floor(n * test_fraction + 0.5))
    return n - n_val - n_test, n_val, n_test


def class_order(n_classes: int, seed: int | np.random.Generator) -> list[int]:
    """The classes in the order ``split: classes`` deals them (train first, then val, then test): a
    permutation drawn first from ``default_rng(seed)`` (the data seed), or from a generator given."""
    return [int(i) for i in np.random.default_rng(seed).permutation(n_classes)]


def batch_classes(cfg, train_classes: int) -> int:
    """P, the classes in a ``pk`` batch: ``batch_size // k``, at most the classes the training split
    holds (3 classes and batch_size 64, k 4 give batches of 3 x 4 = 12)."""
    return min(cfg.batch_size // cfg.k, train_classes)


def _fitting_k(cfg, samples: int) -> int | None:
    """The largest k a class of ``samples`` training samples allows with this batch_size (k >= 2,
    a divisor of batch_size, at least 2 classes per batch); None when there is none."""
    for k in range(min(samples, cfg.batch_size // 2), 1, -1):
        if cfg.batch_size % k == 0:
            return k
    return None


def check_class_counts(names: tuple[str, ...], counts: tuple[int, ...], cfg, where: str) -> None:
    """Refuse, before any training, data that the split and sampler settings cannot use.

    ``cfg`` is the model's config (split, val_fraction, test_fraction, sampler, batch_size, k);
    ``where`` names the data (``params.data_dir`` or ``params.samples_per_class``). A ``pk`` batch
    asking for more classes than the training split holds is not refused: it draws them all
    (:func:`batch_classes`).
    """
    pk = cfg.sampler == "pk"
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
        small = [(name, c) for name, c in zip(names, counts) if c < 2 or (pk and c < cfg.k)]
        if small:
            name, c = min(small, key=lambda item: item[1])
            need = max(2, cfg.k if pk else 2)
            raise ConfigError(f"{where}: class {name!r} has {c} samples, fewer than {need}"
                              + (f" (sampler 'pk' draws k={cfg.k} per class)" if pk else "")
                              + f"; {_lower_k(cfg, c) if pk else ''}add samples or drop the class")
        if cfg.data_seed is not None:           # the split is fixed: the rows it leaves for training
            n_rows, fewest = sum(counts[i] for i in class_order(len(counts), cfg.data_seed)[:n_train]), ""
        else:                                   # the fewest it can leave: the run's seed draws the classes
            n_rows, fewest = sum(sorted(counts)[:n_train]), "as few as "
    else:
        sizes = [split_counts(c, cfg.val_fraction, cfg.test_fraction) for c in counts]
        if pk:
            short = [(name, c, tr) for name, c, (tr, _, _) in zip(names, counts, sizes) if tr < cfg.k]
            if short:
                name, c, tr = min(short, key=lambda item: item[2])
                raise ConfigError(f"{where}: class {name!r} has {tr} training samples (of {c}), fewer "
                                  f"than k={cfg.k} (sampler 'pk' draws k per class); {_lower_k(cfg, tr)}"
                                  "add samples, lower val_fraction, or use sampler 'random'")
        if not any(va >= 2 for _, va, _ in sizes):
            raise ConfigError(f"{where}: val_fraction {cfg.val_fraction} leaves no class with 2 validation "
                              "samples, so retrieval cannot be measured; raise val_fraction")
        if cfg.test_fraction > 0 and not any(te >= 2 for _, _, te in sizes):
            raise ConfigError(f"{where}: test_fraction {cfg.test_fraction} leaves no class with 2 test "
                              "samples, so retrieval cannot be measured; raise test_fraction or set it to 0")
        n_rows, fewest = sum(tr for tr, _, _ in sizes), ""
    # pk always fills one batch: P <= the training classes, each with at least k samples
    if not pk and n_rows < cfg.batch_size:
        fix = f"batch_size {n_rows} works" if n_rows >= 2 else "add samples"
        held = " (split 'classes' holds out whole classes, drawn by the seed; data_seed fixes them)" if fewest else ""
        raise ConfigError(f"{where}: {fewest}{n_rows} training samples{held}, fewer than batch_size "
                          f"{cfg.batch_size}; {fix}")


def _lower_k(cfg, samples: int) -> str:
    """The advice on k for a class of ``samples`` training samples: the k that works, if one does."""
    if samples < 2:
        return ""                                   # no k helps: a pk class needs 2 samples
    k = _fitting_k(cfg, samples)
    return f"k={k} works, or " if k is not None else "lower k, "
