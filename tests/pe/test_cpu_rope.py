"""The AVX2 bf16 interleaved rotation (rope_lab/pe/kernels/cpu_rope.cpp) against the eager oracle: bit-identical
values (both memory orders, partial rotary, P not a multiple of 8, broadcast and per-head tables, NaN/inf), and
gradients equal to eager autograd's to bf16 rounding; the compiled backend routes bf16 interleaved q/k to it."""

from __future__ import annotations

import pytest
import torch

from rope_lab.pe import kernels
from rope_lab.pe.kernels import cpu_rope, eager

pytestmark = pytest.mark.skipif(cpu_rope.extension() is None, reason="needs an x86 CPU with AVX2 and a C++ compiler")


def _bits(t):
    return t.contiguous().view(torch.int16)


def _tables(batch, heads, length, pairs, seed=0):
    g = torch.Generator().manual_seed(seed)
    ang = torch.rand(batch, heads, length, pairs, generator=g) * 1e4  # large angles: every quadrant
    return ang.cos() * 1.3, ang.sin() * 1.3  # an attention factor folded in, as Rotary does


@pytest.mark.parametrize(("shape", "table_shape"), [
    ((2, 3, 7, 16), (2, 1, 7, 8)),   # P = 8: vector body only, tables broadcast over heads
    ((2, 3, 5, 22), (1, 3, 5, 5)),   # P = 5: scalar tail, partial rotary (12 channels pass through), per-head
    ((1, 4, 9, 64), (1, 1, 9, 27)),  # P = 27: vector body + tail + pass-through
])
@pytest.mark.parametrize("token_major", [False, True])
def test_values_bit_identical_to_eager(shape, table_shape, token_major):
    g = torch.Generator().manual_seed(1)
    b, h, n, d = shape
    x = (torch.randn(b, n, h, d, generator=g).transpose(1, 2) if token_major else torch.randn(shape, generator=g))
    x = x.to(torch.bfloat16)  # keeps the transposed memory order
    cos, sin = _tables(*table_shape)
    got = cpu_rope._rotate(x, cos, sin)
    assert torch.equal(_bits(got), _bits(eager.rotate(x, cos, sin, "interleaved")))
    assert got.stride() == x.stride()


def test_non_finite_values_match_eager():
    x = torch.randn(1, 1, 2, 16).bfloat16()
    x[0, 0, 0, :4] = torch.tensor([float("nan"), float("inf"), -float("inf"), 3e38])
    cos, sin = _tables(1, 1, 2, 8)
    got, want = cpu_rope._rotate(x, cos, sin), eager.rotate(x, cos, sin, "interleaved")
    assert torch.equal(got.isnan(), want.isnan())
    assert torch.equal(_bits(got.nan_to_num(0.0)), _bits(want.nan_to_num(0.0)))


def test_compiled_backend_uses_it_and_gradients_match_eager():
    g = torch.Generator().manual_seed(2)
    q = torch.randn(2, 33, 4, 32, generator=g).bfloat16().transpose(1, 2).requires_grad_()
    k = torch.randn(2, 4, 33, 32, generator=g).bfloat16().requires_grad_()
    cos, sin = _tables(2, 1, 33, 16)
    assert cpu_rope.applies(q, k, (cos, sin), "interleaved")
    wq, wk = torch.randn(q.shape, generator=g), torch.randn(k.shape, generator=g)
    outs = {}
    for kernel in ("compiled", "eager"):
        rq, rk = kernels.rotate_qk_tables(q, k, cos, sin, cos, sin, "interleaved", kernel)
        ((rq.float() * wq).sum() + (rk.float() * wk).sum()).backward()
        outs[kernel] = [rq, rk, q.grad, k.grad]
        q.grad = k.grad = None
    for a, b in zip(outs["compiled"], outs["eager"]):
        torch.testing.assert_close(a.float(), b.float(), rtol=1e-2, atol=1e-2)
    assert torch.equal(_bits(outs["compiled"][0]), _bits(outs["eager"][0]))


def test_not_used_for_learnable_tables_fp32_or_half_pairs():
    x = torch.randn(1, 2, 3, 8).bfloat16()
    cos, sin = _tables(1, 1, 3, 4)
    assert not cpu_rope.applies(x, x, (cos.requires_grad_(), sin), "interleaved")
    assert not cpu_rope.applies(x.float(), x.float(), (cos.detach(), sin), "interleaved")
    assert not cpu_rope.applies(x, x, (cos.detach(), sin), "half")
