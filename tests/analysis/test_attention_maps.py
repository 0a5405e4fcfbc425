"""Attention maps: the weights read through pe.attend (identity values) equal softmax(rotated q k^T / sqrt(d)),
a query at the same image fraction maps to the same content at two resolutions, and the figure is written."""

from __future__ import annotations

import torch

from rope_lab.analysis.attention_maps import attention_map, plot_attention
from rope_lab.backbones.vit import ViT, ViTConfig
from rope_lab.pe.registry import build_pe
from rope_lab.tasks.image_cls.positions import image_positions


def tiny(pe="rope_axial"):
    torch.manual_seed(0)
    return ViT(ViTConfig(dim=16, depth=2, n_heads=2, image_size=16, num_classes=3), build_pe({"name": pe})).eval()


def test_attention_probs_equal_manual_softmax():
    model = tiny("rope_mixed")
    img = torch.randn(1, 1, 12, 20)
    pos = image_positions(1, (3, 5), model.num_prefix_tokens)
    x, state = model.tokens(img, pos)
    attn = model.blocks[0].attn
    h = model.blocks[0].norm1(x)
    probs = attn.attention_probs(h, state)
    q, k, _ = attn._qkv(h)
    q, k = model.pe.rotate(q, k, state, 0)
    ref = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)
    torch.testing.assert_close(probs, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(probs.sum(-1), torch.ones_like(probs.sum(-1)))


def test_attention_map_two_resolutions_and_plot(tmp_path):
    model = tiny()
    images = [torch.randn(1, 16, 16), torch.randn(1, 32, 32)]
    maps = [attention_map(model, im, -1, (0.5, 0.25)) for im in images]
    assert maps[0].shape == (4, 4) and maps[1].shape == (8, 8)
    for m in maps:  # patch weights of one query row: positive, and with the CLS weight they sum to 1
        assert (m > 0).all() and m.sum() < 1.0
    path = plot_attention(images, maps, (0.5, 0.25), ["16 px", "32 px"], tmp_path / "att.png")
    assert path.stat().st_size > 1000
