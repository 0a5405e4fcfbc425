"""Position-free and absolute baselines.

- ``nope``: no positional information (Kazemnejad et al., 2023; causal masking alone carries order).
- ``ape``: absolute embedding added at the input (Vaswani et al., 2017): ``kind=sinusoidal`` (the original
  fixed sin/cos, computed from positions so any length works) or ``kind=learned`` (GPT-2 style table of
  ``max_tokens`` rows; a longer sequence is an error, never silently clipped).
  Several axes: ``sinusoidal`` gives each axis an equal share of the channels (MAE's 2-D sincos,
  ``get_2d_sincos_pos_embed``, generalised to any number of continuous axes); ``learned`` on a vision
  backbone (``geometry.grid`` set) is a (rows, cols, dim) table of the training grid, resized bicubically
  (``align_corners=False``) to other grids, as RoPE-ViT's ``rope_*_ape`` models and DeiT do. ``antialias``:
  False (default) = naver-ai/rope-vit and DeiT (``F.interpolate`` without antialias); True = timm
  (``resample_abs_pos_embed``, antialias on). They differ at every grid but the training one, larger ones
  included: PyTorch's antialiased bicubic is PIL's kernel (a = -0.5), the plain one uses a = -0.75.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rope_lab.pe.interface import PositionalEncoding
from rope_lab.pe.registry import register_pe
from rope_lab.pe.types import NO_POSITION, PEState

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


def sinusoidal_nd(coords: Tensor, dim: int, base: float = 10000.0) -> Tensor:
    """(..., A) coords -> (..., dim): axis a fills channels [a*w, (a+1)*w) with its 1-D table, w = 2*(dim//2A),
    zero padding at the end. For A = 1 this is exactly ``sinusoidal_table``."""
    n_axes = coords.shape[-1]
    width = 2 * (dim // (2 * n_axes))
    if width == 0:
        raise ValueError(f"ape sinusoidal: dim {dim} is too small for {n_axes} axes (needs >= {2 * n_axes})")
    parts = [sinusoidal_table(coords[..., a], width, base) for a in range(n_axes)]
    return F.pad(torch.cat(parts, dim=-1), (0, dim - width * n_axes))


def resize_grid_table(table: Tensor, grid: tuple[int, int], antialias: bool = False) -> Tensor:
    """(rows, cols, dim) -> (grid[0], grid[1], dim), bicubic, align_corners=False; antialias False as rope-vit,
    True as timm."""
    if tuple(table.shape[:2]) == tuple(grid):
        return table
    img = table.float().permute(2, 0, 1)[None]
    out = F.interpolate(img, size=tuple(grid), mode="bicubic", align_corners=False, antialias=antialias)
    return out[0].permute(1, 2, 0).to(table.dtype)


@register_pe("ape")
class AbsolutePE(PositionalEncoding):
    """Absolute position embedding added to the token embeddings (1-D index, N-D coords or a 2-D grid)."""

    max_axes = None

    @dataclass
    class Config:
        kind: str = "learned"
        init_std: float = 0.02
        base: float = 10000.0  # sinusoidal only
        antialias: bool = False  # resize of the learned grid: False rope-vit/DeiT, True timm (cubic a=-0.5)

        greater_than = {"base": 1.0}  # checked at build (rope_lab.registry.check_numbers)

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        if cfg.kind not in APE_KINDS:
            raise ValueError(f"unknown ape kind '{cfg.kind}'; choose one of {list(APE_KINDS)}")
        self.cfg = cfg
        self.max_axes = 2 if cfg.kind == "learned" else None
        self.grid: tuple[int, int] | None = None

    def setup(self, geometry) -> AbsolutePE:
        super().setup(geometry)
        if self.cfg.kind != "learned":
            return self
        if geometry.grid is None:
            self.table = nn.Parameter(torch.randn(geometry.max_tokens, geometry.dim) * self.cfg.init_std)
        elif len(geometry.grid) == 2:
            self.grid = (int(geometry.grid[0]), int(geometry.grid[1]))
            table = nn.init.trunc_normal_(torch.empty(*self.grid, geometry.dim), std=self.cfg.init_std)
            self.table = nn.Parameter(table)
        else:
            raise ValueError(f"learned ape supports a 1-D table or a 2-D grid; got grid={tuple(geometry.grid)}")
        return self

    def embed(self, x: Tensor, state: PEState) -> Tensor:
        coords = state.coords
        if self.cfg.kind == "sinusoidal":
            emb = sinusoidal_nd(coords, x.shape[-1], self.cfg.base)
        elif coords.shape[-1] == 1 and self.grid is None:
            pos = coords[..., 0]
            n = self.table.shape[0]
            torch._assert_async(pos.max() < n, f"ape: position beyond the learned table of {n} rows")
            emb = self.table[pos.long().clamp(min=0)]
        else:
            emb = self._grid_embed(coords, state)
        mod = state.positions.modality
        if mod is not None:
            emb = emb.masked_fill((mod == NO_POSITION)[..., None], 0.0)
        return x + emb.to(x.dtype)

    def _grid_embed(self, coords: Tensor, state: PEState) -> Tensor:
        """Look up (row, col) in the training-grid table resized to the current grid (``meta['grid']``)."""
        if self.grid is None or coords.shape[-1] != 2:
            raise ValueError(f"learned ape got {coords.shape[-1]}-axis positions but was set up "
                             f"{'without a grid' if self.grid is None else f'for the grid {self.grid}'}; "
                             f"2-D positions need a vision backbone that sets geometry.grid")
        grid = tuple(state.positions.meta.get("grid", self.grid))
        table = resize_grid_table(self.table, grid, self.cfg.antialias)
        row, col = coords[..., 0].long().clamp(min=0), coords[..., 1].long().clamp(min=0)
        torch._assert_async((row < grid[0]).all() & (col < grid[1]).all(), f"ape: position outside the grid {grid}")
        return table.reshape(-1, table.shape[-1])[row * grid[1] + col]

    def extra_repr(self) -> str:
        return f"name={self.name}, kind={self.cfg.kind}, grid={self.grid}"
