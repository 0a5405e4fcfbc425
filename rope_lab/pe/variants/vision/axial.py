"""Axial (N-D) RoPE: rotary pairs are split into groups, one group per coordinate axis.

Axis group ``g`` has ``axes_dim[g]`` channels (``axes_dim[g] / 2`` pairs) with frequencies
``base^(-2k / axes_dim[g])``, k = 0..axes_dim[g]/2 - 1, and rotates with coordinate axis ``axis_order[g]``.

- Default = RoPE-Axial of RoPE-ViT (Heo et al., ECCV 2024; naver-ai/rope-vit ``models/vit_rope.py``
  ``compute_axial_cis``): two equal groups, theta 100, interleaved pairs (complex multiply of adjacent
  channels), **x (column) first**, then y (row). Image tasks build (row, col) coords, so the 2-D default
  ``axis_order`` is ``[1, 0]``. Equals timm ``RotaryEmbeddingCat(in_pixels=False, grid_indexing='xy')``.
- FLUX / DiT ids (Black Forest Labs ``flux/math.py`` ``rope`` + ``EmbedND``): ``axes_dim=[16, 56, 56]``,
  ``base=10000``, ids (t, h, w) in input order (the default ``axis_order`` for anything but 2 axes),
  interleaved pairs.
- Qwen2-VL's vision encoder: ``axis_order=[0, 1]`` (row first), ``pair_layout=half``, ``base=10000``.

Integer positions are used as given: no ``ref_feat_shape`` rescaling, no offset (a larger image simply sees
larger positions, as in RoPE-ViT's multi-resolution evaluation).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from rope_lab.pe.kv_cache import KVCache
from rope_lab.pe.registry import register_pe
from rope_lab.pe.rotary import Rotary, RotaryConfig
from rope_lab.pe.types import Positions


@dataclass
class AxialConfig(RotaryConfig):
    base: float = 100.0
    pair_layout: str = "interleaved"
    num_axes: int | None = None  # None: len(axes_dim), else 2
    axes_dim: list[int] | None = None  # channels per axis group (even, summing to the rotary dim); None: equal
    axis_order: list[int] | None = None  # coordinate axis of each group; None: [1, 0] for 2-D, input order else


def resolve_axes(num_axes: int | None, axes_dim: list[int] | None, axis_order: list[int] | None,
                 rotary_dim: int) -> tuple[list[int], list[int]]:
    """(axes_dim, axis_order) with defaults filled in and every constraint checked (errors name the values)."""
    if axes_dim is not None and num_axes is not None and len(axes_dim) != num_axes:
        raise ValueError(f"axes_dim={list(axes_dim)} has {len(axes_dim)} entries but num_axes={num_axes}")
    n = len(axes_dim) if axes_dim is not None else (num_axes or 2)
    if n < 1:
        raise ValueError(f"num_axes must be >= 1, got {n}")
    if axes_dim is None:
        if rotary_dim % (2 * n):
            raise ValueError(f"rotary dim {rotary_dim} does not split into {n} equal even groups; "
                             f"give axes_dim explicitly (even channel counts summing to {rotary_dim})")
        axes_dim = [rotary_dim // n] * n
    axes_dim = [int(d) for d in axes_dim]
    if any(d <= 0 or d % 2 for d in axes_dim) or sum(axes_dim) != rotary_dim:
        raise ValueError(f"axes_dim={axes_dim} must be positive even channel counts summing to the rotary dim "
                         f"{rotary_dim} (head_dim x rotary_fraction)")
    if axis_order is None:
        axis_order = [1, 0] if n == 2 else list(range(n))
    axis_order = [int(a) for a in axis_order]
    if sorted(axis_order) != list(range(n)):
        raise ValueError(f"axis_order={axis_order} must be a permutation of {list(range(n))}")
    return axes_dim, axis_order


@register_pe("rope_axial")
class AxialRoPE(Rotary):
    """N-D axial RoPE (RoPE-ViT RoPE-Axial by default; FLUX/DiT 3-axis ids with ``axes_dim``)."""

    Config = AxialConfig
    min_axes = max_axes = 2  # class default (2-D); instances follow their config

    def __init__(self, cfg: AxialConfig) -> None:
        super().__init__(cfg)
        n = len(cfg.axes_dim) if cfg.axes_dim is not None else (cfg.num_axes or 2)
        self.min_axes = self.max_axes = n

    def setup(self, geometry) -> AxialRoPE:
        # axis groups must be known before Rotary.setup builds inv_freq through base_inv_freq()
        rotary_dim = 2 * (int(geometry.positional_dim * self.cfg.rotary_fraction) // 2)
        self.axes_dim, self.axis_order = resolve_axes(self.cfg.num_axes, self.cfg.axes_dim, self.cfg.axis_order,
                                                      rotary_dim)
        super().setup(geometry)
        onehot = torch.zeros(len(self.axes_dim), self.n_pairs)
        start = 0
        for group, dim in enumerate(self.axes_dim):
            onehot[self.axis_order[group], start : start + dim // 2] = 1.0
            start += dim // 2
        self.register_buffer("axis_onehot", onehot, persistent=False)
        return self

    def base_inv_freq(self) -> Tensor:
        """Per-pair frequencies, group after group: base^(-2k/axes_dim[g])."""
        parts = [1.0 / self.cfg.base ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d) for d in self.axes_dim]
        return torch.cat(parts)

    def position_map(self, positions: Positions, cache: KVCache | None = None) -> Tensor:
        if positions.num_axes != len(self.axes_dim):
            raise ValueError(f"pe={self.name} was set up for {len(self.axes_dim)} axes (axes_dim={self.axes_dim}) "
                             f"but got {positions.num_axes}-axis positions")
        return positions.coords

    def frequency_plan(self, inv_freq: Tensor, layer: int) -> Tensor:
        return (inv_freq[None, :] * self.axis_onehot)[None]  # (1, A, P)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, axes_dim={self.axes_dim}, axis_order={self.axis_order}"
