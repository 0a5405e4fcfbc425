"""LM-Infinite (rope_lab/pe/variants/long_context/lm_infinite.py) against Glaciohound/LM-Infinite's Lambda attention,
computed pair by pair with transformers' RoPE rotation: a key is attended when it is within the local window (plain
RoPE) or one of the n_global starting tokens (at the capped distance beyond the window), masked otherwise; masked keys
have no influence; bad starting-token counts and caps are refused."""

from __future__ import annotations

import pytest
import torch

from .extension_reference import attend, pairwise_attention, qkv
from .helpers import build


@pytest.mark.parametrize("window,n_global,cap", [(4, 2, None), (4, 2, 3), (3, 0, None), (5, 1, 5)])
def test_equals_the_lambda_mask_and_distance_cap_pair_by_pair(window, n_global, cap):
    positions = [float(p) for p in range(13)]
    q, k, v = qkv(len(positions), seed=5)
    limit = window if cap is None else cap

    def lambda_shaped(i, j):  # local branch i - j < window; global branch j < n_global at limit_distance; else masked
        if i - j < window:
            return i - j
        return limit if j < n_global else None

    pe = build("lm_infinite", window=window, n_global=n_global, distance_cap=cap, kernel="eager")
    got = attend(pe, positions, q, k, v)
    torch.testing.assert_close(got, pairwise_attention(q, k, v, positions, lambda_shaped), rtol=1e-10, atol=1e-10)


def test_keys_outside_the_lambda_have_no_influence():
    pe = build("lm_infinite", window=3, n_global=2, kernel="eager")
    positions = [float(p) for p in range(10)]
    q, k, v = qkv(len(positions), seed=6)
    before = attend(pe, positions, q, k, v)
    k2, v2 = k.clone(), v.clone()
    k2[..., 4, :], v2[..., 4, :] = 100.0, -100.0  # key 4: outside the window of queries 7.. and not a starting token
    after = attend(pe, positions, q, k2, v2)
    torch.testing.assert_close(after[..., 7:, :], before[..., 7:, :], rtol=0, atol=0)
    assert not torch.allclose(after[..., 4:7, :], before[..., 4:7, :])  # within their window: it counts


@pytest.mark.parametrize("override,message", [
    ({"n_global": -1}, r"pe=lm_infinite needs pe.n_global >= 0 starting tokens; got n_global=-1"),
    ({"distance_cap": 0}, r"pe=lm_infinite needs pe.distance_cap >= 1 tokens .*got distance_cap=0"),
    ({"distance_cap": 200, "train_length": 128},
     r"pe=lm_infinite: pe.distance_cap=200 is larger than the training context train_length=128; choose "
     r"distance_cap in 1..128"),
])
def test_bad_options_are_refused(override, message):
    with pytest.raises(ValueError, match=message):
        build("lm_infinite", **override)
