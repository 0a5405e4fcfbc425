"""PaTH attention (rope_lab/pe/variants/attention/path.py) against the official pure-PyTorch reference
``naive_path_attn`` (fla-org/flash-linear-attention, ``fla-core``) with and without the forget gate, grouped keys and a
length across its 64-token chunks; the logits against explicit products of the transforms; beta = 0 is plain causal
attention; the gates' ranges; KV-cache decoding (chunks and single tokens, with the gate) equals one parallel pass;
clear errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rope_lab.pe import Positions
from rope_lab.pe.variants.attention.path import PaTHGates, path_attention, path_logits

from .helpers import build, parallel_and_incremental


def _inputs(b=2, h=4, hkv=2, n=70, d=16, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, hh, n, d, generator=g, dtype=dtype) for hh in (h, hkv, hkv))
    w = F.normalize(torch.randn(b, hkv, n, d, generator=g, dtype=dtype), dim=-1)
    beta = 2 * torch.rand(b, hkv, n, generator=g, dtype=dtype)
    log_forget = F.logsigmoid(torch.randn(b, h, n, generator=g, dtype=dtype) + 2)
    return q, k, v, w, beta, log_forget


def test_logits_equal_explicit_products_of_the_transforms():
    q, k, _, w, beta, _ = _inputs(b=1, h=2, hkv=2, n=9, d=6)
    got = path_logits(q, k, w, beta)
    for i in range(9):
        for j in range(i + 1):
            key = k[0, :, j].clone()
            for s in range(j + 1, i + 1):  # H_s = I - beta_s w_s w_s^T applied in order j+1 .. i
                key = key - beta[0, :, s, None] * (key * w[0, :, s]).sum(-1, keepdim=True) * w[0, :, s]
            torch.testing.assert_close(got[0, :, i, j], (q[0, :, i] * key).sum(-1), rtol=1e-12, atol=1e-12)
    assert torch.all(got[0].triu(1) == 0)


@pytest.mark.parametrize("gate", [False, True])
def test_equals_the_official_naive_reference(gate):
    naive = pytest.importorskip("fla.ops.path_attn.naive").naive_path_attn
    q, k, v, w, beta, log_forget = _inputs()
    got = path_attention(q, k, v, w, beta, log_forget if gate else None)
    t = lambda x: x.transpose(1, 2).float()  # noqa: E731 - FLA takes (B, T, H, D)
    g = log_forget if gate else torch.zeros_like(log_forget)
    want = naive(t(q), t(k), t(v), t(w), beta.transpose(1, 2).float(), g.transpose(1, 2).float(), scale=16**-0.5)
    torch.testing.assert_close(got.float(), want.transpose(1, 2), rtol=1e-4, atol=1e-4)


def test_beta_zero_is_plain_causal_attention():
    q, k, v, w, beta, _ = _inputs(hkv=4)
    got = path_attention(q, k, v, w, torch.zeros_like(beta), None)
    torch.testing.assert_close(got, F.scaled_dot_product_attention(q, k, v, is_causal=True), rtol=1e-10, atol=1e-10)


def test_gates_give_unit_w_beta_in_0_2_and_a_causal_short_convolution():
    gates = PaTHGates(dim=24, n_heads=4, n_kv_heads=2, head_dim=8, w_rank=4, conv_size=3, forget_gate=True)
    x = torch.randn(2, 11, 24)
    w, beta, forget, _ = gates(x)
    assert w.shape == (2, 2, 11, 8) and beta.shape == (2, 2, 11) and forget.shape == (2, 4, 11)
    torch.testing.assert_close(w.norm(dim=-1), torch.ones(2, 2, 11))
    assert ((beta > 0) & (beta < 2)).all() and (forget <= 0).all()
    x2 = x.clone()
    x2[:, 7:] = torch.randn(2, 4, 24)  # the future does not change earlier transforms
    w2, beta2, _, _ = gates(x2)
    assert torch.equal(w2[:, :, :7], w[:, :, :7]) and torch.equal(beta2[:, :, :7], beta[:, :, :7])


@pytest.mark.parametrize("forget_gate", [False, True])
def test_kv_cache_decoding_equals_one_parallel_pass(forget_gate):
    """Prefill, a 3-token chunk, then single tokens == the full sequence (grouped keys, the gate's running sums)."""
    from rope_lab.backbones.decoder import Decoder, DecoderConfig
    from rope_lab.pe import build_pe

    from .helpers import pe_config

    torch.manual_seed(0)
    cfg = DecoderConfig(vocab_size=40, dim=32, depth=2, n_heads=4, n_kv_heads=2, mlp_hidden=48)
    model = Decoder(cfg, build_pe(pe_config("path", forget_gate=forget_gate))).double().eval()
    tokens, pos = torch.randint(0, 40, (2, 12)), Positions.sequence(2, 12)
    full, decoded, _ = parallel_and_incremental(model, tokens, pos, 5, 8)
    torch.testing.assert_close(decoded, full, rtol=1e-9, atol=1e-9)


def test_packed_decoding_and_missing_hidden_states_are_clear_errors():
    import dataclasses

    from rope_lab.pe import KVCache

    pe = build("path")
    q = k = v = torch.randn(1, 2, 3, 16)
    packed = dataclasses.replace(Positions.sequence(1, 3), segment=torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="pe=path decodes one document per row"):
        pe.attend(q, k, v, state=pe.prepare(packed), layer=0, causal=True, x=torch.randn(1, 3, 32), cache=KVCache(2))
    with pytest.raises(ValueError, match="must pass x to pe.attend"):
        pe.attend(q, k, v, state=pe.prepare(Positions.sequence(1, 3)), layer=0, causal=True)
    with pytest.raises(ValueError, match="only works with causal attention"):
        pe.check_compatible(1, causal=False)
