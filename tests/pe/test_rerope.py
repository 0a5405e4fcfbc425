"""ReRoPE / Leaky ReRoPE (rope_lab/pe/variants/long_context/rerope.py) against the definition of bojone/rerope, computed
pair by pair with transformers' RoPE rotation: distance i - j inside the window, w beyond it (ReRoPE) or w + (i - j - w)
/ k (Leaky ReRoPE, slope 1/k); the result depends only on relative positions; bad slopes are refused."""

from __future__ import annotations

import pytest
import torch

from .extension_reference import attend, pairwise_attention, qkv
from .helpers import build


@pytest.mark.parametrize("slope", [0.0, 1 / 16, 0.5])
def test_equals_the_rectified_distance_pair_by_pair(slope):
    window, positions = 4, [float(p) for p in range(12)]
    q, k, v = qkv(len(positions), seed=1)

    def rectified(i, j):  # bojone/rerope: |i - j| < w as is; else w (ReRoPE) or w + (d - w) / k (leaky_rerope_patch)
        d = i - j
        return d if d < window else window + slope * (d - window)

    got = attend(build("rerope", window=window, slope=slope, kernel="eager"), positions, q, k, v)
    torch.testing.assert_close(got, pairwise_attention(q, k, v, positions, rectified), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("slope", [0.0, 0.25])
def test_attention_depends_only_on_relative_positions(slope):
    pe = build("rerope", window=3, slope=slope, kernel="eager")
    positions = [0.0, 1, 2, 5, 6, 9, 15, 16]
    q, k, v = qkv(len(positions), seed=2)
    shifted = [p + 1000.0 for p in positions]
    torch.testing.assert_close(attend(pe, shifted, q, k, v), attend(pe, positions, q, k, v), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("slope", [-0.1, 1.0, 2.0])
def test_a_slope_outside_0_1_is_refused(slope):
    with pytest.raises(ValueError, match=rf"pe=rerope needs pe.slope in \[0, 1\).*got slope={slope}"):
        build("rerope", slope=slope)
