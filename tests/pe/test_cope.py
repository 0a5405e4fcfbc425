"""CoPE (rope_lab/pe/variants/bias/cope.py): position logits against x-transformers' ``CoPE`` (the paper's appendix
snippet); attention against a naive loop over the paper's definitions (gates, reverse sums, cap, interpolation), in both
scalings (the paper's and RAM's default); all-open gates count i - j + 1; chunked KV-cache decoding with grouped
keys; clear errors."""

from __future__ import annotations

import math

import pytest
import torch

from rope_lab.backbones.decoder import Decoder, DecoderConfig
from rope_lab.pe import Positions, build_pe
from rope_lab.pe.variants.bias.cope import contextual_positions, interpolated_position_logits

from .helpers import build, geometry, parallel_and_incremental

HEADS, N, D, NPOS = 2, 10, 8, 6


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(1, HEADS, N, D, generator=g, dtype=torch.float64) for _ in range(3))
    emb = torch.randn(NPOS, D, generator=g).double()  # fp32 values: the parameter is fp32
    return q * 2, k, v, emb  # larger q: gates away from 1/2


def _pe(**overrides):
    pe = build("cope", geometry(dim=HEADS * D, n_heads=HEADS, n_kv_heads=HEADS), npos_max=NPOS, **overrides)
    return pe


def test_position_logits_equal_x_transformers():
    xt = pytest.importorskip("x_transformers.x_transformers")
    q, k, _, emb = _inputs()
    causal = torch.ones(N, N, dtype=torch.bool).tril()
    logits = (q @ k.transpose(-1, -2)) / math.sqrt(D)
    ref = xt.CoPE(dim=D, heads=HEADS, max_pos=NPOS).double()
    with torch.no_grad():
        ref.pos_emb.copy_(emb)
    masked = logits.masked_fill(~causal, -torch.finfo(torch.float64).max)  # as x-transformers masks before CoPE
    want = ref(q, masked)
    got = interpolated_position_logits(q, contextual_positions(logits, causal, NPOS), emb)
    torch.testing.assert_close(got[..., causal], want[..., causal], rtol=1e-10, atol=1e-10)


def _naive(q, k, v, emb, divide):
    """The paper's section 3 written out entry by entry."""
    out = torch.zeros_like(q)
    for h in range(HEADS):
        for i in range(N):
            logits = []
            for j in range(i + 1):
                p = sum(torch.sigmoid(q[0, h, i] @ k[0, h, t] / math.sqrt(D)) for t in range(j, i + 1))
                p = min(p, NPOS - 1)
                low, high = math.floor(p), math.ceil(p)
                frac = p - low
                pos = frac * (q[0, h, i] @ emb[high]) + (1 - frac) * (q[0, h, i] @ emb[low])
                if divide:
                    pos = pos / math.sqrt(D)
                logits.append(q[0, h, i] @ k[0, h, j] / math.sqrt(D) + pos)
            out[0, h, i] = torch.stack(logits).softmax(0) @ v[0, h, : i + 1]
    return out


@pytest.mark.parametrize("divide", [False, True])
def test_attention_equals_the_papers_definition(divide):
    pe = _pe(divide_position_logits=divide)
    q, k, v, emb = _inputs()
    with torch.no_grad():
        pe.position_embeddings[1] = emb
    got = pe.attend(q, k, v, state=pe.prepare(Positions.sequence(1, N)), layer=1, causal=True)
    torch.testing.assert_close(got, _naive(q, k, v, emb, divide), rtol=1e-10, atol=1e-10)


def test_open_gates_count_the_distance_plus_one():
    causal = torch.ones(N, N, dtype=torch.bool).tril()
    positions = contextual_positions(torch.full((N, N), 1e4), causal, npos_max=64)
    distance = torch.arange(N)[:, None] - torch.arange(N)[None, :]
    torch.testing.assert_close(positions[causal], (distance + 1).float()[causal])
    assert torch.all(positions[~causal] == 0)
    assert contextual_positions(torch.full((N, N), 1e4), causal, npos_max=4).max() == 3  # the cap


def test_chunked_decoding_with_grouped_keys_equals_the_parallel_pass():
    torch.manual_seed(0)
    cfg = DecoderConfig(vocab_size=64, dim=32, depth=2, n_heads=4, n_kv_heads=2, mlp_hidden=64, max_tokens=64)
    model = Decoder(cfg, build_pe({"name": "cope", "npos_max": 5})).eval()
    with torch.no_grad():
        model.pe.position_embeddings.normal_()  # zero at init: make the positions matter
    tokens = torch.randint(0, 64, (2, 16))
    full, decoded, _ = parallel_and_incremental(model, tokens, Positions.sequence(2, 16), 4, 9)
    torch.testing.assert_close(decoded, full, rtol=1e-5, atol=1e-5)


def test_bad_input_names_the_value_and_the_valid_range():
    with pytest.raises(ValueError, match=r"pe=cope needs npos_max >= 2 .*got npos_max=1"):
        build_pe({"name": "cope", "npos_max": 1})
    pe = _pe()
    assert pe.incompatibility(1, causal=False) == "pe=cope only works with causal attention"
    assert "2-axis positions" in pe.incompatibility(2, causal=True)
    q, k, v, _ = _inputs()
    with pytest.raises(ValueError, match="pe=cope counts earlier keys .* needs causal attention"):
        pe.attend(q, k, v, state=pe.prepare(Positions.sequence(1, N)), layer=0, causal=False)
