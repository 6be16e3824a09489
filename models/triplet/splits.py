"""How the triplet data splits into train, val and test, and the refusal of data the split and the
sampler cannot use: plain arithmetic shared by the config (checked before training) and the data
loader."""

from __future__ import annotations

import math

from hpsearch.models.config import ConfigError


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
