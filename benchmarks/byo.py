"""Two user-style models written to the README's "Bring your own model" protocol, on the small real
data sets that ship inside scikit-learn: an MLP classifier (any of the four sets) and a small CNN
(8x8 digits only). Both train with cross-entropy, SGD (with momentum) or Adam, an optional lr
schedule (none / cosine / step) and an optional linear warm-up.

    model: benchmarks.byo:MLPClassifier      # in a run config
    MLPClassifier({"dataset": "wine", "lr": 1e-2}, torch.device("cpu"), seed=0)

They are what a user would plug in, not part of hpsearch: they import nothing from it, and report
what the protocol asks (train_loss, train_loss_<component>, train_grad_norm, train_batch_loss_std)
plus the diagnostics a user would log (the lr in use, train accuracy, the spread of the logits over
the samples, the share of dead ReLU units) and ``val_loss`` / ``val_acc``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from torch import nn

DATASETS = ("digits", "iris", "wine", "breast_cancer")


@dataclass(frozen=True)
class Params:
    """The settings both models read (unknown keys are refused, each value coerced to its type)."""

    dataset: str = "digits"
    standardize: bool = True      # z-scores with training statistics; False: the raw features
    val_fraction: float = 0.25
    hidden: int = 64
    depth: int = 2                # MLP hidden layers; the CNN's conv layers
    optimizer: str = "adam"       # adam | sgd
    lr: float = 1e-3
    momentum: float = 0.9         # sgd only
    weight_decay: float = 0.0     # an explicit L2 term: reported as train_loss_l2
    batch_size: int = 32
    schedule: str = "none"        # none | cosine | step (x0.1 at 1/2 and 3/4 of the epochs)
    warmup: int = 0               # epochs of linear warm-up from lr / (steps in warm-up)
    epochs: int = 20              # the horizon of the schedule

    @classmethod
    def parse(cls, params: Mapping[str, Any]) -> "Params":
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise ValueError(f"params: unknown key(s) {unknown}, expected some of {sorted(known)}")
        values = {name: type(getattr(cls, name))(value) for name, value in params.items()}
        out = cls(**values)
        if out.dataset not in DATASETS or out.optimizer not in ("adam", "sgd") or \
                out.schedule not in ("none", "cosine", "step"):
            raise ValueError(f"params: got dataset {out.dataset!r}, optimizer {out.optimizer!r}, schedule "
                             f"{out.schedule!r}; expected one of {DATASETS}, adam|sgd, none|cosine|step")
        return out


def load_split(p: Params, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_train, y_train, x_val, y_val) of a scikit-learn data set: a stratified split drawn from
    ``seed``; features standardised with the training rows' statistics when ``p.standardize``."""
    from sklearn import datasets

    bunch = getattr(datasets, f"load_{p.dataset}")()
    x, y = bunch.data.astype(np.float32), bunch.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    val = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:max(1, round(p.val_fraction * (y == c).sum()))]
                          for c in np.unique(y)])
    train = np.setdiff1d(np.arange(len(y)), val)
    if p.standardize:
        mean, std = x[train].mean(0), x[train].std(0)
        x = (x - mean) / np.where(std > 0, std, 1.0)
    return (torch.from_numpy(x[train]), torch.from_numpy(y[train]), torch.from_numpy(x[val]),
            torch.from_numpy(y[val]))


def lr_factor(p: Params, step: int, steps_per_epoch: int) -> float:
    """The multiplier on ``p.lr`` at optimiser step ``step`` (0-based): linear warm-up over the first
    ``p.warmup`` epochs, then the schedule over the remaining epochs."""
    warm = p.warmup * steps_per_epoch
    if step < warm:
        return (step + 1) / warm
    total = max(1, (p.epochs - p.warmup) * steps_per_epoch)
    progress = min(1.0, (step - warm) / total)
    if p.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    if p.schedule == "step":
        return 0.1 ** ((progress >= 0.5) + (progress >= 0.75))
    return 1.0


