"""HoPE (Li et al., NeurIPS 2025, arXiv 2505.20444): hybrid frequency allocation (HFA) + dynamic temporal
scaling (DTS).

Reference implementation: hrlics/HoPE ``modeling_hope.py`` (``apply_hybrid_multimodal_rotary_pos_emb``,
``get_dynamic_rope_index``).

- HFA: VideoRoPE's LTA layout, except that the temporal pairs (the lowest section[0] frequencies) get
  cos = 1, sin = 0 (no position) for every token, text included.
- DTS: VideoRoPE's centred diagonal ids with ``t_idx * scale``; in training the scale is drawn per vision item
  from ``train_scales`` (reference: ``random.choice([0.5, 0.75, 1.0, 1.25, 1.5])``), at inference it is the
  fixed ``scale`` (the reference V-NIAH evaluation uses 0.75). Text after vision at ``max(t row) + 1``.

The per-item draw happens only when the module is in training mode *and* the task marks the batch as a
training batch (``Positions.meta["augment"] = True``), so evaluation, decoding and analysis are deterministic.
The reference's ``generate`` discards ``rope_deltas`` (every generated token at id 0); here decoding uses them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from rope_lab.pe.registry import register_pe
from rope_lab.pe.variants.video.videorope import VideoRoPE, VideoRoPEConfig


@dataclass
class HoPEConfig(VideoRoPEConfig):
    scale: float = 0.75  # inference temporal scale (the reference V-NIAH eval)
    train_scales: list[float] = field(default_factory=lambda: [0.5, 0.75, 1.0, 1.25, 1.5])  # one per vision item


@register_pe("hope")
class HoPE(VideoRoPE):
    """HoPE: LTA layout with position-free temporal pairs + dynamic temporal scaling of the diagonal ids."""

    Config = HoPEConfig

    def __init__(self, cfg: HoPEConfig) -> None:
        if cfg.frequency != "lta" or cfg.index_layout != "diagonal" or not cfg.centre or cfg.text_after != "temporal":
            raise ValueError("pe=hope fixes VideoRoPE's layout (frequency=lta, index_layout=diagonal, centre=true, "
                             "text_after=temporal); use pe=videorope for its ablations")
        if not cfg.train_scales or min(cfg.train_scales) <= 0 or cfg.scale <= 0:
            raise ValueError(f"hope scales must be positive; got scale={cfg.scale}, train_scales={cfg.train_scales}")
        super().__init__(cfg)
        self.register_buffer("train_scale_values", torch.tensor(cfg.train_scales, dtype=torch.float32),
                             persistent=False)

    def free_axes(self, axes: list[int]) -> list[int]:
        return [-1 if a == 0 else a for a in axes]  # temporal pairs: frequency 0 (NoPE)

    def item_scale(self, lay, positions):  # replaces VideoRoPE's fixed delta
        if self.training and positions.meta.get("augment", False):
            pick = torch.randint(len(self.cfg.train_scales), lay.count.shape, device=lay.count.device)
            return self.train_scale_values[pick]
        return float(self.cfg.scale)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, scale={self.cfg.scale}, train_scales={self.cfg.train_scales}"
