"""Triton rotary kernel (CUDA): angles computed on the fly from positions x frequencies, no cos/sin tables.

One program rotates ROWS rows (b, h, n) x all P pairs: it loads the A coordinates of each row, the split plan
(g1, g2, g3 revolutions, see ``angles.py``) of the row's head, forms the precisely reduced angle, and rotates the
pairs of x in fp32 with a single cast at the store. The backward is the same kernel with the angle negated
(R(theta)^T = R(-theta)), so forward and backward each read x (or the gradient) once and write once.
Gradients flow to x only: the Rotary core uses this kernel only when the frequency plan needs no gradient.

Untested on hardware in the session that wrote it (no GPU was lent); ``tests/pe/test_kernels.py`` checks it
against the eager oracle on CUDA (marked ``gpu``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

try:  # Triton ships with CUDA builds of torch; CPU-only installs may lack it
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None
    tl = None

TWO_PI = 2.0 * math.pi
_ELEMENTS_PER_PROGRAM = 4096


def available() -> bool:
    return triton is not None and torch.cuda.is_available()


if triton is not None:

    @triton.jit
    def _frac(x):
        return x - tl.floor(x + 0.5)

    @triton.jit
    def _rope_fwd_kernel(
        x_ptr, out_ptr, coords_ptr, g1_ptr, g2_ptr, g3_ptr, factor_ptr,
        n_rows, H, N, P, D,
        sxb, sxh, sxn, sxd,
        sob, soh, son,
        scb, scn, sca,
        sgh,
        SIGN: tl.constexpr, A: tl.constexpr, INTERLEAVED: tl.constexpr,
        ROWS: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_REST: tl.constexpr,
    ):
        rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS).to(tl.int64)
        row_ok = rows < n_rows
        n = rows % N
        h = (rows // N) % H
        b = rows // (N * H)
        p = tl.arange(0, BLOCK_P)
        ok = row_ok[:, None] & (p < P)[None, :]

        rev = tl.zeros((ROWS, BLOCK_P), dtype=tl.float32)
        for a in tl.static_range(A):
            pos = tl.load(coords_ptr + b * scb + n * scn + a * sca, mask=row_ok, other=0.0).to(tl.float32)
            whole = tl.floor(pos)
            hi = tl.floor(pos * (1.0 / 4096.0)) * 4096.0
            mid = (whole - hi)[:, None]
            fr = (pos - whole)[:, None]
            hi = hi[:, None]
            goff = h[:, None] * sgh + a * P + p[None, :]
            g1 = tl.load(g1_ptr + goff, mask=ok, other=0.0)
            g2 = tl.load(g2_ptr + goff, mask=ok, other=0.0)
            g3 = tl.load(g3_ptr + goff, mask=ok, other=0.0)
            rev += _frac(hi * g1) + _frac(hi * g2) + _frac(mid * g1) + _frac(mid * g2)
            rev += (hi + mid) * g3 + fr * (g1 + g2 + g3)
        angle = _frac(rev) * 6.283185307179586
        factor = tl.load(factor_ptr).to(tl.float32)
        cos = tl.cos(angle) * factor
        sin = tl.sin(angle) * factor * SIGN

        if INTERLEAVED:
            i1 = 2 * p
            i2 = 2 * p + 1
        else:
            i1 = p
            i2 = p + P
        x_row = x_ptr + b * sxb + h * sxh + n * sxn
        o_row = out_ptr + b * sob + h * soh + n * son
        x1 = tl.load(x_row[:, None] + i1[None, :] * sxd, mask=ok, other=0.0).to(tl.float32)
        x2 = tl.load(x_row[:, None] + i2[None, :] * sxd, mask=ok, other=0.0).to(tl.float32)
        out_ty = out_ptr.dtype.element_ty
        tl.store(o_row[:, None] + i1[None, :], (x1 * cos - x2 * sin).to(out_ty), mask=ok)
        tl.store(o_row[:, None] + i2[None, :], (x2 * cos + x1 * sin).to(out_ty), mask=ok)

        if BLOCK_REST > 0:  # partial rotary: channels 2P..D-1 pass through
            r = 2 * P + tl.arange(0, BLOCK_REST)
            rok = row_ok[:, None] & (r < D)[None, :]
            rest = tl.load(x_row[:, None] + r[None, :] * sxd, mask=rok, other=0.0)
            tl.store(o_row[:, None] + r[None, :], rest, mask=rok)


def _launch(x: Tensor, coords: Tensor, plan: tuple[Tensor, Tensor, Tensor], factor: Tensor, interleaved: bool,
            sign: float) -> Tensor:
    """x (B, H, N, D) any strides; coords (B|1, N, A) fp32; plan 3 x (H|1, A, P) fp32 contiguous."""
    batch, heads, length, dim = x.shape
    g1, g2, g3 = plan
    axes, pairs = g1.shape[-2], g1.shape[-1]
    if g1.shape[0] not in (1, heads):
        raise ValueError(f"a per-head frequency plan ({g1.shape[0]} heads) cannot rotate {heads} heads")
    coords = coords.expand(batch, length, axes)
    out = torch.empty((batch, heads, length, dim), dtype=x.dtype, device=x.device)
    n_rows = batch * heads * length
    if n_rows == 0:
        return out
    block_p = triton.next_power_of_2(pairs)
    rest = dim - 2 * pairs
    block_rest = triton.next_power_of_2(rest) if rest > 0 else 0
    rows = max(1, min(64, _ELEMENTS_PER_PROGRAM // (2 * block_p)))
    grid = (triton.cdiv(n_rows, rows),)
    _rope_fwd_kernel[grid](
        x, out, coords, g1, g2, g3, factor,
        n_rows, heads, length, pairs, dim,
        *x.stride(), *out.stride()[:3], *coords.stride(),
        axes * pairs if g1.shape[0] > 1 else 0,
        SIGN=sign, A=axes, INTERLEAVED=interleaved, ROWS=rows, BLOCK_P=block_p, BLOCK_REST=block_rest,
        num_warps=4,
    )
    return out


class _RotateOnTheFly(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, coords, g1, g2, g3, factor, interleaved):
        ctx.save_for_backward(coords, g1, g2, g3, factor)
        ctx.interleaved = interleaved
        return _launch(x, coords, (g1, g2, g3), factor, interleaved, 1.0)

    @staticmethod
    def backward(ctx, grad):
        coords, g1, g2, g3, factor = ctx.saved_tensors
        return _launch(grad, coords, (g1, g2, g3), factor, ctx.interleaved, -1.0), None, None, None, None, None, None


def rotate(x: Tensor, coords: Tensor, plan: tuple[Tensor, Tensor, Tensor], factor: Tensor, layout: str) -> Tensor:
    """factor * R(coords @ freq) x, with ``plan = split_plan(freq)``; differentiable in x."""
    if not available():
        raise RuntimeError("the Triton rotary kernel needs CUDA and the triton package")
    plan = tuple(g.contiguous() for g in plan)
    return _RotateOnTheFly.apply(x, coords.float(), *plan, factor, layout == "interleaved")
