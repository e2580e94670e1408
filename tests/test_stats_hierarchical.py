"""Inference at the level of the design (docs/statistics.md): coverage on simulated clustered data
with a known zero effect, and TOST, Holm, the crossed variance and the MDE against hand computations."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from bench.data.base import instance_levels
from bench.report.stats import (
    crossed_variance,
    design_mde,
    flat_bootstrap,
    hierarchical_bootstrap,
    hierarchical_test,
    holm,
    levels_phrase,
    scope,
    tost_p,
    verdict,
)

# components (dB) of a paired difference: seed, photograph, tile, seed × photograph, seed × tile, draw
SD = (0.03, 0.03, 0.03, 0.01, 0.01, 0.02)
SIMS = 400


def simulate(rng, seeds, photos, tiles, draws, sd=SD):
    """seeds × photos × tiles × draws differences with true mean 0 (a crossed design, tiles in photos)."""
    a, b, c, ab, ac, e = sd
    return (rng.normal(0, a, (seeds, 1, 1, 1)) + rng.normal(0, b, (1, photos, 1, 1))
            + rng.normal(0, c, (1, photos, tiles, 1)) + rng.normal(0, ab, (seeds, photos, 1, 1))
            + rng.normal(0, ac, (seeds, photos, tiles, 1)) + rng.normal(0, e, (seeds, photos, tiles, draws)))


def as_series(v):
    """The array as the report sees it: (seed, instance name ``photo/tNN/dD``) → difference."""
    s, p, t, d = v.shape
    index = pd.MultiIndex.from_tuples([(i, f"photo{j}/t{k:02d}/d{m}") for i in range(s) for j in range(p)
                                       for k in range(t) for m in range(d)])
    return pd.Series(v.ravel(), index=index)


def coverage(design, seed=0):
    """Share of SIMS simulated studies whose interval covers the true 0: hierarchical t, flat
    bootstrap over seed-averaged instances (each taken as independent), and the hierarchical bootstrap."""
    rng = np.random.default_rng(seed)
    hits = np.zeros(3)
    for k in range(SIMS):
        v = simulate(rng, *design)
        res = hierarchical_test(as_series(v))
        lo, hi = flat_bootstrap(v.mean(axis=0).reshape(1, -1), n_boot=1000, seed=k)[0]
        blo, bhi = hierarchical_bootstrap(v, n_boot=1000, seed=k)
        hits += [res["lo"] <= 0 <= res["hi"], lo <= 0 <= hi, blo <= 0 <= bhi]
    return hits / SIMS


# 400 simulations: the binomial sd of a 95 % coverage is 0.011, so ±3 sd is about [0.917, 0.983].
# At the study's own design (2 photographs) the Satterthwaite interval is conservative (4,000
# simulations: 0.978), hence the wider upper end there.
def test_the_hierarchical_interval_covers_zero_where_the_flat_one_does_not():
    hier, flat, boot = coverage((3, 2, 16, 2))  # 3 seeds × 2 photographs × 16 tiles × 2 draws: the quick study
    assert 0.93 <= hier <= 0.995, hier
    assert flat < 0.5, flat  # 64 instances taken as independent: measured 0.22
    assert boot < 0.9, boot  # resampling 2 photographs cannot show their spread: measured 0.78
    hier, flat, boot = coverage((3, 8, 8, 2), seed=1)  # more photographs: closer to nominal for both
    assert 0.917 <= hier <= 0.983, hier
    assert flat < 0.5, flat


def test_instance_names_give_photograph_tile_and_draw():
    assert instance_levels("chelsea/t03/d1") == ("chelsea", "t03", "d1")  # a TTA scenario's instance
    assert instance_levels("astronaut/gauss25#2") == ("astronaut", "gauss25", "2")  # a plain study, eval_repeats
    assert instance_levels("astronaut/gauss25") == ("astronaut", "gauss25", "")
    assert instance_levels("0001_001_S6/010") == ("0001_001_S6", "010", "")  # SIDD scene/key
    assert instance_levels("img0") == ("img0", "", "")


def test_crossed_variance_by_hand():
    # table [[1, 2], [3, 5]]: grand 2.75, seed means 1.5, 4, photo means 2, 3.5
    # MS_S = 2·(1.25² + 1.25²) = 6.25, MS_U = 2·(0.75² + 0.75²) = 2.25, MS_E = 4·0.25² = 0.25
    # Var = (6.25 + 2.25 − 0.25) / 4 = 2.0625; df = 8.25² / (6.25² + 2.25² + 0.25²) = 1.540311
    var, df = crossed_variance(np.array([[1.0, 2.0], [3.0, 5.0]]))
    assert var == pytest.approx(2.0625) and df == pytest.approx(1.540311, rel=1e-6)
    # a seed mean square below the interaction's: the seed component is clipped at 0
    # [[0, 1], [1, 0]]: MS_S = MS_U = 0, MS_E = 1 -> Var = MS_E / 4 = 0.25 on 1 df
    var, df = crossed_variance(np.array([[0.0, 1.0], [1.0, 0.0]]))
    assert var == pytest.approx(0.25) and df == pytest.approx(1.0)
    # one seed: the photographs' sample variance / their number, n − 1 df
    var, df = crossed_variance(np.array([[1.0, 2.0, 6.0]]))
    assert var == pytest.approx(np.var([1, 2, 6], ddof=1) / 3) and df == 2


def test_one_photograph_makes_its_tiles_the_units_and_says_so():
    v = np.random.default_rng(0).normal(0.1, 0.02, (2, 1, 4, 2))
    res = hierarchical_test(as_series(v), margin=0.02)
    assert res["unit"] == "tile" and (res["seeds"], res["photos"], res["tiles"], res["draws"], res["n"]) == (2, 1, 4, 2, 8)
    assert levels_phrase(res) == "2 seeds × 1 photograph × 4 tiles × 2 draws"
    assert scope([res]) == "conditional on the one photograph (its tiles are the units)"


def test_tost_by_hand():
    # mean 0.005, se 0.004, 10 df, margin 0.02: t = (0.005 + 0.02)/0.004 = 6.25 and (0.005 − 0.02)/0.004 = −3.75
    # P(T10 > 6.25) = 4.78e-5, P(T10 < −3.75) = 0.001893: TOST p = 0.001893
    p = tost_p(0.005, 0.004, 10, 0.02)
    assert p == pytest.approx(0.0018926, rel=1e-3)
    assert p == pytest.approx(max(sps.t.sf(6.25, 10), sps.t.cdf(-3.75, 10)))
    # equivalent at α = 0.05 exactly when the 90 % interval lies inside ± the margin
    half = sps.t.ppf(0.95, 10) * 0.004
    assert (p < 0.05) == (-0.02 < 0.005 - half and 0.005 + half < 0.02)
    assert tost_p(0.015, 0.004, 10, 0.02) > 0.05  # the 90 % interval reaches 0.0216
    assert tost_p(0.0, 0.0, 3, 0.02) == 0.0 and tost_p(0.03, 0.0, 3, 0.02) == 1.0
    assert math.isnan(tost_p(0.0, 0.01, 3, math.nan))


def test_holm_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 → ×4, ×3, ×2, ×1 = 0.02, 0.03, 0.06, 0.04 → running max 0.02, 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    out = holm([math.nan, 0.2, 0.01])  # NaN is not a test: m = 2
    assert math.isnan(out[0]) and out[1:] == pytest.approx([0.2, 0.02])
    assert holm([0.6, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1


def test_design_mde_by_hand():
    # t(0.975, 10) = 2.228139, t(0.8, 10) = 0.879058: (2.228139 + 0.879058) · 0.01 = 0.031072
    assert design_mde(0.01, 10) == pytest.approx(0.031072, rel=1e-5)
    assert math.isnan(design_mde(math.nan, 3))


def test_a_row_that_never_moves_the_output_is_equivalent_not_resolved():
    zero = as_series(np.zeros((3, 2, 4, 2)))
    res = hierarchical_test(zero, margin=0.02)
    assert res["p"] == 1.0 and res["p_tost"] == 0.0 and res["lo"] == res["hi"] == 0.0
    rec = {**res, "resolved": False, "equivalent": True}
    assert verdict(rec, "none") == "equivalent to none (±0.02)"
    assert verdict({**rec, "resolved": True, "resolved_holm": False, "equivalent": False}) == "resolved (not after Holm)"


def test_scope_names_the_rows_that_hold_a_level_fixed():
    """A row a run has reached on one seed does not make the whole table conditional on one seed."""
    two = {"row": "alg3", "seeds": 2, "photos": 2}
    one = {"row": "bm3d", "seeds": 1, "photos": 2}
    assert scope([two, two]) == "over training seeds and photographs (both random)"
    assert scope([two, one]) == ("over training seeds and photographs (both random); "
                                 "conditional on the one training seed for bm3d")
    assert scope([one, one]) == "conditional on the one training seed"
    assert scope([{**one, "photos": 1}, {**two, "seeds": 1}]) == (
        "conditional on the one training seed; also on the one photograph (its tiles are the units) for bm3d")
