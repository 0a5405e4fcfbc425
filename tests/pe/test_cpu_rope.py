"""The x86 rotation (rope_lab/pe/kernels/cpu_rope.cpp) against the eager oracle: bit-identical values for every
instruction set this CPU runs and every pair layout it covers (fp32 and bf16, both memory orders, partial rotary, P
not a multiple of 16, token counts across work blocks, broadcast and per-head tables, denormal results, NaN/inf,
large fresh outputs whose pages are mapped up front), gradients equal to eager autograd's; the compiled backend
routes fp32/bf16 q/k to it where the CPU's instruction set covers the layout."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rope_lab.pe import kernels
from rope_lab.pe.kernels import cpu_rope, eager

pytestmark = pytest.mark.skipif(not cpu_rope.isas() or cpu_rope.extension() is None,
                                reason="needs an x86 CPU with AVX2 (not capped off) and a C++ compiler")

CASES = [(isa, dtype, layout) for isa in cpu_rope.isas() for dtype in (torch.float32, torch.bfloat16)
         for layout in ("interleaved", "half") if (dtype, layout) in cpu_rope.COVERAGE[isa]]
#: the (dtype, layout) cases of the best allowed instruction set: bf16 interleaved at least (AVX2)
BEST = sorted({(d, lay) for isa, d, lay in CASES if isa == cpu_rope.isas()[0]}, key=str) if CASES else []


THP_MODE = "/sys/kernel/mm/transparent_hugepage/enabled"


def _bits(t):
    return t.contiguous().view(torch.int16 if t.dtype == torch.bfloat16 else torch.int32)


def _tables(batch, heads, length, pairs, seed=0):
    g = torch.Generator().manual_seed(seed)
    ang = torch.rand(batch, heads, length, pairs, generator=g) * 1e4  # large angles: every quadrant
    return ang.cos() * 1.3, ang.sin() * 1.3  # an attention factor folded in, as Rotary does


def test_isas_read_from_the_cpu_flags_agree_with_the_compiled_code():
    """/proc/cpuinfo (read before anything is built) against the compiler's __builtin_cpu_supports."""
    assert list(cpu_rope._detected_isas()) == list(cpu_rope.extension().isas())
    assert "avx2" in cpu_rope._detected_isas()


def test_coverage_table_agrees_with_the_compiled_code():
    ext = cpu_rope.extension()
    for isa in ext.isas():
        for dtype in (torch.float32, torch.bfloat16):
            for layout in ("half", "interleaved"):
                want = ext.supports(isa, dtype == torch.bfloat16, layout == "interleaved")
                assert ((dtype, layout) in cpu_rope.COVERAGE[isa]) == want, (isa, dtype, layout)


@pytest.mark.parametrize(("isa", "dtype", "layout"), CASES)
@pytest.mark.parametrize(("shape", "table_shape"), [
    ((2, 3, 7, 32), (2, 1, 7, 16)),     # P = 16: one full step, tables broadcast over heads
    ((2, 3, 5, 22), (1, 3, 5, 5)),      # P = 5: masked tail only, partial rotary (12 channels pass through), per head
    ((1, 4, 9, 64), (1, 1, 9, 27)),     # P = 27: full step + tail + pass-through
    ((2, 2, 130, 64), (1, 1, 130, 32)),  # one block of the whole sequence
    ((1, 6, 70, 32), (1, 1, 70, 16)),    # one batch row: heads split into groups to keep threads busy
    ((2, 3, 600, 128), (2, 1, 600, 64)),  # per-batch tables over L2's share: blocks of 256 tokens, a short last one
    ((4, 7, 40, 64), (1, 1, 40, 32)),    # units of 7 (1 thread) or 4 and 3 heads: a step of 4 heads, then single ones
    ((8, 9, 50, 48), (1, 1, 50, 24)),    # 4 + 4 + 1 heads, each step a full one and a tail
])
@pytest.mark.parametrize("token_major", [False, True])
def test_values_bit_identical_to_eager(isa, dtype, layout, shape, table_shape, token_major):
    g = torch.Generator().manual_seed(1)
    b, h, n, d = shape
    x = (torch.randn(b, n, h, d, generator=g).transpose(1, 2) if token_major else torch.randn(shape, generator=g))
    x = x.to(dtype)  # keeps the transposed memory order
    cos, sin = _tables(*table_shape)
    got = cpu_rope.rotate(x, cos, sin, layout, isa)
    assert torch.equal(_bits(got), _bits(eager.rotate(x, cos, sin, layout)))
    assert got.stride() == x.stride()


@pytest.mark.parametrize(("isa", "dtype", "layout"), CASES)
def test_denormal_results_are_rounded_like_eager(isa, dtype, layout):
    # VCVTNE2PS2BF16 flushes denormals to zero; the kernel must round them as torch does (to bf16 denormals)
    x = (torch.randn(1, 2, 4, 64, generator=torch.Generator().manual_seed(3)) * 1e-38).to(dtype)
    cos, sin = torch.full((1, 1, 4, 32), 0.3), torch.full((1, 1, 4, 32), 0.7)
    want = eager.rotate(x, cos, sin, layout)
    assert (want != 0).float().mean() > 0.9  # the case is real: almost every output is a nonzero denormal
    assert torch.equal(_bits(cpu_rope.rotate(x, cos, sin, layout, isa)), _bits(want))


