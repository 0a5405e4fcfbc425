"""ALiBi (rope_lab/pe/variants/bias/alibi.py): the paper's slopes (1/2 .. 1/256 for 8 heads, the non-power-of-two rule)
against HF Bloom's ``_get_alibi_slopes`` and MPT's ``build_mpt_alibi_tensor``; the attention against a naive softmax
with Bloom's ``build_alibi_tensor`` (its key-only ``m * j`` form, equal up to the softmax row shift on causal rows) and,
bidirectionally, against x-transformers' ``AlibiPositionalBias``; chunked KV-cache decoding; clear errors."""

from __future__ import annotations

import math

import pytest
import torch
from transformers.models.bloom.modeling_bloom import _get_alibi_slopes, build_alibi_tensor
from transformers.models.mpt.modeling_mpt import build_mpt_alibi_tensor

from rope_lab.backbones.decoder import Decoder, DecoderConfig
from rope_lab.pe import Positions, build_pe
from rope_lab.pe.variants.bias.alibi import alibi_slopes

from .helpers import build, geometry, parallel_and_incremental


def test_eight_heads_have_the_papers_slopes():
    torch.testing.assert_close(alibi_slopes(8), torch.tensor([2.0 ** -(h + 1) for h in range(8)], dtype=torch.float64))


def test_twelve_heads_follow_the_official_non_power_of_two_rule():
    """8 slopes of the 8-head sequence, then every other slope of the 16-head one (ofirpress issue #17)."""
    want = [2.0 ** -(h + 1) for h in range(8)] + [2 ** -0.5, 2 ** -1.5, 2 ** -2.5, 2 ** -3.5]
    torch.testing.assert_close(alibi_slopes(12), torch.tensor(want, dtype=torch.float64))


@pytest.mark.parametrize("heads", [1, 2, 3, 5, 6, 8, 12, 16, 20, 24, 32, 40, 64, 71, 96])
def test_slopes_equal_bloom_and_mpt(heads):
    ours = alibi_slopes(heads).float()
    torch.testing.assert_close(ours, _get_alibi_slopes(heads, torch.device("cpu")).float(), rtol=1e-6, atol=0)
    mpt = -build_mpt_alibi_tensor(heads, 2)[:, 0, 0]  # slope * (j - (L-1)) at j = 0, L = 2
    torch.testing.assert_close(ours, mpt, rtol=1e-6, atol=0)


def test_max_bias_is_mpts_alibi_bias_max():
    mpt = -build_mpt_alibi_tensor(6, 2, alibi_bias_max=4)[:, 0, 0]
    torch.testing.assert_close(alibi_slopes(6, max_bias=4.0).float(), mpt, rtol=1e-6, atol=0)


def _attention(pe, q, k, v, causal):
    pos = Positions.sequence(q.shape[0], q.shape[2])
    return pe.attend(q, k, v, state=pe.prepare(pos), layer=0, causal=causal)


def test_causal_attention_equals_a_naive_softmax_with_blooms_bias():
    heads, n, d = 6, 11, 8
    pe = build("alibi", geometry(dim=heads * d, n_heads=heads, n_kv_heads=heads))
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, heads, n, d, generator=g, dtype=torch.float64) for _ in range(3))
    bloom = build_alibi_tensor(torch.ones(2, n, dtype=torch.long), heads, torch.float32).view(2, heads, 1, n)
    logits = q @ k.transpose(-1, -2) / math.sqrt(d) + bloom.double()  # Bloom: slope * j, no sqrt(d) on the bias
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    want = logits.masked_fill(~causal, float("-inf")).softmax(-1) @ v
    torch.testing.assert_close(_attention(pe, q, k, v, causal=True), want, rtol=1e-6, atol=1e-6)


def test_bidirectional_bias_equals_x_transformers():
    xt = pytest.importorskip("x_transformers.x_transformers")
    heads, n, d = 8, 9, 4
    pe = build("alibi", geometry(dim=heads * d, n_heads=heads, n_kv_heads=heads))
    q, k = torch.zeros(1, heads, n, d, dtype=torch.float64), torch.zeros(1, heads, n, d, dtype=torch.float64)
    v = torch.eye(n, dtype=torch.float64).expand(1, heads, n, n)  # the output is the attention matrix itself
    want = xt.AlibiPositionalBias(heads=heads, total_heads=heads)(n, n).double().softmax(-1)
    torch.testing.assert_close(_attention(pe, q, k, v, causal=False)[0], want, rtol=1e-6, atol=1e-6)


def test_offset_positions_and_chunked_decoding_equal_the_parallel_pass():
    torch.manual_seed(0)
    cfg = DecoderConfig(vocab_size=64, dim=48, depth=2, n_heads=6, n_kv_heads=3, mlp_hidden=64, max_tokens=64)
    model = Decoder(cfg, build_pe({"name": "alibi"})).eval()
    tokens = torch.randint(0, 64, (2, 13))
    pos = Positions.sequence(2, 13, start=500)
    full, decoded, _ = parallel_and_incremental(model, tokens, pos, 4, 9)
    torch.testing.assert_close(decoded, full, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # only distances matter: shifted positions give the same logits
        torch.testing.assert_close(model(tokens, Positions.sequence(2, 13)), full, rtol=1e-5, atol=1e-5)


def test_slopes_stay_fp32_under_a_bf16_cast():
    pe = build("alibi", geometry(dim=96, n_heads=12, n_kv_heads=12))
    pe.to(torch.bfloat16)
    assert pe.slopes.dtype == torch.float32
    torch.testing.assert_close(pe.slopes, alibi_slopes(12).float(), rtol=0, atol=0)


def test_bad_input_names_the_value_and_the_valid_range():
    with pytest.raises(ValueError, match=r"every slope must be > 0 .* got slopes=\[0.5, 0.0\]"):
        build_pe({"name": "alibi", "slopes": [0.5, 0.0]})
    with pytest.raises(ValueError, match=r"slopes has 3 values, the backbone has 2 heads"):
        build("alibi", slopes=[0.5, 0.25, 0.125])
    with pytest.raises(ValueError, match=r"max_bias must be > 0, got max_bias=-1.0"):
        build_pe({"name": "alibi", "max_bias": -1.0})
    pe = build("alibi")  # check_compatible raises these reasons at build, with the compatible variants listed
    assert pe.incompatibility(2, causal=False, axes=("row", "col")) == (
        "pe=alibi encodes 1..1 position axes ('token',), but the task builds 2-axis positions")
    assert "reads position axes as ('token',)" in pe.incompatibility(1, causal=True, axes=("t",))
    assert pe.incompatibility(1, causal=False, axes=("token",)) is None  # symmetric form: bidirectional 1-D tasks
