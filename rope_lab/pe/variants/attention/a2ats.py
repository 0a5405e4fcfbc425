"""A²ATS (He, Xing, Wang, Xu, Wu, Zhou, Liu, Xue, Li; ACL Findings 2025, arXiv 2502.12665), ``pe=a2ats``.

A training-free inference method on a RoPE model: retrieval-based top-k attention whose retrieval scores use
Windowed RoPE (WRoPE: the query rotated by a fixed relative position w, keys before RoPE) and query-aware vector
quantization of the pre-RoPE keys. Each query attends exactly (plain RoPE logits) to the first ``sinks`` keys, the
keys within ``local_window`` and the top-k of the rest by ``R_w q · ĉ(k) / sqrt(d)``, united over its GQA group
(rope_lab/pe/variants/attention/a2ats_retrieval.py). Codebooks come from ``python -m rope_lab.analysis.a2ats`` (the
query-aware k-means, rope_lab/pe/variants/attention/a2ats_codebooks.py); ``codebooks: null`` scores the exact pre-RoPE
keys (the WRoPE-only ablation). Reference implementation: junhuihe-hjh/A2ATS ``vqkey/models/llama_masked.py`` (defaults
wrope_local_window=64, wrope_relative_pos=2048, attention_sink=8, README topk=0.03).

Unlike the reference, which retrieves only for decoded tokens and prefills densely, every query of a forward pass
retrieves for itself (``dense_prefill: true`` restores the reference's dense multi-token chunks); a full pass then
equals token-by-token decoding, so perplexity measures retrieval. The KV cache keeps RoPE keys for the exact
attention and, per layer in ``KVCache.pe_state``, the key codes (or pre-RoPE keys without codebooks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from rope_lab.pe.kv_cache import KVCache
from rope_lab.pe.registry import register_pe
from rope_lab.pe.rotary import RotaryConfig
from rope_lab.pe.types import PEState
from rope_lab.pe.variants.attention.a2ats_codebooks import CodebookFile, assign_codes, gather_codes, keyspace_codebook
from rope_lab.pe.variants.attention.a2ats_retrieval import Budget, always_kept, retrieval_mask, wrope_query
from rope_lab.pe.variants.text.rope import RoPE

#: called with (layer, WRoPE queries (B, H, N, D), pre-RoPE keys (B, Hkv, N, D)) while calibrating
Recorder = Callable[[int, Tensor, Tensor], None]


@dataclass
class A2ATSConfig(RotaryConfig):
    topk: float = 0.03  # fraction of the sequence retrieved per query head (official README example)
    topk_tokens: int | None = None  # a fixed number of retrieved keys instead of the fraction
    local_window: int = 64  # wrope_local_window: keys closer than this are always attended
    sinks: int = 8  # attention_sink: the first keys of the sequence are always attended
    relative_pos: int = 2048  # wrope_relative_pos w: the distance every retrieval score assumes
    codebooks: str | None = None  # calibrated codebook file; null: exact pre-RoPE keys (WRoPE only)
    dense_prefill: bool = False  # the reference's generate(): chunks of several queries attend densely


def _check(cfg: A2ATSConfig) -> None:
    if not 0.0 <= cfg.topk <= 1.0:
        raise ValueError(f"pe=a2ats needs pe.topk in [0, 1] (a fraction of the sequence; pe.topk_tokens sets a "
                         f"count); got topk={cfg.topk}")
    for key, low in (("topk_tokens", 0), ("local_window", 1), ("sinks", 0), ("relative_pos", 0)):
        value = getattr(cfg, key)
        if value is not None and value < low:
            raise ValueError(f"pe=a2ats needs pe.{key} >= {low}; got {key}={value}")
    if cfg.psc:
        raise ValueError("pe=a2ats scores keys before RoPE and cannot combine with pe.psc=true; choose psc: false")


@register_pe("a2ats")
class A2ATS(RoPE):
    """RoPE whose ``attend`` retrieves top-k keys by WRoPE scores on (vector-quantized) pre-RoPE keys."""

    Config = A2ATSConfig
    causal_only = True

    def __init__(self, cfg: A2ATSConfig) -> None:
        _check(cfg)
        super().__init__(cfg)
        self.budget = Budget(cfg.topk, cfg.topk_tokens)
        self.recorder: Recorder | None = None

    def setup(self, geometry) -> A2ATS:
        super().setup(geometry)
        if self.scaling.rerotates_cache:
            raise ValueError("pe=a2ats keeps each cached key's rotation; use a pe/scaling with kv_cache=hf")
        self.has_codebooks = self.cfg.codebooks is not None
        if self.has_codebooks:
            book = CodebookFile.load(self.cfg.codebooks)
            book.check(geometry.depth, geometry.n_kv_heads, geometry.head_dim, self.cfg.codebooks)
            if book.query_aware and book.relative_pos != self.cfg.relative_pos:  # H: queries rotated by that w
                raise ValueError(f"pe.codebooks={self.cfg.codebooks} was calibrated with relative_pos="
                                 f"{book.relative_pos}; set pe.relative_pos={book.relative_pos} or recalibrate")
            # non-persistent: a RoPE checkpoint loads into this model unchanged (eval.py pe.name=a2ats)
            self.register_buffer("vq_cholesky", book.cholesky.float(), persistent=False)
            self.register_buffer("vq_centroids", book.centroids.float(), persistent=False)
            self.register_buffer("vq_codebook", keyspace_codebook(book.centroids.double(), book.cholesky.double())
                                 .float(), persistent=False)
        return self

    def attend(self, q: Tensor, k: Tensor, v: Tensor, *, state: PEState, layer: int, causal: bool,
               x: Tensor | None = None, cache: KVCache | None = None) -> Tensor:
        if not causal:
            raise ValueError("pe=a2ats retrieves among earlier keys: it needs causal attention")
        if state.positions.segment is not None:
            raise ValueError("pe=a2ats retrieves over one sequence per row; packed rows (Positions.segment, "
                             "task.packing=true) are not supported")
        q_w = wrope_query(q, state.inv_freq, self.cfg.relative_pos, self.cfg.pair_layout)
        if self.recorder is not None:
            self.recorder(layer, q_w, k)
        retrieval = self.quantize(k, layer)
        q, k = self.rotate(q, k, state, layer)
        past = 0
        if cache is not None:
            past = 0 if cache.keys[layer] is None else cache.keys[layer].shape[-2]
            k, v = cache.append(layer, k, v)
            retrieval = self._append(cache, layer, retrieval)
        if self.cfg.dense_prefill and q.shape[-2] > 1:
            keep = always_kept(torch.arange(past, past + q.shape[-2], device=q.device),
                               torch.arange(k.shape[-2], device=q.device), 0, 0)[0]
        else:
            keep = retrieval_mask(q_w, self.dequantize(retrieval, layer), past, self.cfg.local_window,
                                  self.cfg.sinks, self.budget)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=keep, enable_gqa=k.shape[1] != q.shape[1])

    def quantize(self, k: Tensor, layer: int) -> Tensor:
        """What the cache keeps for retrieval: codes (B, Hkv, N) long, or the pre-RoPE keys without codebooks."""
        if not self.has_codebooks:
            return k
        return assign_codes(k, self.vq_cholesky[layer], self.vq_centroids[layer])

    def dequantize(self, stored: Tensor, layer: int) -> Tensor:
        """Pre-RoPE keys the retrieval scores: codebook rows C̃ L^-1 picked by the codes, or the exact keys."""
        return gather_codes(self.vq_codebook[layer], stored) if self.has_codebooks else stored

    @staticmethod
    def _append(cache: KVCache, layer: int, new: Tensor) -> Tensor:
        mem = cache.pe_state.setdefault("a2ats", {})
        old = mem.get(layer)
        mem[layer] = new if old is None else torch.cat([old, new], dim=2)
        return mem[layer]

    def extra_repr(self) -> str:
        c = self.cfg
        top = f"topk_tokens={c.topk_tokens}" if c.topk_tokens is not None else f"topk={c.topk}"
        return (super().extra_repr() + f", {top}, local_window={c.local_window}, sinks={c.sinks}, "
                f"relative_pos={c.relative_pos}, codebooks={c.codebooks}, dense_prefill={c.dense_prefill}")
