"""ALiBi (Press, Smith, Lewis; "Train Short, Test Long: Attention with Linear Biases Enables Input Length
Extrapolation", ICLR 2022, arXiv 2108.12409), ``pe=alibi``.

No position embedding anywhere: head h adds ``-m_h * |i - j|`` to the scaled logit of query i and key j (after the
1/sqrt(d), never scaled by it). Slopes are the paper's geometric sequence ``m_h = 2^(-8 (h+1) / H)`` (1/2 .. 1/256
for 8 heads); for a head count H that is not a power of two, the first P = 2^floor(log2 H) heads take the P-head
sequence and the rest take every other slope of the 2P-head sequence (the official ``get_slopes`` of
ofirpress/attention_with_linear_biases; HF Bloom ``_get_alibi_slopes`` and MPT ``build_mpt_alibi_tensor``, which
tests/pe/test_alibi.py compares against). ``max_bias`` is MPT's ``alibi_bias_max`` (8 in the paper).

The bias uses the tokens' own coordinates, so the symmetric form (the author's rule for encoders, issue #5 of the
official repository; flash-attn's ``alibi_slopes``) and the causal form coincide on the visible keys, and cached
decoding sees the same distances as the parallel pass. It is built in fp32 (HF Falcon's bf16 slopes are off by up
to 13 logits at 4k tokens).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from rope_lab.pe.registry import register_pe
from rope_lab.pe.types import PEState
from rope_lab.pe.variants.bias.logit_bias import TokenLogitBias


def alibi_slopes(n_heads: int, max_bias: float = 8.0) -> Tensor:
    """(H,) float64 slopes: the paper's geometric sequence, the official rule for non-power-of-two H."""
    if n_heads < 1:
        raise ValueError(f"ALiBi needs n_heads >= 1; got {n_heads}")
    power = 2 ** math.floor(math.log2(n_heads))
    base = torch.arange(1, power + 1, dtype=torch.float64)
    slopes = 2.0 ** (-max_bias * base / power)
    extra = 2.0 ** (-max_bias * torch.arange(1, 2 * power + 1, 2, dtype=torch.float64) / (2 * power))
    return torch.cat([slopes, extra[: n_heads - power]])


@dataclass
class ALiBiConfig:
    max_bias: float = 8.0  # the exponent range of the slopes (MPT alibi_bias_max); 8 gives the paper's 1/2..1/256
    slopes: list[float] | None = None  # explicit per-head slopes (one per head, > 0) instead of the sequence

    greater_than = {"max_bias": 0.0}


@register_pe("alibi")
class ALiBi(TokenLogitBias):
    """Fixed per-head linear distance penalty on the attention logits (no learned parameters)."""

    Config = ALiBiConfig
    keep_dtype = ("slopes",)  # fp32 under model.to(bf16): Falcon's bf16 slopes are the pitfall this avoids

    def __init__(self, cfg: ALiBiConfig) -> None:
        super().__init__()
        if cfg.slopes is not None and not all(s > 0 for s in cfg.slopes):
            raise ValueError(f"pe=alibi: every slope must be > 0 (a penalty growing with distance); got "
                             f"slopes={cfg.slopes}")
        self.cfg = cfg

    def setup(self, geometry) -> ALiBi:
        super().setup(geometry)
        slopes = alibi_slopes(geometry.n_heads, self.cfg.max_bias)
        if self.cfg.slopes is not None:
            if len(self.cfg.slopes) != geometry.n_heads:
                raise ValueError(f"pe=alibi: slopes has {len(self.cfg.slopes)} values, the backbone has "
                                 f"{geometry.n_heads} heads; give one slope per head or slopes=null")
            slopes = torch.tensor(self.cfg.slopes, dtype=torch.float64)
        self.register_buffer("slopes", slopes.float(), persistent=False)
        return self


    def bias(self, state: PEState, layer: int, n_queries: int, n_keys: int) -> Tensor:
        return -self.slopes[:, None, None] * self.distances(state, n_keys).abs()

    def extra_repr(self) -> str:
        given = "given" if self.cfg.slopes is not None else "geometric"
        return f"name={self.name}, max_bias={self.cfg.max_bias}, slopes={given}"
