"""The four loss components, all cross-entropies, and the one place they are weighted.

    loss_parse           sentence -> fact: entity + relation + value
    loss_generate        fact (+ the rule read from the sentence) -> sentence, teacher forcing
    loss_cycle_forward   sentence -> parse (expected spans/relation) -> generate -> same sentence
    loss_cycle_backward  fact -> generate greedily -> parse -> same fact
                         (straight-through words: argmax forward, softmax gradient backward)
    total                w_parse * parse + w_generate * generate + w_cycle * (forward + backward)

Each entity/value term is the mean cross-entropy of its parts (start and end pointers; or the
span's K token slots), so each part sits on its own scale: about log(L) for a pointer, log(R)
for the relation, log(V) for a word at initialisation.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from hpsearch.models.symmetric.data import Split
from hpsearch.models.symmetric.net import Pick, SymmetricNet, Text, align


def pointer_ce(pointer_logits: torch.Tensor, spans: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(entity, value) cross-entropies of the span pointers. logits (B, 4, L), spans (B, 4)."""
    ce = F.cross_entropy(pointer_logits.transpose(1, 2), spans, reduction="none")  # (B, 4)
    return ce[:, :2].mean(), ce[:, 2:].mean()


def word_ce(words: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of distributions (..., V) (probabilities, not logits) against ids (...). A
    probability that underflowed to 0 (a mixture of softmaxes in float32) counts as the smallest
    positive float, so a confident wrong word costs about 87 nats, not an infinite loss that the
    health rules would stop as non-finite."""
    picked = words.gather(-1, target.unsqueeze(-1))
    return -picked.clamp_min(torch.finfo(picked.dtype).tiny).log().mean()


def slot_ce(slots: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(entity, value) cross-entropies of recovered slot contents (B, 2K, V) against ids (B, 2K)."""
    K = target.shape[1] // 2
    return word_ce(slots[:, :K], target[:, :K]), word_ce(slots[:, K:], target[:, K:])


def _join(a: Text, b: Text) -> Text:
    return Text(torch.cat([a.dist, b.dist]), torch.cat([a.emb, b.emb]))


def components(net: SymmetricNet, batch: Split, pick: Pick) -> dict[str, torch.Tensor]:
    """Run the four passes on ``batch``; each loss is taken right after the logits it scores.
    ``pick`` turns the parser's reading of the rule into one rule (straight-through in training).
    Returns the four components and, not a loss, ``rules_read`` (B,): the rule the parser read in
    each sentence (the generator tallies them to choose rules for facts)."""
    B, L = batch.tokens.shape
    K, R = net.span, net.parser.relation.out_features
    sentence = net.text(batch.tokens)                                      # (B, L, .)
    fact_slots = net.text(batch.slots)                                     # (B, 2K, .)
    fact_relation = F.one_hot(batch.relation, R).float()                   # (B, R)
    fact_alignment = align(F.one_hot(batch.spans, L).float(), K)           # (B, 2K, L)

    # cycle backward, first half: fact -> a sentence written greedily (straight-through: the
    # parser reads the chosen words; dist holds the probabilities they were chosen from)
    written = net.write(fact_slots, fact_relation, hard=False)             # (B, L, .)

    # parse: sentence -> (entity, relation, value)
    parsed = net.parse(sentence)
    entity, value = pointer_ce(parsed.pointer_logits, batch.spans)
    loss_parse = entity + F.cross_entropy(parsed.relation_logits, batch.relation) + value

    # cycle backward: ... -> parse of the written sentence -> the same fact: the probability
    # that the words at the parsed spans are the fact's words. The parser reading it is held
    # fixed (its weights get no gradient here): trained on its partner's sentences, it would
    # learn to read whatever the generator writes, and the two would agree on a private code.
    reparsed = net.parse(written, frozen=True, read_rule=False)
    recovered = net.extract(align(F.softmax(reparsed.pointer_logits, -1), K), written)  # (B, 2K, .)
    entity, value = slot_ce(recovered.dist, batch.slots)
    loss_cycle_backward = entity + F.cross_entropy(reparsed.relation_logits, batch.relation) + value

    # generate (the true fact) and cycle forward (the parsed fact: expected spans and relation),
    # both realised with the rule the parser read from the sentence (as its attention over the
    # bank for generate; as one picked rule for the cycle, the way the generator uses rules),
    # teacher-forced on it; one batch of 2B: the two passes do not depend on each other
    alignment = align(F.softmax(parsed.pointer_logits, -1), K)             # (B, 2K, L)
    words = net.generate(
        _join(fact_slots, net.extract(alignment, sentence)),
        torch.cat([fact_relation, F.softmax(parsed.relation_logits, -1)]),
        torch.cat([F.softmax(parsed.rule_logits, -1), pick(parsed.rule_logits)]), _join(sentence, sentence),
        torch.cat([fact_alignment, alignment]))                            # (2B, L, V)
    loss_generate = word_ce(words[:B], batch.tokens)
    loss_cycle_forward = word_ce(words[B:], batch.tokens)

    return {"parse": loss_parse, "generate": loss_generate,
            "cycle_forward": loss_cycle_forward, "cycle_backward": loss_cycle_backward,
            "rules_read": parsed.rule_logits.detach().argmax(-1)}


def total(parts: Mapping[str, torch.Tensor], w_parse: float, w_generate: float,
          w_cycle: float) -> torch.Tensor:
    """The weighted loss: the only place the components are combined."""
    return (w_parse * parts["parse"] + w_generate * parts["generate"]
            + w_cycle * (parts["cycle_forward"] + parts["cycle_backward"]))
