"""RoPE-Mixed (Heo et al., "Rotary Position Embedding for Vision Transformer", ECCV 2024).

Every block and head learns the full 2-D frequency vector of each rotary pair:
``angle[h, n, j] = x_n * fx[layer, h, j] + y_n * fy[layer, h, j]`` with x = column, y = row, so the score
still depends only on the relative position (the angle is linear in (x, y)).

Reference implementation: naver-ai/rope-vit ``models/vit_rope.py`` (``init_random_2d_freqs`` with
``theta=10, rotate=True``, ``compute_mixed_cis``; parameter ``freqs`` of shape (2, depth, heads*hd/2),
interleaved pairs, autocast off, excluded from weight decay). timm's ``RotaryEmbeddingMixed`` holds the same
tensor as (2, depth, heads, hd/2); we initialise with timm's ``init_random_2d_freqs`` (one random angle per
block and head, magnitudes ``theta^(-4k/hd)``; the pairs [hd/4, hd/2) point at angle + pi/2).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from timm.layers.pos_embed_sincos import init_random_2d_freqs
from torch import Tensor, nn

from rope_lab.pe.registry import register_pe
from rope_lab.pe.rotary import Rotary, RotaryConfig


@dataclass
class MixedConfig(RotaryConfig):
    base: float = 10.0
    pair_layout: str = "interleaved"
    rotate: bool = True  # random initial angle per block and head (paper); False: axial-like start, learnable


@register_pe("rope_mixed")
class MixedRoPE(Rotary):
    """Learnable per-block, per-head 2-D frequencies on (row, col) coords."""

    Config = MixedConfig
    min_axes = max_axes = 2
    per_layer_plan = True
    #: model.to(bf16) must not round the learned frequencies (they stay fp32, as under naver's AMP)
    keep_dtype = (*Rotary.keep_dtype, "freqs")

    def __init__(self, cfg: MixedConfig) -> None:
        super().__init__(cfg)
        if self.scaling.name != "none":
            raise ValueError(f"pe=rope_mixed learns its frequencies; a scaling ({self.scaling.name}) would be ignored. "
                             f"Use pe/scaling=none")

    def setup(self, geometry) -> MixedRoPE:
        super().setup(geometry)
        rotary_dim = 2 * self.n_pairs
        if rotary_dim % 4:
            raise ValueError(f"rope_mixed needs a rotary dim divisible by 4 (two directions of hd/4 pairs); "
                             f"got {rotary_dim} (head_dim={geometry.head_dim}, "
                             f"rotary_fraction={self.cfg.rotary_fraction})")
        freqs = init_random_2d_freqs(rotary_dim, geometry.depth, geometry.n_heads, self.cfg.base, self.cfg.rotate)
        self.freqs = nn.Parameter(freqs)  # (2 = x|y, depth, heads, P)
        return self

    def frequency_plan(self, inv_freq: Tensor, layer: int) -> Tensor:
        fx, fy = self.freqs[0, layer], self.freqs[1, layer]  # (H, P) each
        return torch.stack((fy, fx), dim=1)  # (H, A=2, P): coords are (row = y, col = x)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, per-block per-head learnable 2-D freqs, rotate_init={self.cfg.rotate}"
