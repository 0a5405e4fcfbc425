"""bf16 drift (Wang et al. 2025, Eq. 4/5): zero in fp32 up to round-off, clearly nonzero in bf16."""

from __future__ import annotations

import pytest
import torch

from rope_lab.analysis.bf16_drift import attention_distance, drift, plot, random_qk, run
from rope_lab.pe import AttentionGeometry, build_pe


def _pe():
    return build_pe({"name": "rope"}).setup(AttentionGeometry(dim=64, head_dim=32, n_heads=2, n_kv_heads=2, depth=1))


def test_distance_of_identical_attention_is_zero_and_rows_are_weighted():
    a = torch.rand(1, 1, 4, 4).softmax(-1)
    assert attention_distance(a, a) == 0.0
    b = a.clone()
    b[0, 0, 0] += torch.tensor([1.0, -1.0, 0, 0])  # row 0 of T=4 has weight 1/4
    assert abs(attention_distance(b, a) - 0.5) < 1e-12


def test_fp32_is_shift_invariant_and_bf16_is_not():
    q, k = random_qk(1, 2, 48, 32, sink=8.0)
    series = drift(_pe(), q, k, offsets=[0, 16, 1000, 20000], reference=16)
    assert max(series["D fp32"].values()) < 1e-3
    assert min(series["D bf16"][o] for o in (0, 1000, 20000)) > 10 * max(series["D fp32"].values())
    assert series["D bf16"][16] == 0.0 and series["E bf16 vs fp32"][0] > 0


def test_run_and_plot(tmp_path):
    series = run(length=24, head_dim=16, heads=2, batch=1, offsets=[0, 64])
    assert "E bf16 vs fp32, anchor at 0" in series
    assert plot(series, tmp_path / "d.png").stat().st_size > 0
