"""Batch samplers: an epoch's batches as one (num_batches, batch) tensor of row indices, drawn at
once from a ``torch.Generator`` and gathered from the on-device data by index, so an epoch does
no per-sample Python work.

- ``pk`` (:class:`PKSampler`): P classes × K samples per batch; every anchor has a positive.
- ``random`` (:class:`InterleavedSampler`): the loader users had; one sample per class per batch.
"""

from __future__ import annotations

import torch


class PKSampler:
    """``P`` classes × ``K`` samples per batch, so every batch holds positives for every anchor.

    An epoch is ``len(labels) // (P * K)`` batches. Each batch draws P distinct classes uniformly
    and, for each, K distinct samples of that class uniformly. Every class needs at least K samples
    and there must be at least P classes (checked when the model is built).
    """

    def __init__(self, labels: torch.Tensor, p: int, k: int):
        labels = labels.cpu()
        self.p, self.k = p, k
        self.counts = torch.bincount(labels)                                        # (C,)
        order = torch.argsort(labels, stable=True)                                  # grouped by class
        starts = torch.cumsum(self.counts, 0) - self.counts                         # (C,)
        slot = torch.arange(int(self.counts.max()))                                 # (M,)
        self.valid = slot[None, :] < self.counts[:, None]                           # (C, M)
        self.table = order[(starts[:, None] + slot[None, :]).clamp_max(len(labels) - 1)]  # (C, M) row ids
        self.num_batches = len(labels) // (p * k)

    def epoch(self, generator: torch.Generator) -> torch.Tensor:
        """(num_batches, P*K) row indices for one epoch (on the CPU)."""
        b, c, m = self.num_batches, len(self.counts), self.table.shape[1]
        classes = torch.rand(b, c, generator=generator).argsort(dim=1)[:, :self.p]  # (B, P)
        keys = torch.rand(b, self.p, m, generator=generator)                        # (B, P, M)
        keys = keys.masked_fill(~self.valid[classes], 2.0)                          # padding sorts last
        slots = keys.argsort(dim=2)[:, :, :self.k]                                  # (B, P, K)
        rows = self.table[classes[:, :, None], slots]                               # (B, P, K)
        return rows.reshape(b, self.p * self.k)


class InterleavedSampler:
    """``sampler: random`` — the loader users had.

    Each epoch every class's samples are shuffled, then the classes are dealt round-robin (one
    sample of each class per round, class order reshuffled every round) and the stream is cut into
    consecutive batches of ``batch_size``. A batch of ``batch_size`` <= number of classes therefore
    holds ``batch_size`` distinct classes, one sample each, and no positive pair: with 16 classes and
    batches of 16 no triplet exists at all. Larger batches wrap into the next round and do hold
    positives. An epoch is ``len(labels) // batch_size`` batches.
    """

    def __init__(self, labels: torch.Tensor, batch_size: int):
        self.labels = labels.cpu()
        self.batch_size = batch_size
        self.counts = torch.bincount(self.labels)                                   # (C,)
        self.num_batches = len(self.labels) // batch_size

    def epoch(self, generator: torch.Generator) -> torch.Tensor:
        n, c = len(self.labels), len(self.counts)
        perm = torch.randperm(n, generator=generator)
        perm = perm[torch.argsort(self.labels[perm], stable=True)]                  # shuffled within class
        starts = torch.cumsum(self.counts, 0) - self.counts
        rank = torch.arange(n) - starts[self.labels[perm]]                          # round of each sample
        seat = torch.rand(int(self.counts.max()), c, generator=generator).argsort(dim=1).argsort(dim=1)
        key = rank * c + seat[rank, self.labels[perm]]                              # (N,) round, then seat
        stream = perm[torch.argsort(key)]
        return stream[:self.num_batches * self.batch_size].reshape(self.num_batches, self.batch_size)
