"""Triplet data: where samples come from, how they are checked, and how they are split.

Sources (``data_dir``):

- ``None``: a synthetic dataset made from a seed (:func:`synthetic`): every class is a union of
  several clusters in a small latent space, pushed through a fixed random non-linear warp and
  hidden among higher-variance nuisance directions. No linear map separates the classes, and raw
  nearest neighbours mostly find the wrong class: a model has to learn a non-linear embedding.
- a ``.npz`` file (or a directory holding exactly one) with ``x`` (N×D floats) and ``y`` (N integer
  labels);
- a directory with one sub-folder per class holding PNG/JPEG images, resized to ``image_size``.

Splits hold out either samples of every class or whole classes (``split: samples|classes``).
Inputs are standardised per feature (per channel for images) with the training split's
statistics; a feature that sits at one value in most rows is kept within ``max_z``
(:func:`standardise`). Every split lives as tensors on the model's device; batches are drawn by
samplers.py.
"""

from __future__ import annotations

import functools
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hpsearch.models.config import ConfigError
from hpsearch.models.triplet.splits import check_class_counts, class_order, split_counts  # noqa: F401 (re-exported)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


# ----------------------------------------------------------------------------- synthetic data

def synthetic(num_classes: int, samples_per_class: int, input_dim: int, seed: int,
              clusters_per_class: int = 4, latent_dim: int = 3, signal_dim: int = 8,
              cluster_std: float = 0.07, nuisance_std: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)``: ``num_classes * samples_per_class`` float32 rows of ``input_dim`` and int64 labels.

    A regular grid in ``[-1, 1]^latent_dim`` has at least ``num_classes * clusters_per_class`` cells;
    each class owns ``clusters_per_class`` cells picked at random (so its clusters are scattered
    among other classes' clusters), and a sample is its cell's centre plus Gaussian noise of std
    ``cluster_std``. A fixed random two-layer tanh network warps the latent points into
    ``signal_dim`` directions; the other ``input_dim - signal_dim`` directions carry Gaussian
    nuisance of std ``nuisance_std`` (together larger than the signal), and a random rotation mixes
    signal and nuisance across all input coordinates.
    """
    rng = np.random.default_rng(seed)
    signal_dim = min(signal_dim, input_dim)
    n = num_classes * samples_per_class
    y = np.repeat(np.arange(num_classes), samples_per_class)                       # (N,)
    side = math.ceil((num_classes * clusters_per_class) ** (1 / latent_dim) - 1e-9)
    grid = np.stack(np.meshgrid(*[np.arange(side)] * latent_dim, indexing="ij"), -1).reshape(-1, latent_dim)
    grid = (2 * grid - (side - 1)) / side                                          # cell centres in (-1, 1)
    cells = grid[rng.permutation(len(grid))[:num_classes * clusters_per_class]]
    cells = cells.reshape(num_classes, clusters_per_class, latent_dim)             # (C, M, L)
    cluster = rng.integers(0, clusters_per_class, size=n)                         # (N,)
    z = cells[y, cluster] + cluster_std * rng.standard_normal((n, latent_dim))     # (N, L)
    w1 = rng.standard_normal((latent_dim, 64))
    b1 = rng.uniform(-1.0, 1.0, size=64)
    w2 = rng.standard_normal((64, signal_dim)) / 8
    signal = np.tanh(z @ w1 + b1) @ w2                                              # (N, S)
    signal = (signal - signal.mean(0)) / signal.std(0)
    nuisance = nuisance_std * rng.standard_normal((n, input_dim - signal_dim))     # (N, D - S)
    rotation, _ = np.linalg.qr(rng.standard_normal((input_dim, input_dim)))        # (D, D)
    x = np.concatenate([signal, nuisance], axis=1) @ rotation                      # (N, D)
    return x.astype(np.float32), y.astype(np.int64)


# ----------------------------------------------------------------------------- files

@dataclass(frozen=True)
class Source:
    """What ``data_dir`` holds, found without loading pixels: kind, path, class names and counts."""
    kind: str                      # "npz" | "images"
    path: Path
    class_names: tuple[str, ...]
    class_counts: tuple[int, ...]


def _npz_file(root: Path, where: str) -> Path | None:
    if root.is_file():
        if root.suffix.lower() != ".npz":
            raise ConfigError(f"{where}: {str(root)!r} is a file but not an .npz; expected an .npz with "
                              "x and y, or a folder with one sub-folder of images per class")
        return root
    found = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() == ".npz")
    if len(found) > 1:
        raise ConfigError(f"{where}: {str(root)!r} holds {len(found)} .npz files; expected one "
                          "(or point data_dir at the file)")
    return found[0] if found else None


def _load_npz(path: Path, where: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in ("x", "y") if k not in archive.files]
            if missing:
                raise ConfigError(f"{where}: {str(path)!r} has no array {missing[0]!r} (it holds "
                                  f"{', '.join(archive.files) or 'nothing'}); expected x (N×D floats) "
                                  "and y (N integer labels)")
            x, y = archive["x"], archive["y"]
    except ConfigError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise ConfigError(f"{where}: cannot read {str(path)!r} as .npz: {err}") from None
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise ConfigError(f"{where}: {str(path)!r}: x has shape {x.shape} and dtype {x.dtype}; "
                          "expected a 2-D array of real numbers (N×D)")
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ConfigError(f"{where}: {str(path)!r}: y has shape {y.shape} and dtype {y.dtype}; "
                          "expected a 1-D array of integer labels")
    if len(x) != len(y):
        raise ConfigError(f"{where}: {str(path)!r}: x has {len(x)} rows but y has {len(y)} labels; "
                          "expected one label per row")
    if not np.isfinite(x).all():
        raise ConfigError(f"{where}: {str(path)!r}: x holds NaN or inf; expected finite numbers")
    return x.astype(np.float32), y.astype(np.int64)


def _image_classes(root: Path) -> list[tuple[str, list[Path]]]:
    classes = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        classes.append((folder.name, files))
    return classes


@functools.lru_cache(maxsize=16)
def _inspect(path: str, stamp: tuple[int, int], where: str) -> Source:
    root = Path(path)
    npz = _npz_file(root, where)
    if npz is not None:
        _, y = _load_npz(npz, where)
        labels, counts = np.unique(y, return_counts=True)
        return Source("npz", npz, tuple(str(int(v)) for v in labels), tuple(int(c) for c in counts))
    classes = _image_classes(root)
    if not classes:
        raise ConfigError(f"{where}: {path!r} is empty: no .npz file and no class sub-folders; expected "
                          "an .npz with x and y, or one sub-folder of PNG/JPEG images per class")
    for name, files in classes:
        if not files:
            raise ConfigError(f"{where}: class folder {name!r} in {path!r} holds no PNG/JPEG images")
    return Source("images", root, tuple(n for n, _ in classes), tuple(len(f) for _, f in classes))


def inspect_source(data_dir: str, where: str = "params.data_dir") -> Source:
    """Check that ``data_dir`` exists and holds usable data; cheap and cached per file state."""
    root = Path(data_dir).expanduser()
    if not root.exists():
        raise ConfigError(f"{where}: {data_dir!r} does not exist; expected an .npz file or a folder "
                          "with one sub-folder of images per class (or null for synthetic data)")
    stat = root.stat()
    return _inspect(str(root), (stat.st_mtime_ns, stat.st_size), where)


def load_images(source: Source, image_size: int, where: str = "params.data_dir") -> tuple[np.ndarray, np.ndarray]:
    """All images as float32 (N, 3, S, S) in [0, 1] and their class indices (sub-folder order)."""
    from PIL import Image, UnidentifiedImageError

    images, labels = [], []
    for label, (_, files) in enumerate(_image_classes(source.path)):
        for file in files:
            try:
                with Image.open(file) as img:
                    img = img.convert("RGB").resize((image_size, image_size), Image.BILINEAR)
                    images.append(np.asarray(img, dtype=np.float32) / 255.0)      # (S, S, 3)
            except (OSError, UnidentifiedImageError) as err:
                raise ConfigError(f"{where}: cannot read image {str(file)!r}: {err}") from None
            labels.append(label)
    x = np.stack(images).transpose(0, 3, 1, 2)                                      # (N, 3, S, S)
    return np.ascontiguousarray(x), np.asarray(labels, dtype=np.int64)


# ----------------------------------------------------------------------------- splits

@dataclass
class Split:
    x: torch.Tensor        # (N, ...) features or images, on the model's device
    y: torch.Tensor        # (N,) int64 class indices


def split_indices(y: np.ndarray, split: str, val_fraction: float, test_fraction: float,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row indices of train, val and test. ``samples``: every class gives the same fraction of its
    rows to val and test. ``classes``: whole classes go to val and test."""
    classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    if split == "classes":
        n_train, n_val, _ = split_counts(len(classes), val_fraction, test_fraction)
        order = class_order(len(classes), rng)
        part = np.empty(len(classes), dtype=np.int64)
        part[order[:n_train]], part[order[n_train:n_train + n_val]], part[order[n_train + n_val:]] = 0, 1, 2
        row_part = part[inverse]
    else:
        perm = rng.permutation(len(y))
        perm = perm[np.argsort(inverse[perm], kind="stable")]                      # grouped by class
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        rank = np.empty(len(y), dtype=np.int64)
        rank[perm] = np.arange(len(y)) - starts[inverse[perm]]                    # rank within class
        sizes = np.array([split_counts(int(c), val_fraction, test_fraction) for c in counts])
        n_val, n_test = sizes[inverse, 1], sizes[inverse, 2]
        row_part = np.where(rank < n_val, 1, np.where(rank < n_val + n_test, 2, 0))
    return tuple(np.flatnonzero(row_part == p) for p in (0, 1, 2))


def to_split(x: np.ndarray, y: np.ndarray, rows: np.ndarray, device: torch.device) -> Split:
    """Rows of ``x``/``y`` as tensors on ``device``; labels renumbered 0..C-1 within the split."""
    _, labels = np.unique(y[rows], return_inverse=True)
    return Split(torch.from_numpy(x[rows]).to(device), torch.from_numpy(labels.astype(np.int64)).to(device))


# ----------------------------------------------------------------------------- checks and loading

@dataclass
class TripletData:
    train: Split
    val: Split
    test: Split | None
    input_shape: tuple[int, ...]


def standardise(x: np.ndarray, train_rows: np.ndarray, max_z: float | None = 6.0) -> np.ndarray:
    """``x`` centred and scaled per feature (per channel for images) with the training rows' statistics.

    A feature's scale is its standard deviation: plain z-scores, whatever its units, outliers
    included (in tabular data they carry signal). The exception is a feature that sits at one
    value in at least half the training rows (its median absolute deviation is 0: a border pixel
    lit in a handful of images, a rarely set flag). Its standard deviation says how often it leaves
    that value, not how far, so its rare values would land near z = 1/sqrt(share): 18 for 3 images
    in a thousand, 40 on the 8x8 digits' emptiest border pixels. Its scale is floored at its
    largest training deviation from the mean over ``max_z``, so those values land at most ``max_z``
    from 0. A feature constant in training carries nothing to learn and becomes 0 everywhere.
    ``max_z`` None: plain z-scores throughout.
    """
    axes = (0,) if x.ndim == 2 else (0, 2, 3)                       # per feature / per channel
    train = x[train_rows]
    mean = train.mean(axis=axes, keepdims=True)
    scale = train.std(axis=axes, keepdims=True)
    if max_z is not None:
        median = np.median(train, axis=axes, keepdims=True)
        at_one_value = np.median(np.abs(train - median), axis=axes, keepdims=True) == 0
        floor = np.abs(train - mean).max(axis=axes, keepdims=True) / max_z
        scale = np.where(at_one_value, np.maximum(scale, floor), scale)
    return ((x - mean) / np.where(scale > 0, scale, np.inf)).astype(np.float32)


def load_data(cfg, seed: int, device: torch.device) -> TripletData:
    """Generate or read the data, split it, standardise with training statistics, move to device."""
    if cfg.data_dir is None:
        x, y = synthetic(cfg.num_classes, cfg.samples_per_class, cfg.input_dim, seed)
    else:
        source = inspect_source(cfg.data_dir)
        if source.kind == "npz":
            x, y = _load_npz(source.path, "params.data_dir")
        else:
            x, y = load_images(source, cfg.image_size)
    rng = np.random.default_rng(seed)
    train_rows, val_rows, test_rows = split_indices(y, cfg.split, cfg.val_fraction, cfg.test_fraction, rng)
    x = standardise(x, train_rows, cfg.max_z)
    return TripletData(
        train=to_split(x, y, train_rows, device),
        val=to_split(x, y, val_rows, device),
        test=to_split(x, y, test_rows, device) if len(test_rows) else None,
        input_shape=tuple(x.shape[1:]),
    )
