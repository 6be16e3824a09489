"""The symmetric network: a parser (sentence -> fact) and a generator (fact -> sentence) that share
the token embeddings and a bank of ``num_rules`` learned rule vectors.

A rule is the model's own name for a way of saying things (a surface form): the parser infers
which rule a sentence realises (attention over the bank, read from the sentence's frame), and the
generator chooses a rule for a fact (the one most often read for its relation) and realises it. The bank is all the two
directions have to agree on how a fact is worded, so ``num_rules`` bounds how many wordings the
model can tell apart, and ``hidden_dim`` sizes everything else.

Entities and values are *pointed at*: the parser predicts start and end positions of each span,
and the generator copies the fact's slots into the sentence (pointer-generator); the words it
writes itself are the "frame" words, those met outside entity and value spans. So names never
seen in training are parsed and generated as well as familiar ones.

Shapes: B batch, L sentence positions, V vocabulary, W frame words, R relations, N rules,
H hidden_dim, K the longest entity/value in tokens (a fact has 2K slots: entity, then value).
Sentences and slots travel as ``Text``: distributions over the vocabulary with their embeddings,
so a written sentence can be parsed and a parsed fact generated from, differentiably. Discrete
choices go through ``pick``: straight-through (argmax forward, softmax gradient) in training,
argmax in evaluation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from hpsearch.models.symmetric.data import PAD

Pick = Callable[[torch.Tensor], torch.Tensor]  # logits (..., C) -> one-hot (..., C)


def straight_through(logits: torch.Tensor) -> torch.Tensor:
    """Training: the most likely choice as a one-hot, with the softmax's gradient."""
    soft = F.softmax(logits, dim=-1)
    hard = F.one_hot(soft.argmax(-1), logits.shape[-1]).to(soft.dtype)
    return hard - soft.detach() + soft


def argmax_pick(logits: torch.Tensor) -> torch.Tensor:
    """Evaluation: the most likely choice as a one-hot."""
    return F.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype)


class Text(NamedTuple):
    """Words as distributions over the vocabulary, with their expected embeddings."""
    dist: torch.Tensor  # (B, T, V)
    emb: torch.Tensor   # (B, T, H)


def align(pointers: torch.Tensor, span: int) -> torch.Tensor:
    """Span pointers -> slot alignment: which position fills which slot.

    pointers (B, 4, L): distributions over positions for entity start/end, value start/end.
    Returns (B, 2K, L): slot k of a span is position start + k, if that is not past the end.
    """
    B, _, L = pointers.shape
    starts, ends = pointers[:, 0::2], pointers[:, 1::2]                     # (B, 2, L)
    not_ended = ends.flip(-1).cumsum(-1).flip(-1)                           # (B, 2, L) P(end >= p)
    slots = [F.pad(starts, (k, 0))[..., :L] * not_ended for k in range(span)]  # K x (B, 2, L)
    return torch.stack(slots, dim=2).reshape(B, 2 * span, L)               # (B, 2K, L)


class Parsed(NamedTuple):
    relation_logits: torch.Tensor  # (B, R)
    pointer_logits: torch.Tensor   # (B, 4, L) entity start/end, value start/end
    rule_logits: torch.Tensor | None  # (B, N) which rule of the bank it realises (softmax: attention)


Cache = tuple[torch.Tensor, torch.Tensor]  # keys, values (B, T, H) of the positions so far


class Block(nn.Module):
    """One pre-norm transformer layer (single-head attention + MLP), optionally causal. A causal
    block can run one position at a time with a cache of earlier keys and values."""

    def __init__(self, hidden: int, causal: bool):
        super().__init__()
        self.causal = causal
        self.norm1, self.norm2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.mlp = nn.Sequential(nn.Linear(hidden, 2 * hidden), nn.GELU(), nn.Linear(2 * hidden, hidden))

    def forward(self, x: torch.Tensor, cache: Cache | None = None) -> tuple[torch.Tensor, Cache]:
        B, T, H = x.shape                                                    # x: (B, T, H) new positions
        q, k, v = self.qkv(self.norm1(x)).split(H, dim=-1)                   # 3 x (B, T, H)
        if cache is not None:
            k, v = torch.cat([cache[0], k], 1), torch.cat([cache[1], v], 1)  # (B, S, H), S = seen + T
        scores = q @ k.transpose(1, 2) / math.sqrt(H)                        # (B, T, S)
        if self.causal and T > 1:
            S = k.shape[1]
            future = torch.ones(T, S, dtype=torch.bool, device=x.device).triu(S - T + 1)
            scores = scores.masked_fill(future, float("-inf"))
        x = x + self.proj(F.softmax(scores, -1) @ v)                         # (B, T, H)
        return x + self.mlp(self.norm2(x)), (k, v)


