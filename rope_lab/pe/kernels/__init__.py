"""Backends of the shared rotary core (issue 6): one rotation, several implementations.

:func:`rotate_qk` is the one dispatch point (``Rotary.rotate`` calls it with its typed rotation); ``pe.kernel``
chooses the backend:
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
from typing import NamedTuple

import torch
from torch import Tensor

from rope_lab.pe.kernels import compiled, cpu_rope, eager, triton_rope
from rope_lab.pe.kernels.angles import compute_angles, precise_angles, reduced_angles, split_plan

KERNELS = ("auto", "eager", "compiled", "triton")
AUTO_ENV = "ROPE_LAB_KERNEL"
#: below this many elements per tensor, a compiled call's guard/launch overhead is as large as the eager ops
COMPILE_MIN_NUMEL = 1 << 18

__all__ = ["KERNELS", "OnTheFly", "Tables", "check_kernel", "compute_angles", "precise_angles", "reduced_angles",
           "resolve_kernel", "rotate_qk", "split_plan", "uses_on_the_fly"]


class Tables(NamedTuple):
    """cos/sin tables (B|1, H|1, N, P), fp32 (float64 for float64 inputs), of the angles to rotate by."""

    cos: Tensor
    sin: Tensor


class OnTheFly(NamedTuple):
    """What the Triton kernel forms the angles from: coords (B|1, N, A) fp32 (prefix tokens at 0), the split
    frequency plan 3 x (H|1, A, P) (``split_plan``, contiguous) and the attention factor (1,) fp32."""

    coords: Tensor
    plan: tuple[Tensor, Tensor, Tensor]
    factor: Tensor


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


def _same(x: Tensor) -> Tensor:
    return x


def _heads_last(x: Tensor) -> Tensor:
    return x.transpose(1, 2)


def rotate_qk(q: Tensor, k: Tensor, rotation: Tables | OnTheFly, layout: str, kernel: str = "auto",
              k_tables: Tables | None = None) -> tuple[Tensor, Tensor]:
    """The one dispatch point of the rotation: q (B, H, N, D) and k (B, Hkv, N, D) rotated by ``rotation``.

    Args:
        rotation: ``OnTheFly`` inputs go to the Triton kernel; ``Tables`` to the eager or compiled backend that
            ``resolve_kernel(kernel, ...)`` names (on x86 CPUs ``compiled`` takes the C++ kernel ``cpu_rope``
            where it covers the dtype and layout). float64 q/k always take the eager path.
        layout: the pair layout, "half" or "interleaved".
        kernel: ``pe.kernel`` (auto | eager | compiled | triton).
        k_tables: the keys' own tables (a longer key with a KV cache); None: k shares q's, rotated in one pass.

    Returns:
        (q', k') in their inputs' memory order: q/k that are (B, N, H, D) memory viewed as (B, H, N, D) stay so (as
        HF's elementwise rotation keeps them), so attention writes its output in that order and the transpose back
        to (B, N, H*D) before the output projection is free instead of a saved copy per layer.
    """
    if isinstance(rotation, OnTheFly):
        return triton_rope.rotate_qk(q, k, *rotation, layout)
    name = "eager" if torch.float64 in (q.dtype, k.dtype) else resolve_kernel(kernel, q.device, q.numel())
    (cos_q, sin_q), (cos_k, sin_k) = rotation, rotation if k_tables is None else k_tables
    frame = _heads_last if _token_major(q) and _token_major(k) else _same  # rotate in the frame that is contiguous
    if frame is _heads_last:
        q, k, cos_q, sin_q = frame(q), frame(k), frame(cos_q), frame(sin_q)
        cos_k, sin_k = (cos_q, sin_q) if k_tables is None else (frame(cos_k), frame(sin_k))
    tables = (cos_q, sin_q, cos_k, sin_k)
    if name == "compiled" and cpu_rope.applies(q, k, tables, layout):
        q, k = cpu_rope.rotate_qk(q, k, *tables, layout)
    elif name == "compiled":
        q, k = compiled.rotate_qk(q, k, *tables, layout)
    else:
        q, k = eager.rotate(q, cos_q, sin_q, layout), eager.rotate(k, cos_k, sin_k, layout)
    return frame(q), frame(k)
