"""Backends of the shared rotary core (issue 6): one rotation, several implementations.

``pe.kernel`` chooses one:
  eager     plain PyTorch ops; the parity oracle every backend is tested against
  compiled  one ``torch.compile``d single-pass graph for q and k (CPU and GPU); on x86 CPUs fp32/bf16 q/k use a
            C++ SIMD kernel instead where the CPU's instruction set covers the layout (``cpu_rope``)
  triton    CUDA only: angles computed on the fly from positions x split frequencies, no cos/sin tables
  auto      the fastest that applies: triton on CUDA when the frequency plan needs no gradient, else compiled
            when a compiler is present and the tensor is large enough to amortise the call overhead, else eager

Every backend computes the same precisely reduced angles (``angles.py``) and does the rotation math in fp32 with a
single cast back, so they agree to fp32 rounding. float64 inputs always take the eager path in float64 (exact
angles), which the precision tests use as ground truth. The environment variable ``ROPE_LAB_KERNEL`` overrides
what ``auto`` resolves to (e.g. ``ROPE_LAB_KERNEL=eager`` for test suites that should not compile).
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from rope_lab.pe.kernels import compiled, cpu_rope, eager, triton_rope
from rope_lab.pe.kernels.angles import precise_angles, reduced_angles, split_plan

KERNELS = ("auto", "eager", "compiled", "triton")
AUTO_ENV = "ROPE_LAB_KERNEL"
#: below this many elements per tensor, a compiled call's guard/launch overhead is as large as the eager ops
COMPILE_MIN_NUMEL = 1 << 18

__all__ = ["KERNELS", "check_kernel", "resolve_kernel", "rotate_qk_tables", "precise_angles", "reduced_angles",
           "split_plan", "uses_on_the_fly"]


def check_kernel(name: str) -> None:
    if name not in KERNELS:
        raise ValueError(f"unknown rotary kernel '{name}'; choose one of {list(KERNELS)}")


def _requested(name: str) -> str:
    check_kernel(name)
    if name != "auto":
        return name
    override = os.environ.get(AUTO_ENV, "auto")
    if override not in KERNELS:
        raise ValueError(f"{AUTO_ENV}='{override}' is not a rotary kernel; choose one of {list(KERNELS)}")
    return override


def uses_on_the_fly(name: str, device: torch.device, plan_needs_grad: bool) -> bool:
    """True when the Triton on-the-fly kernel rotates (no cos/sin tables are built)."""
    name = _requested(name)
    if name == "triton":
        if not triton_rope.available() or device.type != "cuda":
            raise ValueError(f"pe.kernel=triton needs a CUDA device and the triton package (got device "
                             f"{device.type}, triton available: {triton_rope.available()}); choose one of "
                             f"{list(KERNELS)}")
        if plan_needs_grad:
            raise ValueError("pe.kernel=triton rotates with fixed frequencies; this variant's frequencies are "
                             "learnable (they need a gradient): use pe.kernel=auto|compiled|eager")
        return True
    return (name == "auto" and device.type == "cuda" and not plan_needs_grad and triton_rope.available()
            and not torch.compiler.is_compiling())


def resolve_kernel(name: str, device: torch.device, numel: int) -> str:
    """The table-based backend (eager | compiled) that rotates a tensor of ``numel`` elements."""
    name = _requested(name)
    if name == "compiled":
        if not compiled.compile_available(device.type):
            raise ValueError(f"pe.kernel=compiled needs torch.compile's inductor backend on {device.type} (a C++ "
                             f"compiler on CPU, triton on CUDA); choose one of {list(KERNELS)}")
        return "compiled"
    if name == "auto" and numel >= COMPILE_MIN_NUMEL and compiled.compile_available(device.type):
        return "compiled"
    return "eager"  # 'eager', small tensors, or 'triton' for a plan it cannot take (learnable, float64)


def _token_major(x: Tensor) -> bool:
    """x (B, H, N, D) is a head-transposed view of contiguous (B, N, H, D) memory (q/k straight from a linear)."""
    return x.dim() == 4 and not x.is_contiguous() and x.transpose(1, 2).is_contiguous()


def rotate_qk_tables(q: Tensor, k: Tensor, cos_q: Tensor, sin_q: Tensor, cos_k: Tensor, sin_k: Tensor,
                     layout: str, kernel: str) -> tuple[Tensor, Tensor]:
    """Rotate q and k by cos/sin tables (B|1, H|1, N, P) with the eager or compiled backend.

    Outputs keep the inputs' memory order: q/k that are (B, N, H, D) memory viewed as (B, H, N, D) stay so (as
    HF's elementwise rotation keeps them), so attention writes its output in that order and the transpose back
    to (B, N, H*D) before the output projection is free instead of a saved copy per layer.
    """
    eager.check_layout(layout)
    if _token_major(q) and _token_major(k):
        t = lambda x: x.transpose(1, 2)  # noqa: E731 - rotate in the (B, N, H, D) frame: contiguous there
        tables_q = t(cos_q), t(sin_q)
        shared = cos_k is cos_q and sin_k is sin_q  # kept shared: q and k then rotate in one pass (cpu_rope)
        tables_k = tables_q if shared else (t(cos_k), t(sin_k))
        oq, ok = _rotate_qk(t(q), t(k), *tables_q, *tables_k, layout, kernel)
        return t(oq), t(ok)
    return _rotate_qk(q, k, cos_q, sin_q, cos_k, sin_k, layout, kernel)


def _rotate_qk(q, k, cos_q, sin_q, cos_k, sin_k, layout: str, kernel: str) -> tuple[Tensor, Tensor]:
    if kernel == "compiled" and cpu_rope.applies(q, k, (cos_q, sin_q, cos_k, sin_k), layout):
        return cpu_rope.rotate_qk(q, k, cos_q, sin_q, cos_k, sin_k, layout)
    if kernel == "compiled" and q.dtype != torch.float64 and k.dtype != torch.float64:
        return compiled.rotate_qk(q, k, cos_q, sin_q, cos_k, sin_k, layout)
    return eager.rotate(q, cos_q, sin_q, layout), eager.rotate(k, cos_k, sin_k, layout)
