"""What ReRoPE, SelfExtend and LM-Infinite share (rope_lab/pe/variants/long_context/extension.py): they load a pe=rope
model unchanged and equal it while the context fits in the window; KV-cache decoding (grouped-query heads, chunked
prefill) equals the parallel pass; packed documents are independent; the log-n query scaling matches the official
formula; misuse (non-causal, a non-token axis, a bad window) is refused with the value and the valid range."""

from __future__ import annotations

import math

import pytest
import torch

from rope_lab.backbones.decoder import Decoder, DecoderConfig
from rope_lab.pe import KVCache, Positions, build_pe

from .extension_reference import attend, pairwise_attention, qkv
from .helpers import build, pe_config

NAMES = ["rerope", "self_extend", "lm_infinite"]
SMALL = {"rerope": {"window": 3}, "self_extend": {"window": 3, "group": 2}, "lm_infinite": {"window": 3, "n_global": 1}}


def _decoder(pe_cfg: dict) -> Decoder:
    torch.manual_seed(0)
    cfg = DecoderConfig(vocab_size=64, dim=32, depth=2, n_heads=4, n_kv_heads=2, mlp_hidden=64, max_tokens=256)
    return Decoder(cfg, build_pe(pe_cfg)).eval()


@pytest.mark.parametrize("name", NAMES)
def test_loads_a_rope_model_unchanged_and_equals_it_within_the_window(name):
    rope = _decoder(pe_config("rope"))
    extended = _decoder(pe_config(name, window=32, train_length=None))
    extended.load_state_dict(rope.state_dict(), strict=True)  # no parameter added, none missing
    tokens, positions = torch.randint(0, 64, (2, 20)), Positions.sequence(2, 20)
    with torch.no_grad():
        torch.testing.assert_close(extended(tokens, positions), rope(tokens, positions), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(_decoder(pe_config(name, **SMALL[name]))(tokens, positions), rope(tokens, positions))


@pytest.mark.parametrize("name", NAMES)
def test_grouped_query_kv_cache_decoding_equals_the_parallel_pass(name):
    from .helpers import parallel_and_incremental

    model = _decoder(pe_config(name, **SMALL[name], kernel="eager"))
    tokens = torch.randint(0, 64, (2, 14))
    full, decoded, _ = parallel_and_incremental(model, tokens, Positions.sequence(2, 14), 5, 9)
    torch.testing.assert_close(decoded, full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_packed_documents_attend_only_within_themselves(name):
    pe = build(name, **SMALL[name], kernel="eager")
    q, k, v = qkv(11, seed=7)
    starts = torch.tensor([0.0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4])  # two documents, positions restart
    packed = Positions(coords=starts[None, :, None], segment=torch.tensor([[0] * 6 + [1] * 5]))
    got = pe.attend(q, k, v, state=pe.prepare(packed), layer=0, causal=True)
    first = attend(pe, starts[:6].tolist(), q[..., :6, :], k[..., :6, :], v[..., :6, :])
    second = attend(pe, starts[6:].tolist(), q[..., 6:, :], k[..., 6:, :], v[..., 6:, :])
    torch.testing.assert_close(got, torch.cat([first, second], -2), rtol=1e-10, atol=1e-10)


def test_log_scaled_queries_follow_the_official_formula():
    """bojone/rerope and LongLM scale query i by max(1, log(p_i + 1) / log L) before rotating it."""
    positions = [float(p) for p in range(12)]
    q, k, v = qkv(len(positions), seed=8)
    pe = build("rerope", window=4, log_scale_length=5, kernel="eager")
    want = pairwise_attention(q, k, v, positions, lambda i, j: min(i - j, 4),
                              query_scale=lambda p: max(1.0, math.log(p + 1) / math.log(5)))
    torch.testing.assert_close(attend(pe, positions, q, k, v), want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", NAMES)
def test_decoding_with_a_cache_keeps_positions_and_both_rotations(name):
    pe = build(name, **SMALL[name], kernel="eager")
    q, k, v = qkv(9, seed=9)
    positions = [float(p) for p in range(9)]
    cache = KVCache(1)
    steps = [attend(pe, positions[:4], q[..., :4, :], k[..., :4, :], v[..., :4, :], cache)]
    steps += [attend(pe, positions[t : t + 1], q[..., t : t + 1, :], k[..., t : t + 1, :], v[..., t : t + 1, :], cache)
              for t in range(4, 9)]
    torch.testing.assert_close(torch.cat(steps, -2), attend(pe, positions, q, k, v), rtol=1e-10, atol=1e-10)
    assert cache.keys[0].shape == cache.pe_state[f"{name}/far_keys/0"].shape == k.shape  # both rotations kept


@pytest.mark.parametrize("name", NAMES)
def test_non_causal_and_non_token_tasks_are_refused(name):
    pe = build(name)
    with pytest.raises(ValueError, match=rf"pe={name} only works with causal attention; compatible variants: "):
        pe.check_compatible(1, causal=False)
    with pytest.raises(ValueError, match=rf"pe={name} encodes 1..1 position axes \('token',\), but the task builds "
                                         r"2-axis positions"):
        pe.check_compatible(2, causal=True)
    with pytest.raises(ValueError, match=rf"pe={name} reads position axes as \('token',\), but the task's axes are"):
        pe.check_compatible(1, causal=True, axes=("t",))
    with pytest.raises(ValueError, match=rf"pe={name} cannot encode this task's interleaved text/video positions"):
        pe.check_compatible(4, causal=True, multimodal=True)
    q, k, v = qkv(4)
    with pytest.raises(ValueError, match=rf"pe={name} only works with causal attention"):
        pe.attend(q, k, v, state=pe.prepare(Positions.sequence(1, 4)), layer=0, causal=False)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("override,message", [
    ({"window": 0}, r"needs pe.window >= 1 tokens; got window=0"),
    ({"window": 300, "train_length": 128},
     r"pe.window=300 is larger than the training context train_length=128; choose window in 1..128"),
    ({"train_length": 0}, r"needs pe.train_length >= 1 tokens \(or null: unknown\); got train_length=0"),
    ({"log_scale_length": 1}, r"needs pe.log_scale_length = 0 \(off\) or >= 2 .*got log_scale_length=1"),
])
def test_bad_windows_are_refused(name, override, message):
    with pytest.raises(ValueError, match=rf"pe={name}.*{message}"):
        build(name, **override)


def test_a_scaling_that_re_rotates_the_cache_is_refused():
    scaling = {"name": "dynamic_ntk", "factor": 2.0, "original_max_position_embeddings": 128, "kv_cache": "consistent"}
    with pytest.raises(ValueError, match=r"pe=rerope caches keys rotated .*use pe.scaling.kv_cache=hf"):
        build_pe(pe_config("rerope", scaling=scaling))
    build_pe(pe_config("rerope", scaling={**scaling, "kv_cache": "hf"}))  # keys keep the rotation they were cached with
