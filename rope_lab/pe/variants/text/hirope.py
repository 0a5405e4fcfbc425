"""HiRoPE: hierarchical RoPE for long code (Zhang, Li, Zhang, Jin, ACL 2024, arXiv 2403.19115).

A token has two position levels: its token index and the index of the high-level unit it belongs to (a
function/class for code; a ``segment`` of 128 tokens for natural-language text, the paper's rule). The rotary pairs
are split at d_s: the highest-frequency pairs (low dimensions) rotate with the token index, the lowest-frequency
ones with the unit index (the paper's textual rule in §3.1; its Eq. 3 writes the levels the other way round, see
shared/reference/lm_variants.md §9). Training-free: a RoPE model read with HiRoPE sees relative distances
(token distance on the fast pairs, unit distance on the slow ones), so far-apart tokens stay within the slow
pairs' trained range. App. A's "reliable split" ``reliable_split`` gives the fraction of dimensions that completed a
period in pretraining. No official code exists; this follows the paper.

Local window (``window`` = L_window > 0, the paper's default 512): pairs of tokens closer than the window attend
with original RoPE (the token index on every pair); farther ones with the hierarchical format, with
``window_offset`` added to the high-level (unit) distance. The paper says "adding L_window - 1 to each high-level
distance" (the default, None); the text does not say whether the offset counts tokens or units, so it is a
parameter. As in ReRoPE, the two score matrices are computed explicitly and merged per (query, key) pair, so this
path costs O(N^2) memory: an evaluation path (the paper's use), not a training kernel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Optional

import torch
from torch import Tensor

from rope_lab.pe.kv_cache import KVCache
from rope_lab.pe.registry import register_pe
from rope_lab.pe.rotary import Rotary, RotaryConfig, RotaryState
from rope_lab.pe.types import Positions


@dataclass
class HiRoPEConfig(RotaryConfig):
    split: float = 0.5  # d_s / d: the fraction of pairs (highest frequencies) that rotate with the token index
    segment: int = 128  # tokens per unit when the task builds token indices only (the paper's rule for text)
    window: int = 0  # L_window: original RoPE for token distance < window, the hierarchical format beyond (0: off)
    window_offset: Optional[float] = None  # added to the unit distance beyond the window (None: window - 1)


def reliable_split(pretrain_length: float, base: float = 10000.0) -> float:
    """App. A Eq. 6: the fraction of dimensions whose period fits in the pretraining length, log_base(L / 2 pi)."""
    return math.log(pretrain_length / (2 * math.pi)) / math.log(base)


@dataclass
class HiRoPEState(RotaryState):
    """A HiRoPE state plus, with a local window, the states of original RoPE (near pairs) and of the far queries."""

    near: RotaryState | None = None
    far_queries: RotaryState | None = None


@register_pe("hirope")
class HiRoPE(Rotary):
    """Two-level RoPE: coords (token index, unit index), or token indices with units of ``segment`` tokens."""

    Config = HiRoPEConfig
    max_axes = 2
    axes = ("token", "unit")  # token indices, optionally with the unit index the task builds
    State: ClassVar[type[HiRoPEState]] = HiRoPEState

    def __init__(self, cfg: HiRoPEConfig) -> None:
        if not 0.0 <= cfg.split <= 1.0:
            raise ValueError(f"HiRoPE needs pe.split in [0, 1] (the token-level fraction of the pairs); got {cfg.split}")
        if cfg.segment < 1:
            raise ValueError(f"HiRoPE needs pe.segment >= 1 tokens per unit; got {cfg.segment}")
        if cfg.window < 0:
            raise ValueError(f"HiRoPE needs pe.window >= 0 tokens (0: no local window); got {cfg.window}")
        super().__init__(cfg)

    def setup(self, geometry) -> HiRoPE:
        super().setup(geometry)
        token_level = torch.arange(self.n_pairs) < int(self.cfg.split * self.n_pairs)
        self.register_buffer("axis_onehot", torch.stack([token_level, ~token_level]).float(), persistent=False)
        return self

    def position_map(self, positions: Positions, cache: KVCache | None = None) -> Tensor:
        if positions.num_axes == 2:
            return positions.coords
        token = positions.coords[..., :1]
        return torch.cat([token, torch.div(token, self.cfg.segment, rounding_mode="floor")], dim=-1)

    def frequency_plan(self, inv_freq: Tensor, layer: int) -> Tensor:
        return (inv_freq[None, :] * self.axis_onehot)[None]  # (1, 2, P): pair j reads one level

    def prepare(self, positions: Positions, cache: KVCache | None = None) -> HiRoPEState:
        state = super().prepare(positions, cache)
        if self.cfg.window > 0:  # tables of the two other rotations, built once per forward for every layer
            token, unit = state.coords[..., :1], state.coords[..., 1:]
            offset = self.cfg.window - 1 if self.cfg.window_offset is None else self.cfg.window_offset
            near = super().prepare(Positions(coords=torch.cat([token, token], -1)))  # original RoPE on every pair
            far_queries = super().prepare(Positions(coords=torch.cat([token, unit + offset], -1)))
            state.near, state.far_queries = near, far_queries
        return state

    def attend(self, q: Tensor, k: Tensor, v: Tensor, *, state: HiRoPEState, layer: int, causal: bool,
               x: Tensor | None = None, cache: KVCache | None = None) -> Tensor:
        if self.cfg.window == 0:
            return super().attend(q, k, v, state=state, layer=layer, causal=causal, x=x, cache=cache)
        near, far_queries = state.near, state.far_queries
        q_near, k_near = self.rotate(q, k, near, layer)
        q_far, _ = self.rotate(q, k, far_queries, layer)
        _, k_far = self.rotate(q, k, state, layer)
        keys, key_tokens = torch.cat([k_near, k_far], -1), state.coords[..., 0]
        if cache is not None:
            keys, v = cache.append(layer, keys, v)
            cached = cache.pe_state.get(f"hirope_tokens/{layer}")
            key_tokens = key_tokens if cached is None else torch.cat([cached, key_tokens], 1)
            cache.pe_state[f"hirope_tokens/{layer}"] = key_tokens
        k_near, k_far = keys.split(q.shape[-1], -1)
        return self._windowed_attention(q_near, q_far, k_near, k_far, v, state.coords[..., 0], key_tokens, causal)

    def _windowed_attention(self, q_near, q_far, k_near, k_far, v, query_tokens, key_tokens, causal) -> Tensor:
        groups = q_near.shape[1] // k_near.shape[1]  # grouped-query attention: expand key heads explicitly
        k_near, k_far, v = (t.repeat_interleave(groups, 1) for t in (k_near, k_far, v))
        distance = query_tokens[:, None, :, None] - key_tokens[:, None, None, :]  # (B, 1, Nq, Nk)
        scores = torch.where(distance.abs() < self.cfg.window, q_near @ k_near.transpose(-1, -2),
                             q_far @ k_far.transpose(-1, -2)) / math.sqrt(q_near.shape[-1])
        if causal:  # the newest keys are the queries themselves (KV cache): key index <= past + query index
            nq, nk = q_near.shape[-2], k_near.shape[-2]
            keep = torch.arange(nk, device=v.device)[None, :] <= torch.arange(nq, device=v.device)[:, None] + nk - nq
            scores = scores.masked_fill(~keep, float("-inf"))
        return scores.softmax(-1, dtype=torch.promote_types(scores.dtype, torch.float32)).to(v.dtype) @ v

    def example_positions(self, batch: int, length: int, start: int = 0,
                         generator: torch.Generator | None = None) -> Positions:
        """Token indices start.. with units of 3 tokens (a small hierarchy for the property tests)."""
        token = torch.arange(start, start + length, dtype=torch.float32)
        coords = torch.stack([token, torch.div(token, 3, rounding_mode="floor")], dim=-1)
        return Positions(coords=coords.expand(batch, -1, -1).clone())

    def extra_repr(self) -> str:
        token_pairs = int(self.axis_onehot[0].sum()) if self.geometry is not None else "?"
        return (super().extra_repr() + f", split={self.cfg.split} ({token_pairs} token-level pairs), "
                f"segment={self.cfg.segment}, window={self.cfg.window}")
