"""Position interpolation (PI), static NTK-aware and dynamic NTK scaling.

- ``linear``: Chen et al. 2023, "Extending Context Window of LLMs via Positional Interpolation"
  (arXiv 2306.15595); HF ``_compute_linear_scaling_rope_parameters``: theta_i / s.
- ``ntk``: bloc97's NTK-aware scaling (reddit, 2023; jquesnelle/yarn
  ``scaled_rope/LlamaNTKScaledRotaryEmbedding.py``): base' = base * s^(d/(d-2)).
- ``dynamic_ntk``: emozilla's dynamic NTK (HF ``_compute_dynamic_ntk_parameters`` + ``dynamic_rope_update``):
  base' = base * (s * L / L0 - (s - 1))^(d/(d-2)) with L = max(seq_len, L0), recomputed every forward from the
  current length (a 0-d tensor: no host sync, no length-keyed cache).

All three act on the incoming per-pair frequencies, so they compose with any rotary variant:
base'^(-2i/d) = theta_i * r^(-2i/(d-2)) for a base ratio r^(d/(d-2)).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from rope_lab.pe.registry import register_scaling
from rope_lab.pe.scalings.base import Scaling
from rope_lab.pe.scalings.common import (check_kv_cache, check_original_length, check_positive, current_length,
                                         pair_exponent)


def ntk_rescale(inv_freq: Tensor, rotary_dim: int, ratio: Tensor | float) -> Tensor:
    """theta_i -> (base * ratio^(d/(d-2)))^(-2i/d) = theta_i * ratio^(-2i/(d-2)), in float64."""
    if rotary_dim <= 2:
        raise ValueError(f"NTK scaling needs rotary_dim > 2 (the exponent is d/(d-2)); got {rotary_dim}")
    exponent = pair_exponent(inv_freq, rotary_dim) * rotary_dim / (rotary_dim - 2)
    ratio = torch.as_tensor(ratio, dtype=torch.float64, device=inv_freq.device)
    return inv_freq.double() * ratio ** (-exponent)


@register_scaling("linear")
class LinearScaling(Scaling):
    """PI: every frequency divided by ``factor`` (equivalently positions / factor); attention factor 1."""

    @dataclass
    class Config:
        factor: float = 1.0

    def __init__(self, cfg: Config) -> None:
        check_positive("factor", "linear", cfg.factor)
        super().__init__(cfg)

    def rewrite(self, inv_freq: Tensor, seq_len: Tensor | None = None) -> tuple[Tensor, float]:
        return inv_freq / self.cfg.factor, 1.0


@register_scaling("ntk")
class NTKScaling(Scaling):
    """Static NTK-aware scaling: base' = base * factor^(d/(d-2)); attention factor 1."""

    @dataclass
    class Config:
        factor: float = 1.0

    def __init__(self, cfg: Config) -> None:
        check_positive("factor", "ntk", cfg.factor)
        super().__init__(cfg)

    def rewrite(self, inv_freq: Tensor, seq_len: Tensor | None = None) -> tuple[Tensor, float]:
        return ntk_rescale(inv_freq, self.rotary_dim, self.cfg.factor).to(inv_freq.dtype), 1.0


@register_scaling("dynamic_ntk")
class DynamicNTKScaling(Scaling):
    """Dynamic NTK: the base grows with the current length L = max(seq_len, L0) (HF ``rope_type=dynamic``).

    ``kv_cache``: ``hf`` keeps cached keys with the rotation they were written with (HF generate, a key cached
    at a shorter length keeps its older base); ``consistent`` caches un-rotated keys and re-rotates all of them
    with the current base every step, so attention never mixes rotations (see rope_lab/pe/scalings/cache.py).
    """

    length_dependent = True

    @dataclass
    class Config:
        factor: float = 1.0
        # L0; configs/pe/scaling/*.yaml set it to the run's task.train_length (None there: the task has none)
        original_max_position_embeddings: int | None = 2048
        kv_cache: str = "hf"

    def __init__(self, cfg: Config) -> None:
        check_positive("factor", "dynamic_ntk", cfg.factor)
        check_kv_cache(cfg.kv_cache)
        check_original_length("dynamic_ntk", cfg.original_max_position_embeddings)
        super().__init__(cfg)

    def base_ratio(self, seq_len: Tensor | None) -> Tensor:
        """(s * L / L0 - (s - 1)) with L = max(seq_len, L0): 1 at or below the original length."""
        s, l0 = self.cfg.factor, self.cfg.original_max_position_embeddings
        return s * current_length(seq_len, l0) / float(l0) - (s - 1)

    def rewrite(self, inv_freq: Tensor, seq_len: Tensor | None = None) -> tuple[Tensor, float]:
        return ntk_rescale(inv_freq, self.rotary_dim, self.base_ratio(seq_len)).to(inv_freq.dtype), 1.0
