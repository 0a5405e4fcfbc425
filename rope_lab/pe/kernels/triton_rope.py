"""Triton rotary kernel (CUDA): angles computed on the fly from positions x frequencies, no cos/sin tables.

One launch rotates q and k together. A program takes ROWS token positions (b, n) and one of GROUPS head groups: it
loads the rows' A coordinates, forms the precisely reduced angles from the split plan (g1, g2, g3 revolutions, see
``angles.py``) once, and then loops over its group's heads of q and of k (heads g, g + GROUPS, ...), so the angle
arithmetic (several floors, a cos and a sin per pair) is shared by several heads instead of being redone per head:
that keeps the kernel memory-bound. More groups give more, shorter programs (a better-filled GPU for few tokens).
Per-head plans (e.g. frozen RoPE-Mixed frequencies) recompute the angles per head. Each head's rows are loaded and
stored as contiguous blocks (the interleaved layout is de-interleaved in registers), the rotation is done in fp32
with a single cast at the store. The backward is the same kernel with the angle negated (R(theta)^T = R(-theta)),
so forward and backward each read their input once and write once. Gradients flow to q and k only: the Rotary
core uses this kernel only when the frequency plan needs no gradient.

Checked against the eager oracle on CUDA by ``tests/pe/test_kernels.py`` (marked ``gpu``) and, without a GPU,
in Triton's interpreter (``TRITON_INTERPRET=1``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import Tensor

from rope_lab.pe.kernels.autograd import dense_with_output

try:  # Triton ships with CUDA builds of torch; CPU-only installs may lack it
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None
    tl = None

_TARGET_PROGRAMS = 1024  # enough programs to fill ~132 SMs several times over
_ROWS_PER_PROGRAM = 8
_MAX_PAIRS_PER_TILE = 4096


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
        ROWS: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_REST: tl.constexpr, GROUPS: tl.constexpr,
    ):
        group = tl.program_id(1)
        rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS).to(tl.int64)
        row_ok = rows < n_rows
        n = rows % N
        b = rows // N
        p = tl.arange(0, BLOCK_P)
        p_ok = p < P
        factor = tl.load(factor_ptr).to(tl.float32)
        cos, sin = _cos_sin(coords_ptr, g1_ptr, g2_ptr, g3_ptr, factor, sign, b, n, row_ok, p, p_ok, 0,
                            scb, scn, sca, P, A, ROWS, BLOCK_P)
        for h in range(group, HQ, GROUPS):
            if PER_HEAD:
                cos, sin = _cos_sin(coords_ptr, g1_ptr, g2_ptr, g3_ptr, factor, sign, b, n, row_ok, p, p_ok,
                                    h * A * P, scb, scn, sca, P, A, ROWS, BLOCK_P)
            off = b * sqb + h * sqh + n * sqn  # outputs have their input's strides (``dense_with_output``)
            _rotate_rows(q_ptr + off, oq_ptr + off, cos, sin, row_ok, p, P, D, INTERLEAVED, ROWS, BLOCK_P,
                         BLOCK_REST)
        for h in range(group, HK, GROUPS):
            if PER_HEAD:
                cos, sin = _cos_sin(coords_ptr, g1_ptr, g2_ptr, g3_ptr, factor, sign, b, n, row_ok, p, p_ok,
                                    h * A * P, scb, scn, sca, P, A, ROWS, BLOCK_P)
            off = b * skb + h * skh + n * skn
            _rotate_rows(k_ptr + off, ok_ptr + off, cos, sin, row_ok, p, P, D, INTERLEAVED, ROWS, BLOCK_P,
                         BLOCK_REST)


def _pow2(n: int) -> int:
    """The next power of two >= n (plain Python: triton.next_power_of_2 is a slower jit-callable)."""
    return 1 << max(0, n - 1).bit_length()


@dataclass(frozen=True)
class LaunchConfig:
    """How a launch is cut into programs: ``rows`` token positions per program, ``groups`` head groups (grid axis
    1), ``num_warps`` per program. ``None`` fields are chosen by ``choose_config``; ``scripts/tune_triton_rope.py``
    times the alternatives on a GPU."""

    rows: int | None = None
    groups: int | None = None
    num_warps: int | None = None


def choose_config(n_rows: int, heads: int, block_p: int, given: LaunchConfig = LaunchConfig()) -> LaunchConfig:
    """8 token positions per program (4 when there are too few for _TARGET_PROGRAMS programs), 4 warps; head
    groups only when even 4-row programs are too few to fill the GPU (short sequences, small batches). Measured on
    an H100 (``scripts/tune_triton_rope.py``, benchmarks/triton_rope_tuning.md): 8 rows and 4 warps were within
    2 % of the best of 16 configurations on all six benchmark rows, where 32 rows lost 10 % on the smallest (3-D
    video, bf16) and 64 rows up to 50 %."""
    default_rows = _ROWS_PER_PROGRAM if n_rows >= _ROWS_PER_PROGRAM * _TARGET_PROGRAMS else 4
    rows = given.rows or max(1, min(default_rows, _MAX_PAIRS_PER_TILE // block_p))  # wide heads: tiles in registers
    groups = given.groups or max(1, min(heads, _TARGET_PROGRAMS // max(1, -(-n_rows // rows))))
    return LaunchConfig(rows, groups, given.num_warps or 4)


@functools.cache
def available() -> bool:
    return triton is not None and torch.cuda.is_available()


def _launch(q: Tensor, k: Tensor, coords: Tensor, plan: tuple[Tensor, Tensor, Tensor], factor: Tensor,
            interleaved: bool, sign: float, config: LaunchConfig = LaunchConfig()) -> tuple[Tensor, Tensor]:
    """q (B, Hq, N, D), k (B, Hk, N, D) any strides; coords (B|1, N, A) fp32; plan 3 x (H|1, A, P) fp32."""
    batch, heads_q, length, dim = q.shape
    heads_k = k.shape[1]
    g1, g2, g3 = plan
    axes, pairs = g1.shape[-2], g1.shape[-1]
    per_head = g1.shape[0] > 1
    if per_head and g1.shape[0] != heads_q or per_head and heads_k != heads_q:
        raise ValueError(f"a per-head frequency plan ({g1.shape[0]} heads) cannot rotate {heads_q} query and "
                         f"{heads_k} key heads; it needs n_heads == n_kv_heads == plan heads")
    (q, oq), (k, ok) = dense_with_output(q), dense_with_output(k)  # attention's output then needs no copy
    n_rows = batch * length
    if n_rows == 0:
        return oq, ok
    block_p = _pow2(pairs)
    rest = dim - 2 * pairs
    cfg = choose_config(n_rows, max(heads_q, heads_k), block_p, config)
    coord_strides = (0 if coords.shape[0] == 1 else coords.stride(0), coords.stride(1), coords.stride(2))
    _rope_qk_kernel[(-(-n_rows // cfg.rows), cfg.groups)](
        q, k, oq, ok, coords, g1, g2, g3, factor, sign,
        n_rows, length, heads_q, heads_k, pairs, dim,
        *q.stride()[:3], *k.stride()[:3], *coord_strides,
        A=axes, PER_HEAD=per_head, INTERLEAVED=interleaved, ROWS=cfg.rows, BLOCK_P=block_p,
        BLOCK_REST=_pow2(rest) if rest > 0 else 0, GROUPS=cfg.groups, num_warps=cfg.num_warps,
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
    in q and k. coords (B|1, N, A) fp32 and the plan contiguous fp32, as ``Rotary.prepare`` builds them once per
    forward (this runs per layer: the inference path skips autograd's bookkeeping)."""
    if not available():
        raise RuntimeError("the Triton rotary kernel needs CUDA and the triton package")
    interleaved = layout == "interleaved"
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad):
        return _RotateOnTheFly.apply(q, k, coords, *plan, factor, interleaved)
    return _launch(q, k, coords, plan, factor, interleaved, 1.0)
