"""``hpsearch train`` and ``hpsearch evaluate``: one config, no Ray."""

from __future__ import annotations

import contextlib
import json
import math
import platform
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hpsearch import models
from hpsearch.core.config import RunConfig, dump_config, load_config
from hpsearch.core.numbers import fmt, one_line
from hpsearch.core.objective import is_better
from hpsearch.models.config import ConfigError
from hpsearch.models.fit import epoch_line, fit, format_metrics

WEIGHTS = "model.pt"
CONFIG = "config.yaml"
METRICS = "metrics.json"


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: got 'cuda', but no CUDA GPU is visible; expected 'cpu' or 'auto'")
    return name


def prepare_out_dir(out: str | Path, force: bool) -> Path:
    """An empty (or new) directory; one that holds files is refused unless ``force``."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out: {str(out)!r} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ConfigError(f"--out: {str(out)!r} already holds files; choose another path or pass --force")
    out.mkdir(parents=True, exist_ok=True)
    return out


def cpu_threads(cpu: float) -> int:
    """Torch threads for a trial holding ``cpu`` CPUs (fractions round down, at least 1)."""
    return max(1, int(math.floor(cpu)))


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for dist in ("hpsearch", "torch", "numpy", "ray", "optuna", "pandas"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return out


def save_weights(model: Any, path: str | Path) -> None:
    import torch

    torch.save(model.state_dict(), Path(path))


def load_trusted_tensors(path: str | Path, device: str = "cpu", what: str = "weights") -> Any:
    """``torch.load(weights_only=True)``: tensors and plain values only, never arbitrary pickles.
    A file it refuses (a planted payload, a truncated file) is a one-line ConfigError."""
    import pickle

    import torch

    try:
        return torch.load(Path(path), map_location=device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as err:
        raise ConfigError(f"{what}: {str(path)!r} cannot be loaded as weights only "
                          f"(torch.load weights_only=True): {one_line(err, 160)}") from None


def load_weights(model: Any, path: str | Path, device: str) -> None:
    model.load_state_dict(load_trusted_tensors(path, device, "weights"))


def match_threads(config: RunConfig) -> None:
    """An exported config names the torch thread count its trial ran with (``exported.threads``);
    float sums can depend on it, so retraining and evaluating it use the same count."""
    threads = (config.exported or {}).get("threads")
    if isinstance(threads, int) and not isinstance(threads, bool) and threads >= 1:
        import torch

        torch.set_num_threads(threads)


def train(config: RunConfig, out: Path | None, device: str, log=print) -> dict[str, Any]:
    """Train ``config.epochs`` epochs; write weights, config and metrics to ``out``; return metrics."""
    import torch

    match_threads(config)
    torch.manual_seed(config.seed)
    metric, mode = config.objective.metric, config.objective.mode
    started = time.perf_counter()
    model = models.build(config.model, config.params, device=device, seed=config.seed)
    log(f"training {config.model} for {config.epochs} epochs on {device} (seed {config.seed}); "
        f"objective {metric} ({mode})")
    best: dict[str, Any] = {}

    def on_epoch(epoch: int, row: dict[str, Any]) -> None:
        nonlocal best
        log(epoch_line(epoch, config.epochs, row))
        if metric not in row:
            raise ConfigError(f"objective.metric: {metric!r} was not reported; the model reported: "
                              f"{', '.join(sorted(k for k in row if k != 'epoch'))}")
        if not best or is_better(row[metric], best[metric], mode):
            best = dict(row)

    history = fit(model, config.epochs, on_epoch=on_epoch)
    final = history[-1]
    result = {
        "model": config.model, "seed": config.seed, "epochs": config.epochs, "device": device,
        "objective": {"metric": metric, "mode": mode, "final": final[metric], "best": best.get(metric),
                      "best_epoch": best.get("epoch")},
        "final": {k: v for k, v in final.items() if k.startswith("val_")},
        "best": {k: v for k, v in best.items() if k.startswith("val_") or k == "epoch"},
        "time_s": time.perf_counter() - started,
        "config": config.to_dict(),
        "versions": versions(),
        "history": history,
    }
    if out is not None:
        save_weights(model, out / WEIGHTS)
        dump_config(config, out / CONFIG)
        (out / METRICS).write_text(json.dumps(_json_safe(result), indent=2), encoding="utf-8")
        log(f"wrote {out / WEIGHTS}, {out / CONFIG}, {out / METRICS}")
    log(f"final {format_metrics(result['final'])}")
    log(f"best {metric} {fmt(best.get(metric))} at epoch {best.get('epoch')}; {result['time_s']:.1f}s")
    return result


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def train_config(config: RunConfig, out: str | Path | None, force: bool = False, log=print) -> dict[str, Any]:
    """Train one validated config on its device, as ``hpsearch train`` does after its command line
    (and ``hpsearch.train``): ``out`` gets model.pt, config.yaml and metrics.json (None: nothing is
    written; one that holds files is refused unless ``force``). Returns the metrics."""
    device = resolve_device(config.device)
    target = prepare_out_dir(out, force) if out is not None else None
    return train(config, target, device, log=log)


@contextlib.contextmanager
def torch_threads_kept() -> Iterator[None]:
    """The process's torch thread count as it was, after the block: training an exported config
    sets it (``match_threads``), and a Python caller goes on using the process afterwards."""
    import torch

    threads = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def train_command(args) -> int:
    overrides = list(args.set or [])
    if args.epochs is not None:
        overrides.append(f"epochs={args.epochs}")
    if args.device is not None:
        overrides.append(f"device={args.device}")
    config = load_config(args.config, overrides)
    out = args.out
    if out is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out = Path("runs") / "train" / f"{config.model.replace(':', '_')}-{stamp}"
    train_config(config, out, args.force)
    return 0


def find_artifacts(path: str | Path) -> tuple[Path, Path]:
    """(weights, config) from a directory holding both, or a weights file with config.yaml beside it."""
    path = Path(path)
    if path.is_dir():
        weights, config = path / WEIGHTS, path / CONFIG
    elif path.is_file():
        weights, config = path, path.parent / CONFIG
    else:
        raise ConfigError(f"weights: {str(path)!r} does not exist")
    if not weights.is_file():
        raise ConfigError(f"weights: no {WEIGHTS} in {str(path)!r}; expected a directory written by "
                          "`hpsearch train --out` or `hpsearch export`")
    if not config.is_file():
        raise ConfigError(f"weights: no {CONFIG} beside {str(weights)!r}")
    return weights, config


def evaluate(weights: Path, config: RunConfig, split: str, device: str) -> dict[str, float]:
    match_threads(config)
    model = models.build(config.model, config.params, device=device, seed=config.seed)
    load_weights(model, weights, device)
    return model.evaluate(split)


def evaluate_command(args) -> int:
    weights, config_path = find_artifacts(args.weights)
    config = load_config(config_path)
    device = resolve_device(args.device or config.device)
    metrics = evaluate(weights, config, args.split, device)
    width = max(map(len, metrics)) if metrics else 0
    print(f"{config.model} · {weights} · split {args.split}")
    for key, value in metrics.items():
        print(f"  {key:<{width}}  {value:.6f}" if isinstance(value, float) else f"  {key:<{width}}  {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(_json_safe(metrics), indent=2), encoding="utf-8")
    return 0
