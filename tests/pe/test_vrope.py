"""VRoPE against the official code (johncaged/VRoPE @ 6a7adbc, ``vrope.py``); its ``generate_nd_positions``
is copied below (2-D frames, ``half_time_dim`` = 0 as the reference forces)."""

from __future__ import annotations

import math

import torch

from .multimodal_helpers import build, sequence


def official_vrope(parts, half_head_dim):
    current = 0
    out = []
    for p in parts:
        if p[0] == "text":
            out.append(torch.arange(current, current + p[1]).unsqueeze(-1).expand(-1, half_head_dim))
            current += p[1]
            continue
        _, time_shape, *nd_shape = p
        n = len(nd_shape)
        nd_len = math.prod(nd_shape)
        nd_index_len = sum(nd_shape) - n + 1

        def xd(x):
            positions = torch.arange(nd_shape[x]).unsqueeze(0).unsqueeze(-1).expand(
                math.prod(nd_shape[0:x]), -1, math.prod(nd_shape[x + 1:]))
            prod_shape = [1] * n
            prod_shape[x] = 2
            return torch.stack([positions.flatten(), positions.flip(dims=(1,)).flatten()], 0).view(
                *(prod_shape + [nd_len]))

        two = sum(map(xd, range(n))).reshape(-1, nd_len).unsqueeze(0).expand(time_shape, -1, -1)
        time_positions = (torch.arange(time_shape) * nd_index_len).unsqueeze(-1).expand(-1, nd_len)
        two = (two + time_positions.unsqueeze(1)).permute(1, 0, 2).flatten(start_dim=1) + current
        out.append(torch.stack([two[i % two.shape[0]] for i in range(half_head_dim)], dim=-1))
        current += nd_index_len * time_shape
    return torch.cat(out, 0)


def _per_pair(pe, positions):
    """(N, P) per-pair positions: mapped rows read through the frequency plan's one-hot."""
    rows = pe.position_map(positions)[0]
    return rows @ pe.pair_rows


def test_worked_example_from_the_reference():
    parts = (("text", 3), ("video", 2, 2, 3), ("text", 2))
    pe = build("vrope", head_dim=16)
    pos = _per_pair(pe, sequence(*parts))
    assert pos[3:15, 0].tolist() == [3, 4, 5, 4, 5, 6, 7, 8, 9, 8, 9, 10]
    assert pos[3:9, 1].tolist() == [5, 4, 3, 6, 5, 4]
    assert pos[15:, 0].tolist() == [11, 12]


def test_equals_official_generate_nd_positions():
    parts = (("text", 4), ("video", 3, 3, 5), ("text", 2), ("image", 1, 4, 2), ("text", 3))
    pe = build("vrope", head_dim=32)
    assert torch.equal(_per_pair(pe, sequence(*parts)).long(), official_vrope(parts, 16))


def test_pair_j_reads_row_j_mod_4_with_unchanged_frequencies():
    pe = build("vrope", head_dim=32, base=10000.0)
    assert pe.pair_rows.argmax(0).tolist() == [j % 4 for j in range(16)]
    plan = pe.frequency_plan(pe.inv_freq, 0)[0]
    torch.testing.assert_close(plan.sum(0), 10000.0 ** (-torch.arange(0, 32, 2).float() / 32))
