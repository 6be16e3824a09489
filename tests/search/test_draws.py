"""hpsearch.tune.draws: quasi-random configs. Each parameter's values come in the shares a random
draw gives them, the first draws of a sequence cover the space evenly where independent draws
leave gaps, and the config at an index does not depend on what was asked before (a resumed search
draws the same configs)."""

from __future__ import annotations

import itertools
import math
import pickle
import subprocess
import textwrap
from collections import Counter

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from hpsearch.tune.draws import SobolDraws, value_at
from hpsearch.tune.samplers import RungTPESampler
from tests.fixtures.cli import PYTHON, clean_env

SPACE = {"lr": FloatDistribution(1e-4, 1e-1, log=True), "hidden": IntDistribution(8, 256, log=True),
         "rules": IntDistribution(1, 32), "w": FloatDistribution(0.0, 2.0),
         "batch": CategoricalDistribution([16, 32, 64]), "drop": FloatDistribution(0.0, 0.5, step=0.1)}


@pytest.mark.parametrize("distribution, u, expected", [
    (CategoricalDistribution(["a", "b", "c"]), 0.0, "a"),
    (CategoricalDistribution(["a", "b", "c"]), 0.34, "b"),
    (CategoricalDistribution(["a", "b", "c"]), 0.999999, "c"),
    (IntDistribution(1, 4), 0.0, 1),
    (IntDistribution(1, 4), 0.5, 3),
    (IntDistribution(1, 4), 0.999999, 4),
    (IntDistribution(0, 10, step=5), 0.5, 5),                   # levels 0, 5, 10 by thirds
    (IntDistribution(8, 128, log=True), 0.0, 8),
    (IntDistribution(8, 128, log=True), 0.999999, 128),
    (FloatDistribution(0.0, 2.0), 0.25, 0.5),
    (FloatDistribution(1e-4, 1e-1, log=True), 0.0, 1e-4),
    (FloatDistribution(1e-4, 1e-1, log=True), 1 / 3, 1e-3),
    (FloatDistribution(0.0, 0.5, step=0.1), 0.999999, 0.5),     # 6 levels: the last
    (FloatDistribution(0.0, 0.5, step=0.1), 0.5, 0.3),
])
def test_a_unit_value_becomes_the_value_a_random_draw_would_give_there(distribution, u, expected):
    value = value_at(distribution, u)
    assert value == pytest.approx(expected) and distribution._contains(distribution.to_internal_repr(value))


def test_an_integer_on_a_log_range_gets_the_share_a_random_draw_gives_it():
    """Each integer n gets the mass of [n - 0.5, n + 0.5] in log space, as Optuna's RandomSampler."""
    d = IntDistribution(1, 8, log=True)
    values = Counter(value_at(d, u) for u in (np.arange(100_000) + 0.5) / 100_000)
    edges = np.log([0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5, 8.5])
    shares = np.diff(edges) / (edges[-1] - edges[0])
    assert [values[n] / 100_000 for n in range(1, 9)] == pytest.approx(shares, abs=1e-4)


def test_every_draw_is_a_value_the_space_allows():
    draws = SobolDraws(SPACE, seed=0)
    for i in range(200):
        config = draws.config(i)
        assert list(config) == list(SPACE)
        for name, d in SPACE.items():
            assert d._contains(d.to_internal_repr(config[name])), (name, config[name])


def test_each_value_of_a_choice_gets_its_exact_share_of_a_power_of_two_draws():
    """64 draws over 4 choices: 16 each, where independent draws are off by about 3."""
    space = {"a": CategoricalDistribution(list("pqrs")), "b": FloatDistribution(0, 1)}
    for seed in range(5):
        draws = SobolDraws(space, seed=seed)
        assert Counter(draws.config(i)["a"] for i in range(64)) == {c: 16 for c in "pqrs"}


def test_sixteen_draws_over_two_four_way_choices_try_every_pair_once():
    space = {"a": CategoricalDistribution(list("pqrs")), "b": CategoricalDistribution([1, 2, 3, 4])}
    for seed in range(5):
        draws = SobolDraws(space, seed=seed)
        pairs = Counter((c["a"], c["b"]) for c in map(draws.config, range(16)))
        assert pairs == {pair: 1 for pair in itertools.product("pqrs", [1, 2, 3, 4])}
    rng = np.random.default_rng(0)      # independent draws: about 10 of 16 pairs
    independent = [len({(int(a), int(b)) for a, b in rng.integers(0, 4, (16, 2))}) for _ in range(100)]
    assert np.mean(independent) < 12


