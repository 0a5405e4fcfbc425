"""The "consistent" KV-cache mode of length-dependent scalings (dynamic NTK, LongRoPE).

HF's dynamic NTK rotates each forward's keys with the base of that forward's length and caches them rotated, so
after the context grows the cache mixes keys rotated with several bases (transformers #25104, vLLM #3488;
user_reports.md "Caching"). In the consistent mode the cache holds un-rotated keys plus the raw positions of every
cached token, and each forward re-rotates all keys with the current frequencies (at the cost of re-rotating the
cache each step). Attention then never mixes rotations: in a one-layer model incremental decoding equals a parallel
forward over the whole sequence at every step; in deeper models earlier tokens' hidden states still come from the
forwards that computed them, as with any KV cache (only recomputing the prefix removes that).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rope_lab.pe.kv_cache import KVCache
from rope_lab.pe.types import Positions

_POSITIONS, _KEY_STATE = "rerotate_positions", "rerotate_key_state"


def _cat(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    if a is None or b is None:
        return None
    return torch.cat([a, b], dim=1)


def _key_state(pe, state, cache: KVCache, layer: int):
    """Positions of every cached token + the current frequencies; built once per forward (at layer 0)."""
    if layer == 0 or _KEY_STATE not in cache.pe_state:
        new = state.positions
        old = cache.pe_state.get(_POSITIONS)
        allpos = new if old is None else Positions(torch.cat([old.coords, new.coords], 1),
                                                   _cat(old.modality, new.modality), _cat(old.segment, new.segment),
                                                   dict(new.meta))
        cache.pe_state[_POSITIONS] = allpos
        cache.pe_state[_KEY_STATE] = pe.with_tables(state, allpos, pe.position_map(allpos))
    return cache.pe_state[_KEY_STATE]


def attend_rerotating(pe, q: Tensor, k: Tensor, v: Tensor, *, state, layer: int, causal: bool,
                      cache: KVCache) -> Tensor:
    """``PositionalEncoding.attend`` with un-rotated cached keys re-rotated by the current frequencies."""
    key_state = _key_state(pe, state, cache, layer)
    past = 0 if cache.keys[layer] is None else cache.keys[layer].shape[-2]
    raw_k, v = cache.append(layer, k, v)
    rq, _ = pe.rotate(q, k, state, layer)
    # rotate() takes (q, k); a zero query of the query head count keeps per-head plans and PSC shapes valid
    _, rk = pe.rotate(raw_k.new_zeros(raw_k.shape[0], q.shape[1], *raw_k.shape[2:]), raw_k, key_state, layer)
    if rk.shape[1] != rq.shape[1]:  # grouped-query attention
        rep = rq.shape[1] // rk.shape[1]
        rk, v = rk.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    mask = pe._mask(state, layer, rq.shape[-2], rk.shape[-2], past, causal, cache, rq.device)
    if mask is None and causal and past == 0:
        return F.scaled_dot_product_attention(rq, rk, v, is_causal=True)
    return F.scaled_dot_product_attention(rq, rk, v, attn_mask=mask)
