"""Triplet margin loss, composed: distance -> miner -> per-triplet hinge -> reducer.

- distance: Euclidean distance between every pair of embeddings in the batch (B×B).
- miner: which (anchor, positive, negative) triplets the batch trains on; a valid triplet has
  anchor != positive, label(anchor) == label(positive) and label(negative) != label(anchor).
    * ``batch_all``: every valid triplet.
    * ``batch_hard``: for every anchor that has a positive and a negative, its farthest positive
      and its nearest negative (Hermans et al., 2017).
    * ``semi_hard``: for every positive pair (a, p), the nearest negative that is farther from a
      than p is; when no negative is, the farthest negative (FaceNet; as in TensorFlow's
      ``triplet_semihard_loss``).
- hinge: ``max(d(a, p) - d(a, n) + margin, 0)`` per triplet.
- reducer: ``batch_all`` averages over the *active* triplets (non-zero hinge), so the many
  already-satisfied triplets do not dilute the gradient; ``batch_hard`` and ``semi_hard`` average
  over their mined triplets.

No valid triplet in a batch (e.g. no two samples share a class): the loss is
``embeddings.sum() * 0`` — zero, attached to the graph, so backward runs and every gradient is 0 —
and the counts say 0. Nothing is invented and nothing is clamped.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MINING = ("batch_all", "batch_hard", "semi_hard")


def pairwise_distances(embeddings: torch.Tensor) -> torch.Tensor:
    """(B, E) -> (B, B) Euclidean distances. Zero distances (the diagonal, duplicates) get a zero
    gradient instead of sqrt's infinite one."""
    diff = embeddings[:, None, :] - embeddings[None, :, :]        # (B, B, E)
    squared = diff.pow(2).sum(-1)                                  # (B, B), exactly 0 on the diagonal
    zero = squared == 0
    return torch.sqrt(squared + zero.to(squared.dtype)) * (~zero).to(squared.dtype)


@dataclass
class Triplets:
    anchor: torch.Tensor      # (T,) row indices
    positive: torch.Tensor    # (T,)
    negative: torch.Tensor    # (T,)

    def __len__(self) -> int:
        return int(self.anchor.numel())


def _masks(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    same = labels[:, None] == labels[None, :]                      # (B, B)
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return same & ~eye, ~same                                      # positive pairs, negative pairs


def mine_batch_all(dist: torch.Tensor, labels: torch.Tensor, margin: float) -> Triplets:
    pos, neg = _masks(labels)
    valid = pos[:, :, None] & neg[:, None, :]                      # (B, B, B): a, p, n
    a, p, n = valid.nonzero(as_tuple=True)
    return Triplets(a, p, n)


def mine_batch_hard(dist: torch.Tensor, labels: torch.Tensor, margin: float) -> Triplets:
    pos, neg = _masks(labels)
    anchors = (pos.any(1) & neg.any(1)).nonzero(as_tuple=True)[0]  # (A,)
    far_pos = dist.masked_fill(~pos, -torch.inf).argmax(1)         # (B,) farthest positive
    near_neg = dist.masked_fill(~neg, torch.inf).argmin(1)         # (B,) nearest negative
    return Triplets(anchors, far_pos[anchors], near_neg[anchors])


def mine_semi_hard(dist: torch.Tensor, labels: torch.Tensor, margin: float) -> Triplets:
    pos, neg = _masks(labels)
    a, p = (pos & neg.any(1, keepdim=True)).nonzero(as_tuple=True)  # (Q,) positive pairs
    d_ap = dist[a, p][:, None]                                     # (Q, 1)
    d_an = dist[a]                                                 # (Q, B)
    is_neg = neg[a]                                                # (Q, B)
    outside = is_neg & (d_an > d_ap)                               # semi-hard candidates
    nearest_outside = d_an.masked_fill(~outside, torch.inf).argmin(1)
    farthest = d_an.masked_fill(~is_neg, -torch.inf).argmax(1)
    n = torch.where(outside.any(1), nearest_outside, farthest)
    return Triplets(a, p, n)


MINERS = {"batch_all": mine_batch_all, "batch_hard": mine_batch_hard, "semi_hard": mine_semi_hard}


def hinge(dist: torch.Tensor, triplets: Triplets, margin: float) -> torch.Tensor:
    """(T,) per-triplet losses ``max(d_ap - d_an + margin, 0)``."""
    d_ap = dist[triplets.anchor, triplets.positive]
    d_an = dist[triplets.anchor, triplets.negative]
    return torch.relu(d_ap - d_an + margin)


def reduce(losses: torch.Tensor, mining: str) -> torch.Tensor:
    """Scalar from (T,) per-triplet losses, T >= 1 (see the module docstring)."""
    if mining != "batch_all":
        return losses.mean()
    active = int((losses > 0).sum())
    if active == 0:
        return losses.sum()                                        # zero, on the graph
    return losses.sum() / active                                   # inactive triplets add 0


@dataclass
class TripletLossOutput:
    components: dict[str, torch.Tensor]   # {"triplet": scalar on the graph}
    stats: dict[str, torch.Tensor]        # detached sums and counts for epoch diagnostics


def triplet_loss(embeddings: torch.Tensor, labels: torch.Tensor, mining: str, margin: float) -> TripletLossOutput:
    """The triplet loss of one batch and the counts behind it."""
    dist = pairwise_distances(embeddings)                          # (B, B)
    triplets = MINERS[mining](dist.detach(), labels, margin)
    losses = hinge(dist, triplets, margin)                         # (T,)
    if len(triplets) == 0:
        loss = embeddings.sum() * 0                                # nothing to learn from
    else:
        loss = reduce(losses, mining)
    pos, neg = _masks(labels)
    d = dist.detach()
    stats = {
        "triplets": torch.tensor(float(len(triplets)), device=d.device),
        "active": (losses.detach() > 0).sum().float(),
        "pos_dist_sum": (d * pos).sum(), "pos_pairs": pos.sum().float(),
        "neg_dist_sum": (d * neg).sum(), "neg_pairs": neg.sum().float(),
    }
    return TripletLossOutput({"triplet": loss}, stats)