class Classifier:
    """The training loop both models share: cross-entropy on mini-batches, the protocol's reports."""

    objective = ("val_acc", "max")
    reported = ("train_loss", "train_loss_ce", "train_loss_l2", "train_grad_norm", "train_batch_loss_std",
                "train_batches", "train_lr", "train_acc", "train_logit_std", "train_dead_frac",
                "val_loss", "val_acc")
    # every input mapped to the same logits: the net has collapsed to a constant
    collapse = {"train_logit_std": 1e-6}

    def __init__(self, params: Mapping[str, Any], device: torch.device, seed: int):
        self.p = p = Params.parse(params)
        self.device = torch.device(device)
        data_seed, init_seed, batch_seed = (int(s.generate_state(1)[0])
                                            for s in np.random.SeedSequence(int(seed)).spawn(3))
        self.x, self.y, self.val_x, self.val_y = (t.to(self.device) for t in load_split(p, data_seed))
        self.classes = int(max(self.y.max(), self.val_y.max())) + 1
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed)
            self.net = self.build().to(self.device)
        if p.optimizer == "sgd":
            self.optimizer: torch.optim.Optimizer = torch.optim.SGD(self.net.parameters(), lr=p.lr,
                                                                    momentum=p.momentum)
        else:
            self.optimizer = torch.optim.Adam(self.net.parameters(), lr=p.lr)
        self.generator = torch.Generator().manual_seed(batch_seed)
        self.step = 0
        self.epoch = 0

    def build(self) -> nn.Module:
        raise NotImplementedError

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def l2(self) -> torch.Tensor:
        return sum(w.pow(2).sum() for name, w in self.net.named_parameters() if name.endswith("weight"))

    def train_epoch(self) -> dict[str, float]:
        self.net.train()
        order = torch.randperm(len(self.y), generator=self.generator).to(self.device)
        steps = math.ceil(len(order) / self.p.batch_size)
        params = list(self.net.parameters())
        rows, dead, logit_std = [], [], []
        hidden: list[torch.Tensor] = []
        hooks = [m.register_forward_hook(lambda _m, _i, out: hidden.append((out.detach() > 0).float()))
                 for m in self.net.modules() if isinstance(m, nn.ReLU)]
        try:
            for start in range(0, len(order), self.p.batch_size):
                idx = order[start:start + self.p.batch_size]
                lr = self.p.lr * lr_factor(self.p, self.step, steps)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                hidden.clear()
                logits = self.net(self.inputs(self.x[idx]))
                ce = nn.functional.cross_entropy(logits, self.y[idx])
                l2 = self.p.weight_decay * self.l2() if self.p.weight_decay else torch.zeros(())
                loss = ce + l2
                self.optimizer.zero_grad()
                loss.backward()
                grad = torch.linalg.vector_norm(torch.stack([w.grad.norm() for w in params if w.grad is not None]))
                self.optimizer.step()
                self.step += 1
                correct = (logits.detach().argmax(1) == self.y[idx]).float().sum()
                rows.append(torch.stack([loss.detach(), ce.detach(), l2.detach(), grad, correct,
                                         torch.tensor(float(len(idx))), torch.tensor(lr)]))
                logit_std.append(logits.detach().std(0, unbiased=False).mean() if len(idx) > 1
                                 else torch.tensor(math.nan))
                if hidden:  # a unit is dead when it is off for every sample of the batch
                    dead.append(torch.cat([(h.flatten(1).amax(0) == 0).float() for h in hidden]).mean())
        finally:
            for hook in hooks:
                hook.remove()
        self.epoch += 1
        table = torch.stack(rows).double()
        loss, ce, l2, grad, correct, count, lr = table.T
        return {
            "train_loss": loss.mean().item(),
            "train_loss_ce": ce.mean().item(),
            "train_loss_l2": l2.mean().item(),
            "train_grad_norm": grad.mean().item(),
            "train_batch_loss_std": loss.std(unbiased=False).item(),
            "train_batches": float(len(rows)),
            "train_lr": lr[-1].item(),
            "train_acc": (correct.sum() / count.sum()).item(),
            "train_logit_std": torch.stack(logit_std).nanmean().item(),
            "train_dead_frac": torch.stack(dead).mean().item() if dead else 0.0,
        }

    @torch.no_grad()
    def evaluate(self, split: str = "val") -> dict[str, float]:
        if split != "val":
            raise ValueError(f"split: got {split!r}; these models hold out a validation split only")
        self.net.eval()
        logits = self.net(self.inputs(self.val_x))
        return {"val_loss": nn.functional.cross_entropy(logits, self.val_y).item(),
                "val_acc": (logits.argmax(1) == self.val_y).float().mean().item()}

    def state_dict(self) -> dict[str, Any]:
        return {"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict(), "step": self.step,
                "epoch": self.epoch, "generator": self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.epoch = int(state["step"]), int(state["epoch"])
        self.generator.set_state(state["generator"].cpu())


class MLPClassifier(Classifier):
    """``depth`` hidden ReLU layers of width ``hidden``, then a linear layer to the classes."""

    def build(self) -> nn.Module:
        layers: list[nn.Module] = []
        width = self.x.shape[1]
        for _ in range(self.p.depth):
            layers += [nn.Linear(width, self.p.hidden), nn.ReLU()]
            width = self.p.hidden
        return nn.Sequential(*layers, nn.Linear(width, self.classes))


class CNNClassifier(Classifier):
    """The 8x8 digits as images: ``depth`` 3x3 conv + ReLU layers of ``hidden // 4`` channels (a 2x2
    max-pool after the first), then a linear layer to the classes."""

    def __init__(self, params: Mapping[str, Any], device: torch.device, seed: int):
        if params.get("dataset", "digits") != "digits":
            raise ValueError(f"params.dataset: got {params['dataset']!r}; the CNN reads the 8x8 digits only")
        super().__init__(params, device, seed)

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(-1, 1, 8, 8)

    def build(self) -> nn.Module:
        channels = max(2, self.p.hidden // 4)
        layers: list[nn.Module] = [nn.Conv2d(1, channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        for _ in range(self.p.depth - 1):
            layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU()]
        return nn.Sequential(*layers, nn.Flatten(), nn.Linear(channels * 16, self.classes))


MODELS = {"mlp": MLPClassifier, "cnn": CNNClassifier}
