"""FoX (rope_lab/pe/variants/bias/fox.py): attention against fla's ``naive_forgetting_attn`` (fla-core) with grouped
keys; the gate is logsigmoid(W x + b) of the block input; a fixed gate is ALiBi with slope -log sigmoid(b) (baselines.md
section 10); the decay-time init; chunked KV-cache decoding in a decoder; fp32 gates under a bf16 cast; clear
errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rope_lab.backbones.decoder import Decoder, DecoderConfig
from rope_lab.pe import Positions, build_pe
from rope_lab.pe.variants.bias.fox import decay_time_biases

from .helpers import build, geometry, parallel_and_incremental

HEADS, KV_HEADS, N, D, DIM = 4, 2, 11, 8, 16


def _pe(**overrides):
    return build("fox", geometry(dim=DIM, n_heads=HEADS, n_kv_heads=KV_HEADS), **overrides)


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(2, HEADS, N, D, generator=g, dtype=torch.float64)
    k, v = (torch.randn(2, KV_HEADS, N, D, generator=g, dtype=torch.float64) for _ in range(2))
    x = torch.randn(2, N, DIM, generator=g)
    return q, k, v, x


def _attend(pe, q, k, v, x, layer=0):
    return pe.attend(q, k, v, state=pe.prepare(Positions.sequence(2, N)), layer=layer, causal=True, x=x)


def test_attention_equals_fla_naive_forgetting_attention():
    naive = pytest.importorskip("fla.ops.forgetting_attn.naive").naive_forgetting_attn
    pe = _pe()
    with torch.no_grad():
        pe.gate_weight.normal_()
        pe.gate_bias.normal_(mean=2.0)
    q, k, v, x = _inputs()
    log_f = pe.log_forget(x, 1)  # (B, H, N)
    t = lambda a: a.transpose(1, 2)  # noqa: E731 - fla takes (B, T, H, D)
    want = naive(t(q), t(k), t(v), t(log_f).double()).transpose(1, 2)
    # fla computes in fp32
    torch.testing.assert_close(_attend(pe, q, k, v, x, layer=1), want.double(), rtol=1e-5, atol=1e-5)


def test_gate_is_logsigmoid_of_a_linear_map_of_the_block_input():
    pe = _pe(gate_bias_init=5.0)
    _, _, _, x = _inputs()
    want = F.logsigmoid(x @ pe.gate_weight[0].T + pe.gate_bias[0]).transpose(1, 2)
    torch.testing.assert_close(pe.log_forget(x, 0), want)
    assert torch.all(pe.gate_bias == 5.0)


def test_a_fixed_gate_is_alibi_with_slope_minus_log_sigmoid_b():
    pe = _pe(gate="fixed", decay_time_min=2.0, decay_time_max=300.0)
    slopes = (-F.logsigmoid(pe.gate_bias[0].double())).tolist()
    alibi = build("alibi", geometry(dim=DIM, n_heads=HEADS, n_kv_heads=KV_HEADS), slopes=slopes)
    q, k, v, x = _inputs()
    want = alibi.attend(q, k, v, state=alibi.prepare(Positions.sequence(2, N)), layer=0, causal=True)
    torch.testing.assert_close(_attend(pe, q, k, v, x), want, rtol=1e-6, atol=1e-6)


def test_decay_time_init_gives_each_head_its_time_constant():
    biases = decay_time_biases(5, 1.0, 10_000.0)
    times = -1 / F.logsigmoid(biases)
    torch.testing.assert_close(times, torch.logspace(0, 4, 5, dtype=torch.float64))
    learned, fixed = _pe(gate="bias_only"), _pe(gate="fixed")
    assert isinstance(learned.gate_bias, torch.nn.Parameter) and not isinstance(fixed.gate_bias, torch.nn.Parameter)
    fixed.to(torch.bfloat16)
    assert fixed.gate_bias.dtype == torch.float32


@pytest.mark.parametrize("gate", ["full", "bias_only"])
def test_chunked_decoding_equals_the_parallel_pass(gate):
    torch.manual_seed(0)
    cfg = DecoderConfig(vocab_size=64, dim=32, depth=2, n_heads=4, n_kv_heads=2, mlp_hidden=64, max_tokens=64)
    model = Decoder(cfg, build_pe({"name": "fox", "gate": gate})).eval()
    tokens = torch.randint(0, 64, (2, 14))
    full, decoded, cache = parallel_and_incremental(model, tokens, Positions.sequence(2, 14), 5, 9)
    torch.testing.assert_close(decoded, full, rtol=1e-5, atol=1e-5)
    assert cache.pe_state["fox"][0].shape == (2, 4, 14) and cache.pe_state["fox"][0].dtype == torch.float32


def test_bad_input_names_the_value_and_the_valid_range():
    with pytest.raises(ValueError, match=r"unknown gate 'sigmoid'; choose one of \['full', 'bias_only', 'fixed'\]"):
        build_pe({"name": "fox", "gate": "sigmoid"})
    with pytest.raises(ValueError, match=r"0 < decay_time_min <= decay_time_max; got decay_time_min=10.0, "
                                         r"decay_time_max=5.0"):
        build_pe({"name": "fox", "decay_time_min": 10.0, "decay_time_max": 5.0})
    pe = _pe()
    assert pe.incompatibility(1, causal=False) == "pe=fox only works with causal attention"
    assert "2-axis positions" in pe.incompatibility(2, causal=True)
    q, k, v, x = _inputs()
    with pytest.raises(ValueError, match="the backbone must pass x to pe.attend"):
        _attend(pe, q, k, v, None)
    with pytest.raises(ValueError, match="pe=fox sums the forget gates .* needs causal attention"):
        pe.attend(q, k, v, state=pe.prepare(Positions.sequence(2, N)), layer=0, causal=False, x=x)
