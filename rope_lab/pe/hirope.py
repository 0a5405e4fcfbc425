"""HiRoPE: hierarchical RoPE for long code (Zhang, Li, Zhang, Jin, ACL 2024, arXiv 2403.19115).

A token has two position levels: its token index and the index of the high-level unit it belongs to (a
function/class for code; a ``segment`` of 128 tokens for natural-language text, the paper's rule). The rotary pairs
are split at d_s: the highest-frequency pairs (low dimensions) rotate with the token index, the lowest-frequency
ones with the unit index (the paper's textual rule in §3.1; its Eq. 3 writes the levels the other way round, see
shared/reference/lm_variants.md §9). Training-free: a RoPE model read with HiRoPE sees relative distances
(token distance on the fast pairs, unit distance on the slow ones), so far-apart tokens stay within the slow
pairs' trained range. App. A's "reliable split" ``reliable_split`` gives the fraction of dimensions that completed a
period in pretraining. No official code exists; this follows the paper. The paper's local window (original RoPE
for |i - j| < L_window, the hierarchical format beyond) is not implemented: its offset rule is ambiguous in the
text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from rope_lab.pe.base import KVCache, Positions
from rope_lab.pe.registry import register_pe
from rope_lab.pe.rotary import Rotary, RotaryConfig


@dataclass
class HiRoPEConfig(RotaryConfig):
    split: float = 0.5  # d_s / d: the fraction of pairs (highest frequencies) that rotate with the token index
    segment: int = 128  # tokens per unit when the task builds token indices only (the paper's rule for text)


def reliable_split(pretrain_length: float, base: float = 10000.0) -> float:
    """App. A Eq. 6: the fraction of dimensions whose period fits in the pretraining length, log_base(L / 2 pi)."""
    return math.log(pretrain_length / (2 * math.pi)) / math.log(base)


@register_pe("hirope")
class HiRoPE(Rotary):
    """Two-level RoPE: coords (token index, unit index), or token indices with units of ``segment`` tokens."""

    Config = HiRoPEConfig
    max_axes = 2

    def __init__(self, cfg: HiRoPEConfig) -> None:
        if not 0.0 <= cfg.split <= 1.0:
            raise ValueError(f"HiRoPE needs pe.split in [0, 1] (the token-level fraction of the pairs); got {cfg.split}")
        if cfg.segment < 1:
            raise ValueError(f"HiRoPE needs pe.segment >= 1 tokens per unit; got {cfg.segment}")
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

    def example_positions(self, batch: int, length: int, start: int = 0) -> Positions:
        """Token indices start.. with units of 3 tokens (a small hierarchy for the property tests)."""
        token = torch.arange(start, start + length, dtype=torch.float32)
        coords = torch.stack([token, torch.div(token, 3, rounding_mode="floor")], dim=-1)
        return Positions(coords=coords.expand(batch, -1, -1).clone())

    def extra_repr(self) -> str:
        token_pairs = int(self.axis_onehot[0].sum()) if hasattr(self, "axis_onehot") else "?"
        return super().extra_repr() + f", split={self.cfg.split} ({token_pairs} token-level pairs), segment={self.cfg.segment}"
