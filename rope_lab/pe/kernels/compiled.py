"""The compiled rotation: one fused pass per tensor (read x and the tables once, write the result once).

The expression is written so that TorchInductor fuses it into a single loop: each rotated half is cast back to
the input dtype *before* the concatenation (cast-after-cat makes inductor materialise an fp32 buffer and run a
second pass, 3-4x slower in bf16 on CPU), and there is no ``rotate_half`` (inductor materialises
``cat(-x2, x1)``; issue 6). One ``torch.compile``d function per layout keeps recompilations per code object low.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil

import torch
from torch import Tensor

from rope_lab.pe.kernels.autograd import tables_fixed, with_inverse_backward


def _rotated_halves(x1: Tensor, x2: Tensor, cos: Tensor, sin: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    x1, x2 = x1.float(), x2.float()
    return (x1 * cos - x2 * sin).to(dtype), (x2 * cos + x1 * sin).to(dtype)


def _half(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    pairs = cos.shape[-1]
    a, b = _rotated_halves(x[..., :pairs], x[..., pairs : 2 * pairs], cos, sin, x.dtype)
    return torch.cat((a, b, x[..., 2 * pairs :]), dim=-1)


def _interleaved(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    pairs = cos.shape[-1]
    a, b = _rotated_halves(x[..., 0 : 2 * pairs : 2], x[..., 1 : 2 * pairs : 2], cos, sin, x.dtype)
    return torch.cat((torch.stack((a, b), dim=-1).flatten(-2), x[..., 2 * pairs :]), dim=-1)


def _qk(fn, q: Tensor, k: Tensor, cos_q: Tensor, sin_q: Tensor, cos_k: Tensor, sin_k: Tensor):
    return fn(q, cos_q, sin_q), fn(k, cos_k, sin_k)


def _qk_half(q, k, cos_q, sin_q, cos_k, sin_k):
    return _qk(_half, q, k, cos_q, sin_q, cos_k, sin_k)


def _qk_interleaved(q, k, cos_q, sin_q, cos_k, sin_k):
    return _qk(_interleaved, q, k, cos_q, sin_q, cos_k, sin_k)


FUSABLE = {"half": _qk_half, "interleaved": _qk_interleaved}


@functools.cache
def compiled_qk(layout: str):
    """The torch.compile'd q/k rotation for a layout (built lazily: compiling costs seconds)."""
    return torch.compile(FUSABLE[layout], dynamic=None)


@functools.cache
def compile_available(device_type: str) -> bool:
    """torch.compile's inductor needs a C++ compiler on CPU and Triton on CUDA."""
    if device_type == "cuda":
        return importlib.util.find_spec("triton") is not None
    if device_type != "cpu":
        return False
    return any(shutil.which(c) for c in (os.environ.get("CXX", ""), "c++", "g++", "clang++") if c)


def rotate_qk(q: Tensor, k: Tensor, cos_q: Tensor, sin_q: Tensor, cos_k: Tensor, sin_k: Tensor, layout: str):
    """Rotate q and k (math in fp32, one cast back) through the compiled single-pass graph.

    Inside an outer ``torch.compile`` the plain expression is traced instead (the outer graph fuses it).
    """
    if torch.compiler.is_compiling():
        return FUSABLE[layout](q, k, cos_q, sin_q, cos_k, sin_k)
    if torch.is_grad_enabled() and tables_fixed((cos_q, sin_q, cos_k, sin_k)):
        # backward = the same fused pass with the angle negated: AOTAutograd's bf16 backward graph ran ~4x the forward
        return with_inverse_backward(compiled_qk(layout), q, k, cos_q, sin_q, cos_k, sin_k)
    return compiled_qk(layout)(q, k, cos_q, sin_q, cos_k, sin_k)
