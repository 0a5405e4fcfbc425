"""pe/scaling: every scaling against transformers' ROPE_INIT_FUNCTIONS / dynamic_rope_update, pinned float64
numbers (lm_variants.md Appendix A), the two KV-cache modes of dynamic scalings, bad input and the registry
property checks on a rope pe composed with each scaling.

HF computes its frequencies in float32 (``dtype=torch.float`` is hard-coded), so parity with HF is asserted at
float32 resolution (rtol 1e-6); our float64 path is checked against the float64 reference numbers.
"""

from __future__ import annotations

import math

import pytest
import torch
from transformers import LlamaConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

from rope_lab.backbones.decoder import Decoder, DecoderConfig
from rope_lab.pe import AttentionGeometry, Positions, available_scalings, build_pe, build_scaling
from rope_lab.pe.frequencies import rope_inv_freq

from .helpers import pe_config

ALL = ["none", "linear", "ntk", "dynamic_ntk", "yarn", "dynamic_yarn", "longrope", "llama3"]


def hf_config(head_dim, base, max_pos, partial=1.0, **rope):
    rope = {"rope_theta": base, "partial_rotary_factor": partial, **rope}
    return LlamaConfig(hidden_size=head_dim * 2, num_attention_heads=2, head_dim=head_dim,
                       max_position_embeddings=max_pos, rope_parameters=rope)


def ours(scaling: dict, head_dim: int, base: float, partial: float = 1.0, seq_len: int | None = None,
         dtype=torch.float32):
    """(inv_freq, attention factor) through a real rope pe (setup + prepare), as a model uses it."""
    pe = build_pe({"name": "rope", "base": base, "rotary_fraction": partial, "scaling": scaling})
    pe.setup(AttentionGeometry(dim=2 * head_dim, head_dim=head_dim, n_heads=2, n_kv_heads=2, depth=1))
    if dtype == torch.float64:
        return pe.scaling.rewrite(rope_inv_freq(2 * pe.n_pairs, base, torch.float64),
                                  None if seq_len is None else torch.tensor(seq_len))
    state = pe.prepare(Positions.sequence(1, seq_len or 4))
    return state.inv_freq, state.attention_factor


def close(a, b, rtol=1e-6):
    torch.testing.assert_close(a.double(), b.double(), rtol=rtol, atol=0.0)


def test_every_scaling_is_registered():
    assert set(ALL) == set(available_scalings())


# (head_dim, base, factor, original length, partial rotary)
SETTINGS = [(128, 1e4, 16.0, 4096, 1.0), (64, 5e5, 8.0, 8192, 1.0), (32, 1e4, 4.0, 128, 1.0),
            (80, 1e6, 2.5, 2048, 0.5), (16, 500.0, 3.0, 64, 1.0)]


@pytest.mark.parametrize("head_dim,base,factor,l0,partial", SETTINGS)
def test_linear_matches_hf(head_dim, base, factor, l0, partial):
    inv, att = ROPE_INIT_FUNCTIONS["linear"](hf_config(head_dim, base, l0, partial, rope_type="linear",
                                                       factor=factor), "cpu")
    got, got_att = ours({"name": "linear", "factor": factor}, head_dim, base, partial)
    close(got, inv)
    assert got_att == att == 1.0


@pytest.mark.parametrize("head_dim,base,factor,l0,partial", SETTINGS)
@pytest.mark.parametrize("extra", [{}, {"truncate": False}, {"beta_fast": 16, "beta_slow": 2},
                                   {"attention_factor": 0.7}, {"mscale": 1.0, "mscale_all_dim": 0.707}])
def test_yarn_matches_hf(head_dim, base, factor, l0, partial, extra):
    cfg = hf_config(head_dim, base, int(l0 * factor), partial, rope_type="yarn", factor=factor,
                    original_max_position_embeddings=l0, **extra)
    inv, att = ROPE_INIT_FUNCTIONS["yarn"](cfg, "cpu")
    got, got_att = ours({"name": "yarn", "factor": factor, "original_max_position_embeddings": l0, **extra},
                        head_dim, base, partial)
    close(got, inv)
    assert got_att == pytest.approx(att, rel=1e-12)


