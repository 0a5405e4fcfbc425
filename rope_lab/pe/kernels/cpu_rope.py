"""The rotation on x86 CPUs, used by the ``compiled`` backend. TorchInductor emits scalar code for the stride-2
loads/stores of interleaved pairs (RoPE-ViT, GPT-J, Meta LLaMA), 2-4x slower than this kernel; for half pairs its
code is vectorised but walks the tables once per head (3-D positions: per-token tables as large as a bf16 head)
and first-touches fresh output pages one fault at a time. This kernel reads a block of tokens' table rows once for
all heads (and for q and k together when they share tables, ``rotate_all``) and maps a fresh output's pages in one
call per thread (``populate`` in the source).

``cpu_rope.cpp`` has two instruction sets, picked at run time: ``avx512`` (AVX-512 with BF16: Sapphire Rapids,
Zen 4, ...) covers fp32 and bf16, both pair layouts; ``avx2`` covers bf16 interleaved pairs (other cases stay on
inductor). Results are bit-identical to the eager oracle.

Which instruction sets apply is decided here, from the CPU's flags, before anything is compiled: the extension is
built only when a call it covers comes (fp32 on an AVX2-only CPU never builds it). The build (tens of seconds to a
few minutes, once) prints one line, runs under a file lock (concurrent processes wait for one build; a killed
build leaves no stale lock) and lives in a directory keyed by the source's content, the flags and the torch and
Python versions, with its own copy of the source, so two checkouts share one build instead of rebuilding each
other's. Where it cannot be built (no compiler, not x86) the backend stays on TorchInductor.

The instruction sets can be capped, e.g. to run an AVX-512 machine as an AVX2-only one: ``ATEN_CPU_CAPABILITY=avx2``
(torch's own setting, which caps torch's kernels too) or ``ROPE_LAB_CPU_ISA=avx2`` (this kernel only; ``none``
turns it off).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import platform
import re
import shutil
import sys
from pathlib import Path

import torch
from torch import Tensor

from rope_lab.pe.kernels.autograd import keeps_strides, tables_fixed, with_inverse_backward

log = logging.getLogger(__name__)
SOURCE = Path(__file__).with_name("cpu_rope.cpp")
#: -fopenmp: at::parallel_for's OpenMP region is compiled into the extension; without it the rows run on one thread
FLAGS = ("-O3", "-mavx2", "-ffp-contract=off", "-fopenmp")
#: instruction sets of the kernel, best first, with the CPU flags each needs (as /proc/cpuinfo spells them)
ISA_FLAGS = {"avx512": ("avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512_bf16"), "avx2": ("avx2",)}
#: (isa) -> the (dtype, layout) cases its code covers; mirrors ``run_fn`` in the source (a test checks both agree)
COVERAGE = {
    "avx512": {(dt, lay) for dt in (torch.float32, torch.bfloat16) for lay in ("half", "interleaved")},
    "avx2": {(torch.bfloat16, "interleaved")},
}
ISA_ENV = "ROPE_LAB_CPU_ISA"
#: torch's capability names (``get_cpu_capability``, capped by ``ATEN_CPU_CAPABILITY``) -> the best isa they allow
_TORCH_CAP = {"AVX512": "avx512", "AVX2": "avx2"}


def _cpu_flags() -> set[str] | None:
    """The CPU's feature flags from /proc/cpuinfo (Linux), or None where they cannot be read."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    line = re.search(r"^flags\s*:(.*)$", text, re.MULTILINE)
    return set(line.group(1).split()) if line else None


def isa_cap() -> str | None:
    """The best instruction set allowed: the lower of ``ROPE_LAB_CPU_ISA`` and torch's capability (None: off)."""
    order = list(ISA_FLAGS)  # best first
    allowed = _TORCH_CAP.get(torch.backends.cpu.get_cpu_capability())
    wanted = os.environ.get(ISA_ENV, "").strip().lower()
    if wanted and wanted not in (*order, "none"):
        raise ValueError(f"{ISA_ENV}={wanted!r} is not an instruction set of the CPU kernel; choose one of "
                         f"{[*order, 'none']}")
    if wanted == "none" or allowed is None:
        return None
    return max(allowed, wanted or allowed, key=order.index)


