"""Frequency usage (Barbero et al. 2025): per-chunk q/k norms captured from a model without backbone changes."""

from __future__ import annotations

import torch

from rope_lab.analysis.frequency_usage import capture_qk, chunk_norms, frequency_usage, plot_usage
from rope_lab.backbones.decoder import Decoder, DecoderConfig
from rope_lab.pe import Positions, build_pe


def test_chunk_norms_pair_the_right_channels():
    x = torch.zeros(1, 1, 2, 8)
    x[..., 0], x[..., 4] = 3.0, 4.0  # half layout: pair 0 = channels (0, 4)
    assert chunk_norms(x, 4, "half")[0].tolist() == [5.0, 0.0, 0.0, 0.0]
    y = torch.zeros(1, 1, 2, 8)
    y[..., 2], y[..., 3] = 3.0, 4.0  # interleaved: pair 1 = channels (2, 3)
    assert chunk_norms(y, 4, "interleaved")[0].tolist() == [0.0, 5.0, 0.0, 0.0]


def test_usage_from_a_model_and_heatmap(tmp_path):
    torch.manual_seed(0)
    model = Decoder(DecoderConfig(vocab_size=32, dim=32, depth=3, n_heads=2, n_kv_heads=1, mlp_hidden=32),
                    build_pe({"name": "p_rope", "p": 0.5}))
    tokens = torch.randint(0, 32, (2, 10))
    usage = frequency_usage(model, [(tokens, Positions.sequence(2, 10))])
    assert usage["q"].shape == (3, 2, 8) and usage["k"].shape == (3, 1, 8)
    with capture_qk(model.pe) as recs:
        model(tokens, Positions.sequence(2, 10))
    q0 = recs[0][1]
    torch.testing.assert_close(usage["q"][0], chunk_norms(q0, 8))
    assert "rotate" not in vars(model.pe)  # the hook is removed
    assert plot_usage(usage, tmp_path / "u.png").stat().st_size > 0
