"""PSC (phase shift calibration): the official ``Phase`` module's init, placement and math (WNQzhu/PSC
``PSC_code/lora_llama.py``), composed with a scaling."""

from __future__ import annotations

import math

import pytest
import torch

from rope_lab.backbones.decoder import Decoder, DecoderConfig
from rope_lab.pe import AttentionGeometry, Positions, build_pe
from rope_lab.pe.scalings.psc import Phase

SCALED = {"name": "linear", "factor": 4.0}


def _model(psc: bool) -> Decoder:
    torch.manual_seed(0)
    cfg = DecoderConfig(vocab_size=64, dim=32, depth=2, n_heads=2, n_kv_heads=1, mlp_hidden=64, init_std=0.3)
    return Decoder(cfg, build_pe({"name": "rope", "scaling": SCALED, "psc": psc}))


def test_logits_unchanged_at_init():
    with_psc, without = _model(True), _model(False)
    missing, unexpected = without.load_state_dict(with_psc.state_dict(), strict=False)
    assert not missing and unexpected and all(".psc." in k for k in unexpected)
    tokens = torch.randint(0, 64, (2, 20))
    pos = Positions.sequence(2, 20, start=300)
    assert torch.equal(with_psc(tokens, pos), without(tokens, pos))


def test_parameters_are_placed_and_initialised_as_the_official_code():
    model = _model(True)
    psc = model.pe.psc
    assert len(psc.q_phase) == len(psc.k_phase) == 2
    assert psc.q_phase[0].up_phase.shape == (2, 16, 16) and psc.k_phase[0].up_phase.shape == (1, 16, 16)
    assert all(bool((m.up_phase == 0).all()) for m in [*psc.q_phase, *psc.k_phase])
    bound = 1 / math.sqrt(16 * 16)  # kaiming_uniform(a=sqrt(5)) on (nh, hd, hd): fan_in = hd * hd
    down = torch.stack([m.down_phase for m in psc.q_phase])
    assert down.abs().max() <= bound and down.std() > bound / 3


def test_parameters_get_gradients_and_training_moves_them():
    model = _model(True)
    opt = torch.optim.SGD(model.pe.psc.parameters(), lr=1.0)
    tokens = torch.randint(0, 64, (2, 12))
    for _ in range(2):
        opt.zero_grad()
        model(tokens, Positions.sequence(2, 12)).logsumexp(-1).mean().backward()
        opt.step()
    for m in [*model.pe.psc.q_phase, *model.pe.psc.k_phase]:
        assert m.up_phase.grad is not None and m.up_phase.grad.abs().sum() > 0
        assert m.down_phase.grad.abs().sum() > 0  # zero at step 0 (SiLU(0) = 0), nonzero once up moved


def test_phase_math_and_gain_range():
    torch.manual_seed(1)
    phase = Phase(2, 8)
    torch.nn.init.normal_(phase.up_phase, std=3.0)
    x = torch.randn(3, 2, 5, 8)
    hidden = torch.nn.functional.silu(torch.einsum("bnsd,ndr->bnsr", x, phase.up_phase))
    coeff = 1 + torch.tanh(torch.einsum("bnsr,nrd->bnsd", hidden, phase.down_phase)) / 2
    out = phase(x)
    torch.testing.assert_close(out, x * coeff)
    ratio = out / x
    assert bool((ratio > 0.5).all() and (ratio < 1.5).all())


def test_scores_stay_relative_with_a_trained_calibration():
    pe = build_pe({"name": "rope", "scaling": SCALED, "psc": True})
    pe.setup(AttentionGeometry(dim=32, head_dim=16, n_heads=2, n_kv_heads=2, depth=1)).double()
    for m in [*pe.psc.q_phase, *pe.psc.k_phase]:
        torch.nn.init.normal_(m.up_phase, std=0.5)
    q, k = torch.randn(1, 2, 9, 16, dtype=torch.float64), torch.randn(1, 2, 9, 16, dtype=torch.float64)
    coords = torch.randint(0, 50, (1, 9, 1)).float()
    scores = []
    for shift in (0.0, 41.0):
        rq, rk = pe.rotate(q, k, pe.prepare(Positions(coords + shift)), 0)
        scores.append(rq @ rk.transpose(-1, -2))
    torch.testing.assert_close(scores[0], scores[1], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("scaling", ["yarn", "dynamic_ntk"])
def test_psc_composes_from_the_command_line(scaling):
    from hydra import compose, initialize_config_dir

    from tests.pe.helpers import CONFIGS

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"pe/scaling={scaling}", "pe.psc=true"])
    pe = build_pe(cfg.pe).setup(AttentionGeometry(dim=32, head_dim=16, n_heads=2, n_kv_heads=2, depth=2))
    assert pe.psc is not None and pe.scaling.name == scaling
