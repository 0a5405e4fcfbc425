"""TAD-RoPE as VideoRoPE evaluates it: the official ``get_time_rope_index + get_vanilla_rope_index``
(Wiselnn570/VideoRoPE @ 7712ca3, ``videorope_plus/v_ruler/eval/eval_v_ruler_interrupt.py``), copied below."""

from __future__ import annotations

import torch

from rope_lab.pe import KVCache
from rope_lab.pe.variants.video.multimodal import CACHE_KEY

from .multimodal_helpers import WORKED, build, ids, sequence


def official_time_plus_vanilla(n_text, n_frames, tokens_per_frame, n_after):
    total = n_text + n_frames * tokens_per_frame + n_after
    parts = [torch.arange(n_text)]
    t_index = torch.arange(n_text, n_text + n_frames).repeat_interleave(tokens_per_frame)
    parts.append(t_index)
    parts.append(torch.arange(t_index.max() + 1, t_index.max() + 1 + n_after))
    return torch.cat(parts) + torch.arange(total)


def test_worked_example():
    m = ids("tad_rope", sequence(*WORKED))[:, 0]
    assert m[:3].tolist() == [0, 2, 4]
    assert m[3:15].tolist() == list(range(6, 18))
    assert m[15:27].tolist() == list(range(19, 31))
    assert m[27:39].tolist() == list(range(32, 44))
    assert m[39:].tolist() == [45, 47]


def test_equals_official_index():
    m = ids("tad_rope", sequence(("text", 7), ("video", 5, 3, 4), ("text", 6)))[:, 0]
    assert torch.equal(m.long(), official_time_plus_vanilla(7, 5, 12, 6))


def test_decoding_advances_two_per_token():
    full = sequence(*WORKED)
    pe = build("tad_rope")
    cache = KVCache(1)
    pe.position_map(full.slice(0, 39), cache)
    assert cache.pe_state[CACHE_KEY].item() == -33  # next id = 2 * 39 + delta = 45 (reference rope_deltas)
    assert pe.position_map(full.slice(39, 40), cache)[0, 0, 0].item() == 45
    assert pe.position_map(full.slice(40, 41), cache)[0, 0, 0].item() == 47


def test_vanilla_rope_row_of_the_worked_example():
    """``pe=rope`` on multimodal positions is VideoRoPE's vanilla baseline: video 3..38, trailing text 39, 40."""
    m = ids("rope", sequence(*WORKED))[:, 0]
    assert m[3:39].tolist() == list(range(3, 39)) and m[39:].tolist() == [39, 40]
