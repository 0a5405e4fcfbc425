"""Triton rotary kernel (CUDA): angles computed on the fly from positions x frequencies, no cos/sin tables.

One launch rotates q and k together. A program takes ROWS token positions (b, n): it loads their A coordinates,
forms the precisely reduced angles from the split plan (g1, g2, g3 revolutions, see ``angles.py``) once, and then
loops over the heads of q and of k, so the angle arithmetic (several floors, a cos and a sin per pair) is shared
by every head instead of being redone per head: that keeps the kernel memory-bound. Per-head plans (e.g. frozen
RoPE-Mixed frequencies) recompute the angles per head. Each head's rows are loaded and stored as contiguous
blocks (the interleaved layout is de-interleaved in registers), the rotation is done in fp32 with a single cast
at the store. The backward is the same kernel with the angle negated (R(theta)^T = R(-theta)), so forward and
backward each read their input once and write once. Gradients flow to q and k only: the Rotary core uses this
kernel only when the frequency plan needs no gradient.

Checked against the eager oracle on CUDA by ``tests/pe/test_kernels.py`` (marked ``gpu``) and, without a GPU,
in Triton's interpreter (``TRITON_INTERPRET=1``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from rope_lab.pe.kernels.autograd import keeps_strides

try:  # Triton ships with CUDA builds of torch; CPU-only installs may lack it
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None
    tl = None

_TARGET_PROGRAMS = 1024  # enough programs to fill ~132 SMs several times over


def available() -> bool:
    return triton is not None and torch.cuda.is_available()


if triton is not None:

    @triton.jit
    def _frac(x):
        return x - tl.floor(x + 0.5)

    @triton.jit
    def _cos_sin(coords_ptr, g1_ptr, g2_ptr, g3_ptr, factor, sign, b, n, row_ok, p, p_ok, plan_off,
                 scb, scn, sca, P, A: tl.constexpr, ROWS: tl.constexpr, BLOCK_P: tl.constexpr):
        rev = tl.zeros((ROWS, BLOCK_P), dtype=tl.float32)
        for a in tl.static_range(A):
            pos = tl.load(coords_ptr + b * scb + n * scn + a * sca, mask=row_ok, other=0.0).to(tl.float32)
            whole = tl.floor(pos)
            hi = tl.floor(pos * (1.0 / 4096.0)) * 4096.0
            mid = (whole - hi)[:, None]
            fr = (pos - whole)[:, None]
            hi = hi[:, None]
            goff = plan_off + a * P + p
            g1 = tl.load(g1_ptr + goff, mask=p_ok, other=0.0)[None, :]
            g2 = tl.load(g2_ptr + goff, mask=p_ok, other=0.0)[None, :]
            g3 = tl.load(g3_ptr + goff, mask=p_ok, other=0.0)[None, :]
            rev += _frac(hi * g1) + _frac(hi * g2) + _frac(mid * g1) + _frac(mid * g2)
            rev += (hi + mid) * g3 + fr * (g1 + g2 + g3)
        angle = _frac(rev) * 6.283185307179586
        return tl.cos(angle) * factor, tl.sin(angle) * (factor * sign)

    @triton.jit
    def _rotate_rows(x_row, o_row, cos, sin, row_ok, p, P, D,
                     INTERLEAVED: tl.constexpr, ROWS: tl.constexpr, BLOCK_P: tl.constexpr,
                     BLOCK_REST: tl.constexpr):
        out_ty = o_row.dtype.element_ty
        if INTERLEAVED:  # one contiguous load of the 2P rotated channels, split into (even, odd) in registers
            d = tl.arange(0, 2 * BLOCK_P)
            dok = row_ok[:, None] & (d < 2 * P)[None, :]
            xx = tl.load(x_row[:, None] + d[None, :], mask=dok, other=0.0).to(tl.float32)
            x1, x2 = tl.split(tl.reshape(xx, (ROWS, BLOCK_P, 2)))
            out = tl.reshape(tl.join(x1 * cos - x2 * sin, x2 * cos + x1 * sin), (ROWS, 2 * BLOCK_P))
            tl.store(o_row[:, None] + d[None, :], out.to(out_ty), mask=dok)
        else:
            ok = row_ok[:, None] & (p < P)[None, :]
            x1 = tl.load(x_row[:, None] + p[None, :], mask=ok, other=0.0).to(tl.float32)
            x2 = tl.load(x_row[:, None] + (p + P)[None, :], mask=ok, other=0.0).to(tl.float32)
            tl.store(o_row[:, None] + p[None, :], (x1 * cos - x2 * sin).to(out_ty), mask=ok)
            tl.store(o_row[:, None] + (p + P)[None, :], (x2 * cos + x1 * sin).to(out_ty), mask=ok)
        if BLOCK_REST > 0:  # partial rotary: channels 2P..D-1 pass through
            r = 2 * P + tl.arange(0, BLOCK_REST)
            rok = row_ok[:, None] & (r < D)[None, :]
            tl.store(o_row[:, None] + r[None, :], tl.load(x_row[:, None] + r[None, :], mask=rok), mask=rok)

    @triton.jit
    def _rope_qk_kernel(
        q_ptr, k_ptr, oq_ptr, ok_ptr, coords_ptr, g1_ptr, g2_ptr, g3_ptr, factor_ptr, sign,
        n_rows, N, HQ, HK, P, D,
        sqb, sqh, sqn, skb, skh, skn,
        scb, scn, sca,
        A: tl.constexpr, PER_HEAD: tl.constexpr, INTERLEAVED: tl.constexpr,
        ROWS: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_REST: tl.constexpr,
    ):
        rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS).to(tl.int64)
        row_ok = rows < n_rows
        n = rows % N
        b = rows // N
        p = tl.arange(0, BLOCK_P)
        p_ok = p < P
        factor = tl.load(factor_ptr).to(tl.float32)
        cos, sin = _cos_sin(coords_ptr, g1_ptr, g2_ptr, g3_ptr, factor, sign, b, n, row_ok, p, p_ok, 0,
                            scb, scn, sca, P, A, ROWS, BLOCK_P)
        for h in range(HQ):
            if PER_HEAD:
                cos, sin = _cos_sin(coords_ptr, g1_ptr, g2_ptr, g3_ptr, factor, sign, b, n, row_ok, p, p_ok,
                                    h * A * P, scb, scn, sca, P, A, ROWS, BLOCK_P)
            off = b * sqb + h * sqh + n * sqn  # outputs have their input's strides (``_dense``)
            _rotate_rows(q_ptr + off, oq_ptr + off, cos, sin, row_ok, p, P, D, INTERLEAVED, ROWS, BLOCK_P,
                         BLOCK_REST)
        for h in range(HK):
            if PER_HEAD:
                cos, sin = _cos_sin(coords_ptr, g1_ptr, g2_ptr, g3_ptr, factor, sign, b, n, row_ok, p, p_ok,
                                    h * A * P, scb, scn, sca, P, A, ROWS, BLOCK_P)
            off = b * skb + h * skh + n * skn
            _rotate_rows(k_ptr + off, ok_ptr + off, cos, sin, row_ok, p, P, D, INTERLEAVED, ROWS, BLOCK_P,
                         BLOCK_REST)


def _pow2(n: int) -> int:
    """The next power of two >= n (plain Python: triton.next_power_of_2 is a slower jit-callable)."""
    return 1 << max(0, n - 1).bit_length()


def _rows_per_program(n_rows: int, block_p: int) -> int:
    """Token positions per program: as many as keep ~_TARGET_PROGRAMS programs, 4..32, and <= 4096 pairs."""
    rows = _pow2(max(1, n_rows // _TARGET_PROGRAMS))
    return max(4, min(rows, 32, max(1, 4096 // block_p)))


def _dense(x: Tensor) -> tuple[Tensor, Tensor]:
    """(input, output) with the same strides (one set serves both in the kernel) and x's memory order kept where
    it can be (``keeps_strides``): attention's output then needs no copy."""
    x = x if keeps_strides(x) else x.contiguous()
    return x, torch.empty_like(x)


