"""Helpers shared by the scalings: argument checks and the pair index of a frequency vector."""

from __future__ import annotations

import torch
from torch import Tensor

from rope_lab.pe.scalings.base import KV_CACHE_MODES


def check_positive(name: str, scaling: str, value: float | int | None, allow_none: bool = False) -> None:
    """A factor / length must be > 0 (an error names the value and the valid range)."""
    if value is None and allow_none:
        return
    if value is None or not value > 0:
        raise ValueError(f"pe.scaling.{name} must be > 0 for scaling '{scaling}'; got {value!r}")


def check_original_length(scaling: str, value: int | None) -> None:
    """The original (training) length L0 must be set and > 0. The ``pe/scaling`` configs set it to the run's
    ``task.train_length``; a task without one (or a config built by hand) must give it explicitly."""
    if value is None:
        raise ValueError(f"pe.scaling.original_max_position_embeddings (the training length L0) is not set for "
                         f"scaling '{scaling}': it defaults to task.train_length, which this task does not have; "
                         f"set pe.scaling.original_max_position_embeddings=<L0>")
    check_positive("original_max_position_embeddings", scaling, value)


def check_kv_cache(mode: str) -> None:
    """The KV-cache mode of a length-dependent scaling (rope_lab/pe/scalings/base.py ``KV_CACHE_MODES``)."""
    if mode not in KV_CACHE_MODES:
        raise ValueError(f"pe.scaling.kv_cache must be one of {list(KV_CACHE_MODES)}; got {mode!r}")


def current_length(seq_len: Tensor | None, original_length: int) -> Tensor:
    """L = max(seq_len, L0) as a float64 0-d tensor (seq_len: max position + 1 of this forward, or None = L0);
    stays a tensor, so a dynamic scaling has no host sync and compiles to one graph for every length."""
    length = torch.tensor(float(original_length), dtype=torch.float64)
    if seq_len is None:
        return length
    return torch.maximum(seq_len.detach().to(torch.float64), length.to(seq_len.device))


def pair_exponent(inv_freq: Tensor, rotary_dim: int) -> Tensor:
    """2i/d for each pair i of ``inv_freq`` (float64), the RoFormer exponent of theta_i = base^(-2i/d)."""
    if inv_freq.shape[-1] != rotary_dim // 2:
        raise ValueError(f"scaling expects {rotary_dim // 2} frequencies (rotary_dim/2), got {inv_freq.shape[-1]}")
    return torch.arange(0, rotary_dim, 2, dtype=torch.float64, device=inv_freq.device) / rotary_dim
