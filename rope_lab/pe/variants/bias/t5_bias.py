"""T5 relative position bias (Raffel et al., "Exploring the Limits of Transfer Learning with a Unified Text-to-Text
Transformer", JMLR 2020, arXiv 1910.10683), ``pe=t5_bias``.

The signed distance ``j - i`` (key minus query) is mapped to one of ``num_buckets`` buckets: exact for small
distances, logarithmic up to ``max_distance``, one shared bucket beyond. Bidirectional buckets (the encoder) spend
half of them on future keys; causal buckets (the decoder) spend all of them on past keys and send every future key
to bucket 0. Each bucket holds a learned scalar per head, added to the scaled logits and shared by every layer (T5's
``bias_shared``; ``per_layer: true`` gives each layer its own table). Reference implementations:
tensorflow/mesh ``_relative_position_bucket`` and its HF port ``T5Attention._relative_position_bucket``, which
tests/pe/test_t5_bias.py compares against; the distances come from the tokens' coordinates, so KV-cache decoding
uses the same buckets as the parallel pass.

Unlike T5 (no 1/sqrt(d) in its attention; the scale is folded into the query init), rope_lab's attention scales
``q.k`` by 1/sqrt(d) and adds the bias after it, as x-transformers does; the buckets are the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor, nn

from rope_lab.pe.registry import register_pe
from rope_lab.pe.variants.bias.logit_bias import LogitBiasState, TokenLogitBias

DIRECTIONS = ("auto", "bidirectional", "causal")


def relative_position_bucket(relative: Tensor, bidirectional: bool, num_buckets: int, max_distance: int) -> Tensor:
    """Bucket ids (long) of signed distances ``relative = key - query`` (T5's rule; float32 log, truncated)."""
    relative = relative.round().long()
    buckets = torch.zeros_like(relative)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (relative > 0).long() * num_buckets
        distance = relative.abs()
    else:
        distance = (-relative).clamp(min=0)
    max_exact = num_buckets // 2
    # clamp(min=1) only keeps log finite for the exact range, which the where() below discards
    log_ratio = torch.log(distance.clamp(min=1).float() / max_exact) / math.log(max_distance / max_exact)
    large = max_exact + (log_ratio * (num_buckets - max_exact)).long()
    large = large.clamp(max=num_buckets - 1)
    return buckets + torch.where(distance < max_exact, distance, large)


@dataclass
class T5BiasConfig:
    num_buckets: int = 32  # T5's default; even, >= 4
    max_distance: int = 128  # distance where the last bucket starts growing no further; > num_buckets // 2
    direction: str = "auto"  # auto (from the task: causal -> causal buckets) | bidirectional | causal
    per_layer: bool = False  # T5 shares one table across the layers of a stack


def _check(cfg: T5BiasConfig) -> None:
    if cfg.num_buckets < 4 or cfg.num_buckets % 2:
        raise ValueError(f"pe=t5_bias needs an even num_buckets >= 4 (T5: 32); got num_buckets={cfg.num_buckets}")
    if cfg.max_distance <= cfg.num_buckets // 2:
        raise ValueError(f"pe=t5_bias needs max_distance > num_buckets // 2 = {cfg.num_buckets // 2} (the exact "
                         f"range; T5: 128); got max_distance={cfg.max_distance}")
    if cfg.direction not in DIRECTIONS:
        raise ValueError(f"pe=t5_bias: unknown direction '{cfg.direction}'; choose one of {list(DIRECTIONS)}")


@dataclass
class T5BiasState(LogitBiasState):
    buckets: dict[tuple[int, bool], Tensor] = field(default_factory=dict)  # (n_keys, causal) -> bucket ids


@register_pe("t5_bias")
class T5Bias(TokenLogitBias):
    """Learned per-head bias on bucketed relative positions."""

    Config = T5BiasConfig
    State: ClassVar[type[T5BiasState]] = T5BiasState

    def __init__(self, cfg: T5BiasConfig) -> None:
        _check(cfg)
        super().__init__()
        self.cfg = cfg

    def setup(self, geometry) -> T5Bias:
        super().setup(geometry)
        tables = geometry.depth if self.cfg.per_layer else 1
        # HF T5's init: normal(0, d_model^-0.5)
        self.table = nn.Parameter(torch.randn(tables, self.cfg.num_buckets, geometry.n_heads) * geometry.dim ** -0.5)
        return self

    def incompatibility(self, num_axes, causal, multimodal=False, axes=None) -> str | None:
        if self.cfg.direction == "causal" and not causal:
            return "pe=t5_bias direction=causal sends every future key to bucket 0: it needs causal attention " \
                   "(choose direction=auto or bidirectional)"
        return super().incompatibility(num_axes, causal, multimodal, axes)

    def bidirectional(self, causal: bool) -> bool:
        return self.cfg.direction == "bidirectional" or (self.cfg.direction == "auto" and not causal)

    def logit_bias(self, state: T5BiasState, layer: int, n_queries: int, n_keys: int, *, causal: bool, x=None,
                   cache=None) -> Tensor:
        if self.cfg.direction == "causal" and not causal:
            raise ValueError("pe=t5_bias direction=causal sends every future key to bucket 0: it needs causal "
                             "attention; choose direction=auto or bidirectional")
        memo = (n_keys, causal)  # the same for every layer of this forward
        if memo not in state.buckets:
            state.buckets[memo] = relative_position_bucket(-self.distances(state, n_keys)[:, 0],
                                                         self.bidirectional(causal), self.cfg.num_buckets,
                                                         self.cfg.max_distance)
        buckets = state.buckets[memo]
        table = self.table[layer if self.cfg.per_layer else 0].float()  # (buckets, H)
        return table[buckets].permute(0, 3, 1, 2)  # (B, H, Nq, Nk)

    def extra_repr(self) -> str:
        c = self.cfg
        return (f"name={self.name}, num_buckets={c.num_buckets}, max_distance={c.max_distance}, "
                f"direction={c.direction}, per_layer={c.per_layer}")
