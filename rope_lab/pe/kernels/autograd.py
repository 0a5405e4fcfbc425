"""Pieces shared by the table-based kernels (compiled, cpu_rope) and the Triton kernel.

A rotation's gradient is the inverse rotation: d(R(theta) x)/dx^T g = R(theta)^T g = R(-theta) g. So each backend's
backward is its own forward with the angle negated (one fused pass, like the forward), instead of autograd's
graph of the forward's elementwise ops.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

TableRotation = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]


def _same_layout(x: Tensor, out: Tensor) -> bool:
    """out = empty_like(x) has x's strides (x is dense) and the last stride is 1."""
    return x.stride(-1) == 1 and out.stride() == x.stride()


def keeps_strides(x: Tensor) -> bool:
    """x can be read in place and its output allocated with its strides: unit last stride and dense (e.g. q/k
    straight from a linear, (B, N, H, D) memory viewed as (B, H, N, D)); else the kernels take a contiguous copy."""
    return _same_layout(x, torch.empty_like(x))


def dense_with_output(x: Tensor) -> tuple[Tensor, Tensor]:
    """(input, output) with the same strides, by ``keeps_strides``'s rule, allocating the output only once when x
    already qualifies (the Triton path, where one set of strides serves both)."""
    out = torch.empty_like(x)
    if _same_layout(x, out):
        return x, out
    x = x.contiguous()
    return x, torch.empty_like(x)


def tables_fixed(tables: tuple[Tensor, ...]) -> bool:
    """No gradient will flow to the tables (fixed frequencies), so the inverse-rotation backward applies."""
    return not (torch.is_grad_enabled() and any(t.requires_grad for t in tables))


class _NegatedAngleBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, rotate: TableRotation, q, k, cos_q, sin_q, cos_k, sin_k):
        ctx.save_for_backward(cos_q, sin_q, cos_k, sin_k)
        ctx.rotate, ctx.shared = rotate, sin_k is sin_q
        return rotate(q, k, cos_q, sin_q, cos_k, sin_k)

    @staticmethod
    def backward(ctx, grad_q, grad_k):
        cos_q, sin_q, cos_k, sin_k = ctx.saved_tensors
        neg_q = sin_q.neg()
        neg_k = neg_q if ctx.shared else sin_k.neg()
        return None, *ctx.rotate(grad_q, grad_k, cos_q, neg_q, cos_k, neg_k), None, None, None, None


def with_inverse_backward(rotate: TableRotation, q: Tensor, k: Tensor, cos_q: Tensor, sin_q: Tensor, cos_k: Tensor,
                          sin_k: Tensor) -> tuple[Tensor, Tensor]:
    """``rotate(q, k, tables)`` whose backward is ``rotate`` with sin negated; the tables must need no gradient."""
    return _NegatedAngleBackward.apply(rotate, q, k, cos_q, sin_q, cos_k, sin_k)
