"""DRoPE / DRoPE-RoPE / rope_2d (Zhao et al., arXiv 2503.15029) against the paper's math and RoPE-Axial's formula.

References: the paper's f(X, phi) = BlockDiag(R(phi), ..., R(phi)) X (score depends on phi_j - phi_i only, exactly
2*pi-periodic); naver-ai/rope-vit ``compute_axial_cis`` + ``apply_rotary_emb`` (complex multiply of adjacent
channels), transcribed below as a naive complex-number reference.
"""

from __future__ import annotations

import math

import pytest
import torch

from rope_lab.pe import AttentionGeometry, Positions

from .helpers import build


def _geom(n_heads=4, head_dim=16):
    return AttentionGeometry(dim=n_heads * head_dim, head_dim=head_dim, n_heads=n_heads, n_kv_heads=n_heads, depth=1)


def _qk(n=7, heads=4, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, heads, n, d, generator=g, dtype=torch.float64), torch.randn(1, heads, n, d, generator=g,
                                                                                       dtype=torch.float64)


def _scores(pe, coords, q, k):
    state = pe.prepare(Positions(coords=coords))
    rq, rk = pe.rotate(q, k, state, 0)
    return rq @ rk.transpose(-1, -2)


def _scene(n=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = (torch.rand(1, n, 2, generator=g) - 0.5) * 80_000.0  # metres, an 80 km scene
    heading = (torch.rand(1, n, 1, generator=g) - 0.5) * 2 * math.pi
    return torch.cat((xy, heading), -1)


def _complex(x):
    """Interleaved pairs -> complex numbers (rope-vit ``torch.view_as_complex(x.reshape(..., -1, 2))``)."""
    return torch.view_as_complex(x.reshape(*x.shape[:-1], -1, 2).contiguous())


@pytest.mark.parametrize("name,extra", [("drope", {}), ("drope_rope", {"split": "head_wise"}),
                                        ("drope_rope", {"split": "within_head"})])
def test_score_depends_only_on_relative_heading_and_is_2pi_periodic(name, extra):
    pe = build(name, _geom(), **extra)
    q, k = _qk()
    coords = _scene()
    base = _scores(pe, coords, q, k)
    shifted = coords.clone()
    shifted[..., 2] += 0.731  # every heading shifted by the same angle
    shifted[0, 3, 2] += 2 * math.pi  # and one agent's heading by a full turn
    torch.testing.assert_close(_scores(pe, shifted, q, k), base, rtol=1e-5, atol=1e-5)
    other = coords.clone()
    other[0, 3, 2] += 0.5  # a relative heading changes: the scores must change
    assert (_scores(pe, other, q, k) - base).abs().max() > 1e-3


@pytest.mark.parametrize("name,extra", [("rope_2d", {}), ("drope_rope", {"split": "head_wise"}),
                                        ("drope_rope", {"split": "within_head"})])
def test_score_depends_only_on_relative_position(name, extra):
    pe = build(name, _geom(), **extra)
    q, k = _qk()
    coords = _scene()
    moved = coords.clone()
    moved[..., 0] += 12_345.0
    moved[..., 1] -= 6_789.0
    torch.testing.assert_close(_scores(pe, moved, q, k), _scores(pe, coords, q, k), rtol=1e-5, atol=1e-5)


def test_drope_equals_paper_formula():
    """q_i^T R(phi_j - phi_i) k_j on every pair: Re(conj(q) k e^{i (phi_j - phi_i)}) summed over pairs."""
    pe = build("drope", _geom())
    q, k = _qk()
    coords = _scene()
    phi = coords[0, :, 2].double()
    want = (_complex(q)[..., :, None, :].conj() * _complex(k)[..., None, :, :]
            * torch.exp(1j * (phi[None, :] - phi[:, None]))[..., None]).real.sum(-1)
    torch.testing.assert_close(_scores(pe, coords, q, k), want, rtol=1e-5, atol=1e-5)


def test_rope_2d_equals_rope_vit_axial_formula():
    """rope-vit compute_axial_cis (theta=base) on t_x = x / unit, t_y = y / unit, interleaved channels."""
    unit, base, d = 1000.0, 100.0, 16
    pe = build("rope_2d", _geom(head_dim=d), unit=unit, base=base)
    q, k = _qk()
    coords = _scene()
    freqs = 1.0 / (base ** (torch.arange(0, d, 4)[: d // 4].double() / d))
    t_x, t_y = coords[0, :, 0].double() / unit, coords[0, :, 1].double() / unit
    cis = torch.polar(torch.ones(7, d // 2, dtype=torch.float64),
                      torch.cat((torch.outer(t_x, freqs), torch.outer(t_y, freqs)), -1))
    rq, rk = _complex(q) * cis, _complex(k) * cis
    want = (rq[..., :, None, :].conj() * rk[..., None, :, :]).real.sum(-1)
    torch.testing.assert_close(_scores(pe, coords, q, k), want, rtol=1e-4, atol=1e-4)


def test_drope_rope_head_wise_heads_see_only_their_axes():
    pe = build("drope_rope", _geom(), split="head_wise", heading_fraction=0.5)
    q, k = _qk()
    coords = _scene()
    base = _scores(pe, coords, q, k)
    turned = coords.clone()
    turned[0, 2, 2] += 1.0  # heading of one agent: only heading heads (2, 3) change
    moved = coords.clone()
    moved[0, 2, :2] += 3_000.0  # position of one agent: only position heads (0, 1) change
    d_turn, d_move = (_scores(pe, turned, q, k) - base).abs(), (_scores(pe, moved, q, k) - base).abs()
    assert d_turn[:, :2].max() < 1e-6 and d_turn[:, 2:].max() > 1e-3
    assert d_move[:, 2:].max() < 1e-6 and d_move[:, :2].max() > 1e-3


def test_drope_rope_within_head_pair_budget():
    pe = build("drope_rope", _geom(head_dim=32), split="within_head", heading_fraction=0.25)
    plan = pe.frequency_plan(pe.inv_freq, 0)[0]  # (3, 16)
    assert plan.shape == (3, 16)
    assert (plan[0] > 0).sum() == 6 and (plan[1] > 0).sum() == 6 and (plan[2] == 1).sum() == 4
    assert ((plan > 0).sum(0) == 1).all()  # every pair listens to exactly one axis


def test_drope_rope_is_not_rotation_invariant_but_rpe_is():
    """Axial RoPE on (x, y) sees global dx, dy: rotating the whole scene changes its scores (documented)."""
    pe = build("drope_rope", _geom())
    q, k = _qk()
    coords = _scene()
    a = 0.9
    rot = coords.clone()
    rot[..., 0] = math.cos(a) * coords[..., 0] - math.sin(a) * coords[..., 1]
    rot[..., 1] = math.sin(a) * coords[..., 0] + math.cos(a) * coords[..., 1]
    rot[..., 2] += a
    assert (_scores(pe, rot, q, k) - _scores(pe, coords, q, k)).abs().max() > 1e-3


def test_frequencies_stay_fp32_and_angles_identical_under_bf16():
    pe = build("drope_rope", _geom())
    coords = _scene()
    before = pe.cos_sin(pe.prepare(Positions(coords=coords)), 0)[0].clone()
    pe.to(torch.bfloat16)
    assert pe.inv_freq.dtype == torch.float32
    torch.testing.assert_close(pe.cos_sin(pe.prepare(Positions(coords=coords)), 0)[0], before, rtol=0, atol=0)


@pytest.mark.parametrize("bad,match", [({"split": "diagonal"}, "split"), ({"heading_fraction": 1.0}, "heading_fraction"),
                                       ({"scaling": {"name": "linear", "factor": 2.0}}, "scaling")])
def test_bad_config_is_a_clear_error(bad, match):
    with pytest.raises(ValueError, match=match):
        build("drope_rope", _geom(), **bad)


def test_head_wise_needs_heads_for_both():
    with pytest.raises(ValueError, match="head_wise"):
        build("drope_rope", _geom(n_heads=1, head_dim=16), split="head_wise")


def test_axis_counts_are_checked():
    with pytest.raises(ValueError, match="3..3"):
        build("drope_rope", _geom()).check_compatible(2, causal=False)
    build("drope", _geom()).check_compatible(3, causal=False)
