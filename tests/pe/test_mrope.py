"""M-RoPE against the reference document's worked example and transformers' Qwen2-VL (5.24, installed)."""

from __future__ import annotations

import types

import pytest
import torch
from transformers import Qwen2VLConfig
from transformers.models.qwen2_vl.modeling_qwen2_vl import (
    Qwen2VLModel, Qwen2VLRotaryEmbedding, apply_rotary_pos_emb,
)

from rope_lab.pe import KVCache
from rope_lab.pe.rotary import compute_angles
from rope_lab.pe.variants.video.multimodal import CACHE_KEY

from .multimodal_helpers import WORKED, build, ids, sequence


def test_worked_example():
    m = ids("mrope", sequence(*WORKED))
    assert m[:3].tolist() == [[0, 0, 0], [1, 1, 1], [2, 2, 2]]
    video = m[3:39]
    assert sorted(set(video[:, 0].tolist())) == [3, 4, 5]
    assert sorted(set(video[:, 1].tolist())) == [3, 4, 5]
    assert sorted(set(video[:, 2].tolist())) == [3, 4, 5, 6]
    assert m[39:].tolist() == [[7, 7, 7], [8, 8, 8]]  # max + 1, not 6 (transformers 5.x)


def _hf_rotary():
    cfg = Qwen2VLConfig().text_config  # head_dim 128, rope_theta 1e6, mrope_section [16, 24, 24]
    return Qwen2VLRotaryEmbedding(cfg)


def test_cos_sin_equal_transformers_qwen2vl():
    g = torch.Generator().manual_seed(0)
    pos = torch.randint(0, 5000, (3, 2, 17), generator=g)
    cos_hf, sin_hf = _hf_rotary()(torch.zeros(1, dtype=torch.float32), pos)
    pe = build("mrope")
    angles = compute_angles(pos.permute(1, 2, 0).float(), pe.frequency_plan(pe.inv_freq, 0))[:, 0]
    torch.testing.assert_close(angles.cos(), cos_hf[..., :64], rtol=0, atol=2e-6)
    torch.testing.assert_close(angles.sin(), sin_hf[..., :64], rtol=0, atol=2e-6)
    torch.testing.assert_close(cos_hf[..., :64], cos_hf[..., 64:])  # half layout: cat(freq, freq)


def test_rotated_qk_equal_transformers():
    positions = sequence(*WORKED)
    pe = build("mrope")
    q, k = torch.randn(1, 2, 41, 128), torch.randn(1, 2, 41, 128)
    rq, rk = pe.rotate(q, k, pe.prepare(positions), 0)
    pos_ids = pe.position_map(positions).long().permute(2, 0, 1)
    cos, sin = _hf_rotary()(q, pos_ids)
    hq, hk = apply_rotary_pos_emb(q, k, cos, sin)
    torch.testing.assert_close(rq, hq, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rk, hk, rtol=1e-5, atol=1e-5)


def _hf_rope_index(parts, merge: int = 2):
    """transformers' get_rope_index on the same layout (grids in patches = merged grid * merge)."""
    model = types.SimpleNamespace(config=types.SimpleNamespace(vision_config=types.SimpleNamespace(
        spatial_merge_size=merge)))
    model.get_vision_position_ids = types.MethodType(Qwen2VLModel.get_vision_position_ids, model)
    types_, images, videos = [], [], []
    for p in parts:
        if p[0] == "text":
            types_ += [0] * p[1]
        else:
            kind, t, h, w = p
            types_ += [1 if kind == "image" else 2] * (t * h * w)
            (images if kind == "image" else videos).append([t, h * merge, w * merge])
    ids_ = torch.zeros(1, len(types_), dtype=torch.long)
    pos, deltas = Qwen2VLModel.get_rope_index(
        model, ids_, torch.tensor([types_]), torch.tensor(images) if images else None,
        torch.tensor(videos) if videos else None)
    return pos[:, 0].T, deltas[0, 0]


LAYOUTS = [
    (("text", 4), ("image", 1, 2, 3), ("text", 3)),
    (("text", 2), ("image", 1, 4, 4), ("text", 1), ("video", 2, 3, 2), ("text", 5)),
    (("text", 3), ("video", 3, 3, 4), ("text", 2)),  # T <= max(H', W')
    (("video", 4, 4, 2), ("text", 2)),
]


@pytest.mark.parametrize("parts", LAYOUTS)
def test_ids_and_deltas_equal_transformers_get_rope_index(parts):
    positions = sequence(*parts)
    pe = build("mrope")
    cache = KVCache(1)
    ours = pe.position_map(positions, cache)[0]
    hf, delta = _hf_rope_index(parts)
    assert torch.equal(ours.long(), hf)
    assert cache.pe_state[CACHE_KEY].item() == delta.item()


def test_installed_transformers_differs_when_T_exceeds_the_grid():
    """transformers 5.x starts text after a video at s + max(H', W'), colliding with t ids when T > max(H', W');
    the original Qwen2-VL algorithm (and ours) starts it at max + 1 (vision_video_variants.md section 2 (e))."""
    parts = (("text", 3), ("video", 4, 2, 3), ("text", 2))
    ours = ids("mrope", sequence(*parts))
    hf, _ = _hf_rope_index(parts)
    assert ours[-2:, 0].tolist() == [7, 8]  # video t ids 3..6
    assert hf[-2:, 0].tolist() == [6, 7]
    assert torch.equal(ours[:-2].long(), hf[:-2])  # everything before the trailing text agrees


def test_qwen25_absolute_time_with_fractional_fps():
    """t = s + floor(t_idx * temporal_patch_size / fps * tokens_per_second), checked against transformers'
    get_vision_position_ids(time_interval=...) with a fractional fps (kept float until the end)."""
    parts = (("text", 2), ("video", 4, 2, 2), ("text", 1))
    positions = sequence(*parts)
    positions.meta["fps"] = 1.5
    ours = ids("mrope", positions, time_mode="absolute", tokens_per_second=2.0)
    interval = 2 / 1.5 * 2.0
    model = types.SimpleNamespace()
    hf = Qwen2VLModel.get_vision_position_ids(model, 2, torch.tensor([4, 2, 2]), time_interval=interval).T
    assert torch.equal(ours[2:18].long(), hf)
    assert sorted(set(ours[2:18, 0].tolist())) == [2, 4, 7, 10]
    assert ours[18].tolist() == [11, 11, 11]  # max + 1


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="time_mode"):
        build("mrope", time_mode="seconds")
    with pytest.raises(ValueError, match="mrope_section"):
        build("mrope", mrope_section=[16, 24, 20])
    with pytest.raises(ValueError, match="pair_layout"):
        build("mrope", pair_layout="interleaved")
