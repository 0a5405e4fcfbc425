"""The shared site of the attention-logit bias baselines (ALiBi, T5 relative bias, FoX; see
/work/shared/reference/baselines.md and docs/architecture.md).

These variants add a per-head term to the scaled logits ``q.k / sqrt(d)`` that depends on the tokens' distance (or
on what lies between them), never touch q or k, and keep the plain K/V cache. What they share lives here:

- the token coordinates of the queries and of every key, the keys' carried across KV-cache chunks in
  ``KVCache.pe_state`` (per sequence, never on the module), so a decoded row sees the distances the parallel pass
  sees and positions travel with their tokens (offsets, packed documents with reset positions);
- one SDPA call whose float mask is the bias, built in fp32 (HF Falcon's bf16 ALiBi is the cautionary tale), with
  the causal and document masks folded in as -inf and cast once to the query dtype.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from rope_lab.pe.interface import PositionalEncoding
from rope_lab.pe.kernels.eager import math_dtype
from rope_lab.pe.kv_cache import KVCache
from rope_lab.pe.types import PEState, Positions

KEY_COORDS = "logit_bias/key_coords"


@dataclass
class TokenCoords:
    """The queries' token coordinates (B|1, Nq) and every key's (B|1, Nk), the cached keys' first."""

    queries: Tensor
    keys: Tensor


@dataclass
class LogitBiasState(PEState):
    tokens: TokenCoords | None = None


def keep_mask(state: PEState, nq: int, nk: int, past: int, causal: bool, cache: KVCache | None,
              device) -> Tensor | None:
    """(B|1, 1, Nq, Nk) bool of the keys each query may see (causality after ``past`` cached keys, same document);
    None when every key is visible."""
    keep = None
    if causal:
        keep = torch.arange(nk, device=device)[None, :] <= torch.arange(nq, device=device)[:, None] + past
        keep = keep[None, None]
    seg = state.positions.segment
    if seg is not None:
        key_seg = seg if cache is None or cache.segments is None else cache.segments
        same = seg[:, None, :, None] == key_seg[:, None, None, -nk:]
        keep = same if keep is None else keep & same
    return keep


def track_key_coords(state: PEState, cache: KVCache | None) -> TokenCoords:
    """The token coordinates of ``state``'s queries and of every key; the cache keeps the keys' for the next chunk."""
    coords = state.coords[..., 0].float()
    if coords.shape[0] > 1 and coords.stride(0) == 0:  # a batch-broadcast view: one row, so the bias is built once
        coords = coords[:1]
    keys = coords
    if cache is not None:
        past = cache.pe_state.get(KEY_COORDS)
        if past is not None:
            rows = max(past.shape[0], coords.shape[0])
            keys = torch.cat([past.expand(rows, -1), coords.expand(rows, -1)], dim=1)
        cache.pe_state[KEY_COORDS] = keys
    return TokenCoords(coords, keys)


def token_distances(state: LogitBiasState, n_keys: int) -> Tensor:
    """(B, 1, Nq, Nk) float32 query minus key token coordinate (positive for past keys)."""
    keys = state.tokens.keys[:, -n_keys:]
    return (state.tokens.queries[:, :, None] - keys[:, None, :])[:, None]


class TokenLogitBias(PositionalEncoding):
    """Base of the 1-D logit-bias variants: token coordinates in, an additive (B|1, H|1, Nq, Nk) bias out.

    Subclasses implement :meth:`logit_bias` (fp32); ``bias`` (the interface's bias site) is the same thing for
    variants whose bias needs nothing but positions.
    """

    max_axes = 1
    axes = ("token",)
    State: ClassVar[type[LogitBiasState]] = LogitBiasState

    def prepare(self, positions: Positions, cache: KVCache | None = None) -> LogitBiasState:
        state = super().prepare(positions, cache)
        state.tokens = track_key_coords(state, cache)
        return state

    distances = staticmethod(token_distances)

    def logit_bias(self, state: PEState, layer: int, n_queries: int, n_keys: int, *, causal: bool,
                   x: Tensor | None, cache: KVCache | None) -> Tensor:
        """(B|1, H|1, Nq, Nk) fp32 bias added to the scaled logits of this layer (x: the block's input)."""
        return self.bias(state, layer, n_queries, n_keys)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, *, state: PEState, layer: int, causal: bool,
               x: Tensor | None = None, cache: KVCache | None = None) -> Tensor:
        q, k = self.rotate(q, k, state, layer)
        past = 0
        if cache is not None:
            past = 0 if cache.keys[layer] is None else cache.keys[layer].shape[-2]
            k, v = cache.append(layer, k, v)
        nq, nk = q.shape[-2], k.shape[-2]
        bias = self.logit_bias(state, layer, nq, nk, causal=causal, x=x, cache=cache).to(math_dtype(q.dtype))
        keep = keep_mask(state, nq, nk, past, causal, cache, q.device)
        if keep is not None:  # where(), not masked_fill: a batch-broadcast bias meets per-row document masks
            bias = torch.where(keep, bias, float("-inf"))
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), enable_gqa=k.shape[1] != q.shape[1])
