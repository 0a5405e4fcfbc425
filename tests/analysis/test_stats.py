"""Intervals and verdicts (rope_lab/analysis/stats.py) against scipy and the numbers in
../shared/reference/evaluation.md section 8."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from rope_lab.analysis import stats


def test_three_seeds_take_the_t_interval_which_is_wider_than_the_bootstrap():
    iv = stats.mean_interval([1.0, 2.0, 3.0])
    low, high = sps.t.interval(0.95, 2, loc=2.0, scale=1.0 / math.sqrt(3))  # mean 2, sd 1: 2 +- 4.303/sqrt(3)
    assert (iv.mean, iv.n, iv.std) == (2.0, 3, 1.0)
    assert iv.low == pytest.approx(low) and iv.high == pytest.approx(high)
    assert iv.high - iv.low == pytest.approx(2 * 2.48, abs=0.01)  # evaluation.md 8.3: 3 seeds -> 2.48 s


def test_many_seeds_interval_contains_both_methods():
    x = np.random.default_rng(1).normal(size=40)
    iv = stats.mean_interval(x)
    t_low, t_high = sps.t.interval(0.95, 39, loc=x.mean(), scale=x.std(ddof=1) / math.sqrt(40))
    assert iv.low <= t_low and iv.high >= t_high


def test_one_seed_has_no_interval_and_no_verdict():
    iv = stats.mean_interval([4.2])
    assert iv.mean == 4.2 and math.isnan(iv.low) and str(iv) == "4.2 (1 seed)"
    assert stats.verdict(iv, noise_floor=math.nan) == "inconclusive"


def test_paired_difference_uses_common_seeds_only():
    a, b = {0: 5.0, 1: 6.0, 2: 7.0, 3: 100.0}, {0: 4.0, 1: 5.0, 2: 6.5}
    iv = stats.paired_difference(a, b)
    assert iv.n == 3 and iv.mean == pytest.approx((1.0 + 1.0 + 0.5) / 3)


@pytest.mark.parametrize(("diffs", "floor", "want"), [
    ([1.0, 1.1, 0.9], 0.1, "held"),             # wholly above 0, effect 1.0 > floor
    ([-1.0, -1.1, -0.9], 0.1, "not held"),      # wholly below 0
    ([1.0, -0.5, 0.7], 0.1, "inconclusive"),    # interval straddles 0
    ([0.05, 0.06, 0.055], 0.5, "inconclusive"),  # significant but below the noise floor
])
def test_verdict(diffs, floor, want):
    assert stats.verdict(stats.mean_interval(diffs), floor) == want


def test_pooled_sd():
    # groups [1,3] (var 2, 1 dof) and [2,4,6] (var 4, 2 dof): pooled var = (2 + 8) / 3
    assert stats.pooled_sd([[1, 3], [2, 4, 6], [5]]) == pytest.approx(math.sqrt(10 / 3))


@pytest.mark.parametrize(("k", "n", "low", "high"), [(80, 100, 0.711, 0.867), (400, 500, 0.763, 0.833),
                                                     (45, 50, 0.786, 0.957), (50, 50, 0.929, 1.000)])
def test_wilson_matches_the_reference_numbers(k, n, low, high):
    got = stats.wilson(k, n)
    assert got == pytest.approx((low, high), abs=6e-4)


def test_seeds_agreeing_counts_single_runs_pointing_the_claimed_way():
    from rope_lab.analysis.stats import seeds_agreeing

    a = {0: 1.0, 1: 2.0, 2: 0.5, 3: float("nan")}
    b = {0: 0.5, 1: 2.5, 2: 0.4, 3: 1.0, 4: 9.0}
    assert seeds_agreeing(a, b) == (2, 3)  # seed 3 is NaN, seed 4 ran only in b