@pytest.mark.parametrize("head_dim,base,factor,l0,partial", SETTINGS)
def test_llama3_matches_hf(head_dim, base, factor, l0, partial):
    cfg = hf_config(head_dim, base, int(l0 * factor), partial, rope_type="llama3", factor=factor,
                    low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=l0)
    inv, att = ROPE_INIT_FUNCTIONS["llama3"](cfg, "cpu")
    got, got_att = ours({"name": "llama3", "factor": factor, "original_max_position_embeddings": l0}, head_dim,
                        base, partial)
    close(got, inv)
    assert got_att == att == 1.0


@pytest.mark.parametrize("head_dim,base,factor,l0,partial", SETTINGS)
def test_static_ntk_matches_hf_default_with_scaled_base(head_dim, base, factor, l0, partial):
    """No HF rope_type: static NTK is HF default RoPE with rope_theta = base * s^(d/(d-2)) (jquesnelle/yarn)."""
    dim = int(head_dim * partial)
    scaled = base * factor ** (dim / (dim - 2))
    inv, _ = ROPE_INIT_FUNCTIONS["linear"](hf_config(head_dim, scaled, l0, partial, rope_type="linear",
                                                     factor=1.0), "cpu")
    got, got_att = ours({"name": "ntk", "factor": factor}, head_dim, base, partial)
    close(got, inv, rtol=2e-6)
    assert got_att == 1.0


@pytest.mark.parametrize("head_dim,base,factor,l0,partial", SETTINGS)
@pytest.mark.parametrize("offset", [-5, 0, 1, 7, 3000])
def test_longrope_matches_hf_short_and_long(head_dim, base, factor, l0, partial, offset):
    """L = L0 uses the short factors, L0 + 1 the long ones (HF ``longrope_frequency_update``: seq_len > L0)."""
    n = int(head_dim * partial) // 2
    short = [1.0 + 0.05 * i for i in range(n)]
    long = [1.0 + (factor - 1) * i / max(n - 1, 1) + 0.3 for i in range(n)]
    seq_len = l0 + offset
    cfg = hf_config(head_dim, base, int(l0 * factor), partial, rope_type="longrope", short_factor=short,
                    long_factor=long, original_max_position_embeddings=l0)
    inv, att = ROPE_INIT_FUNCTIONS["longrope"](cfg, "cpu", seq_len=seq_len)
    got, got_att = ours({"name": "longrope", "short_factor": short, "long_factor": long,
                         "original_max_position_embeddings": l0, "max_position_embeddings": int(l0 * factor)},
                        head_dim, base, partial, seq_len=seq_len)
    close(got, inv)
    assert got_att == pytest.approx(att, rel=1e-12)
    expected = torch.tensor(long if seq_len > l0 else short, dtype=torch.float64)
    close(got, rope_inv_freq(2 * n, base, torch.float64) / expected, rtol=2e-6)


@pytest.mark.parametrize("head_dim,base,factor,l0", [(64, 1e4, 4.0, 64), (32, 5e5, 2.0, 128), (128, 1e4, 8.0, 512)])
@pytest.mark.parametrize("length", [10, "l0", "l0+1", "3*l0"])
def test_dynamic_ntk_matches_hf_dynamic_update(head_dim, base, factor, l0, length):
    """A fresh HF rotary module run at one length (below, at and above the original) == ours at that length."""
    n = {"l0": l0, "l0+1": l0 + 1, "3*l0": 3 * l0}.get(length, length)
    rot = LlamaRotaryEmbedding(hf_config(head_dim, base, l0, rope_type="dynamic", factor=factor))
    cos, sin = rot(torch.zeros(1, 1, 1), torch.arange(n)[None])
    pe = build_pe({"name": "rope", "base": base, "scaling": {"name": "dynamic_ntk", "factor": factor,
                                                             "original_max_position_embeddings": l0}})
    pe.setup(AttentionGeometry(dim=2 * head_dim, head_dim=head_dim, n_heads=2, n_kv_heads=2, depth=1))
    state = pe.prepare(Positions.sequence(1, n))
    close(state.inv_freq, rot.inv_freq)
    ours_cos, ours_sin = state.rotation
    torch.testing.assert_close(torch.cat([ours_cos, ours_cos], -1)[0, 0], cos[0], rtol=0, atol=1e-3)  # fp32 angles up to ~1.5e3 rad
    torch.testing.assert_close(torch.cat([ours_sin, ours_sin], -1)[0, 0], sin[0], rtol=0, atol=1e-3)


