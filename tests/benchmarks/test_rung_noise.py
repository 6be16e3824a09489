"""benchmarks.rung_noise at tiny sizes: the noisy grid is seeded and leaves the recorded values
alone, and the script writes its tables for every setting."""

from __future__ import annotations

import math
from pathlib import Path

from benchmarks import rung_noise
from benchmarks.curves import default_paths
from benchmarks.grids import grid


def test_the_noise_is_seeded_per_search_and_the_recorded_grid_is_untouched() -> None:
    curves = grid(str(default_paths()[0]))
    sd = rung_noise.noise_sd(curves, 800)
    assert 0 < sd < 0.02                                       # a rate's spread on 800 samples
    a, b, other = (rung_noise.Noisy(curves, sd, seed) for seed in (3, 3, 4))
    metric = curves.metric
    noisy = [row[metric] for row in a.rows(7)]
    assert noisy == [row[metric] for row in b.rows(7)]         # the same search sees the same curve
    assert noisy != [row[metric] for row in other.rows(7)]     # another seed, other noise
    recorded = [row[metric] for row in curves.rows(7)]
    assert noisy != recorded and all(math.isfinite(v) for v in noisy)
    assert max(abs(x - y) for x, y in zip(noisy, recorded)) < 6 * sd
    assert a.final(7) == curves.final(7) and a.epochs == curves.epochs     # judged on the recorded value


def test_rung_noise_writes_a_table_per_noise_level_with_every_setting(tmp_path: Path) -> None:
    out = tmp_path / "B.md"
    assert rung_noise.main(["--smoke", "--out", str(out)]) == 0
    body = out.read_text(encoding="utf-8")
    assert body.count(", noise sd 0, 2 trials at a time") == 1 and body.count(", noise sd ") == 2
    for setting in rung_noise.SETTINGS:
        assert body.count(f"| {setting} |") == 2, setting
