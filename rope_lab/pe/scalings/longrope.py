"""LongRoPE (Ding et al., ICML 2024, arXiv 2402.13753), as used by Phi-3 / Phi-3.5.

Reference implementations: microsoft/LongRoPE and HF ``_compute_longrope_parameters`` + ``dynamic_rope_update``:
theta_i / ext_i with ``ext = long_factor`` when the current length (max position + 1) exceeds L0, else
``short_factor`` (so L = L0 uses the short factors and L0 + 1 the long ones). Attention factor
``sqrt(1 + ln s / ln L0)`` for s > 1 (``s = factor``, by default ``max_position_embeddings / L0``), or given
verbatim; HF applies it at every length, and so do we. The switch is a ``torch.where`` on a 0-d tensor: no host
sync. With a KV cache, ``kv_cache=consistent`` re-rotates cached keys when the factors switch (HF-compatible
``hf`` leaves keys cached before the switch with the short factors; Phi-3 in HF recomputes the cache).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from rope_lab.pe.registry import register_scaling
from rope_lab.pe.scalings.base import Scaling
from rope_lab.pe.scalings.common import check_kv_cache, check_original_length, check_positive


@register_scaling("longrope")
class LongRoPEScaling(Scaling):
    """Per-pair rescale factors (``short_factor`` / ``long_factor``, each rotary_dim/2 long)."""

    length_dependent = True

    @dataclass
    class Config:
        short_factor: list[float] = field(default_factory=list)
        long_factor: list[float] = field(default_factory=list)
        # L0; configs/pe/scaling/*.yaml set it to the run's task.train_length (None there: the task has none)
        original_max_position_embeddings: int | None = 2048
        max_position_embeddings: int | None = None  # only to derive the default factor (Phi-3 style)
        factor: float | None = None
        attention_factor: float | None = None  # None: sqrt(1 + ln(factor) / ln(L0))
        kv_cache: str = "hf"  # hf | consistent (rope_lab/pe/scalings/cache.py)

    def __init__(self, cfg: Config) -> None:
        check_positive("original_max_position_embeddings", "longrope", cfg.original_max_position_embeddings,
                       allow_none=True)  # required: checked at setup, after the per-pair lists
        check_positive("factor", "longrope", cfg.factor, allow_none=True)
        check_positive("max_position_embeddings", "longrope", cfg.max_position_embeddings, allow_none=True)
        check_positive("attention_factor", "longrope", cfg.attention_factor, allow_none=True)
        check_kv_cache(cfg.kv_cache)
        for key in ("short_factor", "long_factor"):
            bad = [v for v in getattr(cfg, key) if not v > 0]
            if bad:
                raise ValueError(f"pe.scaling.{key} entries must be > 0; got {bad}")
        super().__init__(cfg)

    def scale_factor(self) -> float:
        c = self.cfg
        if c.factor is not None:
            return float(c.factor)
        if c.max_position_embeddings is not None:
            return c.max_position_embeddings / c.original_max_position_embeddings
        return 1.0

    def attention_factor(self) -> float:
        c, s = self.cfg, self.scale_factor()
        if c.attention_factor is not None:
            return float(c.attention_factor)
        return 1.0 if s <= 1.0 else math.sqrt(1 + math.log(s) / math.log(c.original_max_position_embeddings))

    def setup(self, rotary_dim: int, base: float) -> None:
        super().setup(rotary_dim, base)
        n = rotary_dim // 2
        for key in ("short_factor", "long_factor"):
            got = len(getattr(self.cfg, key))
            if got != n:
                raise ValueError(f"pe.scaling.{key} must have rotary_dim/2 = {n} entries (one per rotary pair); "
                                 f"got {got}")
        check_original_length("longrope", self.cfg.original_max_position_embeddings)
        self.short = torch.tensor(self.cfg.short_factor, dtype=torch.float64)
        self.long = torch.tensor(self.cfg.long_factor, dtype=torch.float64)

    def rewrite(self, inv_freq: Tensor, seq_len: Tensor | None = None) -> tuple[Tensor, float]:
        theta = inv_freq.double()
        short, long = self.short.to(theta.device), self.long.to(theta.device)
        if seq_len is None:
            ext = short
        else:
            ext = torch.where(seq_len.detach() > self.cfg.original_max_position_embeddings, long, short)
        return (theta / ext).to(inv_freq.dtype), self.attention_factor()
