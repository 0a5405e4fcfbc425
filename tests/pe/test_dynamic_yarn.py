"""pe/scaling=dynamic_yarn (YaRN paper, Dynamic-YaRN; jquesnelle/yarn LlamaDynamicYaRNScaledRotaryEmbedding):
no scaling at L <= L0 (bit for bit), static YaRN with factor k at L = k L0, and a hand-written float64 version of
the reference formula at a few lengths. Bad input, the KV-cache modes and the registry property checks are in
test_scaling.py with the other scalings.
"""

from __future__ import annotations

import math

import pytest
import torch

from rope_lab.pe import AttentionGeometry, Positions, build_pe
from rope_lab.pe.frequencies import rope_inv_freq

# (head_dim, base, original length L0)
SETTINGS = [(128, 1e4, 4096), (64, 5e5, 512), (32, 1e4, 64), (16, 500.0, 16)]


def _pe(scaling: dict, head_dim: int, base: float):
    pe = build_pe({"name": "rope", "base": base, "scaling": scaling})
    return pe.setup(AttentionGeometry(dim=2 * head_dim, head_dim=head_dim, n_heads=2, n_kv_heads=2, depth=1))


def _dyn(l0: int, **extra) -> dict:
    return {"name": "dynamic_yarn", "original_max_position_embeddings": l0, **extra}


def reference(dim: int, base: float, l0: int, seq_len: int, max_pos: int | None = None, beta_fast: float = 32.0,
              beta_slow: float = 1.0) -> tuple[list[float], float]:
    """The reference's (inv_freq, mscale) after a forward of ``seq_len`` tokens, written out per pair in float64:
    its cache starts at ``max_pos`` (L0; ``finetuned=True``: YaRN with max_pos / L0) and is rebuilt with
    ``scale = seq_len / L0`` once seq_len exceeds it."""
    max_pos = max_pos or l0
    if seq_len <= max_pos:
        if max_pos == l0:
            return [base ** (-2 * i / dim) for i in range(dim // 2)], 1.0
        scale = max_pos / l0
    else:
        scale = seq_len / l0

    def corr(n_rot):
        return dim * math.log(l0 / (n_rot * 2 * math.pi)) / (2 * math.log(base))

    low, high = max(math.floor(corr(beta_fast)), 0), min(math.ceil(corr(beta_slow)), dim - 1)
    high = high + 0.001 if low == high else high
    inv = []
    for i in range(dim // 2):
        pos_freq = base ** (2 * i / dim)
        keep = 1 - min(max((i - low) / (high - low), 0.0), 1.0)
        inv.append(1 / (scale * pos_freq) * (1 - keep) + 1 / pos_freq * keep)
    return inv, (1.0 if scale <= 1 else 0.1 * math.log(scale) + 1.0)


@pytest.mark.parametrize("head_dim,base,l0", SETTINGS)
def test_at_or_below_the_original_length_it_is_no_scaling_bit_for_bit(head_dim, base, l0):
    dyn, none = _pe(_dyn(l0), head_dim, base), _pe({"name": "none"}, head_dim, base)
    g = torch.Generator().manual_seed(0)
    q, k = (torch.randn(1, 2, 5, head_dim, generator=g) for _ in range(2))
    for pos in (Positions.sequence(1, 1), Positions.sequence(1, 5, start=l0 // 3),
                Positions.sequence(1, 5, start=l0 - 5)):
        a, b = dyn.prepare(pos), none.prepare(pos)
        assert torch.equal(a.inv_freq, b.inv_freq) and float(a.attention_factor) == 1.0
        for ta, tb in zip(a.rotation, b.rotation):
            assert torch.equal(ta, tb)
        for ra, rb in zip(dyn.rotate(q, k, a, 0), none.rotate(q, k, b, 0)):
            assert torch.equal(ra, rb)


@pytest.mark.parametrize("head_dim,base,l0", SETTINGS)
@pytest.mark.parametrize("k", [1.5, 2.0, 4.0, 16.0])
def test_at_k_times_the_original_length_it_is_static_yarn_with_factor_k(head_dim, base, l0, k):
    n = int(k * l0)
    dyn, static = _pe(_dyn(l0), head_dim, base), _pe({"name": "yarn", "factor": k,
                                                      "original_max_position_embeddings": l0}, head_dim, base)
    a, b = dyn.prepare(Positions.sequence(1, n)), static.prepare(Positions.sequence(1, n))
    assert torch.equal(a.inv_freq, b.inv_freq)
    assert float(a.attention_factor) == pytest.approx(b.attention_factor, rel=1e-14)
    theta = rope_inv_freq(head_dim, base, torch.float64)  # and in float64 (the precision tests' path)
    got, got_att = dyn.scaling.rewrite(theta, torch.tensor(n))
    want, want_att = static.scaling.rewrite(theta)
    assert torch.equal(got, want) and float(got_att) == pytest.approx(want_att, rel=1e-14)


@pytest.mark.parametrize("head_dim,base,l0", SETTINGS)
@pytest.mark.parametrize("length", ["l0-1", "l0", "l0+1", "1.5*l0", "3*l0+7", "10*l0"])
@pytest.mark.parametrize("finetuned", [None, 4])
def test_matches_the_reference_formula_in_float64(head_dim, base, l0, length, finetuned):
    n = {"l0-1": l0 - 1, "l0": l0, "l0+1": l0 + 1, "1.5*l0": 3 * l0 // 2, "3*l0+7": 3 * l0 + 7,
         "10*l0": 10 * l0}[length]
    extra = {} if finetuned is None else {"factor": float(finetuned)}
    dyn = _pe(_dyn(l0, **extra), head_dim, base)
    got, got_att = dyn.scaling.rewrite(rope_inv_freq(head_dim, base, torch.float64), torch.tensor(n))
    inv, att = reference(head_dim, base, l0, n, None if finetuned is None else finetuned * l0)
    torch.testing.assert_close(got, torch.tensor(inv, dtype=torch.float64), rtol=1e-13, atol=0)
    assert float(got_att) == pytest.approx(att, rel=1e-14)


def test_temperature_follows_the_length_and_an_explicit_attention_factor_is_verbatim():
    dyn = _pe(_dyn(64), 32, 1e4)
    factors = [float(dyn.prepare(Positions.sequence(1, n)).attention_factor) for n in (64, 128, 256, 1024)]
    assert factors == pytest.approx([1.0, 0.1 * math.log(2) + 1, 0.1 * math.log(4) + 1, 0.1 * math.log(16) + 1])
    fixed = _pe(_dyn(64, attention_factor=1.0), 32, 1e4)  # NTK-by-parts frequencies without the temperature
    assert float(fixed.prepare(Positions.sequence(1, 1024)).attention_factor) == 1.0