@pytest.mark.parametrize(("isa", "dtype", "layout"), CASES)
def test_non_finite_values_match_eager(isa, dtype, layout):
    x = torch.randn(1, 1, 2, 40).to(dtype)
    x[0, 0, 0, :4] = torch.tensor([float("nan"), float("inf"), -float("inf"), 3e38])
    cos, sin = _tables(1, 1, 2, 20)
    got, want = cpu_rope.rotate(x, cos, sin, layout, isa), eager.rotate(x, cos, sin, layout)
    assert torch.equal(got.isnan(), want.isnan())
    assert torch.equal(_bits(got.nan_to_num(0.0)), _bits(want.nan_to_num(0.0)))


@pytest.mark.parametrize(("dtype", "layout"), BEST, ids=str)
def test_tables_with_different_strides_are_accepted(dtype, layout):
    x = torch.randn(2, 2, 3, 16).to(dtype)
    cos, sin = _tables(1, 1, 3, 8)
    cos, sin = cos.expand(2, 2, 3, 8), sin.expand(2, 2, 3, 8).contiguous()  # as after the backward's sin.neg()
    got = cpu_rope.rotate(x, cos, sin, layout)
    assert torch.equal(_bits(got), _bits(eager.rotate(x, cos, sin, layout)))


@pytest.mark.parametrize(("dtype", "layout"), BEST, ids=str)
def test_compiled_backend_uses_it_and_gradients_match_eager(dtype, layout):
    g = torch.Generator().manual_seed(2)
    q = torch.randn(2, 33, 4, 32, generator=g).to(dtype).transpose(1, 2).requires_grad_()
    k = torch.randn(2, 4, 33, 32, generator=g).to(dtype).requires_grad_()
    cos, sin = _tables(2, 1, 33, 16)
    assert cpu_rope.applies(q, k, (cos, sin), layout)
    wq, wk = torch.randn(q.shape, generator=g), torch.randn(k.shape, generator=g)
    outs = {}
    for kernel in ("compiled", "eager"):
        rq, rk = kernels.rotate_qk(q, k, kernels.Tables(cos, sin), layout, kernel)
        ((rq.float() * wq).sum() + (rk.float() * wk).sum()).backward()
        outs[kernel] = [rq, rk, q.grad, k.grad]
        q.grad = k.grad = None
    for a, b in zip(outs["compiled"], outs["eager"]):
        torch.testing.assert_close(a.float(), b.float(), rtol=1e-2, atol=1e-2)
    assert torch.equal(_bits(outs["compiled"][0]), _bits(outs["eager"][0]))
    assert torch.equal(_bits(outs["compiled"][1]), _bits(outs["eager"][1]))


@pytest.mark.parametrize(("dtype", "layout"), BEST, ids=str)
@pytest.mark.parametrize(("batch", "heads_q", "heads_k", "length", "dim", "table_shape", "token_major"), [
    (2, 8, 2, 40, 64, (1, 1, 40, 32), False),     # grouped keys: a unit's heads span q's last and k's first ones
    (3, 5, 5, 30, 48, (3, 1, 30, 20), False),     # per-batch tables (3-D positions), partial rotary
    (2, 4, 4, 9, 32, (1, 4, 9, 16), False),       # per-head tables: k's heads index them by their own number
    (2, 6, 6, 300, 128, (2, 1, 300, 64), False),  # blocks of 256 tokens
    (2, 6, 6, 21, 64, (1, 1, 21, 32), True),      # q/k from a linear: rotated in the (B, N, H, D) frame
])
def test_q_and_k_with_shared_tables_are_rotated_in_one_pass(monkeypatch, dtype, layout, batch, heads_q, heads_k,
                                                            length, dim, table_shape, token_major):
    g = torch.Generator().manual_seed(5)

    def make(heads):
        if token_major:
            return torch.randn(batch, length, heads, dim, generator=g).to(dtype).transpose(1, 2).requires_grad_()
        return torch.randn(batch, heads, length, dim, generator=g).to(dtype).requires_grad_()

    q, k = make(heads_q), make(heads_k)
    cos, sin = _tables(*table_shape)
    ext, passes = cpu_rope.extension(), []
    fused = ext.rotate_all
    monkeypatch.setattr(ext, "rotate_all", lambda xs, *a: passes.append(len(xs)) or fused(xs, *a))
    rq, rk = kernels.rotate_qk(q, k, kernels.Tables(cos, sin), layout, "compiled")
    assert passes == [2]
    assert torch.equal(_bits(rq), _bits(eager.rotate(q.detach(), cos, sin, layout)))
    assert torch.equal(_bits(rk), _bits(eager.rotate(k.detach(), cos, sin, layout)))
    wq, wk = torch.randn(q.shape, generator=g).to(dtype), torch.randn(k.shape, generator=g).to(dtype)
    torch.autograd.backward((rq, rk), (wq, wk))  # the backward: one pass with the angle negated
    assert passes == [2, 2]
    assert torch.equal(_bits(q.grad), _bits(eager.rotate(wq, cos, -sin, layout)))
    assert torch.equal(_bits(k.grad), _bits(eager.rotate(wk, cos, -sin, layout)))


