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

``dynamic_yarn`` (the YaRN paper's "Dynamic Scaling" applied to YaRN, "Dynamic-YaRN"; jquesnelle/yarn
``scaled_rope/LlamaDynamicYaRNScaledRotaryEmbedding.py``; HF has no such rope_type): the same frequencies and
temperature with the scale recomputed every forward from the current length, ``s = max(factor, L / L0)``
(``factor`` 1: the reference's default; ``factor = max_pos / L0``: its ``finetuned=True``). At L <= L0 with factor 1
it is exactly no scaling; at L = k L0 it is static YaRN with factor k. ``kv_cache`` as dynamic NTK
(rope_lab/pe/scalings/cache.py).

NTK-by-parts (the YaRN paper's "NTK-by-parts" interpolation: the ramp without the temperature) is ``yarn`` with
``attention_factor=1.0``. The older three-band "PartNTK" code in jquesnelle/yarn
(``LlamaPartNTKScaledRotaryEmbedding.py``: linear / NTK / original blended with hard-coded beta 1.25/0.75 and
gamma 16/2 rotations) is a different scaling and is not implemented.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from rope_lab.pe.registry import register_scaling
from rope_lab.pe.scalings.base import Scaling
from rope_lab.pe.scalings.common import check_kv_cache, check_original_length, check_positive, current_length


def get_mscale(scale: float | Tensor, mscale: float = 1.0) -> float | Tensor:
    """YaRN's temperature 0.1 mscale ln(s) + 1 (1 for s <= 1); a tensor scale gives a tensor (no host sync)."""
    if isinstance(scale, Tensor):
        return torch.where(scale <= 1, torch.ones_like(scale), 0.1 * mscale * torch.log(scale) + 1.0)
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
        attention_factor: float | None = None  # None: 0.1 ln(factor) + 1 (or the mscale / mscale_all_dim ratio)
        mscale: float | None = None
        mscale_all_dim: float | None = None
        truncate: bool = True  # floor/ceil the correction range (False for gpt-oss)

    def __init__(self, cfg: Config) -> None:
        check_positive("factor", "yarn", cfg.factor)
        check_positive("beta_fast", "yarn", cfg.beta_fast)
        check_positive("beta_slow", "yarn", cfg.beta_slow)
        check_positive("attention_factor", "yarn", cfg.attention_factor, allow_none=True)
        check_original_length("yarn", cfg.original_max_position_embeddings)
        super().__init__(cfg)

    def attention_factor(self, scale: float | Tensor | None = None) -> float | Tensor:
        """The temperature at ``scale`` (default: the configured factor)."""
        c = self.cfg
        scale = c.factor if scale is None else scale
        if c.attention_factor is not None:
            return float(c.attention_factor)
        if c.mscale and c.mscale_all_dim:
            ratio = get_mscale(scale, c.mscale) / get_mscale(scale, c.mscale_all_dim)
            return ratio if isinstance(ratio, Tensor) else float(ratio)
        return get_mscale(scale)

    def setup(self, rotary_dim: int, base: float) -> None:
        super().setup(rotary_dim, base)
        c = self.cfg
        self.low, self.high = correction_range(c.beta_fast, c.beta_slow, rotary_dim, base,
                                               c.original_max_position_embeddings, c.truncate)
        self.interpolate = ramp(self.low, self.high, rotary_dim // 2)  # HF: 1 - inv_freq_extrapolation_factor

    def blend(self, theta: Tensor, scale: float | Tensor) -> Tensor:
        """theta / s where the ramp is 1, theta where it is 0, linear in between (float64)."""
        w = self.interpolate.to(theta.device)
        return (theta / scale) * w + theta * (1 - w)

    def rewrite(self, inv_freq: Tensor, seq_len: Tensor | None = None) -> tuple[Tensor, float]:
        return self.blend(inv_freq.double(), self.cfg.factor).to(inv_freq.dtype), self.attention_factor()


@register_scaling("dynamic_yarn")
class DynamicYaRNScaling(YaRNScaling):
    """YaRN with ``s = max(factor, L / L0)`` from the current length L (max position + 1) of each forward.

    Frequencies and temperature follow s (the reference recomputes both ``inv_freq`` and ``mscale``); at s = 1
    both are returned untouched, so short inputs are bit-identical to no scaling. ``factor`` (>= 1) is the
    smallest scale: 1 for a model trained without YaRN, the fine-tuned factor for a YaRN model. The other
    options are ``yarn``'s (an explicit ``attention_factor`` is used verbatim at every length).
    """

    length_dependent = True

    @dataclass
    class Config(YaRNScaling.Config):
        kv_cache: str = "hf"  # hf | consistent, as dynamic_ntk (rope_lab/pe/scalings/cache.py)

    def __init__(self, cfg: Config) -> None:
        if not cfg.factor >= 1:
            raise ValueError(f"pe.scaling.factor must be >= 1 for scaling 'dynamic_yarn' (the smallest scale: 1 "
                             f"without YaRN fine-tuning, the fine-tuned factor otherwise); got {cfg.factor!r}")
        check_kv_cache(cfg.kv_cache)
        super().__init__(cfg)

    def scale(self, seq_len: Tensor | None) -> Tensor:
        """s = max(factor, L / L0), L = max(seq_len, L0): a float64 0-d tensor."""
        l0 = self.cfg.original_max_position_embeddings
        ratio = current_length(seq_len, l0) / float(l0)
        return torch.clamp(ratio, min=float(self.cfg.factor))

    def rewrite(self, inv_freq: Tensor, seq_len: Tensor | None = None) -> tuple[Tensor, Tensor]:
        s = self.scale(seq_len)
        theta = inv_freq.double()
        scaled = torch.where(s > 1, self.blend(theta, s), theta)  # s = 1: the input frequencies, bit for bit
        factor = torch.as_tensor(self.attention_factor(s), dtype=torch.float64, device=s.device)
        return scaled.to(inv_freq.dtype), factor
