"""HiRoPE (rope_lab/pe/variants/text/hirope.py): the rotation equals transformers' ``apply_rotary_pos_emb`` with tables
whose fast pairs read the token index and slow pairs the unit index; split=1 is RoPE, split=0 is RoPE on unit indices;
1-D positions get units of ``segment`` tokens; App. A's reliable-split numbers; scores depend only on the relative
(token, unit) distance; clear errors."""

from __future__ import annotations

import pytest
import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from rope_lab.pe import Positions
from rope_lab.pe.variants.text.hirope import reliable_split

from .helpers import build


def _qk(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(1, 2, n, 16, generator=g, dtype=torch.float64),
            torch.randn(1, 2, n, 16, generator=g, dtype=torch.float64))


def _attend(pe, coords, q, k, v, cache=None):
    state = pe.prepare(Positions(coords=coords))
    return pe.attend(q, k, v, state=state, layer=0, causal=True, cache=cache)


def _rotate(pe, coords, q, k):
    return pe.rotate(q, k, pe.prepare(Positions(coords=coords)), 0)


def test_equals_transformers_with_two_level_tables():
    pe = build("hirope", split=0.5, kernel="eager")
    token = torch.tensor([0.0, 1, 2, 7, 50, 51, 300, 4000])
    unit = torch.tensor([0.0, 0, 0, 1, 2, 2, 3, 9])
    q, k = _qk(len(token))
    inv_freq = (1.0 / 10000.0 ** (torch.arange(0, 16, 2, dtype=torch.int64).float() / 16)).double()  # HF's fp32 init
    level = torch.where(torch.arange(8) < 4, token[:, None], unit[:, None]).double()  # (N, P): 4 fast, 4 slow
    ang = torch.cat([level * inv_freq, level * inv_freq], -1)[None]  # HF's (B, N, D) layout
    want = apply_rotary_pos_emb(q, k, ang.cos(), ang.sin())
    got = _rotate(pe, torch.stack([token, unit], -1)[None], q, k)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_split_one_is_rope_and_split_zero_is_rope_on_units():
    token, unit = torch.arange(12.0), torch.arange(12.0) // 5
    q, k = _qk(12, seed=1)
    rope = build("rope", kernel="eager")
    hier = torch.stack([token, unit], -1)[None]
    for a, b in zip(_rotate(build("hirope", split=1.0, kernel="eager"), hier, q, k), _rotate(rope, token[None, :, None], q, k)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for a, b in zip(_rotate(build("hirope", split=0.0, kernel="eager"), hier, q, k), _rotate(rope, unit[None, :, None], q, k)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_token_indices_get_units_of_segment_tokens():
    pe = build("hirope", segment=4, kernel="eager")
    token = torch.arange(3.0, 14.0)
    q, k = _qk(len(token), seed=2)
    one_axis = _rotate(pe, token[None, :, None], q, k)
    two_axes = _rotate(pe, torch.stack([token, token // 4], -1)[None], q, k)
    for a, b in zip(one_axis, two_axes):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_scores_depend_only_on_token_and_unit_distances():
    pe = build("hirope", kernel="eager")
    coords = torch.tensor([[0.0, 0], [5, 0], [9, 1], [40, 3], [41, 3]])[None]
    q, k = _qk(5, seed=3)
    scores = lambda c: (lambda r: r[0] @ r[1].transpose(-1, -2))(_rotate(pe, c, q, k))  # noqa: E731
    torch.testing.assert_close(scores(coords), scores(coords + torch.tensor([1000.0, 17.0])), rtol=1e-9, atol=1e-9)


def test_reliable_split_matches_appendix_a():
    """Paper App. A: 4096 -> 0.70 (90.05 of 128 dims); 2048 -> 0.63 (40.21 of 64, 80.42 of 128)."""
    assert reliable_split(4096) * 128 == pytest.approx(90.05, abs=0.01)
    assert reliable_split(2048) * 64 == pytest.approx(40.21, abs=0.01)
    assert reliable_split(2048) * 128 == pytest.approx(80.42, abs=0.01)


@pytest.mark.parametrize(("override", "message"), [
    ({"split": 1.5}, "HiRoPE needs pe.split in [0, 1]"),
    ({"segment": 0}, "HiRoPE needs pe.segment >= 1"),
    ({"window": -1}, "HiRoPE needs pe.window >= 0"),
])
def test_bad_config_is_a_clear_error(override, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        build("hirope", **override)


def test_three_axis_positions_are_refused():
    with pytest.raises(ValueError, match="pe=hirope encodes 1..2 position axes"):
        build("hirope").check_compatible(3, causal=True)


def _hf_rotated(x, level_fast, level_slow):
    """x rotated by transformers' ``apply_rotary_pos_emb``: 4 fast pairs at level_fast, 4 slow at level_slow."""
    inv_freq = (1.0 / 10000.0 ** (torch.arange(0, 16, 2, dtype=torch.int64).float() / 16)).double()
    level = torch.where(torch.arange(8) < 4, level_fast[:, None], level_slow[:, None]).double()
    ang = torch.cat([level * inv_freq, level * inv_freq], -1)[None]
    return apply_rotary_pos_emb(x, x, ang.cos(), ang.sin())[0]


@pytest.mark.parametrize("offset", [None, 2.0])
def test_window_uses_rope_near_and_offset_units_far_as_a_brute_force_per_pair_computation(offset):
    token = torch.tensor([0.0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    unit = token // 3
    window = 4
    pe = build("hirope", split=0.5, window=window, window_offset=offset, kernel="eager")
    q, k = _qk(len(token), seed=4)
    v = torch.randn(1, 2, len(token), 16, dtype=torch.float64)
    shift = window - 1 if offset is None else offset
    near_q, near_k = _hf_rotated(q, token, token), _hf_rotated(k, token, token)
    far_q, far_k = _hf_rotated(q, token, unit + shift), _hf_rotated(k, token, unit)
    logits = torch.empty(1, 2, len(token), len(token), dtype=torch.float64)
    for i in range(len(token)):
        for j in range(len(token)):
            a, b = (near_q, near_k) if abs(i - j) < window else (far_q, far_k)
            logits[..., i, j] = (a[..., i, :] * b[..., j, :]).sum(-1) / 4.0 if j <= i else float("-inf")
    want = logits.softmax(-1) @ v
    got = _attend(pe, torch.stack([token, unit], -1)[None], q, k, v)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_a_window_longer_than_the_sequence_is_rope_attention():
    token = torch.arange(9.0)
    q, k = _qk(9, seed=5)
    v = torch.randn(1, 2, 9, 16, dtype=torch.float64)
    got = _attend(build("hirope", window=64, kernel="eager"), torch.stack([token, token // 2], -1)[None], q, k, v)
    want = _attend(build("rope", kernel="eager"), token[None, :, None], q, k, v)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_windowed_kv_cache_decoding_equals_the_parallel_pass():
    from rope_lab.pe import KVCache

    pe = build("hirope", window=3, segment=2, kernel="eager")
    token = torch.arange(8.0)
    q, k = _qk(8, seed=6)
    v = torch.randn(1, 2, 8, 16, dtype=torch.float64)
    full = _attend(pe, token[None, :, None], q, k, v)
    cache = KVCache(1)
    steps = [_attend(pe, token[None, :5, None], q[..., :5, :], k[..., :5, :], v[..., :5, :], cache)]
    for t in range(5, 8):
        s = slice(t, t + 1)
        steps.append(_attend(pe, token[None, s, None], q[..., s, :], k[..., s, :], v[..., s, :], cache))
    torch.testing.assert_close(torch.cat(steps, -2), full, rtol=1e-10, atol=1e-10)
