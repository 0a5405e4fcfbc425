"""The bf16 interleaved-pair rotation on x86 CPUs (AVX2), used by the ``compiled`` backend where TorchInductor is
weak: it emits scalar code for the stride-2 loads/stores of the interleaved layout (RoPE-ViT, GPT-J, Meta LLaMA),
~4x slower than a copy in bf16. ``cpu_rope.cpp`` treats each (even, odd) bf16 pair as one 32-bit word instead;
its results are bit-identical to the eager oracle. (An fp32 variant with in-register de-interleaving measured
slower than inductor's code on a quiet machine, so fp32 stays there.) Built on first use with torch's C++
extension loader (~20 s, cached in ``~/.cache/torch_extensions``); where it cannot be built (no compiler, no AVX2)
the backend stays on TorchInductor.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import platform
from pathlib import Path

import torch
from torch import Tensor

from rope_lab.pe.kernels.autograd import keeps_strides, tables_fixed, with_inverse_backward

log = logging.getLogger(__name__)
SOURCE = Path(__file__).with_name("cpu_rope.cpp")


@functools.cache
def extension():
    """The compiled extension module, or None where it does not apply (not x86 with AVX2, no C++ compiler)."""
    from rope_lab.pe.kernels.compiled import compile_available

    if platform.machine().lower() not in ("x86_64", "amd64") or not compile_available("cpu"):
        return None
    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        return None
    from torch.utils.cpp_extension import load

    flags = ["-O3", "-mavx2", "-ffp-contract=off"]
    # named by content: torch's build cache is keyed by name, and ninja would reuse another checkout's build
    digest = hashlib.sha256(SOURCE.read_bytes() + " ".join(flags).encode()).hexdigest()[:12]
    try:
        return load(f"rope_lab_cpu_rope_{digest}", [str(SOURCE)], extra_cflags=flags)
    except (OSError, RuntimeError) as err:  # a broken toolchain: keep working on the inductor path
        log.warning("could not build %s (%s); the compiled backend uses TorchInductor for it", SOURCE.name, err)
        return None


def applies(q: Tensor, k: Tensor, tables: tuple[Tensor, ...], layout: str) -> bool:
    """bf16 q and k with interleaved pairs on CPU, fixed-frequency tables, and the extension available."""
    return (layout == "interleaved" and q.device.type == "cpu" and q.dtype == k.dtype == torch.bfloat16
            and tables_fixed(tables)
            and not torch.compiler.is_compiling() and extension() is not None)


def _rows(t: Tensor) -> Tensor:
    return t.float() if t.stride(-1) == 1 else t.float().contiguous()


def _rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    return extension().rotate_bf16_interleaved(x if keeps_strides(x) else x.contiguous(), _rows(cos), _rows(sin))


def _rotate_qk(q: Tensor, k: Tensor, cos_q: Tensor, sin_q: Tensor, cos_k: Tensor, sin_k: Tensor):
    return _rotate(q, cos_q, sin_q), _rotate(k, cos_k, sin_k)


def rotate_qk(q: Tensor, k: Tensor, cos_q: Tensor, sin_q: Tensor, cos_k: Tensor, sin_k: Tensor):
    """Rotate bf16 q, k (B, H, N, D) with interleaved pairs by fp32 tables (B|1, H|1, N, P); see ``applies``.
    The backward is the same kernel with the angle negated."""
    return with_inverse_backward(_rotate_qk, q, k, cos_q, sin_q, cos_k, sin_k)
