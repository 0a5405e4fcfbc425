"""p-RoPE (Barbero, Vitvitskyi, Perivolaropoulos, Pascanu, Velickovic, "Round and Round We Go! What makes Rotary
Positional Encodings useful?", ICLR 2025, arXiv 2410.06205).

Keep the fraction ``p`` of the HIGHEST frequencies with their original values theta_i = base^(-2i/d) (exponent
over the full head dim) and make the remaining lowest ``1 - p`` position-free (angle 0): p = 1 is RoPE, p = 0 is
NoPE. Reference implementations: google-deepmind/gemma ``gemma/gm/math/_positional_embeddings.py::apply_rope``
(``rope_angles = int(rope_proportion * head_dim // 2)``, the rest padded with an infinite timescale) and HF
``rope_type="proportional"`` (Gemma 4). Not to be confused with GPT-NeoX partial rotary (``rotary_fraction``),
which re-spreads all frequencies over the rotated sub-dimension. Composes with ``pe/scaling`` (the scaling sees
the full frequency vector first, as HF does).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from rope_lab.pe.registry import register_pe
from rope_lab.pe.rotary import Rotary, RotaryConfig


@dataclass
class PRoPEConfig(RotaryConfig):
    p: float = 0.75  # fraction of rotary pairs (highest frequencies) that keep rotating


def kept_pairs(p: float, rotary_dim: int) -> int:
    """Gemma's ``int(rope_proportion * head_dim // 2)``."""
    return int(p * rotary_dim // 2)


@register_pe("p_rope")
class PRoPE(Rotary):
    """RoPE with the lowest (1 - p) fraction of frequencies set to zero."""

    Config = PRoPEConfig
    max_axes = 1

    def __init__(self, cfg: PRoPEConfig) -> None:
        if not 0.0 <= cfg.p <= 1.0:
            raise ValueError(f"p-RoPE needs pe.p in [0, 1] (0 = NoPE, 1 = RoPE); got {cfg.p}")
        super().__init__(cfg)

    def setup(self, geometry) -> PRoPE:
        super().setup(geometry)
        keep = torch.arange(self.n_pairs) < kept_pairs(self.cfg.p, 2 * self.n_pairs)
        self.register_buffer("keep", keep, persistent=False)
        return self

    def frequency_plan(self, inv_freq: Tensor, layer: int) -> Tensor:
        return torch.where(self.keep, inv_freq, torch.zeros_like(inv_freq))[None, None, :]

    def extra_repr(self) -> str:
        return super().extra_repr() + f", p={self.cfg.p}, rotating_pairs={int(self.keep.sum())}/{self.n_pairs}"
