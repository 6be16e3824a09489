"""Stories for the symmetric model written apart from its own generator (models/symmetric/stories.py):
another domain (an expedition's log), other relations, other vocabularies, other sentence shapes
(facts stated value-first, passive, inside fillers), entity names from other syllables. Written as the
JSONL a ``data_dir`` reads, so the model sees them as a user's data set.

    from benchmarks.stories_apart import write
    write("apart.jsonl", num_stories=300, seed=0)

No relation and no content word is shared with the model's generator: only function words
(``SHARED``; tests/benchmarks/test_stories_apart.py checks it). Seeded: the same arguments write
the same file.
"""

from __future__ import annotations

import random
from pathlib import Path

from hpsearch.models.symmetric.data import write_jsonl
from hpsearch.models.symmetric.stories import Story

SHARED = frozenset("a and at by for from had in of the to up was".split())   # function words
_SYLLABLES = "zor vek ith ul mab quen dro sil yar thu keb olm rhy gaz pim tov".split()
_TITLES = ["commander", "ensign", "scout", "medic", "quartermaster", "cartographer"]

# relation -> (values, templates); "{e}" the entity, "{v}" the value, each used once
RELATIONS: dict[str, tuple[list[str], list[str]]] = {
    "camp": (["north ridge", "snow shelf", "basalt col", "glacier snout", "upper moraine", "fjord mouth",
              "ash plain", "crater rim", "salt flat", "scree slope", "lower gully", "frozen lake"],
             ["{e} pitched a tent at the {v}", "at the {v} the log places {e}",
              "by nightfall {e} had reached the {v}", "the {v} sheltered {e} from the storm"]),
    "carries": (["pickaxe", "hawser", "sextant", "heliograph", "fuel tin", "sledge runner", "snow probe",
                 "theodolite", "barometer", "tin of pemmican", "crampons", "logbook"],
                ["{e} hauled the {v} up the slope", "the {v} was strapped to the pack of {e}",
                 "nobody but {e} would touch the {v}", "{e} lost and then recovered the {v}"]),
    "ailment": (["frostbite", "snow blindness", "a sprained ankle", "fever", "scurvy", "a cracked rib",
                 "exhaustion", "altitude sickness"],
                ["{e} suffered from {v}", "{v} kept {e} in the tent", "the medic treated {e} for {v}"]),
    "ship": (["aurora", "resolute", "endurance", "discovery", "terra nova", "polar star", "fram", "erebus"],
             ["{e} sailed south aboard the {v}", "the crew list of the {v} names {e}",
              "aboard the {v} {e} kept the lookout"]),
    "sighted": (["a leopard seal", "emperor penguins", "a wandering albatross", "a humpback whale",
                 "skuas", "a crevasse field", "an iceberg", "the southern lights"],
                ["{e} sighted {v} from the ridge", "{v} was first seen by {e}",
                 "through the glass {e} spotted {v}"]),
}


def _name(rng: random.Random) -> str:
    word = "".join(rng.choice(_SYLLABLES) for _ in range(rng.choice([2, 2, 3])))
    return f"{rng.choice(_TITLES)} {word}" if rng.random() < 0.4 else word


def stories(num_stories: int, seed: int = 0) -> list[Story]:
    """``num_stories`` stories of 2-5 sentences about a cast of 2-3, one fact per sentence."""
    rng = random.Random(seed)
    out = []
    names = sorted(RELATIONS)
    for _ in range(num_stories):
        cast = list(dict.fromkeys(_name(rng) for _ in range(rng.randint(2, 3))))   # in drawing order
        sentences, facts = [], []
        for _ in range(rng.randint(2, 5)):
            entity, relation = rng.choice(cast), rng.choice(names)
            values, templates = RELATIONS[relation]
            value = rng.choice(values)
            sentences.append(rng.choice(templates).format(e=entity, v=value))
            facts.append((entity, relation, value))
        out.append(Story(tuple(sentences), tuple(facts)))
    return out


def write(path: str | Path, num_stories: int = 300, seed: int = 0) -> Path:
    """The stories as JSONL at ``path`` (what the symmetric model's ``data_dir`` reads)."""
    write_jsonl(stories(num_stories, seed), path)
    return Path(path)
