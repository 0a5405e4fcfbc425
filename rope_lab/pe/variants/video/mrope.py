"""M-RoPE, multimodal rotary position embedding (Qwen2-VL, Wang et al., arXiv 2409.12191; Qwen2.5-VL's
absolute-time ids, arXiv 2502.13923).

Reference implementation: transformers 4.45.2 ``Qwen2VLForConditionalGeneration.get_rope_index`` (the
original algorithm, vendored in VideoRoPE ``modeling_videorope.py``) and ``Qwen2VLRotaryEmbedding`` +
``apply_multimodal_rotary_pos_emb`` for the frequencies.

- Ids: text ``(p, p, p)``; a vision item starting at ``s`` gets ``(s + t, s + h, s + w)`` (grid indices after
  the 2x2 merge); text after vision starts at ``max(all three rows) + 1 = s + max(T, H', W')``; decoding uses
  ``position + rope_deltas`` on all rows (``KVCache.pe_state``).
- Qwen2.5-VL (``time_mode=absolute``): ``t = s + floor(t_idx * temporal_patch_size / fps * tokens_per_second)``.
- Frequencies: ``mrope_section`` (16, 24, 24) of the 64 pairs: t reads the highest frequencies ``j < 16``,
  h ``16 <= j < 40``, w ``40 <= j < 64``; half pair layout (``rotate_half``).

transformers 5.x's ``get_rope_index`` starts text after a video at ``s + max(H', W')`` (ignoring T), which
collides with the video's t ids when ``T > max(H', W')``; this follows the original algorithm.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from rope_lab.pe.registry import register_pe
from rope_lab.pe.rotary import RotaryConfig
from rope_lab.pe.variants.video.multimodal import MultimodalRotary, mrope_sections

TIME_MODES = ("index", "absolute")


@dataclass
class MRoPEConfig(RotaryConfig):
    base: float = 1_000_000.0  # Qwen2-VL rope_theta
    mrope_section: list[int] | None = None  # (t, h, w) pairs; None: [16, 24, 24] scaled to head_dim/2
    time_mode: str = "index"  # index (Qwen2-VL) | absolute (Qwen2.5-VL: t advances with seconds)
    tokens_per_second: float = 2.0  # Qwen2.5-VL-7B config value (the HF class default is 4)
    temporal_patch_size: int = 2
    fps: float = 2.0  # used when Positions.meta has no "fps"


def absolute_time(t_idx: Tensor, cfg: MRoPEConfig, fps: float) -> Tensor:
    """Qwen2.5-VL: ``(t_idx * second_per_grid_t * tokens_per_second).long()`` (truncation, as the reference)."""
    interval = cfg.temporal_patch_size / fps * cfg.tokens_per_second
    return torch.floor(t_idx * interval)


@register_pe("mrope")
class MRoPE(MultimodalRotary):
    """Qwen2-VL M-RoPE (3 rows t, h, w) on interleaved text/video positions."""

    Config = MRoPEConfig
    n_rows = 3
    section: list[int] | None = None  # (t, h, w) pair counts, set at setup

    def __init__(self, cfg: MRoPEConfig) -> None:
        super().__init__(cfg)
        if cfg.time_mode not in TIME_MODES:
            raise ValueError(f"unknown mrope time_mode '{cfg.time_mode}'; choose one of {list(TIME_MODES)}")
        if cfg.pair_layout != "half":
            raise ValueError(f"M-RoPE's sections are defined on the half pair layout (rotate_half); "
                             f"got pair_layout={cfg.pair_layout}")

    def setup(self, geometry) -> MRoPE:
        super().setup(geometry)
        self.section = mrope_sections(self.n_pairs, self.cfg.mrope_section)
        axes = [0] * self.section[0] + [1] * self.section[1] + [2] * self.section[2]
        self.register_buffer("pair_rows", self.section_onehot(axes, self.n_rows), persistent=False)
        return self

    def _t(self, local_t: Tensor, positions) -> Tensor:
        if self.cfg.time_mode == "index":
            return local_t
        return absolute_time(local_t, self.cfg, float(positions.meta.get("fps", self.cfg.fps)))

    def extent(self, grid, scale, positions) -> Tensor:
        t_max = self._t(grid[..., 0] - 1, positions)
        return torch.maximum(t_max, torch.maximum(grid[..., 1], grid[..., 2]) - 1) + 1

    def vision_rows(self, start, local, grid, scale, positions) -> Tensor:
        t = self._t(local[..., 0], positions)
        return start[..., None] + torch.stack((t, local[..., 1], local[..., 2]), dim=-1)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, mrope_section={self.section}, time_mode={self.cfg.time_mode}"
