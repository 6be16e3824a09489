"""Users' stories from JSONL, the vocabulary, and every split as tensors on the device.

JSONL format: one story per line, one fact per sentence, blank lines skipped:

    {"sentences": ["alice is in the kitchen", "alice picked up the red ball"],
     "facts": [["alice", "location", "kitchen"], ["alice", "holding", "red ball"]]}

Tokens are whitespace-separated, used as written (no lower-casing, punctuation stays attached).
The entity and the value must each occur in their sentence as whole tokens, without overlapping:
the parser points at them, so they have to be there. Every error is one line naming the file and
line number.

Encoded, a sample is: ``tokens`` (L,) padded with PAD (= the end-of-sentence token), ``spans``
(4,) = entity start, entity end, value start, value end (inclusive positions), ``relation`` ()
and ``slots`` (2K,) = the entity's tokens then the value's tokens, each padded to K.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from hpsearch.models.config import ConfigError
from hpsearch.models.symmetric.stories import Story

PAD = 0          # padding, and the token a generated sentence ends with
PAD_WORD = "<pad>"


def find_span(tokens: Sequence[str], part: Sequence[str], start: int = 0) -> list[int]:
    """Start positions where ``part`` occurs in ``tokens`` as consecutive whole tokens."""
    n = len(part)
    return [i for i in range(start, len(tokens) - n + 1) if list(tokens[i:i + n]) == list(part)]


def locate(tokens: Sequence[str], entity: Sequence[str], value: Sequence[str]) -> tuple[int, int, int, int] | None:
    """(entity start, entity end, value start, value end), the first non-overlapping pair, or None."""
    for es in find_span(tokens, entity):
        ee = es + len(entity) - 1
        for vs in find_span(tokens, value):
            ve = vs + len(value) - 1
            if ve < es or vs > ee:
                return es, ee, vs, ve
    return None


def _story_from_json(obj: object, where: str) -> Story:
    if not isinstance(obj, dict):
        raise ConfigError(f"{where}: got {type(obj).__name__}, expected an object "
                          '{"sentences": [...], "facts": [[entity, relation, value], ...]}')
    for key in obj:
        if key not in ("sentences", "facts"):
            raise ConfigError(f"{where}: unknown key {key!r}; allowed: facts, sentences")
    sentences, facts = obj.get("sentences"), obj.get("facts")
    if not isinstance(sentences, list) or not sentences:
        raise ConfigError(f"{where}: sentences: got {sentences!r}, expected a non-empty list of strings")
    if not isinstance(facts, list):
        raise ConfigError(f"{where}: facts: got {facts!r}, expected a list of [entity, relation, value]")
    if len(sentences) != len(facts):
        raise ConfigError(f"{where}: {len(sentences)} sentences but {len(facts)} facts; "
                          "expected one fact per sentence")
    clean = []
    for i, (sentence, fact) in enumerate(zip(sentences, facts)):
        if not isinstance(sentence, str) or not sentence.split():
            raise ConfigError(f"{where}: sentences[{i}]: got {sentence!r}, expected a non-empty string")
        if (not isinstance(fact, list) or len(fact) != 3
                or not all(isinstance(x, str) and x.split() for x in fact)):
            raise ConfigError(f"{where}: facts[{i}]: got {fact!r}, expected [entity, relation, value] "
                              "(three non-empty strings)")
        entity, relation, value = (" ".join(x.split()) for x in fact)
        if locate(sentence.split(), entity.split(), value.split()) is None:
            raise ConfigError(f"{where}: facts[{i}]: entity {entity!r} and value {value!r} must both "
                              f"occur, without overlapping, as whole words in {sentence!r}")
        clean.append((entity, relation, value))
    return Story(tuple(" ".join(s.split()) for s in sentences), tuple(clean))


def load_jsonl(path: str | Path, where: str = "data_dir") -> list[Story]:
    """Stories from one JSONL file; a one-line ConfigError naming file and line for any bad line."""
    path = Path(path)
    stories = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            at = f"{where}: {str(path)!r} line {number}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise ConfigError(f"{at}: not valid JSON ({err.msg} at column {err.colno})") from None
            stories.append(_story_from_json(obj, at))
    if not stories:
        raise ConfigError(f"{where}: {str(path)!r} holds no stories (empty file); expected one JSON "
                          "story per line")
    return stories


def read_data_dir(data_dir: str | Path, where: str = "data_dir") -> list[Story]:
    """A ``.jsonl`` file, or a directory whose ``*.jsonl`` files are read in name order."""
    path = Path(data_dir)
    if path.is_file():
        return load_jsonl(path, where)
    if not path.is_dir():
        raise ConfigError(f"{where}: got {str(data_dir)!r}, expected a .jsonl file or a directory "
                          "holding .jsonl files (it does not exist)")
    files = sorted(path.glob("*.jsonl"))
    if not files:
        raise ConfigError(f"{where}: {str(data_dir)!r} holds no .jsonl file")
    return [story for file in files for story in load_jsonl(file, where)]


def write_jsonl(stories: Iterable[Story], path: str | Path) -> None:
    """The format ``load_jsonl`` reads (used to export generated stories)."""
    with Path(path).open("w", encoding="utf-8") as fh:
        for story in stories:
            fh.write(json.dumps({"sentences": list(story.sentences),
                                 "facts": [list(f) for f in story.facts]}) + "\n")


@dataclass(frozen=True)
class Vocab:
    """Every word of the data set (all splits: the model learns from training sentences only, but
    a word met first in validation still has an id, so it can be copied and scored). ``frame``:
    ids of the words met outside entity and value spans (a generator writes these and copies the
    rest), PAD (the end token) first."""
    words: tuple[str, ...]          # index -> word; words[PAD] is PAD_WORD
    relations: tuple[str, ...]      # index -> relation name
    frame: tuple[int, ...]

    @classmethod
    def build(cls, stories: Iterable[Story]) -> "Vocab":
        words, relations, frame = set(), set(), set()
        for story in stories:
            for sentence, (entity, relation, value) in zip(story.sentences, story.facts):
                tokens = sentence.split()
                es, ee, vs, ve = locate(tokens, entity.split(), value.split()) or (0, -1, 0, -1)
                words.update(tokens)
                frame.update(w for i, w in enumerate(tokens) if not (es <= i <= ee or vs <= i <= ve))
                relations.add(relation)
        ordered = (PAD_WORD, *sorted(words))
        index = {w: i for i, w in enumerate(ordered)}
        return cls(ordered, tuple(sorted(relations)), (PAD, *sorted(index[w] for w in frame)))

    def __len__(self) -> int:
        return len(self.words)


@dataclass(frozen=True)
class Split:
    """One split as tensors on the device; ``take(index)`` gathers a batch without Python loops."""
    tokens: torch.Tensor    # (N, L) long
    spans: torch.Tensor     # (N, 4) long: entity start/end, value start/end
    relation: torch.Tensor  # (N,) long
    slots: torch.Tensor     # (N, 2K) long: entity tokens, value tokens, PAD-padded to K each

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def take(self, index: torch.Tensor) -> "Split":
        return Split(self.tokens[index], self.spans[index], self.relation[index], self.slots[index])


def shape_of(stories: Iterable[Story]) -> tuple[int, int]:
    """(L, K): the longest sentence plus one end token, and the longest entity or value."""
    length, span = 1, 1
    for story in stories:
        for sentence, (entity, _, value) in zip(story.sentences, story.facts):
            length = max(length, len(sentence.split()) + 1)
            span = max(span, len(entity.split()), len(value.split()))
    return length, span


def encode(stories: Iterable[Story], vocab: Vocab, length: int, span: int, device: torch.device) -> Split:
    """Every sentence of ``stories`` as one sample (done once, before training)."""
    index = {w: i for i, w in enumerate(vocab.words)}
    relation_index = {r: i for i, r in enumerate(vocab.relations)}
    tokens, spans, relations, slots = [], [], [], []
    for story in stories:
        for sentence, (entity, relation, value) in zip(story.sentences, story.facts):
            words = sentence.split()
            where = locate(words, entity.split(), value.split())
            if where is None:
                raise ConfigError(f"data: entity {entity!r} or value {value!r} not found in {sentence!r}")
            ids = [index[w] for w in words]
            tokens.append(ids + [PAD] * (length - len(ids)))
            spans.append(list(where))
            relations.append(relation_index[relation])
            ent = [index[w] for w in entity.split()]
            val = [index[w] for w in value.split()]
            slots.append(ent + [PAD] * (span - len(ent)) + val + [PAD] * (span - len(val)))
    as_long = lambda rows: torch.tensor(rows, dtype=torch.long, device=device)  # noqa: E731
    if not tokens:
        return Split(torch.zeros(0, length, dtype=torch.long, device=device),
                     torch.zeros(0, 4, dtype=torch.long, device=device),
                     torch.zeros(0, dtype=torch.long, device=device),
                     torch.zeros(0, 2 * span, dtype=torch.long, device=device))
    return Split(as_long(tokens), as_long(spans), as_long(relations), as_long(slots))
