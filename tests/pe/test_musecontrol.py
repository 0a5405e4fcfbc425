"""MuseControlLite's decoupled-branch rotary layouts against transformers' LLaMA RoPE and the official code's
formula (a literal copy of ``StableAudioAttnProcessor2_0_rotary.rotate_half`` + its cos/sin use)."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

from rope_lab.pe.frequencies import rope_inv_freq
from rope_lab.pe.variants.musecontrol import (
    DecoupledCrossAttention, MuseControlConfig, compat_rotate_half, rotate_timeline, timeline_positions,
)

HD = 64


def hf_cos_sin(pos: torch.Tensor):
    """cos/sin of transformers' LlamaRotaryEmbedding (base 10000, head_dim 64) at float positions (B, N)."""
    emb = LlamaRotaryEmbedding(LlamaConfig(hidden_size=HD * 2, num_attention_heads=2, rope_theta=10000.0))
    x = torch.zeros(1, dtype=torch.float32)
    return emb(x, pos)


def official_rotate_half(x):  # MuseControlLite_setup.py, verbatim
    x = x.view(*x.shape[:-1], x.shape[-1] // 2, 2)
    x1, x2 = x.unbind(-1)
    return torch.cat((-x2, x1), dim=-1)


def test_timeline_positions_match_official_rule():
    """Query i at i * L_c / L_q (float), keys j; with Stable Audio's prepended global token (L_q = 1 + 1024)
    latent k sits at (k + 1) * 1024 / 1025."""
    q, k = timeline_positions(2, 1025, 1024)
    official = torch.arange(1025, dtype=torch.long) * (1024 / 1025)
    assert torch.equal(q[0], official.float()) and torch.equal(k[1], torch.arange(1024.0))
    assert q[0, 5].item() == pytest.approx(5 * 1024 / 1025)
    with pytest.raises(ValueError, match="positive lengths"):
        timeline_positions(1, 0, 4)


def test_half_layout_equals_transformers_llama_rope_at_float_positions():
    torch.manual_seed(0)
    q, k = torch.randn(2, 3, 7, HD), torch.randn(2, 3, 7, HD)
    pos = torch.rand(2, 7) * 500
    cos, sin = hf_cos_sin(pos)
    ref_q, ref_k = apply_rotary_pos_emb(q, k, cos, sin)
    inv = rope_inv_freq(HD, 10000.0)
    torch.testing.assert_close(rotate_timeline(q, pos, inv, "half"), ref_q, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rotate_timeline(k, pos, inv, "half"), ref_k, rtol=1e-5, atol=1e-5)


def test_compat_layout_equals_official_formula():
    torch.manual_seed(1)
    x = torch.randn(2, 3, 9, HD)
    pos = torch.arange(9).float().expand(2, -1) * (1024 / 1025)
    cos, sin = hf_cos_sin(pos)
    official = x * cos.unsqueeze(1) + official_rotate_half(x) * sin.unsqueeze(1)
    ours = rotate_timeline(x, pos, rope_inv_freq(HD, 10000.0), "musecontrollite_compat")
    torch.testing.assert_close(ours, official, rtol=1e-5, atol=1e-5)
    assert torch.equal(compat_rotate_half(x), official_rotate_half(x))


def test_compat_is_not_a_rotation_but_half_is():
    """The reference (vision_video_variants.md §8e): the official pairing does not preserve norms and its
    q.k score is not a function of m - n; the clean rotation does both."""
    torch.manual_seed(2)
    inv = rope_inv_freq(HD, 10000.0)
    q, k = torch.randn(1, 1, 1, HD, dtype=torch.float64), torch.randn(1, 1, 1, HD, dtype=torch.float64)

    def score(layout, m, n):
        qm = rotate_timeline(q, torch.tensor([[float(m)]]), inv, layout)
        kn = rotate_timeline(k, torch.tensor([[float(n)]]), inv, layout)
        return (qm * kn).sum().item()

    assert score("half", 5, 2) == pytest.approx(score("half", 13, 10), rel=1e-5)  # fp32 angles
    assert abs(score("musecontrollite_compat", 5, 2) - score("musecontrollite_compat", 13, 10)) > 1e-3
    rot = rotate_timeline(q, torch.tensor([[7.0]]), inv, "musecontrollite_compat")
    assert abs(rot.norm().item() - q.norm().item()) > 1e-3
    assert rotate_timeline(q, torch.tensor([[7.0]]), inv, "half").norm().item() == pytest.approx(q.norm().item(), rel=1e-6)


def test_branch_zero_init_rotates_values_and_keeps_fp32_freqs():
    torch.manual_seed(3)
    layer = DecoupledCrossAttention(5, 32, 2, MuseControlConfig(layout="half"))
    q, cond = torch.randn(2, 2, 4, 16), torch.randn(2, 8, 5)
    qpos, kpos = timeline_positions(2, 4, 8)
    assert not layer(q, cond, qpos, kpos).any()  # zero_module(conv_out)
    torch.nn.init.eye_(layer.conv_out.weight)
    with_v = layer(q, cond, qpos, kpos)
    layer.cfg.rotate_values = False
    assert not torch.allclose(with_v, layer(q, cond, qpos, kpos))
    layer.to(torch.bfloat16)
    assert layer.inv_freq.dtype == torch.float32
    with pytest.raises(ValueError, match="musecontrollite_compat"):
        DecoupledCrossAttention(5, 32, 2, MuseControlConfig(layout="interleaved"))


def test_none_layout_is_position_free():
    x = torch.randn(1, 2, 3, 16)
    assert torch.equal(rotate_timeline(x, torch.rand(1, 3) * 9, rope_inv_freq(16, 1e4), "none"), x)
