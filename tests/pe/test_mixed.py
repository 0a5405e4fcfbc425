"""rope_mixed (+ rope_*_ape): parity with timm RotaryEmbeddingMixed (naver RoPE-Mixed) on a non-square grid,
2-D relative invariance with learned frequencies, the paper's init, gradients, no weight decay, fp32 freqs."""

from __future__ import annotations

import math

import pytest
import torch
from timm.layers import RotaryEmbeddingMixed, apply_rot_embed_cat

from rope_lab.optim import OptimConfig, build_optimizer, no_weight_decay_names
from rope_lab.pe import AttentionGeometry, Positions
from rope_lab.pe.registry import build_pe
from rope_lab.tasks.image_cls.positions import image_positions

HD, HEADS, DEPTH = 16, 3, 4


def make(name="rope_mixed", grid=None, **cfg):
    pe = build_pe({"name": name, **cfg})
    return pe.setup(AttentionGeometry(HD * HEADS, HD, HEADS, HEADS, DEPTH, grid=grid))


@pytest.mark.parametrize("layer", [0, 3])
def test_matches_timm_rotary_embedding_mixed_on_non_square_grid(layer):
    torch.manual_seed(0)
    h, w = 3, 5
    pe = make()
    timm_rope = RotaryEmbeddingMixed(dim=HD * HEADS, depth=DEPTH, num_heads=HEADS, temperature=10.0, grid_indexing="xy")
    with torch.no_grad():  # the RNG draw order differs from ours: copy the tensor, do not reseed
        timm_rope.freqs.copy_(pe.freqs)
    emb = timm_rope.get_embed([h, w])  # (depth, heads, H*W, 2*hd)
    pos = image_positions(2, (h, w), num_prefix=1)
    q, k, v = (torch.randn(2, HEADS, 1 + h * w, HD) for _ in range(3))
    state = pe.prepare(pos)
    q2, k2 = pe.rotate(q, k, state, layer)
    torch.testing.assert_close(q2[:, :, 1:], apply_rot_embed_cat(q[:, :, 1:], emb[layer]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(k2[:, :, 1:], apply_rot_embed_cat(k[:, :, 1:], emb[layer]), atol=1e-5, rtol=1e-5)
    assert torch.equal(q2[:, :, :1], q[:, :, :1])  # CLS never rotated
    ref_q = torch.cat([q[:, :, :1], apply_rot_embed_cat(q[:, :, 1:], emb[layer])], 2)
    ref_k = torch.cat([k[:, :, :1], apply_rot_embed_cat(k[:, :, 1:], emb[layer])], 2)
    out = pe.attend(q, k, v, state=state, layer=layer, causal=False)
    torch.testing.assert_close(out, torch.nn.functional.scaled_dot_product_attention(ref_q, ref_k, v),
                               atol=1e-5, rtol=1e-5)


def test_paper_init():
    """naver init_random_2d_freqs(theta=10, rotate=True): |(fx, fy)| of pair k = 10^(-4k/hd), second half at +pi/2,
    one random angle per block and head."""
    pe = make()
    fx, fy = pe.freqs[0], pe.freqs[1]  # (depth, heads, hd/2)
    mag = 1.0 / 10.0 ** (torch.arange(0, HD, 4).float() / HD)
    torch.testing.assert_close(torch.hypot(fx, fy), torch.cat([mag, mag]).expand_as(fx))
    angle = torch.atan2(fy, fx)
    first, second = angle[..., : HD // 4], angle[..., HD // 4 :]
    assert torch.allclose(first, first[..., :1].expand_as(first), atol=1e-5)
    diff = torch.remainder(second - first, 2 * math.pi)
    torch.testing.assert_close(diff, torch.full_like(diff, math.pi / 2), atol=1e-5, rtol=0)
    assert first[..., 0].unique().numel() == DEPTH * HEADS  # per block and per head


def test_relative_position_invariance_2d_with_learned_freqs():
    torch.manual_seed(3)
    pe = make()
    with torch.no_grad():
        pe.freqs.normal_()  # any learned value keeps the score relative
    q, k = torch.randn(1, HEADS, 2, HD), torch.randn(1, HEADS, 2, HD)

    def score(pq, pk, layer):
        q2, k2 = pe.rotate(q, k, pe.prepare(Positions(torch.tensor([[pq, pk]]))), layer)
        return (q2[:, :, 0] * k2[:, :, 1]).sum(-1)

    for layer in (0, 2):
        torch.testing.assert_close(score((2.0, 1.0), (5.0, 9.0), layer), score((12.0, -4.0), (15.0, 4.0), layer),
                                   atol=1e-4, rtol=1e-4)


def test_gradients_reach_frequencies_and_no_weight_decay():
    class Holder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.pe = make("rope_mixed_ape", grid=(3, 5))
            self.proj = torch.nn.Linear(HD, HD)

    model = Holder()
    pos = image_positions(2, (3, 5))
    q = model.proj(torch.randn(2, HEADS, 16, HD))
    state = model.pe.prepare(pos)
    x = model.pe.embed(torch.zeros(2, 16, HD * HEADS), state)
    loss = sum(model.pe.attend(q, q, q, state=state, layer=i, causal=False).square().sum() for i in range(DEPTH))
    (loss + x.square().sum()).backward()
    assert (model.pe.freqs.grad.abs().sum(dim=(0, 2, 3)) > 0).all()  # every block's frequencies learn
    assert model.pe.ape.table.grad.abs().sum() > 0
    assert {"pe.freqs", "pe.ape.table"} <= no_weight_decay_names(model)
    opt = build_optimizer(model, OptimConfig())
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert id(model.pe.freqs) not in decayed and id(model.proj.weight) in decayed


def test_freqs_stay_fp32_and_bits_identical_under_bf16():
    pe = make()
    before = pe.freqs.detach().clone()
    pe.to(torch.bfloat16)
    assert pe.freqs.dtype == torch.float32 and torch.equal(pe.freqs.detach(), before)


def test_errors():
    with pytest.raises(ValueError, match="would be ignored"):
        build_pe({"name": "rope_mixed", "scaling": {"name": "linear", "factor": 2.0}})
    with pytest.raises(ValueError, match="divisible by 4"):
        build_pe({"name": "rope_mixed"}).setup(AttentionGeometry(12, 6, 2, 2, 1))
    with pytest.raises(ValueError, match="encodes 2..2"):
        make().check_compatible(3, causal=False)