@pytest.mark.parametrize(("dtype", "layout"), BEST, ids=str)
def test_q_and_k_with_their_own_tables_or_shapes_are_rotated_apart(dtype, layout):
    q, k = torch.randn(1, 2, 6, 16).to(dtype), torch.randn(1, 2, 7, 16).to(dtype)  # a longer key (a KV cache)
    cq, sq = _tables(1, 1, 6, 8)
    ck, sk = _tables(1, 1, 7, 8)
    rq, rk = kernels.rotate_qk(q, k, kernels.Tables(cq, sq), layout, "compiled", k_tables=kernels.Tables(ck, sk))
    assert torch.equal(_bits(rq), _bits(eager.rotate(q, cq, sq, layout)))
    assert torch.equal(_bits(rk), _bits(eager.rotate(k, ck, sk, layout)))
    ext = cpu_rope.extension()
    with pytest.raises(RuntimeError, match="same batch, length"):
        ext.rotate_all([q, k], cq, sq, layout == "interleaved", cpu_rope.best_isa(q.dtype, layout))


def test_not_used_for_learnable_tables_or_other_dtypes_and_half_pairs_only_with_avx512():
    x = torch.randn(1, 2, 3, 8).bfloat16()
    cos, sin = _tables(1, 1, 3, 4)
    assert cpu_rope.applies(x, x, (cos, sin), "interleaved")
    assert cpu_rope.applies(x, x, (cos, sin), "half") == ("avx512" in cpu_rope.isas())  # AVX2: inductor's code
    assert not cpu_rope.applies(x, x, (cos.requires_grad_(), sin), "interleaved")
    assert not cpu_rope.applies(x.half(), x.half(), (cos.detach(), sin), "interleaved")
    assert not cpu_rope.applies(x.double(), x.double(), (cos.detach(), sin), "interleaved")
    if "avx512" not in cpu_rope.isas():  # AVX2 has bf16 code only
        assert not cpu_rope.applies(x.float(), x.float(), (cos.detach(), sin), "interleaved")


def test_fresh_output_pages_are_mapped_in_one_call_and_reused_ones_left_alone():
    ext = cpu_rope.extension()
    thp = Path(THP_MODE).read_text() if Path(THP_MODE).exists() else ""
    if "[always]" in thp or __import__("os").environ.get("THP_MEM_ALLOC_ENABLE") == "1":
        pytest.skip("huge pages: the kernel leaves page mapping to the faults")
    fresh = torch.empty(1 << 24)  # 64 MiB: above glibc's largest adaptive mmap threshold, so a new mapping
    assert ext.populate_pages(fresh)
    assert not ext.populate_pages(fresh)  # now resident: not walked again
    assert not ext.populate_pages(torch.empty(1 << 10))  # small buffers: not worth a system call


@pytest.mark.parametrize("layout", ["interleaved", "half"])
def test_large_fresh_outputs_bit_identical_to_eager(layout):
    isa = cpu_rope.best_isa(torch.bfloat16, layout)
    if isa is None:
        pytest.skip(f"no instruction set of this CPU covers bf16 {layout} pairs")
    x = torch.randn(1, 8, 4096, 128, generator=torch.Generator().manual_seed(4)).bfloat16()  # 8 MiB out: populated
    cos, sin = _tables(1, 1, 4096, 64)
    assert torch.equal(_bits(cpu_rope.rotate(x, cos, sin, layout, isa)), _bits(eager.rotate(x, cos, sin, layout)))


@pytest.mark.parametrize("layout", ["interleaved", "half"])
def test_q_and_k_from_a_linear_with_shared_tables_match_eager(layout):
    """The decoder's case: q and k both (B, N, H, D) memory viewed as (B, H, N, D), rotated in the (B, N, H, D)
    frame, where the tables (1, 1, N, P) become (1, N, 1, P) with an arbitrary stride on the size-1 head dimension
    (a regression: the kernel stepped that stride once per head and read past the tables)."""
    if cpu_rope.best_isa(torch.float32, layout) is None:
        pytest.skip(f"no instruction set of this CPU covers fp32 {layout} pairs")
    g = torch.Generator().manual_seed(5)
    q, k = (torch.randn(4, 300, 4, 64, generator=g).transpose(1, 2) for _ in range(2))
    cos, sin = _tables(1, 1, 300, 32)  # contiguous: the size-1 dims have strides 300 * 32
    for dtype in (torch.float32, torch.bfloat16):
        got = kernels.rotate_qk(q.to(dtype), k.to(dtype), kernels.Tables(cos, sin), layout, "compiled")
        want = kernels.rotate_qk(q.to(dtype), k.to(dtype), kernels.Tables(cos, sin), layout, "eager")
        for a, b in zip(got, want):
            assert torch.equal(_bits(a), _bits(b)) and a.stride() == b.stride()
