"""The loss components: cross-entropy scale at initialisation, gradients where they belong, the
cycles differentiable end to end, and the weighted total."""

from __future__ import annotations

import math

import pytest
import torch

from hpsearch.models.symmetric import loss as losses
from hpsearch.models.symmetric.config import COMPONENTS
from hpsearch.models.symmetric.model import SymmetricModel
from hpsearch.models.symmetric.net import straight_through


@pytest.fixture(scope="module")
def small():
    torch.set_num_threads(1)
    model = SymmetricModel({"num_stories": 120, "hidden_dim": 32, "num_rules": 4}, "cpu", seed=0)
    return model, model.splits["train"].take(torch.arange(16))


@pytest.mark.parametrize("seed", [0, 1])
def test_every_component_starts_on_the_cross_entropy_scale(seed):
    torch.set_num_threads(1)
    model = SymmetricModel({"num_stories": 200}, "cpu", seed=seed)   # default width, rules, weights
    batch = model.splits["train"].take(torch.arange(64))
    with torch.no_grad():
        parts = {k: float(v) for k, v in losses.components(model.net, batch, straight_through).items()
                 if k in COMPONENTS}
    positions = batch.tokens.shape[1]                   # a pointer chooses among L positions
    relations = len(model.vocab.relations)
    choices = len(model.vocab.frame) + 2 * model.net.span  # a generated word: write W or copy 2K
    expected = {"parse": 2 * math.log(positions) + math.log(relations),
                "generate": math.log(choices), "cycle_forward": math.log(choices),
                "cycle_backward": 2 * math.log(choices) + math.log(relations)}
    for name, value in parts.items():
        assert 0.5 * expected[name] < value < 1.5 * expected[name], (name, value, expected[name])
        assert value < 20


def _grads(model, part):
    model.net.zero_grad(set_to_none=True)
    part.backward()
    return {name: (p.grad is not None and bool(p.grad.abs().sum() > 0))
            for name, p in model.net.named_parameters()}


def _reaches(grads, prefix):
    return any(v for k, v in grads.items() if k.startswith(prefix))


@pytest.mark.parametrize("component, reaches, not_reaches", [
    ("parse", ["parser.encoder", "parser.pointer", "parser.relation", "embed"],
     ["generator.", "rules", "parser.frame", "parser.rule_query"]),
    ("generate", ["generator.decoder", "generator.out", "generator.copy_query", "generator.follow",
                  "embed", "rules", "parser.frame", "parser.rule_query"],
     ["parser.pointer", "parser.relation"]),
    ("cycle_forward", ["generator.decoder", "parser.pointer", "parser.relation", "parser.encoder",
                       "rules", "parser.rule_query"],
     []),
    # the backward cycle trains the generator only: the parser reading its sentences is held fixed
    ("cycle_backward", ["generator.decoder", "generator.out", "generator.copy_query", "embed", "rules"],
     ["parser.", "position"]),
])
def test_each_component_trains_the_parameters_it_should(small, component, reaches, not_reaches):
    model, batch = small
    grads = _grads(model, losses.components(model.net, batch, straight_through)[component])
    for prefix in reaches:
        assert _reaches(grads, prefix), f"{component} does not reach {prefix}"
    for prefix in not_reaches:
        assert not _reaches(grads, prefix), f"{component} reaches {prefix}"


def test_cycles_are_differentiable_end_to_end(small):
    """Forward: the sentence's parse feeds generation, so the generation loss trains the parser's
    pointers. Backward: the written sentence is parsed, so the parse of it trains the generator's
    decoder (through the straight-through words)."""
    model, batch = small
    parts = losses.components(model.net, batch, straight_through)
    pointer = model.net.parser.pointer.weight
    decoder = model.net.generator.decoder.qkv.weight
    (g_pointer,) = torch.autograd.grad(parts["cycle_forward"], [pointer], retain_graph=True)
    (g_decoder,) = torch.autograd.grad(parts["cycle_backward"], [decoder])
    for g in (g_pointer, g_decoder):
        assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_total_is_the_weighted_sum_and_a_zero_weight_drops_the_component(small):
    model, batch = small
    parts = losses.components(model.net, batch, straight_through)
    total = losses.total(parts, 1.0, 2.0, 0.5)
    expected = parts["parse"] + 2.0 * parts["generate"] + 0.5 * (parts["cycle_forward"] + parts["cycle_backward"])
    assert torch.allclose(total, expected)
    grads = _grads(model, losses.total(parts, 1.0, 0.0, 0.0))     # parse only
    assert not _reaches(grads, "generator.")


def test_a_word_probability_that_underflowed_gives_a_finite_loss_and_gradient():
    """A target word at probability 0 (float32 underflow): a large finite loss, not inf; other
    words' losses are the plain -log p."""
    words = torch.tensor([[0.0, 1.0, 0.0], [0.25, 0.5, 0.25]], requires_grad=True)
    loss = losses.word_ce(words, torch.tensor([0, 1]))
    tiny = torch.finfo(torch.float32).tiny
    assert math.isfinite(loss.item())
    assert loss.item() == pytest.approx((-math.log(tiny) - math.log(0.5)) / 2, rel=1e-6)
    loss.backward()
    assert torch.isfinite(words.grad).all()
    assert losses.word_ce(torch.tensor([[0.2, 0.8]]), torch.tensor([1])).item() == pytest.approx(-math.log(0.8))
