"""VRoPE (Liu et al., EMNLP 2025, arXiv 2502.11664): rotary positions for video LLMs from four rotated and
mirrored spatial coordinates, continuous across text -> video -> text.

Reference implementation: johncaged/VRoPE ``vrope.py`` (class ``VRoPE``, ``generate_nd_positions``).

- Each rotary pair j has its own position: pair j reads row ``j % 4`` of
  ``r0 = h + w``, ``r1 = h + (W'-1-w)``, ``r2 = (H'-1-h) + w``, ``r3 = (H'-1-h) + (W'-1-w)``,
  plus ``t * (H'+W'-1)`` for frame t, plus the running index ``s``.
- No pairs are reserved for time (the reference overrides ``half_time_dim`` to 0); time enters through the
  per-frame band offset. Text gets its running index on every pair; a video advances the index by
  ``(H'+W'-1) * T``, so text after it continues at exactly the largest video id + 1.
- Base frequencies unchanged (the host LLM's); ids are integers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rope_lab.pe.registry import register_pe
from rope_lab.pe.rotary import RotaryConfig
from rope_lab.pe.variants.video.multimodal import MultimodalRotary


@dataclass
class VRoPEConfig(RotaryConfig):
    #: the host video LLM's base: Qwen2-VL's rope_theta=1e6, the host VideoRoPE compares VRoPE in
    #: (shared/reference/vision_video_variants.md sections 3, 4)
    base: float = 1000000.0


@register_pe("vrope")
class VRoPE(MultimodalRotary):
    """VRoPE: 4 symmetric diagonal rows, pair j reads row j % 4."""

    Config = VRoPEConfig
    n_rows = 4

    def setup(self, geometry):
        super().setup(geometry)
        axes = [j % self.n_rows for j in range(self.n_pairs)]
        self.register_buffer("pair_rows", self.section_onehot(axes, self.n_rows), persistent=False)
        return self

    def extent(self, grid, scale, positions):
        return (grid[..., 1] + grid[..., 2] - 1) * grid[..., 0]

    def vision_rows(self, start, local, grid, scale, positions):
        t, h, w = local.unbind(-1)
        hh, ww = grid[..., 1] - 1 - h, grid[..., 2] - 1 - w
        band = start + t * (grid[..., 1] + grid[..., 2] - 1)
        return band[..., None] + torch.stack((h + w, h + ww, hh + w, hh + ww), dim=-1)
