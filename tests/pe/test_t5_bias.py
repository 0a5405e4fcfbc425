"""T5 relative position bias (rope_lab/pe/variants/bias/t5_bias.py): buckets against HF
``T5Attention._relative_position_bucket`` (the port of tensorflow/mesh) in both modes and the mesh test vectors; the
bias against HF ``compute_bias`` for an encoder and a decoder with a cache offset, with the same learned table; one
table shared by the layers (or one per layer); chunked KV-cache decoding; clear errors for bucket counts, distances and
directions."""

from __future__ import annotations

import pytest
import torch
from transformers import T5Config
from transformers.models.t5.modeling_t5 import T5Attention

from rope_lab.backbones.decoder import Decoder, DecoderConfig
from rope_lab.pe import KVCache, Positions, build_pe
from rope_lab.pe.variants.bias.t5_bias import relative_position_bucket

from .helpers import build, geometry, parallel_and_incremental


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("num_buckets,max_distance", [(32, 128), (8, 20), (64, 1000), (6, 4)])
def test_buckets_equal_hf_t5(bidirectional, num_buckets, max_distance):
    relative = torch.arange(-1200, 1201)
    want = T5Attention._relative_position_bucket(relative, bidirectional, num_buckets, max_distance)
    got = relative_position_bucket(relative.float(), bidirectional, num_buckets, max_distance)
    assert torch.equal(got, want)


def test_mesh_test_vectors():
    """Pinned from tensorflow/mesh ``_relative_position_bucket`` (32 buckets, max distance 128), as listed in
    shared/reference/baselines.md section 2: the last bucket starts at 91 (bidirectional) or 113 (causal)."""
    bi = {-1: 1, -7: 7, -8: 8, -11: 8, -12: 9, -90: 14, -91: 15, 0: 0, 1: 17, 7: 23, 8: 24, 90: 30, 91: 31}
    causal = {-15: 15, -16: 16, -18: 16, -19: 17, -112: 30, -113: 31, 0: 0, 1: 0, 500: 0}
    for table, bidirectional in ((bi, True), (causal, False)):
        rel = torch.tensor(list(table), dtype=torch.float32)
        got = relative_position_bucket(rel, bidirectional, 32, 128)
        assert got.tolist() == list(table.values())


def _hf_attention(pe, decoder: bool) -> T5Attention:
    g = pe.geometry
    config = T5Config(d_model=g.dim, d_kv=g.head_dim, num_heads=g.n_heads, relative_attention_num_buckets=32,
                      relative_attention_max_distance=128, is_decoder=decoder)
    hf = T5Attention(config, has_relative_attention_bias=True)
    with torch.no_grad():
        hf.relative_attention_bias.weight.copy_(pe.table[0])
    return hf


@pytest.mark.parametrize("causal", [False, True])
def test_bias_equals_hf_compute_bias(causal):
    pe = build("t5_bias", geometry(dim=32, n_heads=4, n_kv_heads=4))
    hf = _hf_attention(pe, decoder=causal)
    n = 150  # beyond max_distance: the shared far bucket is exercised
    state = pe.prepare(Positions.sequence(1, n))
    got = pe.logit_bias(state, 0, n, n, causal=causal, x=None, cache=None)
    torch.testing.assert_close(got, hf.compute_bias(n, n), rtol=0, atol=0)


def test_decoder_rows_after_a_cache_equal_hf_with_past_seen_tokens():
    pe = build("t5_bias", geometry(dim=32, n_heads=4, n_kv_heads=4))
    hf = _hf_attention(pe, decoder=True)
    cache = KVCache(depth=2)
    pe.prepare(Positions.sequence(1, 140), cache)
    state = pe.prepare(Positions.sequence(1, 3, start=140), cache)  # 3 new tokens after 140 cached ones
    got = pe.logit_bias(state, 1, 3, 143, causal=True, x=None, cache=cache)
    torch.testing.assert_close(got, hf.compute_bias(3, 143, past_seen_tokens=140), rtol=0, atol=0)


def test_one_table_shared_by_the_layers_unless_per_layer():
    shared, own = build("t5_bias"), build("t5_bias", per_layer=True)
    assert shared.table.shape == (1, 32, 2) and own.table.shape == (2, 32, 2)
    state = own.prepare(Positions.sequence(1, 5))
    layers = [own.logit_bias(state, i, 5, 5, causal=True, x=None, cache=None) for i in range(2)]
    torch.testing.assert_close(layers[0], own.table[0][relative_position_bucket(
        -(torch.arange(5.0)[:, None] - torch.arange(5.0)[None, :]), False, 32, 128)].permute(2, 0, 1)[None])
    assert not torch.equal(layers[0], layers[1])


@pytest.mark.parametrize("direction", ["auto", "bidirectional"])
def test_chunked_decoding_equals_the_parallel_pass(direction):
    torch.manual_seed(0)
    cfg = DecoderConfig(vocab_size=64, dim=32, depth=2, n_heads=4, n_kv_heads=2, mlp_hidden=64, max_tokens=64)
    model = Decoder(cfg, build_pe({"name": "t5_bias", "num_buckets": 8, "max_distance": 12,
                                   "direction": direction})).eval()
    tokens = torch.randint(0, 64, (2, 24))  # distances beyond max_distance
    full, decoded, _ = parallel_and_incremental(model, tokens, Positions.sequence(2, 24), 5, 17)
    torch.testing.assert_close(decoded, full, rtol=1e-5, atol=1e-5)


def test_bad_input_names_the_value_and_the_valid_range():
    with pytest.raises(ValueError, match=r"even num_buckets >= 4 \(T5: 32\); got num_buckets=7"):
        build_pe({"name": "t5_bias", "num_buckets": 7})
    with pytest.raises(ValueError, match=r"even num_buckets >= 4 \(T5: 32\); got num_buckets=2"):
        build_pe({"name": "t5_bias", "num_buckets": 2})
    with pytest.raises(ValueError, match=r"max_distance > num_buckets // 2 = 16 .* got max_distance=16"):
        build_pe({"name": "t5_bias", "max_distance": 16})
    with pytest.raises(ValueError, match=r"unknown direction 'left'; choose one of \['auto', 'bidirectional', "):
        build_pe({"name": "t5_bias", "direction": "left"})
    causal_only = build_pe({"name": "t5_bias", "direction": "causal"})
    assert "needs causal attention" in causal_only.incompatibility(1, causal=False, axes=("token",))
    assert causal_only.incompatibility(1, causal=True, axes=("token",)) is None
    assert "2-axis positions" in build_pe({"name": "t5_bias"}).incompatibility(2, False, axes=("row", "col"))
