"""The rotation on x86 CPUs, used by the ``compiled`` backend. TorchInductor emits scalar code for the stride-2
loads/stores of interleaved pairs (RoPE-ViT, GPT-J, Meta LLaMA), 2-4x slower than this kernel; for half pairs its
code is vectorised but walks the tables once per head (3-D positions: per-token tables as large as a bf16 head)
and first-touches fresh output pages one fault at a time. This kernel reads a block of tokens' table rows once for
all heads (and for q and k together when they share tables, ``rotate_all``) and maps a fresh output's pages in one
call per thread (``populate`` in the source).

``cpu_rope.cpp`` has two instruction sets, picked at run time: ``avx512`` (AVX-512 with BF16: Sapphire Rapids,
Zen 4, ...) covers fp32 and bf16, both pair layouts; ``avx2`` covers bf16 interleaved pairs (other cases stay on
inductor). Results are bit-identical to the eager oracle. Built on
first use with torch's C++ extension loader (~20 s, cached in ``~/.cache/torch_extensions``); where it cannot be
built (no compiler, not x86) or the CPU has neither instruction set, the backend stays on TorchInductor.
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
#: -fopenmp: at::parallel_for's OpenMP region is compiled into the extension; without it the rows run on one thread
FLAGS = ("-O3", "-mavx2", "-ffp-contract=off", "-fopenmp")


@functools.cache
def extension():
    """The compiled extension module, or None where it does not apply (not x86 with AVX2, no C++ compiler)."""
    from rope_lab.pe.kernels.compiled import compile_available

    if platform.machine().lower() not in ("x86_64", "amd64") or not compile_available("cpu"):
        return None
    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        return None
    from torch.utils.cpp_extension import load

    # named by content: torch's build cache is keyed by name, and ninja would reuse another checkout's build
    digest = hashlib.sha256(SOURCE.read_bytes() + " ".join(FLAGS).encode()).hexdigest()[:12]
    try:
        return load(f"rope_lab_cpu_rope_{digest}", [str(SOURCE)], extra_cflags=list(FLAGS),
                    extra_ldflags=["-fopenmp"])
    except (OSError, RuntimeError) as err:  # a broken toolchain: keep working on the inductor path
        log.warning("could not build %s (%s); the compiled backend uses TorchInductor for it", SOURCE.name, err)
        return None


def isas() -> list[str]:
    """The instruction sets the kernel can use on this CPU, best first (empty without the extension)."""
    ext = extension()
    return list(ext.isas()) if ext is not None else []


def best_isa(dtype: torch.dtype, layout: str) -> str | None:
    """The best instruction set that covers ``dtype`` (fp32 | bf16) with ``layout`` pairs, or None."""
    if dtype not in (torch.float32, torch.bfloat16):
        return None
    bf16, interleaved = dtype == torch.bfloat16, layout == "interleaved"
    return next((isa for isa in isas() if extension().supports(isa, bf16, interleaved)), None)


def applies(q: Tensor, k: Tensor, tables: tuple[Tensor, ...], layout: str) -> bool:
    """q and k on CPU of a dtype/layout this CPU's kernel covers, fixed-frequency tables, not inside a compile."""
    return (q.device.type == k.device.type == "cpu" and q.dtype == k.dtype and tables_fixed(tables)
            and not torch.compiler.is_compiling() and best_isa(q.dtype, layout) is not None)


def _tables(cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor]:
    """fp32 tables with unit last stride and one stride pattern for both (the kernel indexes them alike)."""
    cos, sin = cos.float(), sin.float()
    stepped = lambda t: [st for st, n in zip(t.stride(), t.shape) if n > 1]  # noqa: E731 - size-1 dims: any stride
    if cos.stride(-1) != 1 or sin.stride(-1) != 1 or stepped(cos) != stepped(sin):
        cos, sin = cos.contiguous(), sin.contiguous()
    return cos, sin


def _dense(x: Tensor) -> Tensor:
    return x if keeps_strides(x) else x.contiguous()


def _rotate_dense(xs: list[Tensor], cos: Tensor, sin: Tensor, layout: str, isa: str | None = None) -> list[Tensor]:
    """Rotate dense tensors (B, H_i, N, D) by the same tables in one pass (``rotate_all`` in the source)."""
    isa = isa or best_isa(xs[0].dtype, layout)
    return extension().rotate_all(xs, *_tables(cos, sin), layout == "interleaved", isa)


def rotate(x: Tensor, cos: Tensor, sin: Tensor, layout: str, isa: str | None = None) -> Tensor:
    """Rotate one tensor (B, H, N, D) by fp32 tables (B|1, H|1, N, P) with ``isa`` (default: the best)."""
    return _rotate_dense([_dense(x)], cos, sin, layout, isa)[0]


def _head_major(x: Tensor) -> bool:
    return x.stride(2) <= x.stride(1)


def _together(q: Tensor, k: Tensor) -> bool:
    """q and k can be rotated in one pass: same batch, length, head size, dtype and memory order."""
    return (q.shape[0] == k.shape[0] and q.shape[2:] == k.shape[2:] and q.dtype == k.dtype
            and _head_major(q) == _head_major(k))


@functools.cache
def _qk_rotation(layout: str):
    def rotate_qk(q, k, cos_q, sin_q, cos_k, sin_k):
        q, k = _dense(q), _dense(k)
        if cos_q is cos_k and sin_q is sin_k and _together(q, k):  # one pass: a block's tables are read once
            return tuple(_rotate_dense([q, k], cos_q, sin_q, layout))
        return _rotate_dense([q], cos_q, sin_q, layout)[0], _rotate_dense([k], cos_k, sin_k, layout)[0]

    return rotate_qk


def rotate_qk(q: Tensor, k: Tensor, cos_q: Tensor, sin_q: Tensor, cos_k: Tensor, sin_k: Tensor, layout: str):
    """Rotate q, k (B, H, N, D) by fp32 tables (B|1, H|1, N, P); see ``applies``. The backward is the same kernel
    with the angle negated."""
    return with_inverse_backward(_qk_rotation(layout), q, k, cos_q, sin_q, cos_k, sin_k)