class Parser(nn.Module):
    """Sentence -> (entity span, relation, value span), then the rule the sentence realises.

    The rule is read from the sentence's frame: the words with the parsed entity and value spans
    replaced by two role markers, so it depends on how the fact is worded, not on which names it
    holds. It is an attention over the bank (a distribution, passed on as the expected rule
    vector); which rule stands for which wording is learnt from generation.
    """

    def __init__(self, hidden: int, num_relations: int, span: int):
        super().__init__()
        self.span = span
        self.encoder = Block(hidden, causal=False)
        self.norm = nn.LayerNorm(hidden)
        self.keys = nn.Linear(hidden, hidden)
        self.summary = nn.Linear(hidden, hidden)
        self.relation = nn.Linear(hidden, num_relations)
        self.pointer = nn.Linear(hidden, 4 * hidden)
        self.markers = nn.Parameter(torch.randn(2, hidden) / math.sqrt(hidden))  # entity, value
        self.frame = Block(hidden, causal=False)
        self.rule_query = nn.Linear(hidden, hidden)

    def forward(self, words: torch.Tensor, position: torch.Tensor, rules: torch.Tensor,
                read_rule: bool = True) -> Parsed:
        B, L, H = words.shape                                                # words: embedded sentence
        states = self.norm(self.encoder(words + position)[0])                # (B, L, H)
        keys = self.keys(states)                                             # (B, L, H)
        summary = torch.tanh(self.summary(states.mean(1)))                   # (B, H)
        relation_logits = self.relation(summary)                             # (B, R)
        queries = self.pointer(summary).view(B, 4, H)                        # (B, 4, H)
        pointer_logits = queries @ keys.transpose(1, 2) / math.sqrt(H)       # (B, 4, L)
        if not read_rule:
            return Parsed(relation_logits, pointer_logits, None)
        # the frame: span words replaced by role markers (spans as parsed, not differentiated)
        inside = align(F.softmax(pointer_logits.detach(), -1), self.span)    # (B, 2K, L)
        roles = inside.view(B, 2, self.span, L).sum(2).transpose(1, 2)       # (B, L, 2)
        frame = (words + position) * (1.0 - roles.sum(-1, keepdim=True)) + roles @ self.markers
        frame_summary = self.frame(frame)[0].mean(1)                         # (B, H)
        rule_logits = self.rule_query(frame_summary) @ rules.T / math.sqrt(H)  # (B, N)
        return Parsed(relation_logits, pointer_logits, rule_logits)