def test_pinned_float64_reference_numbers():
    """lm_variants.md Appendix A (LLaMA-2 head 128, base 1e4 unless stated), float64."""
    inv, att = ours({"name": "yarn", "factor": 16.0, "original_max_position_embeddings": 4096}, 128, 1e4,
                    dtype=torch.float64)
    default = rope_inv_freq(128, 1e4, torch.float64)
    assert att == pytest.approx(1.2772589, rel=1e-7)
    assert torch.equal(inv[:21], default[:21]) and torch.allclose(inv[46:], default[46:] / 16, rtol=1e-15)
    assert inv[20].item() == pytest.approx(0.05623413, rel=1e-6)
    assert inv[40].item() == pytest.approx(8.817890e-4, rel=1e-6)
    assert inv[63].item() == pytest.approx(7.217387e-6, rel=1e-6)
    for s, m in [(4, 1.138629), (8, 1.207944), (32, 1.346574)]:
        assert ours({"name": "yarn", "factor": float(s)}, 128, 1e4)[1] == pytest.approx(m, rel=1e-6)
    l3, _ = ours({"name": "llama3", "factor": 8.0, "original_max_position_embeddings": 8192}, 128, 5e5,
                 dtype=torch.float64)
    ratio = l3 / rope_inv_freq(128, 5e5, torch.float64)
    assert (ratio == 1).sum() == 29 and torch.isclose(ratio, torch.tensor(1 / 8, dtype=torch.float64)).sum() == 29
    smoothed = ratio[(ratio < 1) & (ratio > 1 / 8 + 1e-12)]
    expected = torch.tensor([0.828168, 0.643743, 0.493507, 0.371122, 0.271425, 0.190211], dtype=torch.float64)
    torch.testing.assert_close(smoothed, expected, rtol=2e-6, atol=0)
    dyn, _ = ours({"name": "dynamic_ntk", "factor": 2.0, "original_max_position_embeddings": 4096}, 128, 1e4,
                  seq_len=8192, dtype=torch.float64)
    assert dyn[63].item() == pytest.approx(3.849273e-5, rel=1e-6)
    assert (1 / dyn[1].item()) ** (128 / 2) == pytest.approx(30527.737, rel=1e-7)  # base'
    lin, _ = ours({"name": "linear", "factor": 4.0}, 128, 1e4, dtype=torch.float64)
    assert torch.equal(lin, default / 4)
    lr_att = ours({"name": "longrope", "short_factor": [1.0] * 64, "long_factor": [1.0] * 64, "factor": 32.0,
                   "original_max_position_embeddings": 4096}, 128, 1e4)[1]
    assert lr_att == pytest.approx(1.1902381, rel=1e-7)


# -- bad input ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cfg,match", [
    ({"name": "stretch"}, "unknown scaling.*choose one of.*yarn"),
    ({"name": "linear", "factor": 0.0}, "factor must be > 0.*0.0"),
    ({"name": "yarn", "factor": -2.0}, "factor must be > 0.*-2.0"),
    ({"name": "ntk", "factor": -1.0}, "factor must be > 0"),
    ({"name": "dynamic_ntk", "factor": 2.0, "kv_cache": "lazy"}, "kv_cache must be one of.*consistent.*lazy"),
    ({"name": "llama3", "factor": 8.0, "low_freq_factor": 4.0, "high_freq_factor": 1.0}, "high_freq_factor >"),
    ({"name": "yarn", "factr": 2.0}, "no option.*factr"),
    ({"name": "dynamic_yarn", "factor": 0.0}, "factor must be >= 1 for scaling 'dynamic_yarn'.*got 0.0"),
    ({"name": "dynamic_yarn", "factor": 0.5}, "factor must be >= 1.*got 0.5"),
    ({"name": "dynamic_yarn", "kv_cache": "lazy"}, "kv_cache must be one of.*consistent.*lazy"),
    ({"name": "dynamic_yarn", "original_max_position_embeddings": None}, "training length L0.*not set"),
    ({"name": "dynamic_yarn", "original_max_position_embeddings": 0}, "original_max_position_embeddings must be > 0"),
    ({"name": "dynamic_yarn", "beta_fast": -1.0}, "beta_fast must be > 0"),
])
def test_bad_config_is_a_clear_error(cfg, match):
    with pytest.raises(ValueError, match=match):
        build_scaling(cfg)


