"""FreeFlux probing and value-injection editing as PE-side wrappers around a trained DiT's RoPE."""

from __future__ import annotations

import math

import pytest
import torch

from rope_lab.analysis.rope_probing import (
    KeyProbe, Manipulation, ValueInjection, freeflux_manipulations, move_indices, probe_layers, psnr, ranking,
    shift_image_positions, use_pe,
)
from rope_lab.backbones.dit import DiT, DiTConfig
from rope_lab.pe import build_pe
from rope_lab.tasks.base import TaskSpec
from rope_lab.tasks.image_gen.module import generate
from rope_lab.tasks.image_gen.positions import generation_positions


def tiny_dit():
    torch.manual_seed(0)
    spec = TaskSpec(num_axes=2, causal=False, num_classes=10, extra={"in_channels": 1, "image_size": 8})
    model = DiT(DiTConfig(patch_size=[2, 2], dim=32, depth=3, n_heads=2), build_pe({"name": "rope_axial"}), spec)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return model.eval()


def qk(n=16):
    torch.manual_seed(1)
    return torch.randn(1, 2, n, 16, dtype=torch.float64), torch.randn(1, 2, n, 16, dtype=torch.float64)


def test_key_probe_touches_only_the_probed_layers_keys():
    model = tiny_dit()
    pos = generation_positions(1, (4, 4))
    q, k = qk()
    state = model.pe.prepare(pos)
    ref_q, ref_k = model.pe.rotate(q, k, state, 1)
    probe = KeyProbe(model.pe, 1, "none")
    pstate = probe.prepare(pos)
    pq, pk = probe.rotate(q, k, pstate, 1)
    assert torch.equal(pq, ref_q) and torch.equal(pk, k)  # queries keep RoPE, keys get none
    assert all(torch.equal(a, b) for a, b in zip(probe.rotate(q, k, pstate, 0), model.pe.rotate(q, k, state, 0)))


def test_shifted_keys_equal_queries_shifted_the_other_way():
    """RoPE's relative property: q(m) . k(n + d) == q(m - d) . k(n); the probe's key shift is exactly that."""
    model = tiny_dit()
    pos = generation_positions(1, (4, 4))
    q, k = qk()
    probe = KeyProbe(model.pe, 0, Manipulation("shift", 2, 3))
    pq, pk = probe.rotate(q, k, probe.prepare(pos), 0)
    back = model.pe.prepare(shift_image_positions(pos, -2, -3))
    bq, _ = model.pe.rotate(q, k, back, 0)
    _, k0 = model.pe.rotate(q, k, model.pe.prepare(pos), 0)
    torch.testing.assert_close(pq @ pk.transpose(-1, -2), bq @ k0.transpose(-1, -2), rtol=1e-5, atol=1e-5)


def test_shift_moves_image_tokens_only():
    pos = generation_positions(1, (2, 2), text_tokens=2, id_axes=3)
    moved = shift_image_positions(pos, 1, 5)
    assert torch.equal(moved.coords[0, :2], torch.zeros(2, 3))
    assert moved.coords[0, 2:].tolist() == [[0, 1, 5], [0, 1, 6], [0, 2, 5], [0, 2, 6]]


def test_probe_layers_ranks_and_restores_the_model():
    model = tiny_dit()
    pe = model.pe
    labels, noise = torch.tensor([1, 7]), torch.randn(2, 1, 8, 8)
    gen = lambda y, z, **kw: generate(model, y, z, guidance=1.0, steps=2, **kw)  # noqa: E731
    table = probe_layers(model, gen, labels, noise, [Manipulation("none"), Manipulation("shift", 0, 0)])
    assert set(table) == {0, 1, 2}
    assert all(t["shift:0,0"] > 300 for t in table.values())  # no-op shift: identical images (cv2: 361 dB)
    assert all(t["none"] < 100 for t in table.values())
    assert [layer for layer, _ in ranking(table)] == sorted(table, key=lambda l: sum(table[l].values()))
    assert model.pe is pe and all(b.pe is pe for b in model.blocks)
    with pytest.raises(ValueError, match=r"probed layer 3 is out of range.*0\.\.2"):
        probe_layers(model, gen, labels, noise, [Manipulation("none")], layers=[3])


