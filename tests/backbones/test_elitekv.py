"""backbone.attention=elitekv (J-LRD, arXiv 2503.01586) and the conversion from a RoPE model: with every chunk kept
and a full-rank latent the converted model's logits equal the original's (float64), for any RoPElite selection the
full-rank J-LRD is lossless, a truncated latent is the Eckart-Young optimum; the cache holds only c_kv and the
rotated rope keys, and incremental decoding equals a parallel pass; clear errors."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from rope_lab.analysis.jlrd import convert_model
from rope_lab.backbones.decoder import Decoder, DecoderConfig
from rope_lab.pe import Positions, available_pes, build_pe
from rope_lab.pe.variants.text.elitekv import save_ranking
from tests.pe.helpers import example_positions, parallel_and_incremental, pe_config

CFG = DecoderConfig(vocab_size=64, dim=32, depth=2, n_heads=2, n_kv_heads=2, mlp_hidden=64, init_std=0.2)


def _decoder(pe_cfg: dict, seed: int = 0, **changes) -> Decoder:
    torch.manual_seed(seed)
    return Decoder(dataclasses.replace(CFG, **changes), build_pe({"kernel": "eager", **pe_cfg})).double().eval()


def _selection(tmp_path, rounds=3, seed=0) -> str:
    g = torch.Generator().manual_seed(seed)
    order = torch.stack([torch.stack([torch.randperm(8, generator=g) for _ in range(2)]) for _ in range(2)])
    return str(save_ranking(tmp_path / "sel.pt", order, rounds))


def _logits(model, n=12, start=5):
    torch.manual_seed(1)
    tokens = torch.randint(0, 64, (2, n))
    with torch.no_grad():
        return model(tokens, Positions.sequence(2, n, start=start))


@pytest.mark.parametrize("n_kv_heads", [2, 1])
def test_all_chunks_and_full_rank_reproduce_the_rope_model(n_kv_heads):
    source = _decoder({"name": "rope"}, n_kv_heads=n_kv_heads)
    target = _decoder({"name": "elitekv", "chunks_per_head": 8}, seed=7, attention="elitekv", elitekv_kv_dim=32)
    convert_model(source, target)
    torch.testing.assert_close(_logits(target), _logits(source), rtol=1e-10, atol=1e-10)


def test_full_rank_jlrd_is_lossless_for_any_selection(tmp_path):
    pe = {"name": "elitekv", "selection": _selection(tmp_path), "chunks_per_head": 3}
    source = _decoder(pe)  # RoPElite alone: standard attention, per-head chunks
    bound = min(32, 2 * (16 - 6 + 16))  # rank of [W_k_nope | W_v]: hidden 32 x 52 columns
    target = _decoder(pe, seed=7, attention="elitekv", elitekv_kv_dim=bound)
    convert_model(source, target)
    torch.testing.assert_close(_logits(target), _logits(source), rtol=1e-10, atol=1e-10)


def test_truncated_latent_is_the_best_rank_k_approximation(tmp_path):
    """Eckart-Young: ||W_kv - kv_b kv_a||_F^2 equals the sum of the discarded squared singular values."""
    pe = {"name": "elitekv", "selection": _selection(tmp_path), "chunks_per_head": 3}
    source, target = _decoder(pe), _decoder(pe, attention="elitekv", elitekv_kv_dim=10)
    convert_model(source, target)
    src, dst = source.blocks[1].attn, target.blocks[1].attn
    w_k = src.k_proj.weight.view(2, 16, 32)
    nope = torch.stack([w_k[h, dst.nope_idx[h]] for h in range(2)])  # (H, D - 2r, hidden), ascending channels
    w_kv = torch.cat([nope, src.v_proj.weight.view(2, 16, 32)], dim=1).reshape(-1, 32)
    approx = dst.kv_b_proj.weight @ dst.kv_a_proj.weight
    s = torch.linalg.svdvals(w_kv)
    torch.testing.assert_close((w_kv - approx).pow(2).sum(), s[10:].pow(2).sum(), rtol=1e-8, atol=1e-10)
    rope = torch.stack([w_k[h, dst.rope_idx[h]] for h in range(2)]).reshape(-1, 32)
    assert torch.equal(dst.k_rope_proj.weight, rope)  # the official layout: each head's rope rows, ascending


def test_kv_cache_holds_latent_and_rotated_rope_keys_and_decoding_equals_parallel(tmp_path):
    pe = {"name": "elitekv", "selection": _selection(tmp_path), "chunks_per_head": 3}
    model = _decoder(pe, attention="elitekv", elitekv_kv_dim=12)
    tokens = torch.randint(0, 64, (2, 10))
    pos = Positions.sequence(2, 10, start=3)
    full, decoded, cache = parallel_and_incremental(model, tokens, pos, 6)
    torch.testing.assert_close(decoded, full, rtol=1e-10, atol=1e-10)
    assert cache.length == 10
    for layer in range(2):  # per token and layer: H * 2r rotated key channels + kv_dim latent (12 + 12 of 64)
        assert cache.keys[layer].shape == (2, 2, 10, 6) and cache.values[layer].shape == (2, 1, 10, 12)


def test_cached_rope_keys_are_rotated_nope_channels_position_free(tmp_path):
    """The same token at two positions: cached rope keys differ (rotated), the cached latent is identical."""
    model = _decoder({"name": "elitekv", "chunks_per_head": 2}, attention="elitekv", elitekv_kv_dim=8)
    caches = []
    for start in (0, 40):
        cache = model.new_cache()
        with torch.no_grad():
            model(torch.full((1, 1), 5), Positions.sequence(1, 1, start=start), cache)
        caches.append(cache)
    assert torch.equal(caches[0].values[0], caches[1].values[0])
    assert not torch.allclose(caches[0].keys[0], caches[1].keys[0])


def test_gradients_reach_every_parameter():
    model = _decoder({"name": "elitekv", "chunks_per_head": 2}, attention="elitekv", elitekv_kv_dim=8).train()
    model(torch.randint(0, 64, (2, 8)), Positions.sequence(2, 8)).logsumexp(-1).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_other_rotary_pes_split_keys_by_their_own_free_channels():
    model = _decoder({"name": "p_rope", "p": 0.5}, attention="elitekv", elitekv_kv_dim=8)
    attn = model.blocks[0].attn
    assert attn.n_rope == 8 and attn.rope_idx[0].tolist() == [0, 1, 2, 3, 8, 9, 10, 11]


ROTARY = [n for n in available_pes() if build_pe(pe_config(n)).is_rotary]


@pytest.mark.parametrize("name", ROTARY)
def test_every_rotary_pe_decodes_incrementally_as_in_parallel(name):
    """The latent-cache view works behind any rotary variant's ``attend`` (its own defaults and example positions)."""
    torch.manual_seed(0)
    cfg = dataclasses.replace(CFG, init_std=0.02, attention="elitekv", elitekv_kv_dim=8)
    model = Decoder(cfg, build_pe(pe_config(name))).eval()
    tokens = torch.randint(0, 64, (2, 10))
    pos = example_positions(model.pe, 2, 10)
    full, decoded, cache = parallel_and_incremental(model, tokens, pos, 6)
    torch.testing.assert_close(decoded, full, rtol=1e-4, atol=1e-4)


def test_errors_name_the_value_and_the_choices(tmp_path):
    with pytest.raises(ValueError, match=r"pe=nope is not rotary. Choose one of \["):
        Decoder(dataclasses.replace(CFG, attention="elitekv"), build_pe({"name": "nope"}))
    with pytest.raises(ValueError, match=r"elitekv_kv_dim must be >= 1 .* got 0"):
        _decoder({"name": "elitekv"}, attention="elitekv", elitekv_kv_dim=0)
    with pytest.raises(ValueError, match=r"unknown backbone.attention 'elite'; choose one of \[.*'elitekv'"):
        _decoder({"name": "elitekv"}, attention="elite")
    source = _decoder({"name": "rope"})
    target = _decoder({"name": "elitekv", "chunks_per_head": 4}, attention="elitekv", elitekv_kv_dim=33)
    with pytest.raises(ValueError, match=r"elitekv_kv_dim=33 exceeds the rank bound 32 .* choose 1..32"):
        convert_model(source, target)
    with pytest.raises(ValueError, match=r"converts standard attention \(backbone.attention=mha\)"):
        convert_model(target, target)