def _launch(q: Tensor, k: Tensor, coords: Tensor, plan: tuple[Tensor, Tensor, Tensor], factor: Tensor,
            interleaved: bool, sign: float) -> tuple[Tensor, Tensor]:
    """q (B, Hq, N, D), k (B, Hk, N, D) any strides; coords (B|1, N, A) fp32; plan 3 x (H|1, A, P) fp32."""
    batch, heads_q, length, dim = q.shape
    heads_k = k.shape[1]
    g1, g2, g3 = plan
    axes, pairs = g1.shape[-2], g1.shape[-1]
    per_head = g1.shape[0] > 1
    if per_head and g1.shape[0] != heads_q or per_head and heads_k != heads_q:
        raise ValueError(f"a per-head frequency plan ({g1.shape[0]} heads) cannot rotate {heads_q} query and "
                         f"{heads_k} key heads; it needs n_heads == n_kv_heads == plan heads")
    coords = coords.expand(batch, length, axes)
    (q, oq), (k, ok) = _dense(q), _dense(k)
    n_rows = batch * length
    if n_rows == 0:
        return oq, ok
    block_p = _pow2(pairs)
    rest = dim - 2 * pairs
    rows = _rows_per_program(n_rows, block_p)
    _rope_qk_kernel[(-(-n_rows // rows),)](
        q, k, oq, ok, coords, g1, g2, g3, factor, sign,
        n_rows, length, heads_q, heads_k, pairs, dim,
        *q.stride()[:3], *k.stride()[:3], *coords.stride(),
        A=axes, PER_HEAD=per_head, INTERLEAVED=interleaved, ROWS=rows, BLOCK_P=block_p,
        BLOCK_REST=_pow2(rest) if rest > 0 else 0, num_warps=4,
    )
    return oq, ok


class _RotateOnTheFly(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, coords, g1, g2, g3, factor, interleaved):
        ctx.save_for_backward(coords, g1, g2, g3, factor)
        ctx.interleaved = interleaved
        return _launch(q, k, coords, (g1, g2, g3), factor, interleaved, 1.0)

    @staticmethod
    def backward(ctx, grad_q, grad_k):
        coords, g1, g2, g3, factor = ctx.saved_tensors
        gq, gk = _launch(grad_q, grad_k, coords, (g1, g2, g3), factor, ctx.interleaved, -1.0)
        return gq, gk, None, None, None, None, None, None


def rotate_qk(q: Tensor, k: Tensor, coords: Tensor, plan: tuple[Tensor, Tensor, Tensor], factor: Tensor,
              layout: str) -> tuple[Tensor, Tensor]:
    """factor * R(coords @ freq) applied to q and k in one launch, ``plan = split_plan(freq)``; differentiable
    in q and k."""
    if not available():
        raise RuntimeError("the Triton rotary kernel needs CUDA and the triton package")
    plan = tuple(g.contiguous() for g in plan)
    return _RotateOnTheFly.apply(q, k, coords.float(), *plan, factor, layout == "interleaved")
