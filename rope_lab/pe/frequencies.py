"""Frequency helpers shared by rotary variants (RoFormer, arXiv 2104.09864; HF `compute_default_rope_parameters`)."""

from __future__ import annotations

import torch
from torch import Tensor


def rope_inv_freq(rotary_dim: int, base: float, dtype: torch.dtype = torch.float32) -> Tensor:
    """theta_i = base^(-2i/rotary_dim), i = 0..rotary_dim/2-1, computed as HF does (float exponent)."""
    if rotary_dim % 2:
        raise ValueError(f"rotary_dim must be even, got {rotary_dim}")
    if base <= 1:
        raise ValueError(f"rope base must be > 1, got {base}")
    exponent = torch.arange(0, rotary_dim, 2, dtype=torch.int64).to(dtype) / rotary_dim
    return 1.0 / (base**exponent)


def rotary_pairs(head_dim: int, fraction: float) -> int:
    """Number of rotated pairs for a partial-rotary fraction (HF `partial_rotary_factor`)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"rotary fraction must be in (0, 1], got {fraction}")
    return int(head_dim * fraction) // 2
