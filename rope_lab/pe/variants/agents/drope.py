"""DRoPE: directional rotary position embedding for agents (Zhao et al., arXiv 2503.15029, "DRoPE: Directional
Rotary Position Embedding for Efficient Agent Interaction Modeling"; project drope-traj.github.io).

No official code exists; the paper is the reference (shared/reference/vision_video_variants.md section 6).
Not to be confused with "DroPE" (Sakana AI, arXiv 2512.12167, dropping positional embeddings).

Positions are (x, y, heading): x, y in metres (local metric frame), heading in radians.

- ``drope``: every rotary pair rotates by the heading itself, i.e. RoPE with every theta_l replaced by the
  identity scalar 1:  f(X, phi) = BlockDiag(R(phi), ..., R(phi)) X.  Then <f(q, phi_i), f(k, phi_j)> =
  q^T R(phi_j - phi_i) k depends only on the relative heading and is exactly 2*pi-periodic.
- ``rope_2d``: axial 2-D RoPE on (x, y) as in RoPE-ViT's RoPE-Axial (naver-ai/rope-vit ``init_t_xy`` /
  ``compute_axial_cis``): x on the first half of the pairs, y on the second half, each axis with RoFormer
  frequencies ``base^(-2k/d_axis)`` -- divided by ``unit`` (metres per position unit) because agent positions
  are continuous metres. Defaults ``base=100, unit=1000``: wavelengths from 2*pi km to 2*pi*100 km, which
  covers aircraft separations (km to ~100 km). Scene-scale data (cars, ~1-100 m) would use ``unit=1``.
- ``drope_rope``: rope_2d on (x, y) plus DRoPE on the heading, in disjoint sub-spaces. The paper describes two
  ways of giving position and heading their sub-spaces; both are a config choice (``split``):
  ``head_wise`` -- the first heads encode (x, y), the last ``heading_fraction`` of the heads the heading (all
  their pairs); ``within_head`` -- every head gives ``heading_fraction`` of its pairs to the heading and splits
  the rest evenly between x and y. Which one the paper's headline numbers use could not be confirmed from the
  retrievable text; ``head_wise`` is the default.

A context-length scaling (``pe/scaling``) has no meaning for metres or angles: anything but ``none`` is an error.
The heading rows of a plan are the constant 1 (never taken from the scaled frequency vector), so the
2*pi-periodicity is exact by construction.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from rope_lab.pe.frequencies import rope_inv_freq
from rope_lab.pe.kv_cache import KVCache
from rope_lab.pe.registry import register_pe
from rope_lab.pe.rotary import Rotary, RotaryConfig
from rope_lab.pe.types import Positions

DROPE_SPLITS = ("head_wise", "within_head")
#: the agent coordinates these variants read (checked against the task's axes at build time)
AGENT_AXES = ("x", "y", "heading")


def metric_axis_freq(pairs: int, base: float, unit: float) -> Tensor:
    """RoFormer frequencies of one axis (``pairs`` pairs, exponent 2k/(2*pairs)), in radians per metre."""
    if unit <= 0:
        raise ValueError(f"unit (metres per position unit) must be > 0, got {unit}")
    return rope_inv_freq(2 * pairs, base) / unit


def axial_rows(freq_x: Tensor, freq_y: Tensor) -> Tensor:
    """(2, Px + Py) plan rows: x listens to the first Px pairs, y to the next Py pairs (RoPE-Axial order)."""
    zx, zy = torch.zeros_like(freq_y), torch.zeros_like(freq_x)
    return torch.stack((torch.cat((freq_x, zx)), torch.cat((zy, freq_y))))


@dataclass
class DRoPEConfig(RotaryConfig):
    pair_layout: str = "interleaved"
    heading_axis: int = -1  # which coordinate is the heading (radians); -1: the last one


@dataclass
class Rope2DConfig(RotaryConfig):
    base: float = 100.0
    pair_layout: str = "interleaved"
    unit: float = 1000.0  # metres per position unit: frequencies are base^(-2k/d_axis) / unit rad/m


@dataclass
class DRoPERoPEConfig(Rope2DConfig):
    split: str = "head_wise"  # head_wise | within_head
    heading_fraction: float = 0.5  # of the heads (head_wise) or of each head's pairs (within_head)


class _MetricRotary(Rotary):
    """Shared checks: no context-length scaling, an even number of position pairs."""

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        if self.scaling.name != "none":
            raise ValueError(f"pe={self.name} encodes metres and angles; pe/scaling must be 'none', "
                             f"got '{self.scaling.name}'")


@register_pe("drope")
class DRoPE(_MetricRotary):
    """Heading-only DRoPE: every pair rotates by phi (identity frequency). Reads coordinate ``heading_axis``."""

    Config = DRoPEConfig
    min_axes, max_axes = 3, 3
    axes = AGENT_AXES  # reads the heading; (x, y) are required too so that token indices are never taken for it

    def base_inv_freq(self) -> Tensor:
        return torch.ones(self.n_pairs)

    def position_map(self, positions: Positions, cache: KVCache | None = None) -> Tensor:
        axis = self.cfg.heading_axis % positions.num_axes
        return positions.coords[..., axis : axis + 1]

    def frequency_plan(self, inv_freq: Tensor, layer: int) -> Tensor:
        return torch.ones_like(inv_freq)[None, None, :]


@register_pe("rope_2d")
class Rope2D(_MetricRotary):
    """Axial 2-D RoPE on (x, y) in metres; a heading axis, if present, is ignored."""

    Config = Rope2DConfig
    min_axes, max_axes = 2, 3
    axes = AGENT_AXES  # (x, y) in metres; a heading, if present, is ignored

    def base_inv_freq(self) -> Tensor:
        if self.n_pairs % 2:
            raise ValueError(f"pe={self.name} needs an even number of rotary pairs (x and y halves); "
                             f"got {self.n_pairs}")
        f = metric_axis_freq(self.n_pairs // 2, self.cfg.base, self.cfg.unit)
        return torch.cat((f, f))

    def position_map(self, positions: Positions, cache: KVCache | None = None) -> Tensor:
        return positions.coords[..., :2]

    def frequency_plan(self, inv_freq: Tensor, layer: int) -> Tensor:
        half = inv_freq.shape[0] // 2
        return axial_rows(inv_freq[:half], inv_freq[half:])[None]


@register_pe("drope_rope")
class DRoPERoPE(_MetricRotary):
    """rope_2d on (x, y) + DRoPE on the heading, split head-wise or within each head (``split``)."""

    Config = DRoPERoPEConfig
    min_axes, max_axes = 3, 3
    axes = AGENT_AXES

    def __init__(self, cfg: DRoPERoPEConfig) -> None:
        super().__init__(cfg)
        if cfg.split not in DROPE_SPLITS:
            raise ValueError(f"unknown drope_rope split '{cfg.split}'; choose one of {list(DROPE_SPLITS)}")
        if not 0.0 < cfg.heading_fraction < 1.0:
            raise ValueError(f"heading_fraction must be in (0, 1), got {cfg.heading_fraction}")

    def _split_sizes(self) -> tuple[int, int]:
        """(position units, heading units): heads for head_wise, pairs per axis / heading pairs for within_head."""
        if self.cfg.split == "head_wise":
            heads = self.geometry.n_heads
            n_head = round(heads * self.cfg.heading_fraction)
            if not 0 < n_head < heads:
                raise ValueError(f"head_wise split of {heads} heads with heading_fraction="
                                 f"{self.cfg.heading_fraction} leaves no heads for position or heading")
            if self.n_pairs % 2:
                raise ValueError(f"head_wise split needs an even number of rotary pairs, got {self.n_pairs}")
            return heads - n_head, n_head
        n_head = round(self.n_pairs * self.cfg.heading_fraction)
        n_head += (self.n_pairs - n_head) % 2  # x and y need the same number of pairs
        per_axis = (self.n_pairs - n_head) // 2
        if per_axis < 1 or n_head < 1:
            raise ValueError(f"within_head split of {self.n_pairs} pairs with heading_fraction="
                             f"{self.cfg.heading_fraction} leaves no pairs for position or heading")
        return per_axis, n_head

    def base_inv_freq(self) -> Tensor:
        pos, _ = self._split_sizes()
        per_axis = self.n_pairs // 2 if self.cfg.split == "head_wise" else pos
        f = metric_axis_freq(per_axis, self.cfg.base, self.cfg.unit)
        return torch.cat((f, f))

    def position_map(self, positions: Positions, cache: KVCache | None = None) -> Tensor:
        return positions.coords[..., :3]

    def frequency_plan(self, inv_freq: Tensor, layer: int) -> Tensor:
        pos, n_head = self._split_sizes()
        half = inv_freq.shape[0] // 2
        xy = axial_rows(inv_freq[:half], inv_freq[half:])  # (2, 2 * half)
        if self.cfg.split == "within_head":
            ones = torch.ones(n_head, device=inv_freq.device)
            xy = torch.cat((xy, torch.zeros(2, n_head, device=inv_freq.device)), dim=1)
            heading = torch.cat((torch.zeros(2 * half, device=inv_freq.device), ones))
            return torch.cat((xy, heading[None]))[None]  # (1, 3, P)
        position_heads = torch.cat((xy, torch.zeros(1, self.n_pairs, device=inv_freq.device)))
        heading_heads = torch.zeros(3, self.n_pairs, device=inv_freq.device)
        heading_heads[2] = 1.0
        return torch.cat((position_heads.expand(pos, 3, -1), heading_heads.expand(n_head, 3, -1)))

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, unit={self.cfg.unit}m, split={self.cfg.split}, "
                f"heading_fraction={self.cfg.heading_fraction}")
