"""YaRN (Peng, Quesnelle, Fan, Shippole, ICLR 2024, arXiv 2309.00071): NTK-by-parts + attention temperature.

Reference implementations: jquesnelle/yarn ``scaled_rope/LlamaYaRNScaledRotaryEmbedding.py`` and HF
``_compute_yarn_parameters`` (transformers 5.x), which this follows key for key:

- pairs with more than ``beta_fast`` rotations over the original length keep their frequency, pairs with fewer
  than ``beta_slow`` are interpolated (theta / s), a linear ramp in between over the correction range
  ``find_correction_dim(n) = d ln(L0 / (2 pi n)) / (2 ln base)`` (floor/ceil unless ``truncate=false``; the upper
  clamp is ``d - 1`` as in both references);
- attention factor ``0.1 ln s + 1`` (``mscale``), or ``mscale(s, mscale) / mscale(s, mscale_all_dim)`` when both are
  given (DeepSeek), or ``attention_factor`` verbatim. It multiplies q and k, so logits get its square (as HF's
  cos/sin scaling).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from rope_lab.pe.registry import register_scaling
from rope_lab.pe.scaling import Scaling
from rope_lab.pe.scalings.common import check_original_length, check_positive


def get_mscale(scale: float, mscale: float = 1.0) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def correction_dim(num_rotations: float, dim: int, base: float, original_length: int) -> float:
    """The (fractional) pair-dimension at which a frequency makes ``num_rotations`` turns over L0."""
    return dim * math.log(original_length / (num_rotations * 2 * math.pi)) / (2 * math.log(base))


def correction_range(beta_fast: float, beta_slow: float, dim: int, base: float, original_length: int,
                     truncate: bool) -> tuple[float, float]:
    low = correction_dim(beta_fast, dim, base, original_length)
    high = correction_dim(beta_slow, dim, base, original_length)
    if truncate:
        low, high = math.floor(low), math.ceil(high)
    return max(low, 0), min(high, dim - 1)


def ramp(low: float, high: float, n: int) -> Tensor:
    """clamp((i - low) / (high - low), 0, 1) for i < n (float64); 0 = keep, 1 = interpolate."""
    if low == high:
        high += 0.001  # as both references: avoid a zero-width ramp
    return ((torch.arange(n, dtype=torch.float64) - low) / (high - low)).clamp(0, 1)


@register_scaling("yarn")
class YaRNScaling(Scaling):
    """YaRN frequencies + attention factor (static; HF ``rope_type=yarn``)."""

    @dataclass
    class Config:
        factor: float = 1.0
        # L0; configs/pe/scaling/*.yaml set it to the run's task.train_length (None there: the task has none)
        original_max_position_embeddings: int | None = 2048
        beta_fast: float = 32.0
        beta_slow: float = 1.0
        attention_factor: float | None = None
        mscale: float | None = None
        mscale_all_dim: float | None = None
        truncate: bool = True

    def __init__(self, cfg: Config) -> None:
        check_positive("factor", "yarn", cfg.factor)
        check_positive("beta_fast", "yarn", cfg.beta_fast)
        check_positive("beta_slow", "yarn", cfg.beta_slow)
        check_positive("attention_factor", "yarn", cfg.attention_factor, allow_none=True)
        check_original_length("yarn", cfg.original_max_position_embeddings)
        super().__init__(cfg)

    def attention_factor(self) -> float:
        c = self.cfg
        if c.attention_factor is not None:
            return float(c.attention_factor)
        if c.mscale and c.mscale_all_dim:
            return float(get_mscale(c.factor, c.mscale) / get_mscale(c.factor, c.mscale_all_dim))
        return get_mscale(c.factor)

    def setup(self, rotary_dim: int, base: float) -> None:
        super().setup(rotary_dim, base)
        c = self.cfg
        self.low, self.high = correction_range(c.beta_fast, c.beta_slow, rotary_dim, base,
                                               c.original_max_position_embeddings, c.truncate)
        self.interpolate = ramp(self.low, self.high, rotary_dim // 2)  # HF: 1 - inv_freq_extrapolation_factor

    def rewrite(self, inv_freq: Tensor, seq_len: Tensor | None = None) -> tuple[Tensor, float]:
        theta = inv_freq.double()
        w = self.interpolate.to(theta.device)
        scaled = (theta / self.cfg.factor) * w + theta * (1 - w)
        return scaled.to(inv_freq.dtype), self.attention_factor()
