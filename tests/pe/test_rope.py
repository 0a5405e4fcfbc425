"""RoPE against transformers: LLaMA rotary (half layout) and GPT-J rotate_every_two (interleaved), plus the
Meta->HF weight-permutation equivalence and pinned numbers from shared/reference/lm_variants.md §1."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig
from transformers.models.gptj.modeling_gptj import apply_rotary_pos_emb as gptj_apply
from transformers.models.gptj.modeling_gptj import create_sinusoidal_positions
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

from rope_lab.pe import Positions
from rope_lab.pe.frequencies import rope_inv_freq

from .helpers import build, geometry


def _exact_cos_sin(inv_freq, pos):
    """cos/sin in float64 of (fp32 frequency) x position, HF's half layout (cat(freqs, freqs))."""
    freqs = pos.double()[..., None] * inv_freq.double()
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def _rotate(pe, q, k, positions):
    return pe.rotate(q, k, pe.prepare(positions), 0)


@pytest.mark.parametrize("base", [100.0, 10000.0, 500000.0])
def test_half_layout_equals_hf_llama(base):
    geom = geometry(dim=64, n_heads=2, n_kv_heads=2)
    pe = build("rope", geom, base=base, pair_layout="half")
    cfg = LlamaConfig(hidden_size=64, num_attention_heads=2, rope_theta=base, max_position_embeddings=8192)
    hf = LlamaRotaryEmbedding(cfg)
    pos = torch.tensor([[0, 1, 7, 100, 1000, 4095, 65536 + 3]])
    q, k = torch.randn(2, 1, 2, 7, 32, dtype=torch.float32).unbind(0)
    cos, sin = hf(q, pos)
    ref_q, ref_k = apply_rotary_pos_emb(q, k, cos, sin)
    ours_q, ours_k = _rotate(pe, q, k, Positions(pos.float()))
    torch.testing.assert_close(pe.inv_freq, hf.inv_freq, rtol=0, atol=0)
    # small positions: HF's fp32 angles are exact enough to compare tightly
    torch.testing.assert_close(ours_q[..., :4, :], ref_q[..., :4, :], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours_k[..., :4, :], ref_k[..., :4, :], rtol=1e-5, atol=1e-5)
    # large positions: HF's fp32 product position*inv_freq is off by ~6e-5 rad at 1000, ~3e-3 at 65539;
    # ours reduces angles exactly, so compare both with the float64 truth (same fp32 frequencies)
    exact_q, _ = apply_rotary_pos_emb(q.double(), k.double(), *_exact_cos_sin(hf.inv_freq, pos))
    err_ours = (ours_q.double() - exact_q).abs().amax()
    err_hf = (ref_q.double() - exact_q).abs().amax()
    assert err_ours < 1e-5 and err_ours <= err_hf
    torch.testing.assert_close(ours_q, ref_q, rtol=0, atol=2 * err_hf.item() + 1e-5)


def test_interleaved_layout_equals_hf_gptj():
    geom = geometry(dim=64, n_heads=2, n_kv_heads=2)
    pe = build("rope", geom, pair_layout="interleaved")
    pos = torch.tensor([[0, 3, 64, 511, 1023]])
    table = create_sinusoidal_positions(4096, 32)
    sincos = table[pos]  # (1, N, 32): [sin | cos]
    sin, cos = torch.split(sincos, 16, dim=-1)
    x = torch.randn(1, 5, 2, 32)  # GPT-J layout (B, N, H, D)
    ref = gptj_apply(x, sin, cos)
    ours, _ = _rotate(pe, x.transpose(1, 2), x.transpose(1, 2), Positions(pos.float()))
    ours = ours.transpose(1, 2)
    torch.testing.assert_close(ours[:, :2], ref[:, :2], rtol=1e-5, atol=1e-5)
    # GPT-J's table is an fp32 product too: at larger positions compare both with the float64 truth
    angles = pos.double()[..., None] * rope_inv_freq(32, 10000.0).double()
    exact = gptj_apply(x.double(), angles.sin(), angles.cos())
    err_ours, err_hf = (ours.double() - exact).abs().amax(), (ref.double() - exact).abs().amax()
    assert err_ours < 1e-5 and err_ours <= err_hf


def test_layouts_are_equivalent_under_the_meta_to_hf_permutation():
    """interleaved(x) == re-interleave(half(de-interleave(x))): the HF converter's q/k row permutation."""
    geom = geometry(dim=32, n_heads=1, n_kv_heads=1)
    half, inter = build("rope", geom, pair_layout="half"), build("rope", geom, pair_layout="interleaved")
    x = torch.randn(2, 1, 9, 32)
    pos = Positions.sequence(2, 9, start=50)
    deinterleave = torch.cat([x[..., 0::2], x[..., 1::2]], dim=-1)
    y_half, _ = _rotate(half, deinterleave, deinterleave, pos)
    reinterleaved = torch.stack([y_half[..., :16], y_half[..., 16:]], dim=-1).flatten(-2)
    y_inter, _ = _rotate(inter, x, x, pos)
    torch.testing.assert_close(y_inter, reinterleaved, rtol=1e-6, atol=1e-6)


def test_pinned_inverse_frequencies():
    """lm_variants.md §1 (verified against HF there): base 1e4, d 128."""
    inv = rope_inv_freq(128, 10000.0)
    torch.testing.assert_close(inv[[0, 1, 2, 63]], torch.tensor([1.0, 0.8659643, 0.7498942, 1.154782e-4]),
                               rtol=1e-6, atol=0)


def test_partial_rotary_rotates_only_the_first_channels():
    """GPT-NeoX style: the exponent uses the rotary dim; the remaining channels pass through unchanged."""
    geom = geometry(dim=64, n_heads=2)
    pe = build("rope", geom, rotary_fraction=0.25)
    torch.testing.assert_close(pe.inv_freq, rope_inv_freq(8, 10000.0))
    x = torch.randn(1, 2, 5, 32)
    y, _ = _rotate(pe, x, x, Positions.sequence(1, 5, start=1000))
    torch.testing.assert_close(y[..., 8:], x[..., 8:], rtol=0, atol=0)
    assert not torch.allclose(y[..., :8], x[..., :8])


def test_bad_layout_and_base_are_clear_errors():
    with pytest.raises(ValueError, match="pair_layout 'zigzag'.*half"):
        build("rope", pair_layout="zigzag")
    with pytest.raises(ValueError, match="base must be > 1"):
        build("rope", base=0.5)
