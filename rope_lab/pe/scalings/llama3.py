"""Llama 3.1 frequency scaling (Meta, "The Llama 3 Herd of Models", arXiv 2407.21783).

Reference implementations: Meta ``llama-models`` ``apply_scaling`` and HF ``_compute_llama3_parameters``:
wavelengths shorter than ``L0 / high_freq_factor`` keep their frequency, longer than ``L0 / low_freq_factor`` are
divided by ``factor``, and in between the two are blended with
``smooth = (L0 / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)``. Attention factor 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from rope_lab.pe.registry import register_scaling
from rope_lab.pe.scalings.base import Scaling
from rope_lab.pe.scalings.common import check_original_length, check_positive


@register_scaling("llama3")
class Llama3Scaling(Scaling):
    """Defaults are Llama 3.1's: factor 8, low 1, high 4, original length 8192 (configs/pe/scaling/llama3.yaml
    sets the original length to the run's ``task.train_length``)."""

    @dataclass
    class Config:
        factor: float = 8.0
        low_freq_factor: float = 1.0
        high_freq_factor: float = 4.0
        # L0; configs/pe/scaling/*.yaml set it to the run's task.train_length (None there: the task has none)
        original_max_position_embeddings: int | None = 8192

    def __init__(self, cfg: Config) -> None:
        for key in ("factor", "low_freq_factor", "high_freq_factor"):
            check_positive(key, "llama3", getattr(cfg, key))
        if cfg.high_freq_factor <= cfg.low_freq_factor:
            raise ValueError(f"llama3 needs high_freq_factor > low_freq_factor; got high={cfg.high_freq_factor}, "
                             f"low={cfg.low_freq_factor}")
        check_original_length("llama3", cfg.original_max_position_embeddings)
        super().__init__(cfg)

    def rewrite(self, inv_freq: Tensor, seq_len: Tensor | None = None) -> tuple[Tensor, float]:
        c = self.cfg
        theta = inv_freq.double()
        l0 = float(c.original_max_position_embeddings)
        low_wavelen, high_wavelen = l0 / c.low_freq_factor, l0 / c.high_freq_factor
        wavelen = 2 * math.pi / theta
        out = torch.where(wavelen > low_wavelen, theta / c.factor, theta)
        smooth = (l0 / wavelen - c.low_freq_factor) / (c.high_freq_factor - c.low_freq_factor)
        blended = (1 - smooth) * out / c.factor + smooth * out
        medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
        return torch.where(medium, blended, out).to(inv_freq.dtype), 1.0
