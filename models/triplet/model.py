"""The triplet embedding model: data, net, loss, one epoch, evaluation, state (its settings are
in config.py).

    model = TripletModel({"mining": "batch_hard"}, torch.device("cpu"), seed=0)
    model.train_epoch()   # {"train_loss": ..., "train_active_triplets": ..., ...}
    model.evaluate()      # {"val_recall_at_1": ..., "val_map_at_r": ...}

All randomness comes from ``seed`` (or ``data_seed`` for the data): the same params and seed on
the CPU give the same metrics every run.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from hpsearch.models.config import ConfigError, parse
from hpsearch.models.triplet import config as spec
from hpsearch.models.triplet.config import TripletConfig
from hpsearch.models.triplet.data import load_data
from hpsearch.models.triplet.loss import triplet_loss
from hpsearch.models.triplet.metrics import retrieval_metrics
from hpsearch.models.triplet.net import EmbeddingNet
from hpsearch.models.triplet.samplers import InterleavedSampler, PKSampler
from hpsearch.models.triplet.splits import batch_classes


def _seeds(seed: int, data_seed: int | None) -> tuple[int, int, int]:
    """Independent streams for data, initialisation and batch sampling, all from ``seed``."""
    data, init, sampling = (int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(3))
    return (data if data_seed is None else data_seed), init, sampling


class TripletModel:
    """Factory and model (see models/api.py)."""

    Config = spec.Config
    objective = spec.objective
    reported = spec.reported
    collapse = spec.collapse

    def __init__(self, params: Mapping[str, Any] | TripletConfig, device: torch.device, seed: int):
        self.cfg = cfg = parse(TripletConfig, params, where="params.")
        self.device = torch.device(device)
        self.data_seed, init_seed, sampling_seed = _seeds(int(seed), cfg.data_seed)   # the data and its split
        self.data = load_data(cfg, self.data_seed, self.device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed)
            self.net = EmbeddingNet(self.data.input_shape, cfg.hidden_dim, cfg.embedding_dim).to(self.device)
        optimizers = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
        self.optimizer = optimizers[cfg.optimizer](self.net.parameters(), lr=cfg.lr,
                                                   weight_decay=cfg.weight_decay)
        self.sampler: PKSampler | InterleavedSampler
        if cfg.sampler == "pk":
            classes = int(self.data.train.y.max()) + 1                   # labels are 0..C-1 per split
            p = batch_classes(cfg, classes)
            if p < cfg.batch_size // cfg.k:
                print(f"note: params.batch_size {cfg.batch_size} with k={cfg.k} asks for {cfg.batch_size // cfg.k} "
                      f"classes per batch; the training split holds {classes}, so batches are {p} x {cfg.k} = "
                      f"{p * cfg.k}", file=sys.stderr)
            self.sampler = PKSampler(self.data.train.y, p=p, k=cfg.k)
        else:
            self.sampler = InterleavedSampler(self.data.train.y, cfg.batch_size)
        self.generator = torch.Generator().manual_seed(sampling_seed)   # CPU: same batches on any device
        self.epoch = 0

    def train_epoch(self) -> dict[str, float]:
        self.net.train()
        train = self.data.train
        batches = self.sampler.epoch(self.generator).to(self.device)      # (num_batches, batch)
        params = list(self.net.parameters())
        rows = []
        for idx in batches:
            emb, raw_norm = self.net(train.x[idx])                        # (B, E), (B,)
            out = triplet_loss(emb, train.y[idx], self.cfg.mining, self.cfg.margin)
            loss = out.components["triplet"]                              # the total: one component
            self.optimizer.zero_grad()
            loss.backward()
            grad_norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))
            self.optimizer.step()
            s = out.stats
            rows.append(torch.stack([loss.detach(), grad_norm, raw_norm.detach().mean(),
                                     emb.detach().std(0, unbiased=False).mean(), s["triplets"], s["active"],
                                     s["pos_dist_sum"], s["pos_pairs"], s["neg_dist_sum"], s["neg_pairs"]]))
        self.epoch += 1
        table = torch.stack(rows).double()                                # (num_batches, 10)
        losses, grad, norm, std = table[:, 0], table[:, 1], table[:, 2], table[:, 3]
        triplets, active, pos_sum, pos_n, neg_sum, neg_n = table[:, 4:].sum(0).tolist()
        nan = float("nan")
        return {
            "train_loss": losses.mean().item(),
            "train_loss_triplet": losses.mean().item(),
            "train_active_triplets": active / triplets if triplets else 0.0,
            "train_triplets": triplets / len(rows),
            "train_pos_dist": pos_sum / pos_n if pos_n else nan,          # NaN: no positive pair seen
            "train_neg_dist": neg_sum / neg_n if neg_n else nan,
            "train_emb_norm": norm.mean().item(),
            "train_emb_std": std.mean().item(),
            "train_grad_norm": grad.mean().item(),
            "train_batch_loss_std": losses.std(unbiased=False).item(),
        }

    @torch.no_grad()
    def embed(self, x: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
        self.net.eval()
        return torch.cat([self.net(x[i:i + chunk])[0] for i in range(0, len(x), chunk)])

    def evaluate(self, split: str = "val") -> dict[str, float]:
        if split not in ("val", "test"):
            raise ConfigError(f"split: got {split!r}, expected 'val' or 'test'")
        data = self.data.val if split == "val" else self.data.test
        if data is None:
            raise ConfigError("params.test_fraction: 0 holds out no test split; set test_fraction > 0 "
                              "to evaluate split 'test'")
        metrics = retrieval_metrics(self.embed(data.x), data.y)
        return {f"{split}_{name}": value for name, value in metrics.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
                "epoch": self.epoch, "generator": self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch = int(state["epoch"])
        self.generator.set_state(state["generator"].cpu())