@functools.cache
def _detected_isas() -> tuple[str, ...]:
    """The kernel's instruction sets that this CPU has, best first, without building anything."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return ()
    flags = _cpu_flags()
    if flags is None:  # no /proc/cpuinfo (not Linux): ask the compiled code
        ext = extension()
        return tuple(ext.isas()) if ext is not None else ()
    return tuple(isa for isa, need in ISA_FLAGS.items() if all(f in flags for f in need))


def isas() -> list[str]:
    """The instruction sets the kernel may use here, best first: the CPU's, capped by :func:`isa_cap`."""
    cap = isa_cap()
    if cap is None:
        return []
    order = list(ISA_FLAGS)
    return [isa for isa in _detected_isas() if order.index(isa) >= order.index(cap)]


def best_isa(dtype: torch.dtype, layout: str) -> str | None:
    """The best allowed instruction set whose code covers ``dtype`` with ``layout`` pairs, or None."""
    return next((isa for isa in isas() if (dtype, layout) in COVERAGE[isa]), None)


def build_dir() -> Path:
    """Where the extension is built: keyed by the source, flags, torch and Python, so checkouts share it."""
    key = b"|".join([SOURCE.read_bytes(), " ".join(FLAGS).encode(), torch.__version__.encode(),
                     sys.version.split()[0].encode()])
    from torch.utils.cpp_extension import get_default_build_root

    return Path(get_default_build_root()) / f"rope_lab_cpu_rope_{hashlib.sha256(key).hexdigest()[:12]}"


def _load_locked(where: Path):
    """Build (once) and import the extension in ``where``, holding a lock that dies with its process."""
    from filelock import FileLock
    from torch.utils.cpp_extension import load

    where.mkdir(parents=True, exist_ok=True)
    with FileLock(str(where) + ".lock"):
        # torch's own lock file outlives a killed build and would make every later process wait forever;
        # under our lock no other rope_lab process is building, so a leftover one is stale
        (where / "lock").unlink(missing_ok=True)
        source = where / SOURCE.name
        if not source.exists() or source.read_bytes() != SOURCE.read_bytes():
            shutil.copyfile(SOURCE, source)
        if not any(where.glob("*.so")) and not any(where.glob("*.pyd")):
            print(f"rope_lab: compiling the CPU rotary kernel (once; 20 s to a few minutes) in {where}",
                  file=sys.stderr, flush=True)
        return load(where.name, [str(source)], extra_cflags=list(FLAGS), extra_ldflags=["-fopenmp"],
                    build_directory=str(where))


@functools.cache
def extension():
    """The compiled extension module, or None where it does not apply (not x86 with AVX2, no C++ compiler)."""
    from rope_lab.pe.kernels.compiled import compile_available

    if platform.machine().lower() not in ("x86_64", "amd64") or not compile_available("cpu"):
        return None
    try:
        return _load_locked(build_dir())
    except (OSError, RuntimeError, ImportError) as err:  # a broken toolchain: keep working on the inductor path
        log.warning("could not build %s (%s); the compiled backend uses TorchInductor for it", SOURCE.name, err)
        return None


def applies(q: Tensor, k: Tensor, tables: tuple[Tensor, ...], layout: str) -> bool:
    """q and k on CPU of a dtype/layout this CPU's kernel covers, fixed-frequency tables, not inside a compile;
    only then is the extension built (on the first such call)."""
    return (q.device.type == k.device.type == "cpu" and q.dtype == k.dtype and tables_fixed(tables)
            and not torch.compiler.is_compiling() and best_isa(q.dtype, layout) is not None
            and extension() is not None)


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
    if isa is None:
        raise ValueError(f"no allowed instruction set of this CPU covers {xs[0].dtype} {layout} pairs "
                         f"(allowed: {isas()}); check cpu_rope.applies first")
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
