"""Run the Triton rotary kernel in Triton's CPU interpreter against the eager oracle (values and gradients).

Executed by tests/pe/test_triton_interpreter.py in a subprocess with ``TRITON_INTERPRET=1`` (the variable must be
set before the kernel is decorated). Cases: both pair layouts, fp32 and bf16, partial rotary, 3 axes, a per-head
plan, q as a head-transposed view and a last-dim-strided k (grouped heads), positions near 2^20, coords shared by
the batch (one row, read with batch stride 0); and every way of cutting a launch into programs (rows per program,
head groups) gives the same bits.
"""

from __future__ import annotations

import os
import sys

import torch

from rope_lab.pe.kernels import eager, triton_rope
from rope_lab.pe.kernels.angles import reduced_angles, split_plan

assert os.environ.get("TRITON_INTERPRET") == "1", "run with TRITON_INTERPRET=1"


def check(layout: str, dtype: torch.dtype, axes: int, per_head: bool) -> float:
    g = torch.Generator().manual_seed(0)
    batch, heads, kv_heads, length, dim, pairs = 2, 4, 4 if per_head else 2, 9, 16, 6  # partial: 2P < D
    q = torch.randn(batch, length, heads, dim, generator=g).to(dtype).transpose(1, 2).requires_grad_()
    k = torch.randn(batch, kv_heads, length, 2 * dim, generator=g).to(dtype)[..., ::2].detach().requires_grad_()
    coords = (2**20 - 16 + torch.rand(batch, length, axes, generator=g) * 32).floor()
    freq = torch.rand(heads if per_head else 1, axes, pairs, generator=g) * 0.7
    plan = tuple(t.contiguous() for t in split_plan(freq))
    factor = torch.tensor([1.25])
    wq, wk = torch.randn(q.shape, generator=g), torch.randn(k.shape, generator=g)

    def loss(oq, ok):
        return (oq.float() * wq).sum() + (ok.float() * wk).sum()

    oq, ok = triton_rope._RotateOnTheFly.apply(q, k, coords, *plan, factor, layout == "interleaved")
    loss(oq, ok).backward()
    got = [oq, ok, q.grad, k.grad]
    q.grad = k.grad = None
    ang = reduced_angles(coords, plan)
    cos, sin = ang.cos() * 1.25, ang.sin() * 1.25
    rq, rk = eager.rotate(q, cos, sin, layout), eager.rotate(k, cos, sin, layout)
    loss(rq, rk).backward()
    want = [rq, rk, q.grad, k.grad]
    assert oq.transpose(1, 2).is_contiguous(), "the output keeps q's (B, N, H, D) memory order"
    tol = 1e-5 if dtype == torch.float32 else 2**-5  # bf16: one rounding step of values below 8 (one ulp)
    err = max((a.float() - b.float()).abs().max().item() for a, b in zip(got, want))
    assert err <= tol, f"{layout} {dtype} axes={axes} per_head={per_head}: max error {err}"
    check_launch_configs(q.detach(), k.detach(), coords, plan, factor, layout == "interleaved")
    return err


def check_launch_configs(q, k, coords, plan, factor, interleaved: bool) -> None:
    """Rows per program and head groups change only which program does what: the outputs are bit-identical."""
    want = triton_rope._launch(q, k, coords, plan, factor, interleaved, 1.0)
    configs = [triton_rope.LaunchConfig(rows, groups, 2) for rows, groups in ((1, 3), (4, 2), (16, 8), (16, 1))]
    for cfg in configs:
        got = triton_rope._launch(q, k, coords, plan, factor, interleaved, 1.0, cfg)
        assert all(torch.equal(a, b) for a, b in zip(got, want)), f"launch {cfg} differs from the default"
    shared = coords[:1]  # one row of positions for the whole batch (stride-0 batch reads in the kernel)
    got = triton_rope._launch(q, k, shared, plan, factor, interleaved, 1.0)
    want = triton_rope._launch(q, k, shared.expand_as(coords).contiguous(), plan, factor, interleaved, 1.0)
    assert all(torch.equal(a, b) for a, b in zip(got, want)), "a shared coordinate row differs from its copies"


if __name__ == "__main__":
    for layout in ("half", "interleaved"):
        for dtype in (torch.float32, torch.bfloat16):
            for axes, per_head in ((1, False), (3, True)):
                print(layout, dtype, axes, per_head, f"max error {check(layout, dtype, axes, per_head):.2e}")
    sys.stdout.write("all cases match the eager oracle\n")
