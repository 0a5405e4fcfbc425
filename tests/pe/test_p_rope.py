"""p-RoPE: both ends equal NoPE / RoPE exactly; frequencies equal HF ``proportional`` (Gemma 4) and the pinned
Gemma numbers; bad p is a clear error."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from rope_lab.backbones.decoder import Decoder, DecoderConfig
from rope_lab.pe import AttentionGeometry, Positions, build_pe

from .helpers import pe_config


def _model(cfg: dict) -> Decoder:
    torch.manual_seed(0)
    return Decoder(DecoderConfig(vocab_size=64, dim=32, depth=2, n_heads=2, n_kv_heads=1, mlp_hidden=64,
                                 init_std=0.3), build_pe(cfg)).eval()


@pytest.mark.parametrize("p,other", [(0.0, "nope"), (1.0, "rope")])
def test_ends_equal_nope_and_rope_exactly(p, other):
    tokens = torch.randint(0, 64, (2, 24))
    pos = Positions.sequence(2, 24, start=1000)
    with torch.no_grad():
        a = _model(pe_config("p_rope", p=p))(tokens, pos)
        b = _model(pe_config(other))(tokens, pos)
    assert torch.equal(a, b)


def test_intermediate_p_differs_from_both_ends():
    tokens = torch.randint(0, 64, (1, 16))
    pos = Positions.sequence(1, 16)
    with torch.no_grad():
        mid = _model(pe_config("p_rope", p=0.5))(tokens, pos)
        assert not torch.allclose(mid, _model(pe_config("rope"))(tokens, pos))
        assert not torch.allclose(mid, _model(pe_config("nope"))(tokens, pos))


@pytest.mark.parametrize("head_dim,p,base", [(512, 0.25, 1e6), (32, 0.75, 1e4), (64, 0.5, 5e5), (16, 0.3, 1e4)])
def test_frequencies_match_hf_proportional(head_dim, p, base):
    cfg = LlamaConfig(hidden_size=2 * head_dim, num_attention_heads=2, head_dim=head_dim,
                      rope_parameters={"rope_type": "proportional", "rope_theta": base, "partial_rotary_factor": p})
    inv, _ = ROPE_INIT_FUNCTIONS["proportional"](cfg, "cpu")
    pe = build_pe({"name": "p_rope", "p": p, "base": base})
    pe.setup(AttentionGeometry(dim=2 * head_dim, head_dim=head_dim, n_heads=2, n_kv_heads=2, depth=1))
    plan = pe.frequency_plan(pe.prepare(Positions.sequence(1, 2)).inv_freq, 0)[0, 0]
    assert torch.equal(plan == 0, inv == 0)
    torch.testing.assert_close(plan, inv, rtol=1e-6, atol=0)


def test_pinned_gemma4_numbers():
    """head 512, p 0.25, theta 1e6: 64 of 256 pairs rotate, inv[63] = 1e6^(-126/512) (lm_variants.md §5)."""
    pe = build_pe({"name": "p_rope", "p": 0.25, "base": 1e6})
    pe.setup(AttentionGeometry(dim=1024, head_dim=512, n_heads=2, n_kv_heads=2, depth=1))
    plan = pe.frequency_plan(pe.inv_freq, 0)[0, 0]
    assert int((plan != 0).sum()) == 64 and bool((plan[64:] == 0).all())
    assert plan[63].item() == pytest.approx(1e6 ** (-126 / 512), rel=1e-6)  # = 0.0333762 (7 s.f.)


def test_lowest_frequencies_are_the_ones_removed():
    pe = build_pe({"name": "p_rope", "p": 0.5}).setup(AttentionGeometry(64, 32, 2, 2, 1))
    plan = pe.frequency_plan(pe.inv_freq, 0)[0, 0]
    assert torch.equal(plan[:8], pe.inv_freq[:8]) and bool((plan[8:] == 0).all())


def test_composes_with_a_scaling():
    pe = build_pe({"name": "p_rope", "p": 0.5, "scaling": {"name": "linear", "factor": 4.0}})
    pe.setup(AttentionGeometry(64, 32, 2, 2, 1))
    plan = pe.frequency_plan(pe.prepare(Positions.sequence(1, 2)).inv_freq, 0)[0, 0]
    torch.testing.assert_close(plan[:8], pe.inv_freq[:8] / 4)


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_p_outside_unit_interval_is_an_error(p):
    with pytest.raises(ValueError, match=rf"pe.p in \[0, 1\].*{p}"):
        build_pe({"name": "p_rope", "p": p})
