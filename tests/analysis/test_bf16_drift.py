"""bf16 drift (Wang et al. 2025, Eq. 4/5): zero in fp32 up to round-off, clearly nonzero in bf16; the HF /
FlashAttention bf16-table rotation drifts at least as much; drift vs sequence length; the CLI."""

from __future__ import annotations

import pytest
import torch

from rope_lab.analysis.bf16_drift import (_coords, attention_distance, drift, drift_vs_length, logits, main, plot,
                                          random_qk, rotate_with_tables, run, run_vs_length)
from rope_lab.pe import AttentionGeometry, Positions, build_pe


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


def test_exact_fp32_rotation_matches_a_float64_reference():
    pe, (q, k) = _pe(), random_qk(1, 2, 48, 32, sink=8.0)
    for off in (0, 1000, 20000):
        exact = logits(pe, q, k, _coords(48, off, False), torch.float64)
        fp32 = logits(pe, q, k, _coords(48, off, False), torch.float32)
        assert attention_distance(fp32.softmax(-1), exact.softmax(-1)) < 1e-4
        shifted = logits(pe, q, k, _coords(48, off + 7, False), torch.float64)
        assert attention_distance(shifted.softmax(-1), exact.softmax(-1)) < 1e-9  # float64: shift-invariant


def test_table_rotation_in_fp32_is_rope_and_in_bf16_differs_from_ours():
    pe, (q, k) = _pe(), random_qk(1, 2, 48, 32)
    coords = _coords(48, 0, False)
    ours, _ = pe.rotate(q, k, pe.prepare(Positions(coords=coords)), 0)
    torch.testing.assert_close(rotate_with_tables(pe, q, coords, torch.float32), ours, rtol=1e-5, atol=1e-5)
    far = _coords(48, 20000, False)
    assert not torch.equal(logits(pe, q, k, far, torch.bfloat16, "bf16_tables"), logits(pe, q, k, far, torch.bfloat16))
    with pytest.raises(ValueError, match="rotation must be one of.*bf16_tables"):
        logits(pe, q, k, far, torch.bfloat16, "fp16")
    gptj = build_pe({"name": "rope", "pair_layout": "interleaved"}).setup(
        AttentionGeometry(dim=64, head_dim=32, n_heads=2, n_kv_heads=2, depth=1))
    with pytest.raises(ValueError, match="rotate_half path.*pair_layout='half'"):
        logits(gptj, q, k, far, torch.bfloat16, "bf16_tables")


def test_bf16_tables_drift_at_least_as_much_as_fp32_rotation():
    """Measured on seed 0 (also holds on seeds 1 and 2): tables and rotation in bf16 add rounding to the bf16 q.k."""
    q, k = random_qk(1, 2, 48, 32, sink=8.0, seed=0)
    offsets = [0, 1000, 20000]
    ours = drift(_pe(), q, k, offsets=offsets, reference=16)
    tables = drift(_pe(), q, k, offsets=offsets, reference=16, rotation="bf16_tables")
    assert tables["D fp32"] == ours["D fp32"]  # the fp32 path is our rotation in both modes
    for name in ("D bf16", "E bf16 vs fp32"):
        for off in offsets:
            assert tables[name][off] >= ours[name][off] > 0


def test_drift_vs_sequence_length():
    q, k = random_qk(1, 2, 96, 32, sink=8.0)
    lengths = [8, 24, 48, 96]
    series = drift_vs_length(_pe(), q, k, lengths, offset=4096, rotation="bf16_tables")
    assert set(series) == {"D fp32", "D bf16", "E bf16 vs fp32", "D_logit first key bf16"}
    assert all(sorted(pts) == lengths for pts in series.values())
    assert max(series["D fp32"].values()) < 1e-3 and min(series["E bf16 vs fp32"].values()) > 0
    # the first T tokens of one draw: T = 48 is the offset-4096 point of drift() on q/k cut to 48
    cut = drift(_pe(), q[..., :48, :], k[..., :48, :], [4096], rotation="bf16_tables")
    assert series["D bf16"][48] == cut["D bf16"][4096]
    with pytest.raises(ValueError, match="lengths must lie in"):
        drift_vs_length(_pe(), q, k, [200])
    assert set(run_vs_length([8, 16], offset=64, head_dim=16, heads=2, batch=1)["D bf16"]) == {8, 16}


def test_cli_with_rotation_and_lengths(tmp_path, capsys):
    out = tmp_path / "drift.png"
    main(["--out", str(out), "--length", "16", "--rotation", "bf16_tables", "--lengths", "8", "16", "--offset", "64"])
    assert out.stat().st_size > 0 and (tmp_path / "drift_vs_length.png").stat().st_size > 0
    assert "drift_vs_length.png" in capsys.readouterr().out
