"""Registry-driven property tests: every registered positional encoding is covered automatically.

Relative-position invariance and shift invariance are checked for rotary variants that declare
``relative = True`` (the default, ``PositionalEncoding.relative``); KV-cache decoding for every variant that
supports it.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from rope_lab.backbones.decoder import Decoder, DecoderConfig
from rope_lab.pe import available_pes

from .helpers import build, example_positions, geometry, pe_config

NAMES = available_pes()


def _tiny_decoder(name: str, dtype=torch.float32) -> Decoder:
    from rope_lab.pe import build_pe

    torch.manual_seed(0)
    pe = build_pe(pe_config(name))
    cfg = DecoderConfig(vocab_size=64, dim=32, depth=2, n_heads=2, n_kv_heads=2, mlp_hidden=64, max_tokens=256)
    return Decoder(cfg, pe).to(dtype)


def _qk(batch, heads, n, d, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, heads, n, d, generator=g, dtype=torch.float64).to(dtype),
            torch.randn(batch, heads, n, d, generator=g, dtype=torch.float64).to(dtype))


def _scores(pe, positions, q, k, layer=0):
    state = pe.prepare(positions)
    rq, rk = pe.rotate(q, k, state, layer)
    return rq.double() @ rk.double().transpose(-1, -2)


def test_registry_is_not_empty():
    assert {"rope", "nope", "ape"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_forward_shape_dtype_finite(name, dtype):
    model = _tiny_decoder(name, dtype)
    tokens = torch.randint(0, 64, (2, 12))
    pos = example_positions(model.pe, 2, 12)
    logits = model(tokens, pos)
    assert logits.shape == (2, 12, 64) and logits.dtype == dtype
    assert torch.isfinite(logits.float()).all()


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_parameter(name):
    model = _tiny_decoder(name)
    tokens = torch.randint(0, 64, (2, 12))
    model(tokens, example_positions(model.pe, 2, 12)).logsumexp(-1).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None)]
    assert not missing, f"no gradient for {missing}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def _relative(name):
    pe = build(name)
    return pe.is_rotary and pe.relative


@pytest.mark.parametrize("name", [n for n in NAMES if _relative(n)])
def test_rotary_scores_depend_only_on_relative_position(name):
    """<R(m+s) q, R(n+s) k> == <R(m) q, R(n) k> for every shift s (float64 scores, random coords)."""
    pe = build(name)
    g = torch.Generator().manual_seed(1)
    pos = example_positions(pe, 1, 10, random=True, generator=g)
    shifted = dataclasses.replace(pos, coords=pos.coords + 37.0)
    q, k = _qk(1, pe.geometry.n_heads, 10, pe.geometry.head_dim, torch.float64)
    a, b = _scores(pe, pos, q, k), _scores(pe, shifted, q, k)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", [n for n in NAMES if _relative(n)])
def test_rotary_is_norm_preserving(name):
    pe = build(name)
    pos = example_positions(pe, 2, 9, start=3)
    q, k = _qk(2, pe.geometry.n_heads, 9, pe.geometry.head_dim)
    state = pe.prepare(pos)
    rq, _ = pe.rotate(q, k, state, 0)
    factor = state.attention_factor
    torch.testing.assert_close(rq.norm(dim=-1), q.norm(dim=-1) * factor, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", [n for n in NAMES if build(n).supports_kv_cache])
def test_kv_cache_decoding_equals_parallel(name):
    model = _tiny_decoder(name).eval()
    tokens = torch.randint(0, 64, (2, 10))
    pos = example_positions(model.pe, 2, 10)
    with torch.no_grad():
        full = model(tokens, pos)
        cache = model.new_cache()
        prefix = model(tokens[:, :6], pos.slice(0, 6), cache)
        steps = [model(tokens[:, i : i + 1], pos.slice(i, i + 1), cache) for i in range(6, 10)]
    torch.testing.assert_close(torch.cat([prefix, *steps], 1), full, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", [n for n in NAMES if build(n).is_rotary])
def test_model_cast_leaves_angles_bit_identical(name):
    model = _tiny_decoder(name)
    pos = example_positions(model.pe, 1, 8, start=1000)
    q, k = _qk(1, 2, 8, 16)
    before = model.pe.rotate(q, k, model.pe.prepare(pos), 0)
    model.to(torch.bfloat16)
    after = model.pe.rotate(q, k, model.pe.prepare(pos), 0)
    assert all(torch.equal(x, y) for x, y in zip(before, after))


@pytest.mark.parametrize("name", [n for n in NAMES if build(n).is_rotary])
def test_large_positions_stay_distinct_under_bf16_autocast(name):
    """Positions near 1e5 must not collapse (bf16 has 8 bits of mantissa: 1e5 and 1e5+1 are equal in bf16)."""
    pe = build(name)
    pos = example_positions(pe, 1, 4, start=100_000)
    q, k = _qk(1, pe.geometry.n_heads, 4, pe.geometry.head_dim, seed=2)
    q[:] = q[:, :, :1]  # the same query vector at 4 consecutive large positions
    with torch.autocast("cpu", dtype=torch.bfloat16):
        rq_bf, _ = pe.rotate(q.bfloat16(), k.bfloat16(), pe.prepare(pos), 0)
    rq, _ = pe.rotate(q, k, pe.prepare(pos), 0)
    diffs = (rq_bf[0, :, 1:] - rq_bf[0, :, :-1]).float().abs().amax(dim=-1)
    assert (diffs > 0).all(), "consecutive large positions collapsed to the same rotation"
    torch.testing.assert_close(rq_bf.float(), rq, rtol=2e-2, atol=3e-2)


@pytest.mark.parametrize("name", ["rope"])
def test_torch_compile(name):
    model = _tiny_decoder(name).eval()
    tokens = torch.randint(0, 64, (2, 8))
    pos = example_positions(model.pe, 2, 8)
    compiled = torch.compile(model)
    with torch.no_grad():
        torch.testing.assert_close(compiled(tokens, pos), model(tokens, pos), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_torch_compile_every_variant(name):
    test_torch_compile(name)