def test_the_config_at_an_index_does_not_depend_on_what_was_asked_before():
    a, b = SobolDraws(SPACE, seed=[7, 0]), SobolDraws(SPACE, seed=[7, 0])
    forward = [a.config(i) for i in range(300)]                  # the sequence grows: 16, 32, ... 512 points
    assert [b.config(i) for i in reversed(range(300))][::-1] == forward
    restored = pickle.loads(pickle.dumps(a))
    assert restored.config(299) == forward[299] and restored.config(5) == forward[5]
    assert SobolDraws(SPACE, seed=[7, 1]).config(5) != forward[5]    # another seed, another scramble


def test_each_draw_alone_is_uniform():
    """Over many scrambles, the first draw of each is uniform on each parameter (mean 1/2 of the unit range)."""
    firsts = [SobolDraws({"x": FloatDistribution(0, 1)}, seed=s).config(0)["x"] for s in range(2000)]
    assert np.mean(firsts) == pytest.approx(0.5, abs=0.02) and 0.07 < np.std(firsts) ** 2 < 0.097


def test_a_negative_index_is_refused():
    with pytest.raises(ValueError, match="index: got -1"):
        SobolDraws(SPACE, seed=0).config(-1)


def test_the_sampler_reads_each_sequence_in_trial_order_without_gaps():
    sampler = RungTPESampler(SPACE, seed=4)
    indices = [sampler.draw_index(n) for n in range(500)]
    for stream in (0, 1):
        assert [i for s, i in indices if s == stream] == list(range(sum(s == stream for s, _ in indices)))
    assert [s == 0 for s, _ in indices] == [sampler.view(n) is None for n in range(500)]
    restored = pickle.loads(pickle.dumps(sampler))
    assert [restored.draw_index(n) for n in (499, 3, 250)] == [indices[499], indices[3], indices[250]]


def test_a_resumed_sampler_draws_the_same_configs_at_random():
    """Before the model has points, every config is drawn; a sampler that never saw trials 0-5 (they
    were stored by another sampler, as before a resume) draws trials 6-11 as the first one did."""
    first = optuna.create_study(sampler=RungTPESampler(SPACE, seed=9))
    configs = [first.ask(SPACE).params for _ in range(12)]
    resumed = optuna.create_study(sampler=RungTPESampler(SPACE, seed=9))
    for config in configs[:6]:
        resumed.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.RUNNING, params=config,
                                                    distributions=SPACE))
    assert [resumed.ask(SPACE).params for _ in range(6)] == configs[6:]
    assert all(math.isfinite(c["lr"]) for c in configs) and len({c["lr"] for c in configs}) == 12


def test_a_sampler_saved_before_the_sobol_draws_draws_after_a_restore():
    """Ray's snapshot of a search started before the quasi-random draws holds a sampler without
    them: restored, it draws what a new sampler draws."""
    old = RungTPESampler(SPACE, seed=9)
    del old.__dict__["_draws"], old.__dict__["_random_before"]
    restored = pickle.loads(pickle.dumps(old))
    a = optuna.create_study(sampler=restored)
    b = optuna.create_study(sampler=RungTPESampler(SPACE, seed=9))
    assert [a.ask(SPACE).params for _ in range(4)] == [b.ask(SPACE).params for _ in range(4)]


def test_scipy_is_imported_only_for_a_draw_or_by_the_preload():
    """scipy.stats takes 0.5-1 s to import: not loaded by the samplers' import (a `tpe` search, the
    report), loaded by the first draw or, as a search starts Ray, by ``preload``."""
    done = subprocess.run([PYTHON, "-c", textwrap.dedent("""
        import sys
        from optuna.distributions import FloatDistribution
        import hpsearch.tune.samplers
        from hpsearch.tune.draws import SobolDraws, preload
        print('scipy.stats' in sys.modules)
        preload().join()
        print('scipy.stats' in sys.modules)
        print(0 <= SobolDraws({"x": FloatDistribution(0, 1)}, seed=0).config(3)["x"] < 1)
        """)], capture_output=True, text=True, env=clean_env(), timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True", "True"]
