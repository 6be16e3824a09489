"""Retrieval metrics by exact cosine nearest neighbours, every item a query against all others.

- ``recall_at_k``: the fraction of queries whose k nearest neighbours (the query itself excluded)
  include at least one item of the query's class.
- ``map_at_r`` (Musgrave et al., 2020): for a query with R other items of its class,
  ``(1/R) * sum_{i<=R} precision@i * [neighbour i is of the class]`` over its R nearest neighbours.

Queries whose class has no other item in the set can never be answered and are left out of both.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hpsearch.models.triplet.config import KS


def retrieval_metrics(embeddings: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = KS,
                      chunk: int = 1024) -> dict[str, float]:
    """``{"recall_at_<k>": ..., "map_at_r": ...}`` over (N, E) embeddings and their N labels."""
    emb = F.normalize(embeddings.float(), dim=1)                      # (N, E)
    n = len(labels)
    positives = torch.bincount(labels)[labels] - 1                    # (N,) R per query
    queries = (positives > 0).nonzero(as_tuple=True)[0]               # (Q,)
    if len(queries) == 0:
        raise ValueError("no query has another item of its class")
    max_k = min(max(ks), n - 1)
    max_r = int(positives.max())
    hits_at = {k: torch.zeros((), device=emb.device) for k in ks}
    ap_sum = torch.zeros((), device=emb.device)
    for start in range(0, len(queries), chunk):
        q = queries[start:start + chunk]                               # (c,)
        sim = emb[q] @ emb.T                                          # (c, N) cosine similarity
        sim[torch.arange(len(q), device=emb.device), q] = -torch.inf  # never retrieve the query
        order = sim.topk(max(max_k, max_r), dim=1).indices            # (c, M) nearest first
        relevant = labels[order] == labels[q][:, None]                # (c, M)
        for k in ks:
            hits_at[k] += relevant[:, :k].any(1).sum()
        r = positives[q][:, None]                                     # (c, 1)
        rank = torch.arange(1, order.shape[1] + 1, device=emb.device)  # (M,)
        within = (rank[None, :] <= r) & relevant                      # relevant and among the first R
        precision = within.cumsum(1) / rank[None, :]                  # (c, M) precision@i inside R
        ap_sum += ((precision * within).sum(1) / r[:, 0]).sum()
    out = {f"recall_at_{k}": float(hits_at[k]) / len(queries) for k in ks}
    out["map_at_r"] = float(ap_sum) / len(queries)
    return out
