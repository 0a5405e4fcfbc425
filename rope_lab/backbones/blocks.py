"""Shared transformer blocks. ``Attention`` is the only place a backbone calls the positional encoding."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rope_lab.backbones.shared_pe import SharedPE
from rope_lab.pe import KVCache, PEState, PositionalEncoding


class RMSNorm(nn.Module):
    """Root-mean-square norm (Zhang & Sennrich 2019), computed in fp32 as HF LlamaRMSNorm does."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


class SwiGLU(nn.Module):
    """LLaMA feed-forward: down(silu(gate(x)) * up(x))."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate = nn.Linear(dim, hidden, bias=False)
        self.up = nn.Linear(dim, hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(nn.functional.silu(self.gate(x)) * self.up(x))


class Attention(SharedPE):
    """Multi-head attention with grouped-query heads; positions enter only through ``pe.attend``."""

    def __init__(self, dim: int, n_heads: int, n_kv_heads: int, layer: int, pe: PositionalEncoding,
                 qkv_bias: bool = False, causal: bool = True) -> None:
        super().__init__()
        if dim % n_heads or n_heads % n_kv_heads:
            raise ValueError(f"dim {dim} must divide by n_heads {n_heads}, and n_heads by n_kv_heads {n_kv_heads}")
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, dim // n_heads
        self.layer, self.causal = layer, causal
        self.q_proj = nn.Linear(dim, n_heads * self.head_dim, bias=qkv_bias)
        self.k_proj = nn.Linear(dim, n_kv_heads * self.head_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(dim, n_kv_heads * self.head_dim, bias=qkv_bias)
        self.o_proj = nn.Linear(n_heads * self.head_dim, dim, bias=False)
        self.share_pe(pe)

    def forward(self, x: Tensor, state: PEState, cache: KVCache | None = None) -> Tensor:
        b, n, _ = x.shape
        q = self.q_proj(x).view(b, n, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, n, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, n, self.n_kv_heads, self.head_dim).transpose(1, 2)
        out = self.pe.attend(q, k, v, state=state, layer=self.layer, causal=self.causal, x=x, cache=cache)
        return self.o_proj(out.transpose(1, 2).reshape(b, n, -1))


class DecoderBlock(nn.Module):
    """Pre-norm LLaMA block: x + attn(norm(x)); x + mlp(norm(x))."""

    def __init__(self, dim: int, n_heads: int, n_kv_heads: int, hidden: int, layer: int,
                 pe: PositionalEncoding, causal: bool = True, norm_eps: float = 1e-6,
                 attn: nn.Module | None = None, qkv_bias: bool = False) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(dim, norm_eps)
        self.attn = attn if attn is not None else Attention(dim, n_heads, n_kv_heads, layer, pe, qkv_bias, causal)
        self.mlp_norm = RMSNorm(dim, norm_eps)
        self.mlp = SwiGLU(dim, hidden)

    def forward(self, x: Tensor, state: PEState, cache: KVCache | None = None) -> Tensor:
        x = x + self.attn(self.attn_norm(x), state, cache)
        return x + self.mlp(self.mlp_norm(x))
