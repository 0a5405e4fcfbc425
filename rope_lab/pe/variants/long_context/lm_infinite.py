"""LM-Infinite (Han, Wang, Peng, Xiong, Chen, Ji, Wang; "LM-Infinite: Zero-Shot Extreme Length Generalization for
Large Language Models", NAACL 2024, arXiv 2308.16137).

Training-free extension of a RoPE model (``rope_lab.pe.variants.long_context.extension``) by a Lambda-shaped attention
mask: a query attends to the keys within its local window (i - j < window, plain RoPE) and to the ``n_global`` starting
tokens (positions 0..n_global-1); every other key is masked. A starting token farther than the window is scored at the
capped distance ``distance_cap`` (None: the window, the paper's L_pretrain): the query rotated at the cap, the key
unrotated. Attention never spans more than window + n_global keys, nor a distance longer than the cap.

Reference implementation: Glaciohound/LM-Infinite, ``models/lambda_attention.py`` and ``models/llama.py``
(``local_branch``, ``global_branch``, ``limit_distance``; the README runs LLaMA-2 with 4096 / 10 / 4096). Not
included: its optional ``triangle_offset`` and top-k middle-token attention (both off in the paper's runs). Its
decoder drops the middle keys from the cache; ours keeps them (masked), so results are the same and memory is not
bounded. The official code caps at min(limit_distance, kv_length - 1), which differs only when the cap exceeds the
window and the sequence is shorter than the cap; we use the cap as given, so that decoding equals the parallel pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from rope_lab.pe.registry import register_pe
from rope_lab.pe.variants.long_context.extension import ExtendedRoPE, ExtensionConfig


@dataclass
class LMInfiniteConfig(ExtensionConfig):
    window: int = 4096  # the local branch: keys with i - j < window (the paper: L_pretrain)
    n_global: int = 10  # the starting tokens every query attends to (the global branch); 0: a pure sliding window
    distance_cap: Optional[int] = None  # distance the far starting tokens are scored at (None: the window)


@register_pe("lm_infinite")
class LMInfinite(ExtendedRoPE):
    """RoPE under a Lambda-shaped mask (starting tokens + a local window), far starting tokens at a capped distance."""

    Config = LMInfiniteConfig
    #: the starting tokens are fixed positions (0..n_global-1): shifting every position changes which keys are
    #: attended, so the relative-position property tests do not apply
    relative = False

    def __init__(self, cfg: LMInfiniteConfig) -> None:
        if cfg.n_global < 0:
            raise ValueError(f"pe=lm_infinite needs pe.n_global >= 0 starting tokens; got n_global={cfg.n_global}")
        if cfg.distance_cap is not None:
            if cfg.distance_cap < 1:
                raise ValueError(f"pe=lm_infinite needs pe.distance_cap >= 1 tokens (or null: the window); "
                                 f"got distance_cap={cfg.distance_cap}")
            self._check_fits_training(cfg, "distance_cap", cfg.distance_cap)
        super().__init__(cfg)

    @property
    def cap(self) -> int:
        return self.cfg.window if self.cfg.distance_cap is None else self.cfg.distance_cap

    def far_coords(self, position: Tensor) -> tuple[Tensor, Tensor]:
        return torch.full_like(position, float(self.cap)), torch.zeros_like(position)

    def pair_keep(self, query_position: Tensor, key_position: Tensor, near: Tensor) -> Tensor:
        return near | (key_position < self.cfg.n_global)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", n_global={self.cfg.n_global}, distance_cap={self.cap}"
