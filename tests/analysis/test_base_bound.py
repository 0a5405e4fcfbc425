"""Base bound (Men, Xu et al. 2024): exact float64 values re-derived in lm_variants.md §4, Su's float32 row,
agreement with brute force, the non-monotonicity, and the sanity values B_0 = d/2 and first negative m."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rope_lab.analysis.base_bound import LENGTHS, SU, BoundSearch, base_bound, decay, first_negative
from rope_lab.analysis.base_bound_search import _direct, _theta

# float64 re-runs of Su's grid algorithm (lm_variants.md Appendix A), L = 1024 * 2^k
FLOAT64 = [4293.4536, 11587.352, 26952.563, 83764.242, 231644.54, 629984.11, 2090193.0, 4869124.9, 23662441.9,
           59436812.4, 65409310.4]


@pytest.mark.parametrize("k", range(9))
def test_float64_bound_matches_reference(k):
    assert base_bound(LENGTHS[k]) == pytest.approx(FLOAT64[k], rel=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("k", [9, 10])
def test_float64_bound_matches_reference_long(k):  # ~2 s each
    assert base_bound(LENGTHS[k]) == pytest.approx(FLOAT64[k], rel=1e-6)


@pytest.mark.parametrize("k", range(6))
def test_float32_reproduces_su_row(k):
    assert float(f"{base_bound(LENGTHS[k], dtype=np.float32):.1e}") == SU[k]


def _brute_force(length: int, head_dim: int, levels: int) -> float:
    """Su's loop as written: every m < L evaluated directly at every grid point up to the first valid one."""
    upper, m = 1000.0 * length, torch.arange(length)
    for k in range(1, levels + 1):
        grid = np.linspace(0, 1, 10**k + 1)[1:] * upper
        for lo in range(0, len(grid), 64):
            f = _direct(_theta(grid[lo: lo + 64], head_dim, np.float64), m.expand(len(grid[lo: lo + 64]), -1))
            valid = (f >= 0).all(1).nonzero()
            if len(valid):
                upper = grid[lo + int(valid[0, 0])]
                break
    return upper


@pytest.mark.parametrize("length, head_dim, levels", [(2048, 64, 3), (1500, 32, 4), (1000, 24, 4)])
def test_matches_brute_force(length, head_dim, levels):
    assert base_bound(length, head_dim, levels=levels) == _brute_force(length, head_dim, levels)


def test_exact_scan_agrees_with_direct_float64():
    """The matrix-product form that accepts a base is within 1e-7 of direct evaluation (even before values near 0
    are re-evaluated), far inside its re-check margin; with the re-check its signs are those of direct evaluation."""
    length = 1 << 17
    search, starts = BoundSearch(length), torch.arange(0, length, 1024)
    for b in (2.09e6, 4869124.9, 1e4):
        theta, direct = _theta([b], 128, np.float64), decay(b, np.arange(length))
        search.margin = 0.0
        assert np.abs(search._values(theta, starts, 1024, exact=True).reshape(-1).numpy() - direct).max() < 1e-7
        search.margin = 1e-6
        assert np.array_equal(search._values(theta, starts, 1024, exact=True).reshape(-1).numpy() < 0, direct < 0)


def test_exact_bound_is_valid_and_grid_point_below_is_not():
    b = base_bound(1024)
    assert first_negative(b, 1024) is None
    assert first_negative(b * (1 - 1e-5), 1024) is not None


def test_sanity_values():
    assert decay(1e4, np.array([0]))[0] == 64.0
    assert first_negative(1e4, 10**6) == 1707
    assert first_negative(1e5, 10**6) == 7757


def test_validity_is_not_monotone_in_base():
    """1e5 fails at m = 7757 < 8192 although the 8k bound (8.38e4) is smaller: bisection would be wrong."""
    search = BoundSearch(8192)
    assert search.valid(83764.24217047043) and not search.valid(1e5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="even head_dim"):
        BoundSearch(1024, head_dim=7)


def test_sweep_table_and_plot(tmp_path):
    from rope_lab.analysis.base_bound import base_sweep_tables
    from rope_lab.analysis.results import RunResult

    def run(base, acc):
        cfg = {"pe": {"base": base}, "task": {"train_length": 256}, "backbone": {"dim": 128, "n_heads": 4}}
        metrics = {"val/ppl@256": 3.0, "val/passkey@len=256/depth=0.5": acc, "val/passkey_acc": acc}
        return RunResult(tmp_path, "lm_longctx", "rope", metrics, cfg, [f"pe.base={base}"])

    paths = base_sweep_tables([run(100.0, 0.0), run(10000.0, 1.0)], tmp_path)
    text = paths[0].read_text()
    assert "b* = 2168.06" in text and "no (B<0 at m=" in text and "| 10000 | yes |" in text
    assert paths[1].stat().st_size > 0
    assert base_sweep_tables([run(100.0, 0.0)], tmp_path) == []
