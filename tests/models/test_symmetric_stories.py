"""The story generator: seeded, the figures users had, relations with their own values and forms."""

from __future__ import annotations

import pytest

from hpsearch.models.symmetric.data import locate
from hpsearch.models.symmetric.stories import RELATIONS, generate_stories, split_stories


def _facts(stories):
    return [(s, f) for story in stories for s, f in zip(story.sentences, story.facts)]


def test_same_seed_gives_the_same_stories_and_another_seed_does_not():
    assert generate_stories(80, seed=3) == generate_stories(80, seed=3)
    assert generate_stories(80, seed=3) != generate_stories(80, seed=4)


@pytest.mark.parametrize("seed", [0, 1])
def test_figures_at_1000_stories_match_what_users_had(seed):
    stories = generate_stories(1000, seed=seed)
    pairs = _facts(stories)
    vocabulary = {w for sentence, _ in pairs for w in sentence.split()}
    entities = {fact[0] for _, fact in pairs}
    assert 2400 <= len(pairs) <= 3600          # about 3,000 sentence/fact samples
    assert 1200 <= len(vocabulary) <= 1800     # about 1,500 words
    assert 400 <= len(entities) <= 600         # about 500 entities
    assert all(2 <= len(story.sentences) <= 5 for story in stories)


def test_every_relation_has_its_own_values_and_at_least_three_surface_forms():
    pairs = _facts(generate_stories(1000, seed=0))
    assert len(RELATIONS) >= 10
    values: dict[str, set[str]] = {}
    forms: dict[str, set[str]] = {}
    for sentence, (entity, relation, value) in pairs:
        values.setdefault(relation, set()).add(value)
        template = sentence.replace(entity, "{e}", 1).replace(value, "{v}", 1)
        forms.setdefault(relation, set()).add(template)
    assert set(values) == set(RELATIONS)
    for relation, seen in forms.items():
        assert len({f for f in seen if "{e}" in f and "{v}" in f}) >= 3, relation
    fixed = [r for r, (_, vals) in RELATIONS.items() if vals is not None]
    for i, a in enumerate(fixed):          # fixed value sets are the relation's own
        for b in fixed[i + 1:]:
            assert not values[a] & values[b], (a, b)


def test_entities_and_values_span_several_words_and_occur_in_their_sentences():
    pairs = _facts(generate_stories(300, seed=0))
    assert any(len(f[0].split()) > 1 for _, f in pairs)
    assert any(len(f[2].split()) > 1 for _, f in pairs)
    assert any(f[2] in ("new york", "social researcher") for _, f in pairs)
    for sentence, (entity, _, value) in pairs:
        assert locate(sentence.split(), entity.split(), value.split()) is not None, sentence


def test_split_is_by_story_and_follows_the_fractions():
    stories = generate_stories(200, seed=0)
    train, val, test = split_stories(stories, 0.15, 0.15, seed=0)
    assert len(val) == 30 and len(test) == 30 and len(train) == 140
    ids = [id(s) for s in train + val + test]
    assert len(ids) == len(set(ids)) == 200
    assert split_stories(stories, 0.15, 0.15, seed=0) == (train, val, test)
