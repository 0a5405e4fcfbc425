"""ape: the 1-D behaviour is unchanged; N-axis sinusoidal = MAE 2-D sincos per axis; the learned 2-D grid is
resized like timm's resample_abs_pos_embed(antialias=False) (= rope-vit's bicubic F.interpolate); prefix
tokens get nothing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from timm.layers import resample_abs_pos_embed

from rope_lab.pe import AttentionGeometry, Positions
from rope_lab.pe.registry import build_pe
from rope_lab.pe.variants.absolute import sinusoidal_nd, sinusoidal_table
from rope_lab.tasks.image_cls.positions import image_positions


def make(kind, dim=16, grid=None, max_tokens=64):
    return build_pe({"name": "ape", "kind": kind}).setup(AttentionGeometry(dim, dim // 2, 2, 2, 1, max_tokens, grid))


def test_1d_sinusoidal_is_vaswani():
    pos = torch.arange(7.0)
    ref = torch.zeros(7, 8)
    for p in range(7):
        for i in range(4):  # PE(p, 2i) = sin(p / 10000^(2i/d)), PE(p, 2i+1) = cos(...)
            ref[p, 2 * i] = np.sin(p / 10000 ** (2 * i / 8))
            ref[p, 2 * i + 1] = np.cos(p / 10000 ** (2 * i / 8))
    torch.testing.assert_close(sinusoidal_table(pos, 8), ref)
    torch.testing.assert_close(sinusoidal_nd(pos[:, None], 8), ref)


def mae_1d(dim, pos):  # MAE util/pos_embed.py get_1d_sincos_pos_embed_from_grid: [sin block | cos block]
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    out = np.einsum("m,d->md", pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def test_multi_axis_sinusoidal_matches_mae_2d_per_axis():
    rng = np.random.default_rng(0)
    xy = rng.uniform(-50, 50, size=(9, 2))  # continuous coords (e.g. metres)
    ours = sinusoidal_nd(torch.tensor(xy, dtype=torch.float32), 16).double().numpy()
    for a in range(2):
        block = ours[:, 8 * a : 8 * (a + 1)]  # axis a owns channels [8a, 8a+8), interleaved sin/cos
        mae = mae_1d(8, xy[:, a])
        np.testing.assert_allclose(block[:, 0::2], mae[:, :4], atol=1e-4)
        np.testing.assert_allclose(block[:, 1::2], mae[:, 4:], atol=1e-4)
    pe = make("sinusoidal", dim=16)
    pe.check_compatible(3, causal=False)  # any number of axes
    x = pe.embed(torch.zeros(1, 9, 16), pe.prepare(Positions(torch.tensor(xy, dtype=torch.float32)[None])))
    torch.testing.assert_close(x[0], torch.tensor(ours, dtype=torch.float32))


def test_learned_1d_unchanged():
    torch.manual_seed(0)
    pe = make("learned")
    assert pe.table.shape == (64, 16)
    x = pe.embed(torch.zeros(1, 5, 16), pe.prepare(Positions.sequence(1, 5, start=3)))
    torch.testing.assert_close(x[0], pe.table[3:8].detach())


@pytest.mark.parametrize("new", [(5, 9), (2, 3)])  # upsample (non-square) and downsample
def test_learned_grid_resized_bicubically_like_rope_vit(new):
    torch.manual_seed(0)
    pe = make("learned", grid=(3, 4))
    assert pe.table.shape == (3, 4, 16)
    pos = image_positions(2, new, num_prefix=1)
    x = pe.embed(torch.zeros(2, 1 + new[0] * new[1], 16), pe.prepare(pos))
    ref = resample_abs_pos_embed(pe.table.detach().reshape(1, 12, 16), list(new), old_size=[3, 4], num_prefix_tokens=0,
                                 interpolation="bicubic", antialias=False)[0]
    torch.testing.assert_close(x[0, 1:], ref)
    assert torch.equal(x[:, 0], torch.zeros(2, 16))  # CLS gets no absolute embedding


def test_learned_errors():
    with pytest.raises(ValueError, match="without a grid"):
        pe = make("learned")
        pe.embed(torch.zeros(1, 4, 16), pe.prepare(image_positions(1, (2, 2), num_prefix=0)))
    with pytest.raises(ValueError, match="choose one of"):
        build_pe({"name": "ape", "kind": "rotary"})
    with pytest.raises(ValueError, match="encodes"):
        make("learned").check_compatible(3, causal=False)
