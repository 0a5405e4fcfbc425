"""ReRoPE and Leaky ReRoPE (Jianlin Su, "Rectified Rotary Position Embeddings", 2023; kexue.fm/archives/9708).

Training-free extension of a RoPE model (``rope_lab.pe.variants.long_context.extension``): a relative distance d = i - j
is used as is inside the window w and clamped beyond it, so no pair is scored at a distance longer than w:

    ReRoPE         d' = d if d < w else w                               (slope 0)
    Leaky ReRoPE   d' = d if d < w else w + (d - w) / k                 (slope 1/k, k > 1; Su used k = 16)

Far pairs rotate the query at w + slope (p_i - w) and the key at slope p_j, whose difference is d'. Reference
implementation: bojone/rerope (``rerope_patch.py``, ``leaky_rerope_patch.py``: two score matrices merged by
|i - j| < w, decoding by rotating cached keys to min(i - j, w)); its scripts also apply the log-n query scaling
with the training length (``log_scale_length`` here, off by default) and use w = 512 for a 4096-token model.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from rope_lab.pe.registry import register_pe
from rope_lab.pe.variants.long_context.extension import ExtendedRoPE, ExtensionConfig


@dataclass
class ReRoPEConfig(ExtensionConfig):
    window: int = 16  # w: 1/8 of our default training length 128, as the official 512 is of 4096
    slope: float = 0.0  # growth of the distance beyond the window: 0 ReRoPE, 1/k Leaky ReRoPE; in [0, 1)


@register_pe("rerope")
class ReRoPE(ExtendedRoPE):
    """RoPE whose relative distances are rectified at the window (flat beyond it, or growing with ``slope``)."""

    Config = ReRoPEConfig

    def __init__(self, cfg: ReRoPEConfig) -> None:
        if not 0.0 <= cfg.slope < 1.0:
            raise ValueError(f"pe=rerope needs pe.slope in [0, 1) (0: ReRoPE, 1/k: Leaky ReRoPE; 1 would be plain "
                             f"RoPE); got slope={cfg.slope}")
        super().__init__(cfg)

    def far_coords(self, position: Tensor) -> tuple[Tensor, Tensor]:
        window, slope = float(self.cfg.window), self.cfg.slope
        return window + slope * (position - window), slope * position

    def extra_repr(self) -> str:
        return super().extra_repr() + f", slope={self.cfg.slope}"

