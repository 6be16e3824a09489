"""Evaluation metrics from predictions (plain tensors in, Python floats out).

Parse, per sample: the entity is right when the predicted span holds exactly the true entity's
words, the value likewise, the relation when it is the true one.

    entity_acc, relation_acc, value_acc   fraction right, per field
    fact_acc                              mean of the three (the default objective)
    exact                                 all three right
    any                                   at least one right

Generation, per sample, scored up to and including the end token (padding after it is ignored):

    gen_token_acc   fraction of those positions with the reference word (over all tokens)
    gen_exact       the whole sentence reproduced

Round trip: cycle_acc is the fraction of facts that come back whole (entity, relation and value
all right) from fact -> generated sentence -> parse.
"""

from __future__ import annotations

import torch

from hpsearch.models.symmetric.data import PAD


def _mean(flags: torch.Tensor) -> float:
    return float(flags.float().mean()) if flags.numel() else float("nan")


def fields_right(slots: torch.Tensor, relation: torch.Tensor, true_slots: torch.Tensor,
                 true_relation: torch.Tensor) -> torch.Tensor:
    """(N, 3) booleans: entity, relation, value right. slots (N, 2K) word ids, relation (N,)."""
    K = true_slots.shape[1] // 2
    entity = (slots[:, :K] == true_slots[:, :K]).all(-1)
    value = (slots[:, K:] == true_slots[:, K:]).all(-1)
    return torch.stack([entity, relation == true_relation, value], -1)


def parse_metrics(right: torch.Tensor) -> dict[str, float]:
    """From (N, 3) entity/relation/value booleans."""
    entity, relation, value = (_mean(right[:, i]) for i in range(3))
    return {
        "entity_acc": entity, "relation_acc": relation, "value_acc": value,
        "fact_acc": (entity + relation + value) / 3.0,
        "exact": _mean(right.all(-1)), "any": _mean(right.any(-1)),
    }


def end_mask(reference: torch.Tensor) -> torch.Tensor:
    """(N, L) True up to and including the first PAD (the end token) of each reference."""
    ended_before = (reference == PAD).long().cumsum(-1) - (reference == PAD).long()
    return ended_before == 0


def generation_metrics(generated: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    """generated, reference (N, L) word ids."""
    mask = end_mask(reference)
    same = (generated == reference) | ~mask
    tokens = int(mask.sum())
    token_acc = float(((generated == reference) & mask).sum()) / tokens if tokens else float("nan")
    return {"gen_token_acc": token_acc, "gen_exact": _mean(same.all(-1))}


def cut_at_end(tokens: torch.Tensor) -> torch.Tensor:
    """Generated ids (N, L) with everything after the first end token set to PAD."""
    return tokens.masked_fill(~end_mask(tokens), PAD)


def cycle_metrics(right: torch.Tensor) -> dict[str, float]:
    """From (N, 3) booleans of the round-tripped facts."""
    return {"cycle_acc": _mean(right.all(-1))}
