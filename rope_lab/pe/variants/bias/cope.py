"""CoPE, contextual position encoding (Golovneva, Wang, Weston, Sukhbaatar; "Contextual Position Encoding: Learning
to Count What's Important", 2024, arXiv 2405.18719), ``pe=cope``.

Positions are counted by the model: gates ``g_ij = sigmoid(q_i.k_j / sqrt(d))`` on the visible keys, the position of
key j for query i is ``p_ij = sum_{t=j..i} g_it`` (a reverse cumulative sum over keys, the query's own gate
included), capped at ``npos_max - 1``. Learned integer-position embeddings ``e[0..npos_max-1]`` (one table per
layer, shared by its heads, zero-initialised) give ``z_ip = q_i.e[p]``, and the fractional position interpolates
the logits: ``pos_ij = frac(p) z_i,ceil(p) + (1 - frac(p)) z_i,floor(p)``, added to the scaled logit. This is the
paper's appendix snippet (= facebookresearch/RAM ``projects/cope`` with ``--cope-nodiv``, = x-transformers ``CoPE``,
which tests/pe/test_cope.py compares against); RAM's default also divides ``pos_ij`` by sqrt(d)
(``divide_position_logits: true``). Causal only. The cache holds plain keys and values: each step's gates are
computed against every cached key, so decoding equals the parallel pass. Needs the full (Nq, Nk) gate matrix (no
FlashAttention), as in the paper.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from rope_lab.pe.interface import PositionalEncoding
from rope_lab.pe.kernels.eager import math_dtype
from rope_lab.pe.kv_cache import KVCache
from rope_lab.pe.registry import register_pe
from rope_lab.pe.types import PEState
from rope_lab.pe.variants.bias.logit_bias import keep_mask


def contextual_positions(gate_logits: Tensor, visible: Tensor, npos_max: int) -> Tensor:
    """p_ij = sum_{t=j..i} sigmoid(logit_it) over visible keys, capped at npos_max - 1; (.., Nq, Nk)."""
    gates = gate_logits.sigmoid().masked_fill(~visible, 0.0)
    return gates.flip(-1).cumsum(-1).flip(-1).clamp(max=npos_max - 1)


def interpolated_position_logits(q: Tensor, positions: Tensor, embeddings: Tensor) -> Tensor:
    """q (B, H, Nq, D), fractional positions (B, H, Nq, Nk), embeddings (npos, D) -> (B, H, Nq, Nk): q.e[p]
    linearly interpolated between the two integer positions around p."""
    per_integer = q @ embeddings.transpose(0, 1)  # (B, H, Nq, npos)
    low, high = positions.floor(), positions.ceil()
    at_low = per_integer.gather(-1, low.long())
    at_high = per_integer.gather(-1, high.long())
    weight = positions - low
    return weight * at_high + (1 - weight) * at_low


@dataclass
class CoPEConfig:
    npos_max: int = 64  # cap of the counted positions (the paper: small caps suffice on LM tasks); >= 2
    divide_position_logits: bool = False  # RAM's default scales pos_ij by 1/sqrt(d) too (the paper's snippet not)


@register_pe("cope")
class CoPE(PositionalEncoding):
    """Gated, counted positions; owns ``attend`` (causal only, KV-cache decoding supported)."""

    Config = CoPEConfig
    causal_only = True
    max_axes = 1  # positions are counted from the content; coordinates are not read

    def __init__(self, cfg: CoPEConfig) -> None:
        super().__init__()
        if cfg.npos_max < 2:
            raise ValueError(f"pe=cope needs npos_max >= 2 (a query's own position lies in (0, 1)); "
                             f"got npos_max={cfg.npos_max}")
        self.cfg = cfg

    def setup(self, geometry) -> CoPE:
        super().setup(geometry)
        self.position_embeddings = nn.Parameter(torch.zeros(geometry.depth, self.cfg.npos_max, geometry.head_dim))
        return self

    def attend(self, q: Tensor, k: Tensor, v: Tensor, *, state: PEState, layer: int, causal: bool,
               x: Tensor | None = None, cache: KVCache | None = None) -> Tensor:
        if not causal:
            raise ValueError("pe=cope counts earlier keys (a reverse cumulative sum over the causal row): it needs "
                             "causal attention")
        past = 0
        if cache is not None:
            past = 0 if cache.keys[layer] is None else cache.keys[layer].shape[-2]
            k, v = cache.append(layer, k, v)
        rep = q.shape[1] // k.shape[1]
        wide = math_dtype(q.dtype)
        qf, kf = q.to(wide), k.to(wide).repeat_interleave(rep, 1)
        scale = 1 / math.sqrt(q.shape[-1])
        logits = (qf @ kf.transpose(-1, -2)) * scale
        visible = keep_mask(state, q.shape[-2], k.shape[-2], past, True, cache, q.device)
        positions = contextual_positions(logits, visible, self.cfg.npos_max)
        embeddings = self.position_embeddings[layer].to(wide)
        position_logits = interpolated_position_logits(qf, positions, embeddings)
        if self.cfg.divide_position_logits:
            position_logits = position_logits * scale
        attn = (logits + position_logits).masked_fill(~visible, float("-inf")).softmax(-1)
        return (attn @ v.to(wide).repeat_interleave(rep, 1)).to(q.dtype)

    def extra_repr(self) -> str:
        return f"name={self.name}, npos_max={self.cfg.npos_max}, " \
               f"divide_position_logits={self.cfg.divide_position_logits}"
