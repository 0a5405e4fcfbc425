"""DiT / MM-DiT backbone: shapes with every 2-D-capable PE, adaLN-Zero init, translation invariance with
RoPE (attention depends only on relative positions), FLUX ids for the text stream, the control branch."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from rope_lab.backbones.dit import DiT, DiTConfig
from rope_lab.pe import build_pe
from rope_lab.tasks.base import TaskSpec
from rope_lab.tasks.image_gen.datamodule import class_text
from rope_lab.tasks.image_gen.positions import generation_positions

PES = [{"name": "nope"}, {"name": "ape", "kind": "sinusoidal"}, {"name": "ape", "kind": "learned"},
       {"name": "rope_axial"}, {"name": "rope_mixed"}]


def make(pe_cfg, mmdit=False, text=0, id_axes=2, control_dim=0, layout="musecontrollite_compat", **kw):
    spec = TaskSpec(num_axes=id_axes, causal=False, num_classes=10, max_tokens=400,
                    extra={"in_channels": 1, "text_tokens": text, "image_size": 8, "control_dim": control_dim})
    cfg = DiTConfig(patch_size=kw.pop("patch", [2, 2]), dim=32, depth=2, n_heads=2, mmdit=mmdit, **kw)
    cfg.control.layout = layout
    return DiT(cfg, build_pe(pe_cfg), spec)


def perturb(model, std=0.1):
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * std)
    return model


@pytest.mark.parametrize("pe", PES, ids=lambda c: "-".join(str(v) for v in c.values()))
@pytest.mark.parametrize("size", [8, 12])
def test_shapes_every_2d_pe(pe, size):
    model = perturb(make(pe))
    pos = generation_positions(2, model.token_grid(size, size))
    out = model(torch.randn(2, 1, size, size), torch.rand(2), torch.tensor([3, 10]), pos)
    assert out.shape == (2, 1, size, size) and torch.isfinite(out).all()


def test_adaln_zero_init_is_identity():
    """DiT initialize_weights: zero adaLN gates make every block the identity and the output zero."""
    model = make({"name": "rope_axial"})
    x = torch.randn(2, 1, 8, 8)
    pos = generation_positions(2, (4, 4))
    assert torch.equal(model(x, torch.rand(2), torch.tensor([1, 2]), pos), torch.zeros_like(x))
    h = torch.randn(2, 16, 32)
    state = model.pe.prepare(pos)
    assert torch.equal(model.blocks[0](h, torch.randn(2, 32), state), h)


def test_bad_resolution_names_value_and_patch():
    model = make({"name": "rope_axial"})
    with pytest.raises(ValueError, match=r"10x10 is not divisible by the patch size 4x4"):
        make({"name": "rope_axial"}, patch=[4, 4]).token_grid(10, 10)
    with pytest.raises(ValueError, match="positions cover"):
        model(torch.randn(1, 1, 8, 8), torch.rand(1), torch.tensor([0]), generation_positions(1, (3, 3)))


def test_rope_dit_is_translation_invariant():
    """With RoPE only (no absolute PE), moving every image position by a constant leaves the output unchanged:
    the scores depend only on relative positions (RoFormer's property, through the whole network)."""
    model = perturb(make({"name": "rope_axial"})).double()
    x, t, y = torch.randn(2, 1, 8, 8, dtype=torch.float64), torch.rand(2, dtype=torch.float64), torch.tensor([1, 4])
    pos = generation_positions(2, (4, 4))
    moved = dataclasses.replace(pos, coords=pos.coords + torch.tensor([5.0, -3.0]))  # rows are a shared view
    torch.testing.assert_close(model(x, t, y, pos), model(x, t, y, moved), rtol=1e-10, atol=1e-10)
    ape = perturb(make({"name": "ape", "kind": "sinusoidal"})).double()
    assert not torch.allclose(ape(x, t, y, pos), ape(x, t, y, moved))


def test_mmdit_flux_ids_and_text_stream():
    """FLUX ids: text (0,0,0) first, image (0,row,col); RoPE is the identity on the text tokens."""
    pe = {"name": "rope_axial", "axes_dim": [4, 6, 6], "base": 10000.0}
    model = perturb(make(pe, mmdit=True, text=11, id_axes=3))
    pos = generation_positions(2, (4, 4), text_tokens=11, id_axes=3)
    assert torch.equal(pos.coords[0, :11], torch.zeros(11, 3))
    assert torch.equal(pos.coords[0, 11 + 5], torch.tensor([0.0, 1.0, 1.0]))
    cos, sin = model.pe.prepare(pos).rotation
    assert torch.equal(cos[:, :, :11], torch.ones_like(cos[:, :, :11])) and not sin[:, :, :11].any()
    y = torch.tensor([0, 9])
    out = model(torch.randn(2, 1, 8, 8), torch.rand(2), y, pos, text=class_text(y, 11))
    assert out.shape == (2, 1, 8, 8)
    other = model(torch.randn(2, 1, 8, 8), torch.rand(2), y, pos, text=class_text(torch.tensor([10, 10]), 11))
    assert not torch.allclose(out, other)
    with pytest.raises(ValueError, match="text ids of shape"):
        model(torch.randn(2, 1, 8, 8), torch.rand(2), y, pos)


def test_mmdit_needs_text_stream_and_text_needs_mmdit():
    with pytest.raises(ValueError, match="task.text_tokens > 0"):
        make({"name": "rope_axial"}, mmdit=True, text=0)
    with pytest.raises(ValueError, match="backbone=dit_mm"):
        make({"name": "rope_axial", "axes_dim": [4, 6, 6]}, text=4, id_axes=3)


def test_control_branch_starts_as_a_no_op_and_learns():
    model = perturb(make({"name": "rope"}, control_dim=5, patch=[8, 2]), std=0.1)
    for blk in model.blocks:
        blk.control.reset_parameters()
    x, t, y = torch.randn(2, 1, 8, 8), torch.rand(2), torch.tensor([1, 2])
    from rope_lab.pe import Positions
    from rope_lab.pe.variants.musecontrol import timeline_positions

    pos = Positions.sequence(2, 4)
    qpos, kpos = timeline_positions(2, 4, 8)
    c1, c2 = torch.randn(2, 8, 5), torch.randn(2, 8, 5)
    torch.testing.assert_close(model(x, t, y, pos, control=(c1, qpos, kpos)), model(x, t, y, pos, control=(c2, qpos, kpos)))
    model(x, t, y, pos, control=(c1, qpos, kpos)).square().sum().backward()
    assert model.blocks[0].control.conv_out.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="control branch"):
        model(x, t, y, pos)
