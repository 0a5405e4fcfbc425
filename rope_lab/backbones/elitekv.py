"""EliteKV attention (Zhou et al., arXiv 2503.01586), ``backbone.attention=elitekv``: J-LRD keys and values.

Per head, the key channels the positional encoding rotates (RoPElite's chunks, ``pe=elitekv``) come from their own
projection ``k_rope_proj``; the position-free key channels and the values come jointly from one latent per token,
``c_kv = kv_a_proj(x)`` (``elitekv_kv_dim`` wide), expanded by ``kv_b_proj`` into each head's ``[k_nope | v]``.
Queries stay full. The KV cache holds only ``c_kv`` and the rotated ``k_rope`` (the method's memory saving:
``n_heads * 2r + kv_dim`` numbers per token and layer instead of ``2 * n_heads * head_dim``); full keys and values
are rebuilt from them at every step. Weight layouts follow the official ``convert/convert.py``: ``k_rope_proj``
rows are a head's rotated channels in ascending order, ``kv_b_proj`` rows per head ``[k_nope (ascending) | v]``;
``kv_a_proj`` has no norm. The official modeling (``convert/modeling_llama_EliteKV.py``) splits the query into
``q_nope_proj``/``q_rope_proj`` and reorders channels; one full ``q_proj`` in the original order is the same map.

Which channels rotate is read from the PE's frequency plan (``rope_lab.pe.variants.text.elitekv.rotated_channels``), so
this module works with any rotary PE, and position enters only through ``pe.attend``: it sees a :class:`LatentCache`
view that stores the compact form and hands back the rebuilt keys and values. Nope key channels always come from
the latent as they are (a PE attention factor or PSC acts on the rotated channels and the queries only), the same
in parallel and incremental decoding.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rope_lab.backbones.shared_pe import SharedPE
from rope_lab.pe import AttentionGeometry, KVCache, PEState, PositionalEncoding
from rope_lab.pe.variants.text.elitekv import rotated_channels


def _take(x: Tensor, idx: Tensor) -> Tensor:
    """x (B, H, N, D) -> per-head channels idx (H, C) -> (B, H, N, C)."""
    b, _, n, _ = x.shape
    return x.gather(-1, idx[None, :, None, :].expand(b, -1, n, -1))


class LatentCache:
    """One EliteKV layer's view of a :class:`KVCache` for ``pe.attend``: ``append`` keeps the rotated rope channels
    (``keys[layer]``, (B, H, N, 2r)) and the latent (``values[layer]``, (B, 1, N, kv_dim)) and returns full keys and
    values rebuilt from everything cached. Without a cache it stores into a throwaway one (one code path)."""

    def __init__(self, cache: KVCache | None, attn: EliteKVAttention, latent: Tensor, k_nope: Tensor) -> None:
        self.cache = cache if cache is not None else KVCache(attn.layer + 1)
        self.attn, self.latent, self.k_nope = attn, latent, k_nope

    @property
    def keys(self) -> list:
        return self.cache.keys

    @property
    def segments(self):
        return self.cache.segments

    @property
    def pe_state(self) -> dict:
        return self.cache.pe_state

    def append(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        past = self.cache.values[layer]
        k_rope, _ = self.cache.append(layer, _take(k, self.attn.rope_idx), self.latent[:, None])
        k_nope = self.k_nope
        if past is not None:
            old_nope, old_v = self.attn.expand(past[:, 0])
            k_nope, v = torch.cat([old_nope, k_nope], dim=-2), torch.cat([old_v, v], dim=-2)
        return self.attn.assemble(k_rope, k_nope), v


class EliteKVAttention(SharedPE):
    def __init__(self, dim: int, n_heads: int, layer: int, pe: PositionalEncoding, *, kv_dim: int,
                 causal: bool = True) -> None:
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"dim {dim} must divide by n_heads {n_heads}")
        if kv_dim < 1:
            raise ValueError(f"backbone.elitekv_kv_dim must be >= 1 (the joint K/V latent width); got {kv_dim}")
        self.n_heads, self.head_dim, self.layer, self.causal = n_heads, dim // n_heads, layer, causal
        rotated = rotated_channels(pe, layer).expand(n_heads, -1)
        counts = rotated.sum(-1)
        if (counts != counts[0]).any():
            raise ValueError(f"backbone.attention=elitekv needs the same number of rotated channels in every head; "
                             f"pe={pe.name} rotates {counts.tolist()} at layer {layer}")
        self.n_rope = int(counts[0])
        # rotated channels first, then the position-free ones, each ascending (the official boolean-mask gathers)
        perm = torch.argsort((~rotated).int(), dim=-1, stable=True)
        self.register_buffer("perm", perm, persistent=False)
        self.register_buffer("inverse", torch.argsort(perm, dim=-1), persistent=False)
        self.n_nope = self.head_dim - self.n_rope
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_rope_proj = nn.Linear(dim, n_heads * self.n_rope, bias=False)
        self.kv_a_proj = nn.Linear(dim, kv_dim, bias=False)
        self.kv_b_proj = nn.Linear(kv_dim, n_heads * (self.n_nope + self.head_dim), bias=False)
        self.o_proj = nn.Linear(dim, dim, bias=False)
        self.share_pe(pe)

    @property
    def rope_idx(self) -> Tensor:
        return self.perm[:, : self.n_rope]

    @property
    def nope_idx(self) -> Tensor:
        return self.perm[:, self.n_rope :]

    def expand(self, latent: Tensor) -> tuple[Tensor, Tensor]:
        """c_kv (B, N, kv_dim) -> k_nope (B, H, N, D - 2r), v (B, H, N, D)."""
        b, n, _ = latent.shape
        kv = self.kv_b_proj(latent).view(b, n, self.n_heads, -1).transpose(1, 2)
        return kv.split([self.n_nope, self.head_dim], dim=-1)

    def assemble(self, k_rope: Tensor, k_nope: Tensor) -> Tensor:
        """Per-head rope and nope channels -> keys (B, H, N, D) in the head's original channel order."""
        return _take(torch.cat([k_rope, k_nope], dim=-1), self.inverse)

    def forward(self, x: Tensor, state: PEState, cache: KVCache | None = None) -> Tensor:
        b, n, _ = x.shape
        q = self.q_proj(x).view(b, n, self.n_heads, self.head_dim).transpose(1, 2)
        k_rope = self.k_rope_proj(x).view(b, n, self.n_heads, self.n_rope).transpose(1, 2)
        latent = self.kv_a_proj(x)
        k_nope, v = self.expand(latent)
        view = LatentCache(cache, self, latent, k_nope)
        out = self.pe.attend(q, self.assemble(k_rope, k_nope), v, state=state, layer=self.layer,
                             causal=self.causal, x=x, cache=view)
        return self.o_proj(out.transpose(1, 2).reshape(b, n, -1))


def elitekv_geometry(cfg) -> AttentionGeometry:
    """Full-width heads, one key head per query head (RoPElite's per-head chunks)."""
    return AttentionGeometry(cfg.dim, cfg.dim // cfg.n_heads, cfg.n_heads, cfg.n_heads, cfg.depth, cfg.max_tokens)


def elitekv_attention(cfg, layer: int, pe: PositionalEncoding) -> EliteKVAttention:
    return EliteKVAttention(cfg.dim, cfg.n_heads, layer, pe, kv_dim=cfg.elitekv_kv_dim)
