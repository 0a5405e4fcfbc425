"""VideoRoPE (Wei et al., ICML 2025, arXiv 2502.05173): low-frequency temporal allocation (LTA), diagonal
layout (DL) and adjustable temporal spacing (ATS).

Reference implementation: Wiselnn570/VideoRoPE ``videorope-transformer/modeling_videorope.py``
(``get_t_scale_rope_index``, ``apply_m_modify_multimodal_rotary_pos_emb``) and the ablations of
``videorope_plus/v_ruler/eval/eval_v_ruler_interrupt.py: get_position_ids``.

- Ids of a vision item starting at ``s``: ``t = s + delta * t_idx``; ``h = t + h_idx - (H'-1)//2``;
  ``w = t + w_idx - (W'-1)//2`` (the frame centre sits on the diagonal (t, t, t); floor division as the
  reference). Text after vision starts at ``max(t row) + 1 = s + delta*(T-1) + 1``. Ids are float.
- Frequencies (LTA): of the P pairs, the first 3P/4 alternate h (even j) and w (odd j); the last P/4, the lowest
  frequencies, carry t (``hwhw...hw`` then ``t`` x 16 for P = 64). Half pair layout.

Ablation flags (the reference's rope types):
  ``frequency=mrope``            M-RoPE sections instead of LTA           (``pos_only``: DL only, delta=1)
  ``index_layout=mrope``         M-RoPE ids s+t, s+h, s+w                  (``t_only``: LTA only, with text_after=all)
  ``centre=false``               diagonal without centring
  ``text_after=all``             text after vision at max(all rows) + 1   (``m_modify_margin_rope``)
  ``index_layout=mrope, text_after=temporal``                             (``m_modify_no_center_rope``)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from rope_lab.pe.registry import register_pe
from rope_lab.pe.rotary import RotaryConfig
from rope_lab.pe.variants.video.multimodal import MultimodalRotary, mrope_sections

FREQUENCIES = ("lta", "mrope")
INDEX_LAYOUTS = ("diagonal", "mrope")
TEXT_AFTER = ("temporal", "all")


@dataclass
class VideoRoPEConfig(RotaryConfig):
    base: float = 1_000_000.0  # Qwen2-VL rope_theta
    mrope_section: list[int] | None = None  # (t, h, w) pairs; LTA keeps t's count; None: [16,24,24] scaled
    delta: float = 2.0  # temporal spacing (ATS); the reference hard-codes 2.0
    frequency: str = "lta"  # lta | mrope (ablation pos_only = DL only: frequency=mrope delta=1)
    #: diagonal | mrope (ablation t_only = LTA only: index_layout=mrope text_after=all delta=1)
    index_layout: str = "diagonal"
    centre: bool = True  # centre h/w on the frame's t id (ablation: false)
    text_after: str = "temporal"  # temporal (max of the t row + 1) | all (max of every row + 1)


def lta_axes(section: list[int]) -> list[int]:
    """Row read by each pair under LTA: spatial pairs alternate h (1) / w (2), the last section[0] pairs t (0)."""
    spatial = section[1] + section[2]
    return [1 if j % 2 == 0 else 2 for j in range(spatial)] + [0] * section[0]


def _check(value: str, choices: tuple, what: str) -> None:
    if value not in choices:
        raise ValueError(f"unknown {what} '{value}'; choose one of {list(choices)}")


@register_pe("videorope")
class VideoRoPE(MultimodalRotary):
    """VideoRoPE: LTA frequencies + diagonal layout + temporal spacing delta (float ids)."""

    Config = VideoRoPEConfig
    n_rows = 3
    section: list[int] | None = None  # (t, h, w) pair counts, set at setup

    def __init__(self, cfg: VideoRoPEConfig) -> None:
        super().__init__(cfg)
        _check(cfg.frequency, FREQUENCIES, "frequency")
        _check(cfg.index_layout, INDEX_LAYOUTS, "index_layout")
        _check(cfg.text_after, TEXT_AFTER, "text_after")
        if cfg.pair_layout != "half":
            raise ValueError(f"{self.name}'s frequency allocation is defined on the half pair layout (rotate_half); "
                             f"got pair_layout={cfg.pair_layout}")

    def setup(self, geometry):
        super().setup(geometry)
        self.section = mrope_sections(self.n_pairs, self.cfg.mrope_section)
        s = self.section
        axes = lta_axes(s) if self.cfg.frequency == "lta" else [0] * s[0] + [1] * s[1] + [2] * s[2]
        self.register_buffer("pair_rows", self.section_onehot(self.free_axes(axes), self.n_rows), persistent=False)
        return self

    def free_axes(self, axes: list[int]) -> list[int]:
        """Hook for HoPE: which pairs are position-free (row -1). VideoRoPE: none."""
        return axes

    def item_scale(self, lay, positions):
        return float(self.cfg.delta)

    def _centre(self, grid: Tensor) -> Tensor:
        if not self.cfg.centre or self.cfg.index_layout != "diagonal":
            return torch.zeros_like(grid[..., 1:])
        return torch.div(grid[..., 1:] - 1, 2, rounding_mode="floor")

    def vision_rows(self, start, local, grid, scale, positions) -> Tensor:
        t = start + scale * local[..., 0]
        base = t if self.cfg.index_layout == "diagonal" else start
        hw = base[..., None] + local[..., 1:] - self._centre(grid)
        return torch.cat((t[..., None], hw), dim=-1)

    def extent(self, grid, scale, positions) -> Tensor:
        t_last = scale * (grid[..., 0] - 1)
        if self.cfg.text_after == "temporal":
            return t_last + 1
        base = t_last if self.cfg.index_layout == "diagonal" else torch.zeros_like(t_last)
        hw_last = base[..., None] + grid[..., 1:] - 1 - self._centre(grid)
        return torch.maximum(t_last, hw_last.amax(-1)) + 1

    def extra_repr(self) -> str:
        c = self.cfg
        return (f"{super().extra_repr()}, mrope_section={self.section}, delta={c.delta}, "
                f"frequency={c.frequency}, index_layout={c.index_layout}, centre={c.centre}, text_after={c.text_after}")
