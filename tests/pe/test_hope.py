"""HoPE against the official code (hrlics/HoPE @ 85b76c0, ``modeling_hope.py``), copied below."""

from __future__ import annotations

import pytest
import torch
from transformers import Qwen2VLConfig
from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLRotaryEmbedding, rotate_half

from .multimodal_helpers import build, sequence
from .test_videorope import H, W, _official_index


def apply_hybrid_multimodal_rotary_pos_emb(q, k, cos, sin, mrope_section, unsqueeze_dim=1):
    mrope_section = [mrope_section[0], mrope_section[1] + mrope_section[2]]
    mrope_section = mrope_section * 2
    mrope_section = mrope_section[::-1]
    index = 0
    result_cos, result_sin = [], []
    for i, section in enumerate(mrope_section):
        if i % 2 == 0:  # spatial
            for j in range(section):
                row = 1 if j % 2 == 0 else 2
                result_cos.append(cos[row, ..., index: index + 1])
                result_sin.append(sin[row, ..., index: index + 1])
                index += 1
        else:  # temporal -> use nope
            result_cos.append(torch.ones_like(cos[0, ..., index:index + section]))
            result_sin.append(torch.zeros_like(cos[0, ..., index:index + section]))
            index += section
    cos = torch.cat(result_cos, dim=-1).unsqueeze(dim=unsqueeze_dim)
    sin = torch.cat(result_sin, dim=-1).unsqueeze(dim=unsqueeze_dim)
    return (q * cos) + (rotate_half(q) * sin), (k * cos) + (rotate_half(k) * sin)


def _seq():
    return sequence(("text", 4), ("video", 3, H, W), ("text", 3))


def test_inference_ids_are_the_dynamic_index_with_the_fixed_scale():
    # get_dynamic_rope_index == VideoRoPE's centred diagonal with t_index * scalor, text after max(t) + 1
    pe = build("hope", scale=0.75)
    assert torch.equal(pe.position_map(_seq())[0], _official_index(4, 3, 3, 0.75))


def test_hybrid_frequency_allocation_equals_official_function():
    positions = sequence(("text", 2), ("video", 2, 3, 4), ("text", 3))
    pe = build("hope")
    n = positions.coords.shape[1]
    q, k = torch.randn(1, 2, n, 128), torch.randn(1, 2, n, 128)
    rq, rk = pe.rotate(q, k, pe.prepare(positions), 0)
    pos_ids = pe.position_map(positions).permute(2, 0, 1)
    freqs = pos_ids[..., None] * Qwen2VLRotaryEmbedding(Qwen2VLConfig().text_config).inv_freq
    cos3, sin3 = torch.cat([freqs.cos()] * 2, -1), torch.cat([freqs.sin()] * 2, -1)
    oq, ok = apply_hybrid_multimodal_rotary_pos_emb(q, k, cos3, sin3, [16, 24, 24])
    torch.testing.assert_close(rq, oq, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rk, ok, rtol=1e-5, atol=1e-5)
    # the 16 temporal pairs are the identity for every token (text included)
    cos, _ = pe.prepare(positions).rotation
    assert torch.equal(cos[..., 48:], torch.ones_like(cos[..., 48:]))


def test_dynamic_scale_is_drawn_per_item_only_for_training_batches():
    two_videos = sequence(("text", 2), ("video", 3, 2, 2), ("text", 1), ("video", 3, 2, 2), ("text", 1))
    pe = build("hope").train()
    torch.manual_seed(0)
    plain = pe.position_map(two_videos)
    assert torch.equal(plain, build("hope").position_map(two_videos))  # no "augment" flag: fixed scale
    two_videos.meta["augment"] = True
    steps = set()
    for _ in range(20):
        m = pe.position_map(two_videos)[0]
        steps.add((m[6, 0] - m[2, 0]).item())  # video 1: t spacing of frame 1 vs frame 0 = its scale
        steps.add((m[19, 0] - m[15, 0]).item())
    assert steps <= {0.5, 0.75, 1.0, 1.25, 1.5} and len(steps) > 2
    pe.eval()
    assert torch.equal(pe.position_map(two_videos), plain)


def test_layout_is_fixed():
    with pytest.raises(ValueError, match="pe=videorope"):
        build("hope", index_layout="mrope")
    with pytest.raises(ValueError, match="positive"):
        build("hope", train_scales=[0.0, 1.0])
