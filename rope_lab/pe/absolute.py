"""Position-free and absolute baselines.

- ``nope``: no positional information (Kazemnejad et al., 2023; causal masking alone carries order).
- ``ape``: absolute embedding added at the input (Vaswani et al., 2017): ``kind=sinusoidal`` (the original
  fixed sin/cos, computed from positions so any length works) or ``kind=learned`` (GPT-2 style table of
  ``max_tokens`` rows; a longer sequence is an error, never silently clipped).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from rope_lab.pe.base import NO_POSITION, PEState, PositionalEncoding
from rope_lab.pe.registry import register_pe

APE_KINDS = ("learned", "sinusoidal")


@register_pe("nope")
class NoPE(PositionalEncoding):
    """Identity at every site."""

    @dataclass
    class Config:
        pass

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg


def sinusoidal_table(positions: Tensor, dim: int, base: float = 10000.0) -> Tensor:
    """(..., ) float positions -> (..., dim) [sin(p w_0), cos(p w_0), sin(p w_1), ...] (Vaswani et al.)."""
    half = dim // 2
    freqs = torch.exp(-math.log(base) * torch.arange(half, device=positions.device, dtype=torch.float32) / half)
    angles = positions.float()[..., None] * freqs
    table = torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-2)
    return torch.nn.functional.pad(table, (0, dim - 2 * half))


@register_pe("ape")
class AbsolutePE(PositionalEncoding):
    """Absolute position embedding added to the token embeddings (1-D token index)."""

    max_axes = 1

    @dataclass
    class Config:
        kind: str = "learned"
        init_std: float = 0.02

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        if cfg.kind not in APE_KINDS:
            raise ValueError(f"unknown ape kind '{cfg.kind}'; choose one of {list(APE_KINDS)}")
        self.cfg = cfg

    def setup(self, geometry) -> AbsolutePE:
        super().setup(geometry)
        if self.cfg.kind == "learned":
            self.table = nn.Parameter(torch.randn(geometry.max_tokens, geometry.dim) * self.cfg.init_std)
        return self

    def embed(self, x: Tensor, state: PEState) -> Tensor:
        pos = state.coords[..., 0]
        if self.cfg.kind == "sinusoidal":
            emb = sinusoidal_table(pos, x.shape[-1])
        else:
            n = self.table.shape[0]
            torch._assert_async(pos.max() < n, f"ape: position beyond the learned table of {n} rows")
            emb = self.table[pos.long().clamp(min=0)]
        mod = state.positions.modality
        if mod is not None:
            emb = emb.masked_fill((mod == NO_POSITION)[..., None], 0.0)
        return x + emb.to(x.dtype)
