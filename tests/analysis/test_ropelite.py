"""RoPElite greedy selection (rope_lab/analysis/ropelite.py) against a brute-force evaluation of the official metric
(build q', k' with the chosen chunks rotated, mean |q'k'^T - q^R k^R^T| / sqrt(d) over the causally masked L x L
logits), the zero score of chunks already kept, and a ranking that pe=elitekv loads."""

from __future__ import annotations

import math

import pytest
import torch

from rope_lab.analysis.ropelite import attention_qk, chunk_deltas, greedy_order, ropelite_ranking, round_scores
from rope_lab.backbones.decoder import Decoder, DecoderConfig
from rope_lab.pe import build_pe
from rope_lab.pe.variants.text.elitekv import pair_channels, save_ranking

P = 8


def _model(n_kv_heads=2):
    torch.manual_seed(0)
    cfg = DecoderConfig(vocab_size=64, dim=32, depth=2, n_heads=2, n_kv_heads=n_kv_heads, mlp_hidden=64, init_std=0.3)
    return Decoder(cfg, build_pe({"name": "rope", "kernel": "eager"})).double().eval()


def _brute_force(q, k, qr, kr, chosen: list[set[int]]) -> torch.Tensor:
    """(H,) the official distance with the chunks ``chosen[h]`` of head h rotated, averaged over the batch."""
    n, d = q.shape[-2], q.shape[-1]
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    out = []
    for h, chunks in enumerate(chosen):
        qq, kk = q[:, h].clone(), k[:, h].clone()
        for c in chunks:
            for ch in (c, c + P):  # half layout: chunk c is the pair (c, c + d/2)
                qq[..., ch], kk[..., ch] = qr[:, h, :, ch], kr[:, h, :, ch]
        diff = (qq @ kk.transpose(-1, -2) - qr[:, h] @ kr[:, h].transpose(-1, -2)) / math.sqrt(d)
        out.append(diff.masked_fill(~causal, 0.0).abs().mean(dim=(-1, -2)).mean())
    return torch.stack(out)


@pytest.fixture(scope="module")
def calibration():
    model = _model()
    tokens = torch.randint(0, 64, (3, 10), generator=torch.Generator().manual_seed(0))
    return model, tokens, attention_qk(model, tokens)


def test_round_one_scores_and_pick_match_brute_force(calibration):
    _, _, layers = calibration
    qk = layers[1]
    deltas = [chunk_deltas(*qk, pair_channels(P, "half"))]
    scores = round_scores(deltas, torch.zeros(2, P, dtype=torch.bool))
    brute = torch.stack([_brute_force(*qk, [{c}, {c}]) for c in range(P)], dim=-1)
    torch.testing.assert_close(scores, brute, rtol=1e-10, atol=1e-12)
    order, _ = greedy_order(deltas, 1)
    assert order[:, 0].tolist() == brute.argmin(-1).tolist()


def test_later_round_scores_match_brute_force_and_kept_chunks_score_zero(calibration):
    _, _, layers = calibration
    qk = layers[0]
    deltas = [chunk_deltas(*qk, pair_channels(P, "half"))]
    kept = [{1, 4}, {0, 6}]
    selected = torch.zeros(2, P, dtype=torch.bool)
    for h, chunks in enumerate(kept):
        selected[h, list(chunks)] = True
    scores = round_scores(deltas, selected)
    for c in range(P):
        brute = _brute_force(*qk, [kept[h] | {c} for h in range(2)])
        for h in range(2):
            expect = 0.0 if c in kept[h] else brute[h].item()
            assert scores[h, c].item() == pytest.approx(expect, rel=1e-10, abs=1e-12)
    # the metric itself vanishes once every chunk is rotated (q' = q^R): the last candidate scores 0
    assert _brute_force(*qk, [set(range(P))] * 2).abs().max() < 1e-12
    last = round_scores(deltas, torch.arange(P).expand(2, P) != 3)
    assert last[:, 3].abs().max() < 1e-12


def test_greedy_order_is_a_permutation_starting_with_the_picks(calibration):
    _, _, layers = calibration
    deltas = [chunk_deltas(*layers[0], pair_channels(P, "half"))]
    order, _ = greedy_order(deltas, 3)
    assert all(sorted(row.tolist()) == list(range(P)) for row in order)
    first, _ = greedy_order(deltas, 1)
    assert torch.equal(order[:, 0], first[:, 0])  # greedy: the first pick does not depend on the later rounds
    with pytest.raises(ValueError, match=r"rounds must be in 1..8 .* got 9"):
        greedy_order(deltas, 9)


def test_batches_average_like_one_batch(calibration):
    model, tokens, _ = calibration
    pairs = pair_channels(P, "half")
    whole = [chunk_deltas(*attention_qk(model, tokens)[0], pairs)]
    split = [chunk_deltas(*attention_qk(model, t)[0], pairs) for t in tokens.split([1, 2])]
    none = torch.zeros(2, P, dtype=torch.bool)
    torch.testing.assert_close(round_scores(split, none), round_scores(whole, none), rtol=1e-10, atol=1e-12)


def test_grouped_query_model_and_ranking_loads_into_pe(tmp_path):
    model = _model(n_kv_heads=1)
    order = ropelite_ranking(model, [torch.randint(0, 64, (2, 10))], rounds=2)
    assert order.shape == (2, 2, P)
    path = save_ranking(tmp_path / "sel.pt", order, 2)
    pe = build_pe({"name": "elitekv", "selection": str(path), "chunks_per_head": 2})
    from rope_lab.pe import AttentionGeometry

    pe.setup(AttentionGeometry(dim=32, head_dim=16, n_heads=2, n_kv_heads=2, depth=2))
    for layer in range(2):
        assert pe.selected_chunks(layer).tolist() == order[layer, :, :2].sort(-1).values.tolist()
