"""xPos (rope_lab/pe/variants/bias/xpos.py): scores against rotary-embedding-torch's ``rotate_queries_and_keys``
(use_xpos) and torchscale's ``XPOS``; attention against a naive per-pair evaluation of the paper's formula; the scores
depend only on relative positions and decay with distance; the half layout scales channels i and i + d/2; scale_base ->
inf is RoPE; chunked KV-cache decoding at large positions; clear errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from rope_lab.backbones.decoder import Decoder, DecoderConfig
from rope_lab.pe import Positions, build_pe
from rope_lab.pe.variants.bias.xpos import scale_pairs, xpos_zeta

from .helpers import build, geometry, parallel_and_incremental

HEADS, N, D = 2, 12, 8


def _qkv(n=N, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(1, HEADS, n, D, generator=g, dtype=dtype) for _ in range(3))


def _scores(pe, q, k, start=0):
    """Pre-softmax xPos scores of one parallel pass (the same centring as ``attend``)."""
    state = pe.prepare(Positions.sequence(1, q.shape[2], start=start))
    rq, rk = pe.rotate(q, k, state, 0)
    coords = state.tokens.queries
    centre = coords.mean(1, keepdim=True)
    rq = scale_pairs(rq, pe.log_zeta, coords - centre, pe.cfg.pair_layout)
    rk = scale_pairs(rk, pe.log_zeta, centre - coords, pe.cfg.pair_layout)
    return rq @ rk.transpose(-1, -2)


def _pe(**overrides):
    return build("xpos", geometry(dim=HEADS * D, n_heads=HEADS, n_kv_heads=HEADS), **overrides)


def test_zeta_is_the_papers():
    torch.testing.assert_close(xpos_zeta(4), torch.tensor([0.285714, 0.464286, 0.642857, 0.821429],
                                                           dtype=torch.float64), rtol=0, atol=1e-6)


def test_scores_equal_rotary_embedding_torch():
    from rotary_embedding_torch import RotaryEmbedding

    q, k, _ = _qkv(dtype=torch.float32)
    ref = RotaryEmbedding(dim=D, use_xpos=True, xpos_scale_base=512)
    rq, rk = ref.rotate_queries_and_keys(q, k)
    causal = torch.ones(N, N, dtype=torch.bool).tril()
    torch.testing.assert_close(_scores(_pe(), q, k)[..., causal], (rq @ rk.transpose(-1, -2))[..., causal],
                               rtol=1e-5, atol=1e-5)


def test_scores_equal_torchscale():
    xpos = pytest.importorskip("torchscale.component.xpos_relative_position")
    q, k, _ = _qkv(dtype=torch.float32)
    ref = xpos.XPOS(D, scale_base=512)
    rq, rk = ref(q[0], downscale=False), ref(k[0], downscale=True)  # (B*H, L, D)
    torch.testing.assert_close(_scores(_pe(), q, k)[0], rq @ rk.transpose(-1, -2), rtol=1e-5, atol=1e-5)


def _naive_attention(q, k, v, positions, base=10000.0, scale_base=512.0):
    """The paper's score, pair by pair: sum_i zeta_i^((n-m)/B) Re[q_i conj(k_i) e^{i (n-m) theta_i}] / sqrt(d)."""
    # (theta in float64 here, fp32-rounded in RoPE as HF computes it: 1e-9 apart)
    pairs = D // 2
    zeta = xpos_zeta(pairs)
    qc = torch.complex(q[..., 0::2], q[..., 1::2])
    kc = torch.complex(k[..., 0::2], k[..., 1::2])
    scores = torch.zeros(q.shape[:-1] + (k.shape[-2],), dtype=torch.float64)
    for i in range(pairs):
        theta = base ** (-2 * i / D)
        rel = positions[:, None] - positions[None, :]
        term = (qc[..., :, None, i] * kc[..., None, :, i].conj() * torch.exp(1j * rel * theta)).real
        scores += zeta[i] ** (rel / scale_base) * term
    scores = scores / math.sqrt(D)
    causal = torch.ones(len(positions), len(positions), dtype=torch.bool).tril()
    return scores.masked_fill(~causal, float("-inf")).softmax(-1) @ v


