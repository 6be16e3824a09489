"""SymmetricModel: the factory ``hpsearch`` builds for ``model: symmetric``.

Data (generated stories, or the user's JSONL) is split by story, encoded once and kept as tensors
on the device; an epoch gathers batches by index from a seeded permutation. Same params + seed on
the same device give the same metrics; ``state_dict`` carries weights, optimiser, epoch counter and
the random state, so a restored model continues exactly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from hpsearch.models.config import ConfigError, parse
from hpsearch.models.symmetric import config as spec
from hpsearch.models.symmetric import loss as losses
from hpsearch.models.symmetric import metrics
from hpsearch.models.symmetric.config import EVAL_KEYS, PARSE_KEYS, TRAIN_KEYS, SymmetricConfig  # noqa: F401
from hpsearch.models.symmetric.data import Split, Vocab, encode, read_data_dir, shape_of
from hpsearch.models.symmetric.net import SymmetricNet, Text, align, argmax_pick, straight_through
from hpsearch.models.symmetric.stories import Story, generate_stories, split_stories

EVAL_BATCH = 256


@contextlib.contextmanager
def cpu_threads(count: int, device: torch.device):
    """Run on ``count`` torch threads on CPU, then restore the setting. This model's work is many
    small matrix products: on a 2-core machine that is also running other work, two threads
    made an epoch 7-15x slower than one."""
    if count == 0 or device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def load_data(config: SymmetricConfig, seed: int, device: torch.device) -> tuple[Vocab, int, dict[str, Split]]:
    """(vocabulary, span K, {"train", "val", "test"} tensors)."""
    stories: list[Story]
    if config.data_dir is not None:
        stories = read_data_dir(config.data_dir, where="params.data_dir")
    else:
        stories = generate_stories(config.num_stories, seed)
    parts = split_stories(stories, config.val_fraction, config.test_fraction, seed)
    if not parts[0]:
        raise ConfigError(f"params.data_dir: {len(stories)} stories leave none for training after the "
                          "val/test split; expected more stories or smaller fractions")
    vocab = Vocab.build(stories)
    length, span = shape_of(stories)
    splits = {name: encode(part, vocab, length, span, device)
              for name, part in zip(("train", "val", "test"), parts)}
    return vocab, span, splits


class SymmetricModel:
    """Parses story sentences into (entity, relation, value) and generates them back."""

    Config = spec.Config
    objective = spec.objective
    reported = spec.reported
    collapse = spec.collapse

    def __init__(self, params: Mapping[str, Any], device: torch.device | str, seed: int):
        self.config = parse(SymmetricConfig, dict(params), where="params.")
        self.device = torch.device(device)
        self.vocab, span, self.splits = load_data(self.config, seed, self.device)
        length = self.splits["train"].tokens.shape[1]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            frame = torch.tensor(self.vocab.frame, dtype=torch.long)
            self.net = SymmetricNet(len(self.vocab), frame, len(self.vocab.relations), length, span,
                                    self.config.hidden_dim, self.config.num_rules).to(self.device)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=self.config.lr)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)
        self.epoch = 0

    def _total(self, parts: Mapping[str, torch.Tensor]) -> torch.Tensor:
        c = self.config
        return losses.total(parts, c.w_parse, c.w_generate, c.w_cycle)

    def train_epoch(self) -> dict[str, float]:
        with cpu_threads(self.config.cpu_threads, self.device):
            return self._train_epoch()

    def _train_epoch(self) -> dict[str, float]:
        self.net.train()
        data, size = self.splits["train"], self.config.batch_size
        order = torch.randperm(len(data), generator=self.generator, device=self.device)
        totals, parts, norms = [], [], []
        for start in range(0, len(data), size):
            batch = data.take(order[start:start + size])
            components = losses.components(self.net, batch, straight_through)
            loss = self._total(components)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            clip = self.config.grad_clip if self.config.grad_clip > 0 else float("inf")
            norms.append(torch.nn.utils.clip_grad_norm_(self.net.parameters(), clip))  # norm before
            self.optimizer.step()
            totals.append(loss.detach())
            parts.append(torch.stack([components[c].detach() for c in spec.COMPONENTS]))
            self.net.generator.count(batch.relation, components["rules_read"])
        self.epoch += 1
        batch_losses = torch.stack(totals)
        out = {"train_loss": float(batch_losses.mean())}
        means = torch.stack(parts).mean(0)
        out.update({f"train_loss_{c}": float(v) for c, v in zip(spec.COMPONENTS, means)})
        out["train_grad_norm"] = float(torch.stack(norms).mean())
        out["train_batch_loss_std"] = float(batch_losses.std(correction=0))
        return out

    @torch.no_grad()
    def predict(self, split: str = "val") -> dict[str, torch.Tensor]:
        """Per-sample predictions on a split: parsed slots/relation, generated sentences (with the
        rule the parser reads from the reference), and the round trip's slots/relation."""
        data, net = self.splits[split], self.net
        net.eval()
        out: dict[str, list[torch.Tensor]] = {k: [] for k in (
            "slots", "relation", "rule", "generated", "cycle_slots", "cycle_relation", "loss")}
        R = len(self.vocab.relations)
        for start in range(0, len(data), EVAL_BATCH):
            batch = data.take(torch.arange(start, min(start + EVAL_BATCH, len(data)), device=self.device))
            sentence = net.text(batch.tokens)                               # (B, L, .)
            fact_slots = net.text(batch.slots)                              # (B, 2K, .)
            fact_relation = F.one_hot(batch.relation, R).float()            # (B, R)
            parsed = net.parse(sentence)
            out["slots"].append(self._read_slots(parsed.pointer_logits, sentence))
            out["relation"].append(parsed.relation_logits.argmax(-1))
            out["rule"].append(parsed.rule_logits.argmax(-1))
            written = net.write(fact_slots, fact_relation, hard=True, rule=argmax_pick(parsed.rule_logits))
            out["generated"].append(metrics.cut_at_end(written.dist.argmax(-1)))
            written = net.write(fact_slots, fact_relation, hard=True)
            again = net.text(metrics.cut_at_end(written.dist.argmax(-1)))
            reparsed = net.parse(again, read_rule=False)
            out["cycle_slots"].append(self._read_slots(reparsed.pointer_logits, again))
            out["cycle_relation"].append(reparsed.relation_logits.argmax(-1))
            loss = self._total(losses.components(net, batch, argmax_pick))
            out["loss"].append(loss.reshape(1).expand(len(batch)))
        return {k: torch.cat(v) for k, v in out.items()}

    def _read_slots(self, pointer_logits: torch.Tensor, sentence: Text) -> torch.Tensor:
        alignment = align(argmax_pick(pointer_logits), self.net.span)       # (B, 2K, L)
        return self.net.extract(alignment, sentence).dist.argmax(-1)        # (B, 2K)

    def evaluate(self, split: str = "val") -> dict[str, float]:
        if split not in ("val", "test"):
            raise ConfigError(f"split: got {split!r}, expected 'val' or 'test'")
        data = self.splits[split]
        with cpu_threads(self.config.cpu_threads, self.device):
            p = self.predict(split)
        right = metrics.fields_right(p["slots"], p["relation"], data.slots, data.relation)
        cycle = metrics.fields_right(p["cycle_slots"], p["cycle_relation"], data.slots, data.relation)
        values = {"loss": float(p["loss"].mean())}
        values.update(metrics.parse_metrics(right))
        values.update(metrics.generation_metrics(p["generated"], data.tokens))
        values.update(metrics.cycle_metrics(cycle))
        values["rules_used"] = float(p["rule"].unique().numel())
        return {f"{split}_{k}": values[k] for k in EVAL_KEYS}

    def state_dict(self) -> dict[str, Any]:
        return {"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
                "epoch": self.epoch, "rng": self.generator.get_state(),
                "vocab_size": len(self.vocab), "num_relations": len(self.vocab.relations)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for key, have in (("vocab_size", len(self.vocab)), ("num_relations", len(self.vocab.relations))):
            if int(state[key]) != have:
                raise ConfigError(f"weights: saved for {key} {int(state[key])}, but these params give "
                                  f"{have}; expected the params (data) the weights were trained with")
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch = int(state["epoch"])
        self.generator.set_state(state["rng"].cpu())