def test_longrope_factor_list_must_have_one_entry_per_pair():
    pe = build_pe({"name": "rope", "scaling": {"name": "longrope", "short_factor": [1.0] * 15,
                                               "long_factor": [2.0] * 16}})
    with pytest.raises(ValueError, match="short_factor must have rotary_dim/2 = 16 entries.*got 15"):
        pe.setup(AttentionGeometry(dim=64, head_dim=32, n_heads=2, n_kv_heads=2, depth=1))


# -- KV cache: the two behaviours of a length-dependent scaling -------------------------------------------------

def _decoder(scaling: dict, n_kv_heads: int = 2, psc: bool = False, depth: int = 2) -> Decoder:
    torch.manual_seed(0)
    pe = build_pe({"name": "rope", "scaling": scaling, "psc": psc})
    cfg = DecoderConfig(vocab_size=64, dim=32, depth=depth, n_heads=2, n_kv_heads=n_kv_heads, mlp_hidden=64,
                        init_std=0.3)  # sharp attention, so a stale key rotation is visible in the logits
    return Decoder(cfg, pe).eval()


DYN = {"name": "dynamic_ntk", "factor": 4.0, "original_max_position_embeddings": 8}
DYN_YARN = {"name": "dynamic_yarn", "original_max_position_embeddings": 8}
LONG = {"name": "longrope", "short_factor": [1.0] * 8, "long_factor": [1.0 + i for i in range(8)],
        "original_max_position_embeddings": 8, "factor": 4.0}


def _decode(model, tokens, prefix):
    cache = model.new_cache()
    pos = Positions.sequence(tokens.shape[0], tokens.shape[1])
    with torch.no_grad():
        out = [model(tokens[:, :prefix], pos.slice(0, prefix), cache)]
        out += [model(tokens[:, i:i + 1], pos.slice(i, i + 1), cache) for i in range(prefix, tokens.shape[1])]
    return torch.cat(out, 1), cache