@pytest.mark.parametrize("start", [0, 100_000])
def test_attention_equals_the_papers_formula_at_any_offset(start):
    pe = _pe(scale_base=8.0)  # a strong decay, so the scale matters
    q, k, v = _qkv()
    got = pe.attend(q, k, v, state=pe.prepare(Positions.sequence(1, N, start=start)), layer=0, causal=True)
    torch.testing.assert_close(got, _naive_attention(q, k, v, torch.arange(N, dtype=torch.float64) + start,
                                                     scale_base=8.0), rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("pair", [0, 3])
def test_each_pair_decays_by_zeta_to_the_distance_over_scale_base(pair):
    """With q and k in one pair only, xPos / RoPE scores = zeta_pair^((n - m)/B) < 1 for past keys."""
    pe = _pe(scale_base=8.0)
    rope = build("rope", geometry(dim=HEADS * D, n_heads=HEADS, n_kv_heads=HEADS), pair_layout="interleaved")
    q, k, _ = _qkv()
    mask = torch.zeros(D, dtype=torch.float64)
    mask[2 * pair : 2 * pair + 2] = 1.0
    q, k = q * mask, k * mask
    state = rope.prepare(Positions.sequence(1, N))
    rq, rk = rope.rotate(q, k, state, 0)
    ratio = _scores(pe, q, k) / (rq @ rk.transpose(-1, -2))
    distance = (torch.arange(N)[:, None] - torch.arange(N)[None, :]).double()
    want = xpos_zeta(D // 2)[pair] ** (distance / 8.0)
    torch.testing.assert_close(ratio[0, 0], want, rtol=1e-9, atol=0)


def test_half_layout_scales_channels_i_and_i_plus_half():
    half, inter = _pe(pair_layout="half"), _pe()
    q, k, v = _qkv()
    perm = torch.arange(D).view(2, D // 2).T.reshape(-1)  # interleaved channel order -> half-split
    pos = Positions.sequence(1, N)
    got = half.attend(q[..., perm.argsort()], k[..., perm.argsort()], v, state=half.prepare(pos), layer=0,
                      causal=True)
    torch.testing.assert_close(got, inter.attend(q, k, v, state=inter.prepare(pos), layer=0, causal=True))


def test_infinite_scale_base_is_rope():
    q, k, v = _qkv()
    pe = _pe(scale_base=1e30)
    rope = build("rope", geometry(dim=HEADS * D, n_heads=HEADS, n_kv_heads=HEADS), pair_layout="interleaved")
    pos = Positions.sequence(1, N)
    rq, rk = rope.rotate(q, k, rope.prepare(pos), 0)
    want = F.scaled_dot_product_attention(rq, rk, v, is_causal=True)
    torch.testing.assert_close(pe.attend(q, k, v, state=pe.prepare(pos), layer=0, causal=True), want)


def test_chunked_decoding_at_large_positions_equals_the_parallel_pass():
    torch.manual_seed(0)
    cfg = DecoderConfig(vocab_size=64, dim=32, depth=2, n_heads=4, n_kv_heads=2, mlp_hidden=64, max_tokens=64)
    model = Decoder(cfg, build_pe({"name": "xpos", "scale_base": 16.0})).eval()
    tokens = torch.randint(0, 64, (2, 20))
    full, decoded, _ = parallel_and_incremental(model, tokens, Positions.sequence(2, 20, start=50_000), 3, 11)
    torch.testing.assert_close(decoded, full, rtol=1e-4, atol=1e-4)


def test_bad_input_names_the_value_and_the_valid_range():
    with pytest.raises(ValueError, match=r"scale_base must be > 0, got scale_base=0.0"):
        build_pe({"name": "xpos", "scale_base": 0.0})
    with pytest.raises(ValueError, match=r"gamma must be > 0, got gamma=-0.4"):
        build_pe({"name": "xpos", "gamma": -0.4})
    pe = _pe()
    assert pe.incompatibility(1, causal=False) == "pe=xpos only works with causal attention"
    q, k, v = _qkv(n=3)
    with pytest.raises(ValueError, match="pe=xpos amplifies future keys: it needs causal attention"):
        pe.attend(q, k, v, state=pe.prepare(Positions.sequence(1, 3)), layer=0, causal=False)
