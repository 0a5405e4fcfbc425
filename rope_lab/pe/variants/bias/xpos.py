"""xPos (Sun et al., "A Length-Extrapolatable Transformer", ACL 2023, arXiv 2212.10554), ``pe=xpos``.

RoPE (interleaved pairs, theta_i = base^(-2i/d)) times a per-pair scale: the query at position n is multiplied by
``zeta_i^(n/B)`` and the key at m by ``zeta_i^(-m/B)`` with ``zeta_i = (i/(d/2) + gamma)/(1 + gamma) < 1``
(gamma = 0.4, B = ``scale_base`` = 512), so pair i contributes ``zeta_i^((n-m)/B)`` times its rotary term: the score
depends on n - m only and decays with distance. Future keys would be amplified, so it is causal only. Reference
implementations: microsoft/torchscale ``XPOS`` and lucidrains' rotary-embedding-torch
``RotaryEmbedding(use_xpos=True).rotate_queries_and_keys``, which tests/pe/test_xpos.py compares against.

Exponents are measured from a centre c (any c cancels in q.k; it only keeps the factors near 1): the midpoint of
the current chunk's query coordinates. The KV cache holds keys rotated but not scaled, plus their coordinates
(``rope_lab.pe.variants.bias.logit_bias.track_key_coords``); every step scales them for the new centre, as torchscale
re-applies xPos to its raw cached keys, so chunked and token-by-token decoding equal the parallel pass (torchscale's
``offset = src_len - 1`` is right for one new token only, and rotary-embedding-torch's cached-key path centres the
query at the wrong length). Cached keys get factors <= 1 that shrink with distance, as the scores should.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from rope_lab.pe.kernels.eager import math_dtype
from rope_lab.pe.kv_cache import KVCache
from rope_lab.pe.registry import register_pe
from rope_lab.pe.rotary import RotaryConfig, RotaryState
from rope_lab.pe.types import Positions
from rope_lab.pe.variants.bias.logit_bias import TokenCoords, keep_mask, track_key_coords
from rope_lab.pe.variants.text.rope import RoPE


def xpos_zeta(n_pairs: int, gamma: float = 0.4) -> Tensor:
    """(P,) float64 per-pair decay bases zeta_i = (i/P + gamma)/(1 + gamma), i = 0..P-1."""
    return (torch.arange(n_pairs, dtype=torch.float64) / n_pairs + gamma) / (1 + gamma)


def scale_pairs(x: Tensor, log_zeta: Tensor, exponent: Tensor, layout: str) -> Tensor:
    """x (B, H, N, D) with its first 2P channels (pairs in ``layout``) times zeta_i^exponent; exponent (B, N)."""
    wide = math_dtype(x.dtype)
    factor = torch.exp(exponent.to(wide)[:, None, :, None] * log_zeta.to(wide))  # (B, 1, N, P)
    factor = torch.cat([factor, factor], -1) if layout == "half" else factor.repeat_interleave(2, dim=-1)
    rotated = 2 * log_zeta.shape[-1]
    scaled = x[..., :rotated].to(wide) * factor
    return torch.cat([scaled.to(x.dtype), x[..., rotated:]], dim=-1)


@dataclass
class XPosConfig(RotaryConfig):
    pair_layout: str = "interleaved"  # as in the paper's code (torchscale, rotary-embedding-torch)
    scale_base: float = 512.0  # B: the scale of a pair changes by zeta_i every B positions
    gamma: float = 0.4  # the paper's gamma: zeta_i = (i/(d/2) + gamma)/(1 + gamma)

    greater_than = {"base": 1.0, "scale_base": 0.0, "gamma": 0.0}


@dataclass
class XPosState(RotaryState):
    tokens: TokenCoords | None = None  # the queries' and keys' token coordinates (the decay is about their centre)


@register_pe("xpos")
class XPos(RoPE):
    """RoPE with the xPos per-pair exponential decay in the scores; owns ``attend`` (causal only)."""

    Config = XPosConfig
    State: ClassVar[type[XPosState]] = XPosState
    causal_only = True
    multimodal = False

    def setup(self, geometry) -> XPos:
        super().setup(geometry)
        if self.scaling.rerotates_cache:
            raise ValueError("pe=xpos caches rotated keys; use a pe/scaling with kv_cache=hf")
        log_zeta = xpos_zeta(self.n_pairs, self.cfg.gamma).log() / self.cfg.scale_base
        self.register_buffer("log_zeta", log_zeta, persistent=False)  # float64: cast to the math dtype per use
        return self

    def prepare(self, positions: Positions, cache: KVCache | None = None) -> XPosState:
        state = super().prepare(positions, cache)
        state.tokens = track_key_coords(state, cache)
        return state

    def attend(self, q: Tensor, k: Tensor, v: Tensor, *, state: XPosState, layer: int, causal: bool,
               x: Tensor | None = None, cache: KVCache | None = None) -> Tensor:
        if not causal:
            raise ValueError("pe=xpos amplifies future keys: it needs causal attention")
        q, k = self.rotate(q, k, state, layer)
        past = 0
        if cache is not None:
            past = 0 if cache.keys[layer] is None else cache.keys[layer].shape[-2]
            k, v = cache.append(layer, k, v)
        queries, keys = state.tokens.queries, state.tokens.keys[:, -k.shape[-2]:]
        centre = (queries.amin(1, keepdim=True) + queries.amax(1, keepdim=True)) / 2
        q = scale_pairs(q, self.log_zeta, queries - centre, self.cfg.pair_layout)
        k = scale_pairs(k, self.log_zeta, centre - keys, self.cfg.pair_layout)
        gqa = k.shape[1] != q.shape[1]
        if past == 0 and state.positions.segment is None:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        keep = keep_mask(state, q.shape[-2], k.shape[-2], past, True, cache, q.device)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=keep, enable_gqa=gqa)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", scale_base={self.cfg.scale_base}, gamma={self.cfg.gamma}"
