"""hpsearch.models.triplet.loss: every miner against a brute-force enumeration of all triplets, and the
no-valid-triplet case (a zero on the graph, zero gradients, a count of 0)."""

import itertools
import math

import pytest
import torch

from hpsearch.models.triplet.loss import MINERS, pairwise_distances, triplet_loss

MARGIN = 0.3
# 10 points, 4 classes; class 3 has a single member, so it serves only as a negative.
LABELS = [0, 0, 0, 1, 1, 1, 2, 2, 2, 3]


def hand_made_embeddings(seed: int) -> torch.Tensor:
    """Random points near the unit sphere: distinct distances (no ties), triplets of every kind."""
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(len(LABELS), 3, generator=g, dtype=torch.float64)
    return emb / emb.norm(dim=1, keepdim=True)


def brute_force(emb: torch.Tensor, labels: list[int], mining: str, margin: float):
    """(set of mined (a, p, n), loss) by plain loops over every triplet of the batch."""
    pts = emb.tolist()
    d = [[math.dist(p, q) for q in pts] for p in pts]
    idx = range(len(labels))
    valid = [(a, p, n) for a, p, n in itertools.product(idx, idx, idx)
             if a != p and labels[a] == labels[p] and labels[n] != labels[a]]
    hinge = {t: max(d[t[0]][t[1]] - d[t[0]][t[2]] + margin, 0.0) for t in valid}
    if mining == "batch_all":
        mined = set(valid)
        active = [hinge[t] for t in mined if hinge[t] > 0]
        return mined, (sum(active) / len(active) if active else 0.0)
    if mining == "batch_hard":
        mined = set()
        for a in idx:
            pos = [p for p in idx if p != a and labels[p] == labels[a]]
            neg = [n for n in idx if labels[n] != labels[a]]
            if pos and neg:
                mined.add((a, max(pos, key=lambda p: d[a][p]), min(neg, key=lambda n: d[a][n])))
    else:  # semi_hard
        mined = set()
        for a, p in itertools.product(idx, idx):
            if a == p or labels[a] != labels[p]:
                continue
            neg = [n for n in idx if labels[n] != labels[a]]
            farther = [n for n in neg if d[a][n] > d[a][p]]
            mined.add((a, p, min(farther, key=lambda n: d[a][n]) if farther else max(neg, key=lambda n: d[a][n])))
    return mined, sum(hinge[t] for t in mined) / len(mined)


@pytest.mark.parametrize("mining", ["batch_all", "batch_hard", "semi_hard"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_miner_and_loss_match_brute_force(mining, seed):
    emb = hand_made_embeddings(seed)
    labels = torch.tensor(LABELS)
    expected_mined, expected_loss = brute_force(emb, LABELS, mining, MARGIN)

    triplets = MINERS[mining](pairwise_distances(emb), labels, MARGIN)
    mined = set(zip(triplets.anchor.tolist(), triplets.positive.tolist(), triplets.negative.tolist()))
    assert mined == expected_mined
    assert len(triplets) == len(expected_mined)

    out = triplet_loss(emb, labels, mining, MARGIN)
    assert out.components["triplet"].item() == pytest.approx(expected_loss, abs=1e-12)
    assert out.stats["triplets"].item() == len(expected_mined)


def test_brute_force_cases_are_not_trivial():
    """The hand-made batches hold both satisfied and violated triplets, so the checks above
    exercise the hinge and the batch_all reducer's 'active only' mean."""
    emb = hand_made_embeddings(0)
    out = triplet_loss(emb, torch.tensor(LABELS), "batch_all", MARGIN)
    assert 0 < out.stats["active"].item() < out.stats["triplets"].item()


def test_distances_match_plain_euclidean_and_zero_has_zero_gradient():
    emb = hand_made_embeddings(3)
    emb = torch.cat([emb, emb[:1]]).requires_grad_(True)          # a duplicate: distance exactly 0
    d = pairwise_distances(emb)
    assert torch.allclose(d, torch.cdist(emb, emb), atol=1e-12)
    assert d[0, -1].item() == 0.0 and d.diagonal().abs().sum().item() == 0.0
    d[0, -1].backward()
    assert torch.isfinite(emb.grad).all() and emb.grad.abs().sum().item() == 0.0


@pytest.mark.parametrize("mining", ["batch_all", "batch_hard", "semi_hard"])
@pytest.mark.parametrize("labels", [[0, 1, 2, 3, 4, 5], [7, 7, 7, 7]], ids=["all-distinct", "one-class"])
def test_no_valid_triplet_is_a_zero_on_the_graph(mining, labels):
    """All-distinct labels (no positive pair: the users' batches) or one class (no negative)."""
    net = torch.nn.Linear(4, 3)
    x = torch.randn(len(labels), 4, generator=torch.Generator().manual_seed(0))
    emb = torch.nn.functional.normalize(net(x), dim=1)
    out = triplet_loss(emb, torch.tensor(labels), mining, MARGIN)
    loss = out.components["triplet"]
    assert loss.item() == 0.0
    assert loss.requires_grad and loss.grad_fn is not None
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum().item() == 0.0 for p in net.parameters())
    assert out.stats["triplets"].item() == 0 and out.stats["active"].item() == 0
    expected_pos_pairs = 0 if len(set(labels)) == len(labels) else len(labels) * (len(labels) - 1)
    assert out.stats["pos_pairs"].item() == expected_pos_pairs


def test_batch_all_with_every_triplet_satisfied_is_zero_and_active_zero():
    emb = torch.tensor([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [-1.0, 0.0]], requires_grad=True)
    out = triplet_loss(emb, torch.tensor([0, 0, 1, 1]), "batch_all", margin=0.5)
    assert out.stats["triplets"].item() == 8 and out.stats["active"].item() == 0
    loss = out.components["triplet"]
    assert loss.item() == 0.0 and loss.grad_fn is not None
    loss.backward()
    assert emb.grad.abs().sum().item() == 0.0


def test_collapsed_embedding_gives_loss_equal_to_margin():
    """Every embedding in one place: every distance 0, so each hinge is exactly the margin — the
    picture that `train_emb_std` tells apart from a genuinely hard batch."""
    emb = torch.ones(6, 4) / 2
    out = triplet_loss(emb, torch.tensor([0, 0, 1, 1, 2, 2]), "batch_hard", margin=0.2)
    assert out.components["triplet"].item() == pytest.approx(0.2)
    assert emb.std(0).mean().item() == 0.0