def test_manipulations_parse_and_freeflux_scaling():
    assert freeflux_manipulations(64) == [Manipulation("none"), Manipulation("shift", 10, 10),
                                          Manipulation("shift", 0, 20), Manipulation("shift", 64, 0)]
    assert [str(m) for m in freeflux_manipulations(7)] == ["none", "shift:1,1", "shift:0,2", "shift:7,0"]
    with pytest.raises(ValueError, match="shift:R,C"):
        Manipulation.parse("shift:1")


def test_psnr_matches_cv2_formula():
    a = torch.zeros(1, 1, 4, 4)
    b = a.clone()
    b[0, 0, 0, 0] = 16 / 255  # MSE = 16^2 / 16 = 16 -> 20 log10(255 / 4)
    assert psnr(a, b).item() == pytest.approx(20 * math.log10(255 / 4.0), rel=1e-12)
    assert psnr(a, a).item() == pytest.approx(361.20199909921956)  # cv2.PSNR of identical images


def test_value_injection_copies_source_values_to_moved_target_tokens():
    mask = torch.zeros(3, 3, dtype=torch.bool)
    mask[0, 0] = mask[1, 1] = True
    src, tgt = move_indices(mask, 1, 1, offset=2)
    assert src.tolist() == [2, 6] and tgt.tolist() == [6, 10]
    model = tiny_dit()
    inj = ValueInjection(model.pe, torch.tensor([0]), torch.tensor([5]))

    q, k = qk()
    v = torch.randn(2, 2, 16, 16, dtype=torch.float64)
    state = inj.prepare(generation_positions(2, (4, 4)))
    out = inj.attend(q.repeat(2, 1, 1, 1), k.repeat(2, 1, 1, 1), v, state=state, layer=0, causal=False)
    assert out.shape == (2, 2, 16, 16)
    inj.active = False
    out_off = inj.attend(q.repeat(2, 1, 1, 1), k.repeat(2, 1, 1, 1), v, state=state, layer=0, causal=False)
    assert torch.equal(out_off[0], out[0]) and not torch.equal(out_off[1], out[1])
    with use_pe(model, inj):
        assert model.pe is inj and model.blocks[0].pe is inj
    assert model.pe is not inj


def test_freeflux_study_seed_reports_every_layer_and_the_noise_baseline(monkeypatch, tmp_path):
    """The seeded study function on a tiny DiT (training replaced): each layer's four manipulations + their mean,
    and the null baseline (two unmodified samples of different noise) below the probes' PSNR of a no-op layer."""
    from types import SimpleNamespace

    from rope_lab.analysis import freeflux_study

    model = tiny_dit()
    module = SimpleNamespace(cfg=SimpleNamespace(guidance=1.0, sampler="euler", image_size=8))
    seen = []
    monkeypatch.setattr(freeflux_study, "trained", lambda overrides, run_dir: seen.append((overrides, run_dir))
                        or (module, model))
    out = freeflux_study.study_seed(seed=2, samples_per_class=1, sample_steps=2, root=tmp_path)
    assert seen[0][0][-1] == "seed=2" and seen[0][1] == tmp_path / "dit_seed2"
    assert set(out) == {"layer 0", "layer 1", "layer 2", freeflux_study.BASELINE}
    row = out["layer 1"]
    assert set(row) == {"probe/psnr@keys_no_rope", "probe/psnr@shift_1_1", "probe/psnr@shift_0_1",
                        "probe/psnr@shift_4_0", "probe/psnr_mean"}  # FreeFlux's shifts rescaled to a 4-row grid
    parts = [v for k, v in row.items() if k != "probe/psnr_mean"]
    assert row["probe/psnr_mean"] == pytest.approx(sum(parts) / 4)
    assert math.isfinite(out[freeflux_study.BASELINE]["probe/psnr_mean"])
    with pytest.raises(ValueError, match="no budget 'quick'"):
        freeflux_study.study_seed(seed=0, budget="quick", root=tmp_path)
