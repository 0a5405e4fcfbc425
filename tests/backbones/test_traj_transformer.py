"""traj_transformer: shapes for every trajectory PE, padding agents never change real agents, bad K is an error."""

from __future__ import annotations

import math

import pytest
import torch

from rope_lab.backbones.traj_transformer import TrajTransformer, TrajTransformerConfig
from rope_lab.pe import build_pe
from rope_lab.tasks.trajectory.positions import agent_positions

from ..pe.helpers import pe_config

VARIANTS = ["drope", "drope_rope", "rope_2d", "rpe", "nope"]


def _model(name, **kw):
    torch.manual_seed(0)
    cfg = TrajTransformerConfig(dim=32, depth=2, n_heads=4, mlp_hidden=64, in_features=10, future_steps=5,
                                num_modes=3, **kw)
    return TrajTransformer(cfg, build_pe(pe_config(name)))


def _inputs(b=2, n=5):
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(b, n, 10, generator=g)
    current = torch.cat((torch.randn(b, n, 2, generator=g) * 20_000, (torch.rand(b, n, 1, generator=g) - 0.5) * 2 * math.pi), -1)
    return feats, current


@pytest.mark.parametrize("name", VARIANTS)
def test_shapes_and_gradients(name):
    model = _model(name)
    feats, current = _inputs()
    out = model(feats, agent_positions(current, torch.ones(2, 5, dtype=torch.bool)))
    assert out["traj"].shape == (2, 5, 3, 5, 2) and out["logits"].shape == (2, 5, 3)
    (out["traj"].square().mean() + out["logits"].logsumexp(-1).mean()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing


@pytest.mark.parametrize("name", VARIANTS)
def test_padding_agents_do_not_change_real_agents(name):
    model = _model(name).eval()
    feats, current = _inputs(1, 5)
    alone = model(feats[:, :3], agent_positions(current[:, :3], torch.ones(1, 3, dtype=torch.bool)))
    mask = torch.tensor([[True, True, True, False, False]])
    padded = model(feats, agent_positions(current, mask))
    torch.testing.assert_close(padded["traj"][:, :3], alone["traj"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name,rotate", [("drope_rope", False), ("rpe", True)])
def test_invariances_leave_predictions_unchanged(name, rotate):
    """Outputs live in agent frames. drope_rope: invariant to translation and a common heading shift (axial
    RoPE sees global dx, dy); rpe: to any rigid motion of the scene (positions rotated with the headings)."""
    model = _model(name).eval()
    feats, current = _inputs(1, 5)
    mask = torch.ones(1, 5, dtype=torch.bool)
    moved = current.clone()
    a = 0.4
    if rotate:
        moved[..., 0] = math.cos(a) * current[..., 0] - math.sin(a) * current[..., 1]
        moved[..., 1] = math.sin(a) * current[..., 0] + math.cos(a) * current[..., 1]
    moved[..., :2] += torch.tensor([4_000.0, -9_000.0])
    moved[..., 2] += a
    moved[0, 1, 2] += 2 * math.pi
    a = model(feats, agent_positions(current, mask))["traj"]
    b = model(feats, agent_positions(moved, mask))["traj"]
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_num_modes_must_be_positive():
    with pytest.raises(ValueError, match="num_modes"):
        TrajTransformer(TrajTransformerConfig(num_modes=0), build_pe(pe_config("drope")))
