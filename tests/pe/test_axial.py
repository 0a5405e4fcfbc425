"""rope_axial: parity with timm RotaryEmbeddingCat (RoPE-ViT axial), FLUX's per-axis rope, 2-D relative
invariance, prefix tokens left unrotated, and clear errors."""

from __future__ import annotations

import pytest
import torch
from timm.layers import RotaryEmbeddingCat, apply_rot_embed_cat

from rope_lab.pe import AttentionGeometry, Positions
from rope_lab.pe.registry import build_pe
from rope_lab.tasks.image_cls.positions import image_positions


def make(head_dim=32, heads=2, depth=2, **cfg):
    pe = build_pe({"name": "rope_axial", **cfg})
    return pe.setup(AttentionGeometry(head_dim * heads, head_dim, heads, heads, depth))


def rotate(pe, q, k, positions):
    state = pe.prepare(positions)
    return pe.rotate(q, k, state, 0)


@pytest.mark.parametrize("hw", [(3, 5), (4, 7)])
def test_matches_timm_rotary_embedding_cat_on_non_square_grid(hw):
    torch.manual_seed(0)
    h, w, hd = *hw, 32
    pe = make(head_dim=hd)
    pos = image_positions(2, (h, w), num_prefix=1)
    q, k = torch.randn(2, 2, 1 + h * w, hd), torch.randn(2, 2, 1 + h * w, hd)
    q2, k2 = rotate(pe, q, k, pos)
    # timm, exactly as its naver RoPE-ViT models build it (eva.py: rope_temperature=100, grid_indexing='xy')
    emb = RotaryEmbeddingCat(dim=hd, temperature=100.0, in_pixels=False, grid_indexing="xy").get_embed([h, w])
    torch.testing.assert_close(q2[:, :, 1:], apply_rot_embed_cat(q[:, :, 1:], emb), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(k2[:, :, 1:], apply_rot_embed_cat(k[:, :, 1:], emb), atol=1e-5, rtol=1e-5)
    # CLS (NO_POSITION) is never rotated (rope-vit rotates q[:, :, 1:] only)
    assert torch.equal(q2[:, :, :1], q[:, :, :1]) and torch.equal(k2[:, :, :1], k[:, :, :1])
    # same attention output as timm-rotated q/k with an unrotated CLS
    v = torch.randn_like(q)
    ref_q = torch.cat([q[:, :, :1], apply_rot_embed_cat(q[:, :, 1:], emb)], 2)
    ref_k = torch.cat([k[:, :, :1], apply_rot_embed_cat(k[:, :, 1:], emb)], 2)
    out = pe.attend(q, k, v, state=pe.prepare(pos), layer=0, causal=False)
    ref = torch.nn.functional.scaled_dot_product_attention(ref_q, ref_k, v)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_naver_layout_x_first_interleaved():
    """Channels [0, hd/2) rotate with x (column), [hd/2, hd) with y (row), adjacent pairs (compute_axial_cis)."""
    hd = 16
    pe = make(head_dim=hd, heads=1)
    q = torch.ones(1, 1, 1, hd)
    only_col = Positions(torch.tensor([[[0.0, 3.0]]]))
    q2, _ = rotate(pe, q, q, only_col)
    half = hd // 2
    assert not torch.allclose(q2[..., :half], q[..., :half]) and torch.equal(q2[..., half:], q[..., half:])
    freqs = 1.0 / 100.0 ** (torch.arange(0, hd, 4)[: hd // 4].float() / hd)  # naver compute_axial_cis
    ang = 3.0 * freqs
    expect = torch.stack((ang.cos() - ang.sin(), ang.sin() + ang.cos()), -1).flatten()
    torch.testing.assert_close(q2[0, 0, 0, : hd // 2], expect)


def test_flux_three_axis_ids():
    """FLUX EmbedND: per-axis rope(pos, dim, theta) concatenated in ids order, adjacent pairs (flux/math.py)."""
    torch.manual_seed(1)
    axes_dim, theta, hd = [4, 6, 6], 10000.0, 16
    pe = make(head_dim=hd, heads=1, axes_dim=axes_dim, base=theta)
    ids = torch.randint(0, 9, (1, 5, 3)).float()
    q = torch.randn(1, 1, 5, hd)
    q2, _ = rotate(pe, q, q, Positions(ids))
    # naive FLUX reference: omega = 1/theta^(arange(0, d, 2)/d) per axis, angles cat over axes
    ang = torch.cat([ids[0, :, a, None] * (1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d)).float()
                     for a, d in enumerate(axes_dim)], -1)
    x = q[0, 0].reshape(5, -1, 2)
    a, b = x[..., 0], x[..., 1]
    ref = torch.stack((a * ang.cos() - b * ang.sin(), a * ang.sin() + b * ang.cos()), -1)
    torch.testing.assert_close(q2[0, 0], ref.flatten(-2), atol=1e-5, rtol=1e-5)


def test_relative_position_invariance_2d():
    torch.manual_seed(2)
    pe = make(head_dim=16, heads=2)
    q, k = torch.randn(1, 2, 1, 16, dtype=torch.float64), torch.randn(1, 2, 1, 16, dtype=torch.float64)

    def score(pq, pk):
        coords = torch.tensor([[pq, pk]], dtype=torch.float64)
        state = pe.prepare(Positions(coords.float()))
        qq, kk = torch.cat([q, q], 2), torch.cat([k, k], 2)
        q2, k2 = pe.rotate(qq, kk, state, 0)
        return (q2[:, :, 0] * k2[:, :, 1]).sum(-1)

    base = score((1.0, 2.0), (4.0, 7.0))
    # angles are fp32 by design (autocast off), so equality holds to fp32 rounding of the angles
    torch.testing.assert_close(score((11.0, -3.0), (14.0, 2.0)), base, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(score((1.0, 2.0), (4.0, 8.0)), base)  # a different offset changes the score


def test_axes_and_errors():
    assert make(head_dim=16).axis_order == [1, 0]
    pe3 = make(head_dim=24, axes_dim=[8, 8, 8])
    assert pe3.min_axes == pe3.max_axes == 3 and pe3.axis_order == [0, 1, 2]
    with pytest.raises(ValueError, match="axes_dim"):
        make(head_dim=16, axes_dim=[4, 4, 4])
    with pytest.raises(ValueError, match="num_axes=2"):
        make(head_dim=24, axes_dim=[8, 8, 8], num_axes=2)
    with pytest.raises(ValueError, match="equal even groups"):
        make(head_dim=16, num_axes=3)
    with pytest.raises(ValueError, match="permutation"):
        make(head_dim=16, axis_order=[0, 0])
    with pytest.raises(ValueError, match="1-axis positions"):
        make(head_dim=16).prepare(Positions.sequence(1, 4))
    with pytest.raises(ValueError, match="encodes 2..2"):
        make(head_dim=16).check_compatible(1, causal=True)


def test_frequencies_stay_fp32_under_bf16():
    pe = make(head_dim=16)
    pos = image_positions(1, (3, 4))
    before = pe.prepare(pos).rotation.cos
    pe.to(torch.bfloat16)
    assert pe.inv_freq.dtype == torch.float32
    assert torch.equal(pe.prepare(pos).rotation.cos, before)
