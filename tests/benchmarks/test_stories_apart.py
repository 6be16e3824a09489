"""The symmetric model's held-apart stories (benchmarks/stories_apart.py): a data set its own
generator did not write, that the model reads as a user's ``data_dir``."""

from __future__ import annotations

import os
import subprocess
import sys

from benchmarks.stories_apart import SHARED, stories, write
from hpsearch import models
from hpsearch.models.symmetric.data import load_jsonl
from hpsearch.models.symmetric.stories import generate_stories


def test_no_relation_and_no_content_word_is_shared_with_the_models_generator():
    apart = stories(1000, seed=0)
    own = generate_stories(1000, seed=0)
    words = {w for s in apart for t in s.sentences for w in t.split()}
    theirs = {w for s in own for t in s.sentences for w in t.split()}
    assert words & theirs <= SHARED, sorted(words & theirs - SHARED)
    assert not {f[1] for s in apart for f in s.facts} & {f[1] for s in own for f in s.facts}


def test_the_stories_load_as_a_data_dir_and_the_model_trains_on_them(tmp_path):
    path = write(tmp_path / "apart.jsonl", num_stories=60, seed=3)
    assert len(load_jsonl(path)) == 60                                   # every fact is found in its sentence
    net = models.build("symmetric", {"data_dir": str(path), "hidden_dim": 8, "num_rules": 2}, device="cpu", seed=0)
    row = net.train_epoch()
    assert row["train_loss"] > 0 and {"train_loss_parse", "train_loss_generate"} <= set(row)


def test_the_same_arguments_write_the_same_file_in_any_process(tmp_path):
    """Seeded, and nothing taken from a set's order: two interpreters with different hash seeds
    write the same bytes."""
    texts = []
    for hash_seed in ("1", "2"):
        out = tmp_path / f"apart-{hash_seed}.jsonl"
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        subprocess.run([sys.executable, "-c", f"from benchmarks.stories_apart import write; write({str(out)!r}, 80, 5)"],
                       check=True, env=env)
        texts.append(out.read_text(encoding="utf-8"))
    assert texts[0] == texts[1]
