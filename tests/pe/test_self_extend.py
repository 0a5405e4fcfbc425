"""SelfExtend (rope_lab/pe/variants/long_context/self_extend.py) against datamllab/LongLM's eager
``self_extend_forward``, computed pair by pair with transformers' RoPE rotation: neighbour pairs (i - j < W) at their
distance, the others at (i // G + W - W / G) - j // G, the official shift with a true division (also when G does not
divide W); G = 1 is plain RoPE; the grouped distance meets the neighbour distance at the window; bad group sizes are
refused."""

from __future__ import annotations

import pytest
import torch

from .extension_reference import attend, pairwise_attention, qkv
from .helpers import build


@pytest.mark.parametrize("window,group", [(4, 2), (6, 4), (3, 3)])
def test_equals_the_official_grouped_positions_pair_by_pair(window, group):
    positions = [float(p) for p in range(14)]
    q, k, v = qkv(len(positions), seed=3)

    def self_extend(i, j):  # LongLM Llama.py: group_query = q // g1 + g2 - g2 / g1, group_key = k // g1
        return i - j if i - j < window else (i // group + window - window / group) - j // group

    got = attend(build("self_extend", window=window, group=group, kernel="eager"), positions, q, k, v)
    torch.testing.assert_close(got, pairwise_attention(q, k, v, positions, self_extend), rtol=1e-10, atol=1e-10)


def test_group_one_is_plain_rope():
    positions = [float(p) for p in range(10)]
    q, k, v = qkv(len(positions), seed=4)
    got = attend(build("self_extend", window=2, group=1, kernel="eager"), positions, q, k, v)
    torch.testing.assert_close(got, attend(build("rope", kernel="eager"), positions, q, k, v), rtol=1e-10, atol=1e-10)


def test_grouped_distance_meets_the_neighbour_window():
    """With G dividing W, a query at a multiple of G sees its first grouped key at distance exactly W (the shift
    W - W/G makes the regions meet), and the grouped distance grows G times slower than the token distance."""
    pe = build("self_extend", window=8, group=4, kernel="eager")
    i, keys = torch.tensor([[[40.0]]]), torch.tensor([[[32.0], [28.0], [0.0]]])
    far_query, _ = pe.far_coords(i)
    _, far_keys = pe.far_coords(keys)
    assert (far_query - far_keys).flatten().tolist() == [8.0, 9.0, 16.0]  # token distances 8, 12, 40


@pytest.mark.parametrize("group", [0, -2])
def test_a_group_below_one_is_refused(group):
    with pytest.raises(ValueError, match=rf"pe=self_extend needs pe.group >= 1 .*got group={group}"):
        build("self_extend", group=group)
