"""Precision of the rotary core (issue 6 item 2), measured against exact float64 arithmetic.

Ground truth: the angle ``p * f`` with the model's own fp32 frequency f, multiplied exactly in float64 (a 24-bit
position times a 24-bit frequency fits in 53 bits), then cos/sin in float64. Bounds measured on this CPU when the
tests were written (rope_lab/pe/kernels/angles.py):
  reduced angle error, positions up to 2^24, d=128, bases 1e2..5e5:  <= 5.0e-7 rad   (asserted: 1e-6)
  3-axis per-head plan (sum of three reduced products):              <= 1.2e-6 rad   (asserted: 2e-6)
  the naive fp32 product at the same positions:                      ~2.4e-2 rad at 2^20, 0.4 rad at 2^24
  bf16 outputs: equal to bf16(exact rotation) except at rounding ties; never more than 1 bf16 ulp away.
"""

from __future__ import annotations

import math

import pytest
import torch

from rope_lab.pe import Positions
from rope_lab.pe.frequencies import rope_inv_freq
from rope_lab.pe.kernels.angles import precise_angles, reduced_angles, split_plan
from rope_lab.pe.rotary import compute_angles

from .helpers import build, geometry

ANGLE_BOUND = 1e-6


def _wrapped_error(angles: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    return (torch.remainder(angles.double() - exact + math.pi, 2 * math.pi) - math.pi).abs()


def _positions() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    ints = torch.cat([torch.arange(0, 64), torch.randint(0, 2**20, (512,), generator=g),
                      torch.tensor([4095, 4096, 2**20 - 1, 2**20, 2**24 - 1])]).float()
    fractional = torch.rand(64, generator=g) * 2**16 - 2**10  # fractional and negative ids (VideoRoPE deltas)
    return torch.cat([ints, fractional])


@pytest.mark.parametrize("base", [100.0, 10000.0, 500000.0])
def test_reduced_angles_error_stays_at_fp32_rounding_up_to_2_24(base):
    freq = rope_inv_freq(128, base)
    pos = _positions()
    exact = pos.double()[:, None] * freq.double()[None, :]
    ours = reduced_angles(pos[None, :, None], split_plan(freq[None, None]))[0, 0]
    naive = compute_angles(pos[None, :, None], freq[None, None])[0, 0]
    assert _wrapped_error(ours, exact).max() < ANGLE_BOUND
    assert ours.abs().max() <= math.pi + 1e-6  # reduced to one turn
    big = pos >= 2**20
    assert _wrapped_error(naive[big], exact[big]).max() > 1e-3  # the problem is real at these positions


def test_multi_axis_and_per_head_plans():
    """A 3-axis, per-head plan (M-RoPE/VideoRoPE-like) with a zero frequency (HoPE): sum over axes stays exact."""
    g = torch.Generator().manual_seed(1)
    freq = torch.rand(4, 3, 16, generator=g) ** 4
    freq[:, :, -3:] = 0.0
    coords = torch.randint(0, 2**20, (2, 7, 3), generator=g).float()
    exact = torch.einsum("bna,hap->bhnp", coords.double(), freq.double())
    ours = reduced_angles(coords, split_plan(freq))
    assert _wrapped_error(ours, exact).max() < 2 * ANGLE_BOUND
    assert (ours[..., -3:] == 0).all()


def test_split_plan_is_exact_and_short():
    freq = torch.cat([rope_inv_freq(128, 10000.0), torch.tensor([0.0, 1.0, 2 * math.pi, 1e-9, 3.0e-5])])
    g1, g2, g3 = split_plan(freq)
    total = g1.double() + g2.double() + g3.double()
    torch.testing.assert_close(total, freq.double() / (2 * math.pi), rtol=3e-14, atol=0)
    for part in (g1, g2):  # <= 12 significant bits: products with 12-bit position pieces are exact in fp32
        mant, _ = torch.frexp(part.double())
        assert torch.equal(mant * 2**12, torch.round(mant * 2**12))


def test_gradient_to_learnable_frequencies_is_that_of_the_plain_product():
    freq = torch.rand(2, 2, 4, requires_grad=True)
    coords = torch.randint(0, 5000, (3, 6, 2)).float()
    w = torch.randn(3, 2, 6, 4)
    (precise_angles(coords, freq) * w).sum().backward()
    want = torch.einsum("bna,bhnp->hap", coords, w)
    torch.testing.assert_close(freq.grad, want)


@pytest.mark.parametrize("layout", ["half", "interleaved"])
def test_rotated_queries_fp32_and_bf16_against_float64(layout):
    """fp32 outputs are within fp32 rounding of the exact rotation; bf16 outputs carry one bf16 rounding only."""
    pe = build("rope", geometry(dim=128, n_heads=2), pair_layout=layout)
    g = torch.Generator().manual_seed(2)
    pos = Positions(torch.randint(2**19, 2**20, (1, 64)).float())
    q = torch.randn(1, 2, 64, 64, generator=g)
    state = pe.prepare(pos)
    exact, _ = pe.rotate(q.double(), q.double(), state, 0)
    fp32, _ = pe.rotate(q, q, state, 0)
    assert (fp32.double() - exact).abs().max() < 5e-6  # |q| <~ 5: a few fp32 ulps
    qb = q.bfloat16()
    exact_b, _ = pe.rotate(qb.double(), qb.double(), state, 0)
    ours_b, _ = pe.rotate(qb, qb, state, 0)
    rounded = exact_b.bfloat16()
    ulp = torch.exp2(torch.floor(torch.log2(rounded.float().abs().clamp_min(1e-30))) - 7)  # bf16: 8-bit mantissa
    diff = (ours_b.float() - rounded.float()).abs()
    assert (diff <= ulp).all()
    assert (diff == 0).float().mean() > 0.99  # differs only at ties of the single final rounding
