"""Every rotary backend (pe.kernel) against the eager oracle, for every registered rotary variant.

Values and gradients (q, k and learnable frequencies), half and interleaved pair layouts, fp32 and bf16. The
compiled backend is checked on CPU; the Triton backend (angles computed in the kernel) on CUDA only (``gpu``).
The oracle itself is checked against transformers in tests/pe/test_rope.py and against float64 in
tests/pe/test_precision.py.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from rope_lab.pe import kernels
from rope_lab.pe.kernels import compiled, eager
from rope_lab.pe.registry import available_pes
from rope_lab.pe.rotary import Rotary, apply_rotation, compute_angles

from .helpers import build, example_positions, geometry

ROTARY = [n for n in available_pes() if build(n).is_rotary]
TOL = {torch.float32: dict(rtol=1e-5, atol=2e-6), torch.bfloat16: dict(rtol=1.6e-2, atol=1e-2)}
needs_compiler = pytest.mark.skipif(not compiled.compile_available("cpu"), reason="no C++ compiler for inductor")


def _pe(name: str, layout: str, device: str = "cpu"):
    try:
        pe = build(name, geometry(dim=32, n_heads=2, n_kv_heads=2), pair_layout=layout)
    except ValueError as err:  # some variants are defined on one layout only (e.g. VideoRoPE: half)
        if "pair_layout" not in str(err):
            raise
        pytest.skip(f"{name} refuses pair_layout={layout}: {err}")
    return pe.to(device)


def _run(pe, kernel: str, dtype: torch.dtype, device: str = "cpu", grad: bool = True):
    """Rotated q, k and the gradients of a fixed random loss w.r.t. q, k and every PE parameter."""
    pe.cfg.kernel = kernel
    g = torch.Generator().manual_seed(0)
    pos = example_positions(pe, 2, 12, start=3000).to(device)
    shape = (2, pe.geometry.n_heads, 12, pe.geometry.head_dim)
    q, k, wq, wk = (torch.randn(shape, generator=g).to(device, dtype) for _ in range(4))
    q.requires_grad_(grad)
    k.requires_grad_(grad)
    pe.zero_grad(set_to_none=True)
    rq, rk = pe.rotate(q, k, pe.prepare(pos), 1 if pe.geometry.depth > 1 else 0)
    if not grad:
        return [rq, rk]
    ((rq.float() * wq.float()).sum() + (rk.float() * wk.float()).sum()).backward()
    params = [p.grad for p in pe.parameters() if p.requires_grad]  # None: not used by rotate (e.g. an APE table)
    return [rq, rk, q.grad, k.grad, *params]


def _assert_match(got, want, dtype):
    assert len(got) == len(want)
    assert got[0] is not None and want[0] is not None
    for a, b in zip(got, want):
        assert (a is None) == (b is None)
        if a is None:
            continue
        tol = TOL[dtype] if a.dtype == dtype else TOL[torch.float32]
        torch.testing.assert_close(a.float(), b.float(), **tol)


def test_every_rotary_variant_is_covered():
    assert "rope" in ROTARY and len(ROTARY) >= 2


def test_unknown_kernel_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown rotary kernel 'fast'.*auto"):
        build("rope", kernel="fast")


def test_triton_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    pe = build("rope", kernel="triton")
    with pytest.raises(ValueError, match="pe.kernel=triton needs a CUDA device"):
        pe.prepare(example_positions(pe, 1, 4))


def test_public_helpers_keep_their_meaning():
    """apply_rotation/compute_angles stay importable (variants use them) and equal the oracle."""
    x, ang = torch.randn(2, 3, 5, 8), compute_angles(torch.arange(5.0)[None, :, None], torch.rand(1, 1, 4))
    for layout in ("half", "interleaved"):
        torch.testing.assert_close(apply_rotation(x, ang.cos(), ang.sin(), layout),
                                   eager.rotate(x, ang.cos(), ang.sin(), layout))


@needs_compiler
@pytest.mark.parametrize(("name", "layout", "dtype"), [
    ("rope", "half", torch.float32),
    ("rope_mixed", "interleaved", torch.bfloat16),  # per-head plan, learnable frequencies, bf16, interleaved
])
def test_compiled_equals_eager(name, layout, dtype):
    """Values and gradients (q, k, learnable frequencies) of the compiled backend == eager (compiles: keep few)."""
    if name not in ROTARY:
        pytest.skip(f"{name} not registered")
    pe = _pe(name, layout)
    _assert_match(_run(pe, "compiled", dtype), _run(pe, "eager", dtype), dtype)


@pytest.mark.slow
@needs_compiler
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("layout", ["half", "interleaved"])
@pytest.mark.parametrize("name", ROTARY)
def test_compiled_equals_eager_every_variant(name, layout, dtype):
    """The full matrix: every registered rotary variant x layout x dtype (compile time: slow tier)."""
    pe = _pe(name, layout)
    _assert_match(_run(pe, "compiled", dtype), _run(pe, "eager", dtype), dtype)


@needs_compiler
def test_compiled_partial_rotary_and_attention_factor():
    """Pass-through channels of partial rotary and a folded attention factor (YaRN) survive the fused pass."""
    pe = build("rope", geometry(dim=32, n_heads=2), rotary_fraction=0.5,
               scaling={"name": "yarn", "factor": 4.0, "original_max_position_embeddings": 64})
    assert pe.n_pairs * 2 < pe.geometry.head_dim
    _assert_match(_run(pe, "compiled", torch.float32), _run(pe, "eager", torch.float32), torch.float32)


@needs_compiler
def test_auto_picks_compiled_for_large_tensors_and_matches_eager(monkeypatch):
    monkeypatch.delenv(kernels.AUTO_ENV, raising=False)
    assert kernels.resolve_kernel("auto", torch.device("cpu"), kernels.COMPILE_MIN_NUMEL) == "compiled"
    assert kernels.resolve_kernel("auto", torch.device("cpu"), 16) == "eager"
    monkeypatch.setenv(kernels.AUTO_ENV, "eager")
    assert kernels.resolve_kernel("auto", torch.device("cpu"), kernels.COMPILE_MIN_NUMEL) == "eager"
    monkeypatch.setenv(kernels.AUTO_ENV, "bogus")
    with pytest.raises(ValueError, match="bogus"):
        kernels.resolve_kernel("auto", torch.device("cpu"), 16)


def test_float64_inputs_use_exact_angles():
    pe = build("rope")
    q = torch.randn(1, 2, 4, 16, dtype=torch.float64)
    pos = example_positions(pe, 1, 4, start=2**20)
    rq, _ = pe.rotate(q, q, pe.prepare(pos), 0)
    assert rq.dtype == torch.float64
    ang = pos.coords.double()[..., 0, None] * pe.inv_freq.double()  # (1, N, P)
    x1, x2 = q[..., :8], q[..., 8:]
    ref = torch.cat((x1 * ang.cos() - x2 * ang.sin(), x2 * ang.cos() + x1 * ang.sin()), -1)
    torch.testing.assert_close(rq, ref, rtol=1e-12, atol=1e-12)


# -- CUDA ------------------------------------------------------------------------------------------------------
def _frozen(pe):
    for p in pe.parameters():
        p.requires_grad_(False)  # the Triton kernel rotates with fixed frequencies
    return pe


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("layout", ["half", "interleaved"])
@pytest.mark.parametrize("name", ROTARY)
def test_triton_equals_eager_every_variant(name, layout, dtype):
    pe = _frozen(_pe(name, layout, "cuda"))
    _assert_match(_run(pe, "triton", dtype, "cuda"), _run(pe, "eager", dtype, "cuda"), dtype)


@pytest.mark.gpu
@pytest.mark.parametrize("layout", ["half", "interleaved"])
def test_triton_strided_gqa_partial_and_large_positions(layout):
    """q/k as transposed views of (B, N, H, D), grouped keys, partial rotary, positions near 2^20."""
    pe = build("rope", geometry(dim=64, n_heads=4, n_kv_heads=2), pair_layout=layout, rotary_fraction=0.75)
    pe = pe.to("cuda")
    pos = dataclasses.replace(example_positions(pe, 2, 33, start=2**20 - 16)).to("cuda")
    outs = {}
    for kernel in ("triton", "eager"):
        pe.cfg.kernel = kernel
        g = torch.Generator().manual_seed(3)
        q = torch.randn(2, 33, 4, 16, generator=g).cuda().transpose(1, 2).requires_grad_()
        k = torch.randn(2, 33, 2, 16, generator=g).cuda().transpose(1, 2).requires_grad_()
        rq, rk = pe.rotate(q, k, pe.prepare(pos), 0)
        (rq.square().sum() + (rk * 2.0).sum()).backward()
        outs[kernel] = [rq, rk, q.grad, k.grad]
    _assert_match(outs["triton"], outs["eager"], torch.float32)


@pytest.mark.gpu
def test_auto_uses_triton_on_cuda_and_falls_back_for_learnable_frequencies():
    pe = build("rope").to("cuda")
    state = pe.prepare(example_positions(pe, 1, 4).to("cuda"))
    assert isinstance(state.rotation, kernels.OnTheFly)
    if "rope_mixed" in ROTARY:
        mixed = build("rope_mixed").to("cuda")
        assert not kernels.uses_on_the_fly("auto", torch.device("cuda"), plan_needs_grad=True)
        with pytest.raises(ValueError, match="learnable"):
            kernels.uses_on_the_fly("triton", torch.device("cuda"), plan_needs_grad=True)
        assert mixed.per_layer_plan


def test_triton_launch_is_cut_to_fill_the_gpu_and_keep_tiles_in_registers():
    """choose_config (pure Python): 8 rows per program for long inputs (tuned on an H100), head groups when there
    are too few tokens for ~1024 programs, narrower tiles for very wide heads, and explicit choices kept."""
    from rope_lab.pe.kernels.triton_rope import LaunchConfig, choose_config

    assert choose_config(16 * 2048, 16, 64) == LaunchConfig(8, 1, 4)
    decode = choose_config(2, 32, 64)  # two sequences, one new token each: every head its own program
    assert decode.rows == 4 and decode.groups == 32
    assert choose_config(1 << 20, 8, 4096).rows == 1  # 4096-pair rows: one per program
    assert choose_config(1 << 20, 8, 64, LaunchConfig(32, 2, 8)) == LaunchConfig(32, 2, 8)
