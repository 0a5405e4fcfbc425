"""SelfExtend (Jin, Han, Yang, Jiang, Liu, Chang, Chen, Hu; "LLM Maybe LongLM: Self-Extend LLM Context Window
Without Tuning", ICML 2024, arXiv 2401.01325).

Training-free extension of a RoPE model (``rope_lab.pe.variants.long_context.extension``): keys within the neighbour
window W of the query keep their normal relative position; farther keys are scored with grouped positions, the query at
floor(p_i / G) + W - W / G and the key at floor(p_j / G), so the grouped distance continues the neighbour distances
where the two regions meet (d = W maps to about W) and grows G times slower beyond. A model trained at L then reads
about (L - W) G + W tokens.

Reference implementation: datamllab/LongLM, ``self_extend_patch/Llama.py`` (``self_extend_forward``: neighbour
pairs i - j < W by a triangular mask, group query position ``q // G + W - W / G`` with a true division, key
``k // G``; its ``scale_base`` log-n query scaling is ``log_scale_length`` here, off by default as there). The
FlashAttention decoding path of the same repository shifts by ``W - W // G`` instead; the two agree when G divides
W (the published settings: G = 8..64, W = 512..2048), and we follow the eager path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from rope_lab.pe.registry import register_pe
from rope_lab.pe.variants.long_context.extension import ExtendedRoPE, ExtensionConfig


@dataclass
class SelfExtendConfig(ExtensionConfig):
    window: int = 32  # W, the neighbour window (group_size_2): 1/4 of our training length 128, as 1024 is of 4096
    group: int = 8  # G, tokens per group beyond the window (the official group_size_1); 1 is plain RoPE


@register_pe("self_extend")
class SelfExtend(ExtendedRoPE):
    """RoPE with neighbour attention inside the window and grouped (floor(p / G)) attention beyond it."""

    Config = SelfExtendConfig
    #: floor(p / G) depends on where the tokens sit, not only on their distance (shifting every position changes
    #: the groups), so the relative-position property tests do not apply
    relative = False

    def __init__(self, cfg: SelfExtendConfig) -> None:
        if cfg.group < 1:
            raise ValueError(f"pe=self_extend needs pe.group >= 1 tokens per group (1: plain RoPE); "
                             f"got group={cfg.group}")
        super().__init__(cfg)

    def far_coords(self, position: Tensor) -> tuple[Tensor, Tensor]:
        window, group = float(self.cfg.window), float(self.cfg.group)
        grouped = torch.floor(position / group)
        return grouped + window - window / group, grouped

    def extra_repr(self) -> str:
        return super().extra_repr() + f", group={self.cfg.group}"
