"""hpsearch.models.triplet.metrics: recall@k and MAP@R against hand-computed examples and a plain-loop
reference."""

import math

import pytest
import torch

from hpsearch.models.triplet.metrics import retrieval_metrics


def on_circle(degrees: list[float]) -> torch.Tensor:
    rad = torch.tensor(degrees, dtype=torch.float64) * math.pi / 180
    return torch.stack([rad.cos(), rad.sin()], dim=1)


def test_hand_computed_example():
    # angle: 0 10 30 45 65 200 ; class: a a b a b c   (cosine order = angular order, no ties)
    # q0 (a): 1a 2b 3a 4b  R=2 -> hit@1; AP = (1/1)/2 = 0.5
    # q1 (a): 0a 2b 3a 4b  R=2 -> hit@1; AP = 0.5
    # q2 (b): 3a 1a 0a 4b  R=1 -> first hit at rank 4; AP = 0
    # q3 (a): 2b 4b 1a 0a  R=2 -> first hit at rank 3; AP = 0
    # q4 (b): 3a 2b 1a 0a  R=1 -> first hit at rank 2; AP = 0
    # q5 (c): the only c, no answer exists: not a query.
    emb = on_circle([0, 10, 30, 45, 65, 200])
    labels = torch.tensor([0, 0, 1, 0, 1, 2])
    m = retrieval_metrics(emb, labels)
    assert m["recall_at_1"] == pytest.approx(2 / 5)
    assert m["recall_at_2"] == pytest.approx(3 / 5)
    assert m["recall_at_4"] == pytest.approx(5 / 5)
    assert m["recall_at_8"] == pytest.approx(5 / 5)
    assert m["map_at_r"] == pytest.approx((0.5 + 0.5) / 5)


def test_map_at_r_counts_precision_only_at_relevant_ranks_within_r():
    # angle: 0 10 25 31 47 ; class: a b a a b
    # q0 (a): 1b(10) 2a(25) 3a(31) 4b(47)  R=2 -> within R, relevant at rank 2: AP = (1/2)/2 = 0.25
    # q1 (b): 0a(10) 2a(15) 3a(21) 4b(37)  R=1 -> AP = 0; first hit at rank 4
    # q2 (a): 3a(6) 1b(15) 4b(22) 0a(25)   R=2 -> relevant at rank 1 only: AP = (1/1)/2 = 0.5
    # q3 (a): 2a(6) 4b(16) 1b(21) 0a(31)   R=2 -> AP = 0.5
    # q4 (b): 3a(16) 2a(22) 1b(37) 0a(47)  R=1 -> AP = 0; first hit at rank 3
    emb = on_circle([0, 10, 25, 31, 47])
    m = retrieval_metrics(emb, torch.tensor([0, 1, 0, 0, 1]))
    assert m["map_at_r"] == pytest.approx((0.25 + 0 + 0.5 + 0.5 + 0) / 5)
    assert m["recall_at_1"] == pytest.approx(2 / 5)
    assert m["recall_at_2"] == pytest.approx(3 / 5)
    assert m["recall_at_4"] == pytest.approx(5 / 5)


def test_perfect_clusters_score_one():
    emb = on_circle([0, 1, 2, 120, 121, 122, 240, 241])
    m = retrieval_metrics(emb, torch.tensor([0, 0, 0, 1, 1, 1, 2, 2]))
    assert all(v == pytest.approx(1.0) for v in m.values())


def reference(emb: torch.Tensor, labels: torch.Tensor, ks=(1, 2, 4, 8)) -> dict[str, float]:
    """Plain loops over queries: sort every other item by cosine similarity."""
    emb = torch.nn.functional.normalize(emb, dim=1)
    y = labels.tolist()
    hits = {k: 0 for k in ks}
    ap_total, queries = 0.0, 0
    for q in range(len(y)):
        others = [i for i in range(len(y)) if i != q]
        r = sum(y[i] == y[q] for i in others)
        if r == 0:
            continue
        queries += 1
        ranked = sorted(others, key=lambda i: -float(emb[q] @ emb[i]))
        rel = [y[i] == y[q] for i in ranked]
        for k in ks:
            hits[k] += any(rel[:k])
        ap_total += sum(sum(rel[:i + 1]) / (i + 1) for i in range(r) if rel[i]) / r
    out = {f"recall_at_{k}": hits[k] / queries for k in ks}
    out["map_at_r"] = ap_total / queries
    return out


@pytest.mark.parametrize("chunk", [1024, 7])
def test_matches_plain_loop_reference_on_random_embeddings(chunk):
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(60, 5, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 6, (60,), generator=g)
    got = retrieval_metrics(emb, labels, chunk=chunk)
    want = reference(emb, labels)
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-6), key
    assert all(type(v) is float for v in got.values())


def test_no_query_with_an_answer_is_refused():
    with pytest.raises(ValueError, match="no query"):
        retrieval_metrics(torch.eye(3), torch.tensor([0, 1, 2]))
