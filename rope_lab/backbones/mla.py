"""Multi-head latent attention with decoupled RoPE (DeepSeek-V2, arXiv 2405.04434), ``backbone.attention=mla``.

Keys and values come from one low-rank latent per token, ``c_kv = RMSNorm(W_DKV x)`` (``kv_lora_rank``), expanded
per head by ``kv_b_proj`` into ``k_nope`` and ``v``. RoPE cannot act on that path (a rotation between the up-
projection and the query would break the latent's absorption into the query), so position enters through a
separate, *decoupled* key part ``k_pe`` (``qk_rope_head_dim``) computed from x and shared by all heads, and a
matching query part ``q_pe``; queries may be low-rank too (``q_lora_rank``). Scores are
``q_nope . k_nope + q_pe . k_pe`` scaled by ``(qk_nope + qk_rope)^-1/2``.

Here the heads are laid out ``[pe | nope]`` so that the positional encoding rotates their leading
``qk_rope_head_dim`` channels (``AttentionGeometry.rotary_dim``) through the usual ``pe.attend``: every registered
rotary variant, scaling and kernel applies to the decoupled part. The weights have transformers'
``DeepseekV2Attention`` names and layouts (each head ``[nope | rope]`` in ``q_b_proj``, ``[k_nope | v]`` in
``kv_b_proj``), and tests/backbones/test_mla.py checks equal outputs with copied weights. DeepSeek rotates the
decoupled part with interleaved pairs (``pe.pair_layout=interleaved``). The KV cache holds the expanded keys and
values, not the latent (the same attention; not MLA's memory saving).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rope_lab.backbones.blocks import RMSNorm
from rope_lab.backbones.shared_pe import SharedPE
from rope_lab.pe import KVCache, PEState, PositionalEncoding


class MLAttention(SharedPE):
    def __init__(self, dim: int, n_heads: int, layer: int, pe: PositionalEncoding, *, kv_lora_rank: int,
                 qk_nope_head_dim: int, qk_rope_head_dim: int, v_head_dim: int, q_lora_rank: int | None = None,
                 causal: bool = True, norm_eps: float = 1e-6) -> None:
        super().__init__()
        self.n_heads, self.layer, self.causal = n_heads, layer, causal
        self.nope, self.rope, self.v_dim = qk_nope_head_dim, qk_rope_head_dim, v_head_dim
        self.kv_lora_rank = kv_lora_rank
        qk = qk_nope_head_dim + qk_rope_head_dim
        if q_lora_rank is None:
            self.q_proj = nn.Linear(dim, n_heads * qk, bias=False)
        else:
            self.q_a_proj = nn.Linear(dim, q_lora_rank, bias=False)
            self.q_a_layernorm = RMSNorm(q_lora_rank, norm_eps)
            self.q_b_proj = nn.Linear(q_lora_rank, n_heads * qk, bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(dim, kv_lora_rank + qk_rope_head_dim, bias=False)
        self.kv_a_layernorm = RMSNorm(kv_lora_rank, norm_eps)
        self.kv_b_proj = nn.Linear(kv_lora_rank, n_heads * (qk_nope_head_dim + v_head_dim), bias=False)
        self.o_proj = nn.Linear(n_heads * v_head_dim, dim, bias=False)
        self.share_pe(pe)

    def _queries(self, x: Tensor) -> Tensor:
        if hasattr(self, "q_proj"):
            return self.q_proj(x)
        return self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x)))

    def forward(self, x: Tensor, state: PEState, cache: KVCache | None = None) -> Tensor:
        b, n, _ = x.shape
        q_nope, q_pe = self._queries(x).view(b, n, self.n_heads, -1).split([self.nope, self.rope], dim=-1)
        latent, k_pe = self.kv_a_proj_with_mqa(x).split([self.kv_lora_rank, self.rope], dim=-1)
        kv = self.kv_b_proj(self.kv_a_layernorm(latent)).view(b, n, self.n_heads, -1)
        k_nope, v = kv.split([self.nope, self.v_dim], dim=-1)
        k_pe = k_pe[:, :, None, :].expand(b, n, self.n_heads, self.rope)  # one decoupled key for every head
        q = torch.cat([q_pe, q_nope], dim=-1).transpose(1, 2)  # [pe | nope]: the PE rotates the leading channels
        k = torch.cat([k_pe, k_nope], dim=-1).transpose(1, 2)
        out = self.pe.attend(q, k, v.transpose(1, 2), state=state, layer=self.layer, causal=self.causal, x=x,
                             cache=cache)
        return self.o_proj(out.transpose(1, 2).reshape(b, n, -1))
