"""Users' JSONL stories: good files load, bad ones fail with one line naming file and line."""

from __future__ import annotations

import json

import pytest
import torch

from hpsearch.models.config import ConfigError, parse
from hpsearch.models.symmetric.data import PAD, Vocab, encode, load_jsonl, read_data_dir, shape_of, write_jsonl
from hpsearch.models.symmetric.model import SymmetricConfig
from hpsearch.models.symmetric.stories import Story, generate_stories

GOOD = {"sentences": ["alice is in the living room", "the red ball was taken by alice"],
        "facts": [["alice", "location", "living room"], ["alice", "holding", "red ball"]]}


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _error(path) -> str:
    with pytest.raises(ConfigError) as err:
        load_jsonl(path)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_generated_stories_round_trip_through_jsonl(tmp_path):
    stories = generate_stories(25, seed=1)
    write_jsonl(stories, tmp_path / "s.jsonl")
    assert load_jsonl(tmp_path / "s.jsonl") == stories


def test_a_directory_is_read_file_by_file_in_name_order_and_blank_lines_are_skipped(tmp_path):
    _write(tmp_path / "b.jsonl", [json.dumps(GOOD)])
    _write(tmp_path / "a.jsonl", ["", json.dumps({"sentences": ["bob speaks welsh"],
                                                 "facts": [["bob", "language", "welsh"]]}), "  "])
    stories = read_data_dir(tmp_path)
    assert [s.facts[0][0] for s in stories] == ["bob", "alice"]


def test_malformed_json_names_the_line(tmp_path):
    path = _write(tmp_path / "s.jsonl", [json.dumps(GOOD), '{"sentences": ["a b"], "facts": [[', json.dumps(GOOD)])
    message = _error(path)
    assert "line 2" in message and "not valid JSON" in message and "s.jsonl" in message


def test_sentence_count_must_equal_fact_count(tmp_path):
    bad = {"sentences": GOOD["sentences"], "facts": GOOD["facts"][:1]}
    message = _error(_write(tmp_path / "s.jsonl", [json.dumps(GOOD), json.dumps(bad)]))
    assert "line 2" in message and "2 sentences but 1 facts" in message


def test_empty_file_is_refused(tmp_path):
    message = _error(_write(tmp_path / "s.jsonl", ["", "   "]))
    assert "no stories" in message and "empty" in message


@pytest.mark.parametrize("story, expected", [
    ({"sentences": ["bob speaks welsh"], "facts": [["carol", "language", "welsh"]]}, "must both occur"),
    ({"sentences": ["bob speaks welsh"], "facts": [["bob", "language"]]}, "three non-empty strings"),
    ({"sentences": ["bob speaks welsh"]}, "facts: got None"),
    ({"sentences": [], "facts": []}, "non-empty list"),
    (["bob speaks welsh"], "expected an object"),
    ({"sentences": ["bob speaks welsh"], "facts": [["bob", "language", "welsh"]], "extra": 1}, "unknown key"),
])
def test_bad_stories_name_line_and_problem(tmp_path, story, expected):
    message = _error(_write(tmp_path / "s.jsonl", [json.dumps(story)]))
    assert "line 1" in message and expected in message


def test_missing_path_and_directory_without_jsonl(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        read_data_dir(tmp_path / "nope")
    with pytest.raises(ConfigError, match="holds no .jsonl"):
        read_data_dir(tmp_path)


def test_a_bad_data_file_fails_when_params_are_parsed(tmp_path):
    path = _write(tmp_path / "s.jsonl", ["{oops"])
    with pytest.raises(ConfigError) as err:
        parse(SymmetricConfig, {"data_dir": str(path)}, where="params.")
    assert str(err.value).startswith("params.data_dir: ") and "line 1" in str(err.value)


def test_encoding_points_at_spans_and_pads_slots():
    stories = [Story(tuple(GOOD["sentences"]), tuple(tuple(f) for f in GOOD["facts"]))]
    vocab = Vocab.build(stories)
    length, span = shape_of(stories)
    assert (length, span) == (8, 2)
    data = encode(stories, vocab, length, span, torch.device("cpu"))
    ids = {w: i for i, w in enumerate(vocab.words)}
    assert data.spans.tolist() == [[0, 0, 4, 5], [6, 6, 1, 2]]
    assert data.slots[0].tolist() == [ids["alice"], PAD, ids["living"], ids["room"]]
    assert data.tokens[0, 6:].tolist() == [PAD, PAD]
    assert vocab.relations == ("holding", "location")
    frame_words = {vocab.words[i] for i in vocab.frame}
    assert {"is", "in", "the", "was", "taken", "by"} <= frame_words
    assert not {"alice", "living", "room", "red", "ball"} & frame_words