@pytest.mark.parametrize("scaling", [DYN, DYN_YARN, LONG])
@pytest.mark.parametrize("n_kv_heads", [2, 1])
def test_consistent_cache_equals_parallel_at_every_step(scaling, n_kv_heads):
    """consistent: every cached key is re-rotated with the current frequencies, so in a one-layer model the
    logits of step t equal a parallel forward over tokens[:t+1] while the length crosses L0. (In deeper models
    earlier tokens' hidden states still come from the lengths they were computed at, as with any KV cache.)"""
    model = _decoder({**scaling, "kv_cache": "consistent"}, n_kv_heads, depth=1)
    tokens = torch.randint(0, 64, (2, 20))
    stepped, _ = _decode(model, tokens, prefix=5)
    with torch.no_grad():
        for t in range(5, 20):
            ref = model(tokens[:, : t + 1], Positions.sequence(2, t + 1))[:, -1]
            torch.testing.assert_close(stepped[:, t], ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("scaling", [DYN, DYN_YARN, LONG])
def test_hf_cache_keeps_the_rotation_each_key_was_written_with(scaling):
    """hf: key j in the cache is rotated with the frequencies of the forward that wrote it (as HF generate)."""
    model = _decoder({**scaling, "kv_cache": "hf"})
    tokens = torch.randint(0, 64, (1, 16))
    stepped, cache = _decode(model, tokens, prefix=4)
    pe, attn = model.pe, model.blocks[0].attn
    with torch.no_grad():
        x = model.blocks[0].attn_norm(model.embed_tokens(tokens))
        k = attn.k_proj(x).view(1, 16, 2, 16).transpose(1, 2)
    for j in range(16):
        written = Positions.sequence(1, 4) if j < 4 else Positions.sequence(1, 1, start=j)
        state = pe.prepare(written)
        kj = k[:, :, : 4] if j < 4 else k[:, :, j : j + 1]
        _, rk = pe.rotate(kj, kj, state, 0)
        torch.testing.assert_close(cache.keys[0][:, :, j], rk[:, :, min(j, 3) if j < 4 else 0], rtol=1e-5, atol=1e-6)
    one_layer = _decoder({**scaling, "kv_cache": "hf"}, depth=1)
    stepped, _ = _decode(one_layer, tokens, prefix=4)
    with torch.no_grad():
        parallel = one_layer(tokens, Positions.sequence(1, 16))
    assert not torch.allclose(stepped[:, -1], parallel[:, -1], atol=1e-3), "hf mode should differ past L0"


# -- registry property checks on rope x each scaling -------------------------------------------------------------

def _scaled_cfg(name: str) -> dict:
    cfg = pe_config("rope")
    cfg["scaling"] = {"name": name, **({"factor": 4.0} if name not in ("none", "longrope") else {})}
    if name == "longrope":
        cfg["scaling"].update(short_factor=[1.0] * 8, long_factor=[2.0] * 8, original_max_position_embeddings=64)
    if name in ("dynamic_ntk", "yarn", "dynamic_yarn", "llama3"):
        cfg["scaling"]["original_max_position_embeddings"] = 64
    return cfg


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_property_forward_backward_cast(name, dtype):
    torch.manual_seed(0)
    model = Decoder(DecoderConfig(vocab_size=64, dim=32, depth=2, n_heads=2, n_kv_heads=2, mlp_hidden=64),
                    build_pe(_scaled_cfg(name))).to(dtype)
    tokens = torch.randint(0, 64, (2, 12))
    logits = model(tokens, Positions.sequence(2, 12, start=100))
    assert logits.dtype == dtype and torch.isfinite(logits.float()).all()
    logits.float().logsumexp(-1).mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    assert model.pe.inv_freq.dtype == torch.float32


@pytest.mark.parametrize("name", ALL)
def test_property_relative_position_and_cache(name):
    pe = build_pe(_scaled_cfg(name)).setup(AttentionGeometry(dim=32, head_dim=16, n_heads=2, n_kv_heads=2, depth=1))
    g = torch.Generator().manual_seed(1)
    q, k = (torch.randn(1, 2, 10, 16, generator=g, dtype=torch.float64) for _ in range(2))
    coords = torch.randint(0, 40, (1, 10, 1), generator=g).float()
    # both forwards stay on one side of the original length, so length-dependent frequencies agree
    a = [pe.rotate(q, k, pe.prepare(Positions(coords + s)), 0) for s in (0.0, 13.0)]
    scores = [rq.double() @ rk.double().transpose(-1, -2) for rq, rk in a]
    torch.testing.assert_close(scores[0], scores[1], rtol=1e-4, atol=1e-4)
    model = Decoder(DecoderConfig(vocab_size=64, dim=32, depth=2, n_heads=2, n_kv_heads=2, mlp_hidden=64),
                    build_pe(_scaled_cfg(name))).eval()
    tokens = torch.randint(0, 64, (2, 10))
    stepped, _ = _decode(model, tokens, prefix=6)
    with torch.no_grad():
        torch.testing.assert_close(stepped, model(tokens, Positions.sequence(2, 10)), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("scaling", [DYN, DYN_YARN])
def test_dynamic_scaling_compiles_without_host_sync(scaling):
    model = _decoder({**scaling, "kv_cache": "hf"})
    tokens = torch.randint(0, 64, (1, 24))
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        for n in (6, 24):  # below and above L0: one graph, the length is data
            pos = Positions.sequence(1, n)
            torch.testing.assert_close(compiled(tokens[:, :n], pos), model(tokens[:, :n], pos), rtol=1e-4, atol=1e-4)


def test_attention_factor_squares_into_logits():
    pe = build_pe({"name": "rope", "scaling": {"name": "yarn", "factor": 8.0, "original_max_position_embeddings": 64}})
    pe.setup(AttentionGeometry(dim=32, head_dim=16, n_heads=2, n_kv_heads=2, depth=1))
    q = k = torch.randn(1, 2, 5, 16)
    state = pe.prepare(Positions.sequence(1, 5))
    rq, rk = pe.rotate(q, k, state, 0)
    assert rq.norm() / q.norm() == pytest.approx(0.1 * math.log(8) + 1, rel=1e-5)