class Generator(nn.Module):
    """(entity slots, relation, value slots) + rule -> sentence, one word at a time (causal):
    at each position one softmax over [W frame words, 2K slots]; a copied slot gives its content."""

    def __init__(self, hidden: int, num_relations: int, span: int, length: int, num_rules: int):
        super().__init__()
        self.hidden = hidden
        self.slot_position = nn.Parameter(torch.randn(2 * span, hidden) / math.sqrt(hidden))
        self.relation = nn.Parameter(torch.randn(num_relations, hidden) / math.sqrt(hidden))
        self.position = nn.Parameter(torch.randn(length, hidden) / math.sqrt(hidden))
        self.bos = nn.Parameter(torch.zeros(hidden))
        self.fact = nn.Linear(2 * span * hidden + hidden, hidden)
        # how often the parser reads each rule in real sentences of each relation (decaying tally)
        self.register_buffer("usage", torch.zeros(num_relations, num_rules))
        self.condition = nn.Linear(2 * hidden, hidden)
        self.decoder = Block(hidden, causal=True)
        self.norm = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, hidden)
        self.copy_query = nn.Linear(hidden, hidden)
        self.follow = nn.Parameter(torch.zeros(2 * span, 2 * span))  # slot copied -> slot next
        self.empty = nn.Parameter(torch.zeros(()))                    # copying an empty slot

    def read_fact(self, slots: Text, relation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """slots (B, 2K, .), relation (B, R) -> memory (B, 2K, H), fact (B, H)."""
        memory = slots.emb + self.slot_position                              # (B, 2K, H)
        fact = torch.tanh(self.fact(torch.cat([memory.flatten(1), relation @ self.relation], -1)))
        return memory, fact

    def choose_rule(self, relation: torch.Tensor) -> torch.Tensor:
        """The rule to word a fact with (B, N one-hot): the one real sentences of its relation
        (B, R) are most often read as. Wording is partly chance, so there is nothing to learn
        beyond that; a tally keeps the choice among the wordings the parser knows."""
        return argmax_pick(relation @ self.usage)

    @torch.no_grad()
    def count(self, relation: torch.Tensor, rule: torch.Tensor, decay: float = 0.98) -> None:
        """Tally the rules (B,) the parser read in real sentences of relations (B,)."""
        self.usage.mul_(decay).index_put_((relation, rule), torch.ones_like(relation, dtype=self.usage.dtype),
                                          accumulate=True)

    def decode(self, previous: torch.Tensor, source: torch.Tensor, condition: torch.Tensor,
               cache: Cache | None = None) -> tuple[torch.Tensor, Cache]:
        """Decoder states (B, T, H) for T new positions after the cached ones. previous (B, T, H):
        the words before each position; source (B, T, 2K): which slot each was copied from;
        condition (B, 1, H): fact and rule."""
        start, T = (0 if cache is None else cache[0].shape[1]), previous.shape[1]
        x = previous + source @ self.slot_position + self.position[start:start + T] + condition
        states, cache = self.decoder(x, cache)                               # (B, T, H)
        return self.norm(states), cache

    def conditioning(self, fact: torch.Tensor, rule: torch.Tensor) -> torch.Tensor:
        return self.condition(torch.cat([fact, rule], -1)).unsqueeze(1)      # (B, 1, H)

    def choose(self, states: torch.Tensor, previous_source: torch.Tensor, keys: torch.Tensor,
               empty: torch.Tensor, frame_embed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoder states (B, T, H) -> weights of writing each frame word (B, T, W) and of copying
        each slot (B, T, 2K): one softmax. The output layer is the shared embedding (frame rows).
        keys (B, H, 2K): the slots to copy from; empty (B, 1, 2K): how empty each slot is."""
        word_logits = self.out(states) @ frame_embed.T                       # (B, T, W)
        copy_logits = (self.copy_query(states) @ keys                        # (B, T, 2K)
                       + previous_source @ self.follow                       # continue a span
                       + self.empty * empty)                                 # skip empty slots
        joint = F.softmax(torch.cat([word_logits, copy_logits], -1), dim=-1)  # (B, T, W + 2K)
        W = frame_embed.shape[0]
        return joint[..., :W], joint[..., W:]

    @staticmethod
    def words(write: torch.Tensor, copy: torch.Tensor, slots: Text, frame: torch.Tensor) -> torch.Tensor:
        """Word distributions (B, T, V): written frame words plus the contents of copied slots."""
        return (copy @ slots.dist).index_add(-1, frame, write)

    def _read(self, slots: Text, relation: torch.Tensor) -> tuple[torch.Tensor, ...]:
        memory, fact = self.read_fact(slots, relation)
        keys = memory.transpose(1, 2) / math.sqrt(self.hidden)               # (B, H, 2K)
        return fact, keys, slots.dist[..., PAD].unsqueeze(1)                 # (B, H), ..., (B, 1, 2K)

    def teacher_forced(self, slots: Text, relation: torch.Tensor, rule: torch.Tensor,
                       sentence: Text, alignment: torch.Tensor, embed: torch.Tensor,
                       frame: torch.Tensor) -> torch.Tensor:
        """Word distributions (B, L, V) at each position given the reference prefix. ``rule``
        (B, H) is the rule to realise; ``alignment`` (B, 2K, L) which positions came from which
        slot."""
        fact, keys, empty = self._read(slots, relation)
        B = fact.shape[0]
        previous = torch.cat([self.bos.expand(B, 1, -1), sentence.emb[:, :-1]], 1)  # (B, L, H)
        source = F.pad(alignment.transpose(1, 2), (0, 0, 1, 0))[:, :-1]     # (B, L, 2K)
        states, _ = self.decode(previous, source, self.conditioning(fact, rule))  # (B, L, H)
        write, copy = self.choose(states, source, keys, empty, embed[frame])
        return self.words(write, copy, slots, frame)

    def free_running(self, slots: Text, relation: torch.Tensor, rules: torch.Tensor, length: int,
                     embed: torch.Tensor, frame: torch.Tensor, hard: bool,
                     chosen: torch.Tensor | None = None) -> Text:
        """Choose a rule for the fact (or take ``chosen``, one-hot (B, N)), then write ``length``
        words greedily, each fed the words before it.

        ``hard``: one-hot words, no gradient. Otherwise straight-through: the same words forward
        (their embeddings feed the next step and whoever reads the sentence), the expected
        embedding's gradient backward, and ``dist`` holds the probabilities they were chosen from.
        """
        fact, keys, empty = self._read(slots, relation)
        rule = (self.choose_rule(relation) if chosen is None else chosen) @ rules  # (B, H)
        B, frame_embed = fact.shape[0], embed[frame]                         # (W, H)
        condition = self.conditioning(fact, rule)                            # (B, 1, H)
        previous = self.bos.expand(B, 1, -1)                                 # (B, 1, H)
        source = fact.new_zeros(B, 1, keys.shape[-1])                        # (B, 1, 2K)
        dists, embs, cache = [], [], None
        for _ in range(length):
            state, cache = self.decode(previous, source, condition, cache)   # (B, 1, H)
            write, copy = self.choose(state, source, keys, empty, frame_embed)  # (B, 1, W), (B, 1, 2K)
            dist = self.words(write, copy, slots, frame)                     # (B, 1, V)
            ids = dist.argmax(-1)                                            # (B, 1)
            if hard:
                dist, previous = F.one_hot(ids, embed.shape[0]).to(dist.dtype), embed[ids]
            else:
                expected = write @ frame_embed + copy @ slots.emb            # (B, 1, H)
                previous = embed[ids] + expected - expected.detach()
            dists.append(dist)
            embs.append(previous)
            source = copy
        return Text(torch.cat(dists, 1), torch.cat(embs, 1))


class SymmetricNet(nn.Module):
    def __init__(self, vocab_size: int, frame: torch.Tensor, num_relations: int, length: int,
                 span: int, hidden: int, num_rules: int):
        super().__init__()
        self.length, self.span = length, span
        # Shared by both directions: token embeddings (also the generator's output layer) and rules.
        self.embed = nn.Parameter(torch.randn(vocab_size, hidden) / math.sqrt(hidden))  # (V, H)
        self.position = nn.Parameter(torch.randn(length, hidden) / math.sqrt(hidden))   # (L, H)
        self.rules = nn.Parameter(torch.randn(num_rules, hidden))                     # (N, H)
        self.register_buffer("frame", frame.clone(), persistent=False)                # (W,) ids
        self.parser = Parser(hidden, num_relations, span)
        self.generator = Generator(hidden, num_relations, span, length, num_rules)

    def text(self, ids: torch.Tensor) -> Text:
        """Word ids (B, T) as one-hot Text."""
        return Text(F.one_hot(ids, self.embed.shape[0]).to(self.embed.dtype), self.embed[ids])

    def extract(self, alignment: torch.Tensor, sentence: Text) -> Text:
        """The slots an alignment (B, 2K, L) picks out of a sentence; an unfilled slot holds PAD."""
        unfilled = (1.0 - alignment.sum(-1, keepdim=True)).clamp_min(0.0)  # (B, 2K, 1)
        dist = (alignment @ sentence.dist).index_add(
            -1, torch.tensor([PAD], device=unfilled.device), unfilled)       # (B, 2K, V)
        return Text(dist, alignment @ sentence.emb + unfilled * self.embed[PAD])

    def parse(self, sentence: Text, frozen: bool = False, read_rule: bool = True) -> Parsed:
        """``frozen``: gradients reach the sentence but not the parser's weights."""
        if not frozen:
            return self.parser(sentence.emb, self.position, self.rules, read_rule)
        weights = {name: p.detach() for name, p in self.parser.named_parameters()}
        return torch.func.functional_call(
            self.parser, weights, (sentence.emb, self.position.detach(), self.rules.detach(), read_rule))

    def generate(self, slots: Text, relation: torch.Tensor, rule: torch.Tensor, sentence: Text,
                 alignment: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: word distributions (B, L, V); ``rule`` (B, N) weights over the bank."""
        return self.generator.teacher_forced(slots, relation, rule @ self.rules, sentence,
                                             alignment, self.embed, self.frame)

    def write(self, slots: Text, relation: torch.Tensor, hard: bool,
              rule: torch.Tensor | None = None) -> Text:
        """Free-running generation from a fact, with a rule the generator chooses (or ``rule``)."""
        return self.generator.free_running(slots, relation, self.rules, self.length, self.embed,
                                           self.frame, hard, rule)
