"""LLaMA-style decoder (Touvron et al. 2023): RMSNorm, SwiGLU, grouped-query attention (or DeepSeek-V2's latent
attention with decoupled RoPE, ``attention=mla``: rope_lab/backbones/mla.py), KV cache.

Position-agnostic: it calls ``pe.prepare`` once, ``pe.embed`` once and (through ``Attention``) ``pe.attend``
in every block. HF ``LlamaForCausalLM`` is the reference architecture (tests compare logits).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from rope_lab.backbones.blocks import DecoderBlock, RMSNorm
from rope_lab.backbones.chunked_memory import ChunkedMemoryConfig, chunked_memory_attention
from rope_lab.backbones.elitekv import elitekv_attention, elitekv_geometry
from rope_lab.backbones.mla import MLAttention
from rope_lab.backbones.registry import register_backbone
from rope_lab.pe import AttentionGeometry, KVCache, PositionalEncoding, Positions


@dataclass
class DecoderConfig:
    vocab_size: int = 256
    dim: int = 128
    depth: int = 4
    n_heads: int = 4
    n_kv_heads: int = 4
    mlp_hidden: int = 352
    norm_eps: float = 1e-6
    qkv_bias: bool = False  # biases on the q/k/v projections (Qwen2; standard attention only)
    tie_embeddings: bool = False
    init_std: float = 0.02
    max_tokens: int = 4096  # only for table-based PEs (learned APE)
    activation_checkpointing: bool = False
    attention: str = "mha"  # a key of ATTENTIONS: mha | mla | elitekv | chunked_memory (see configs/backbone/llama.yaml)
    kv_lora_rank: int = 64  # mla: width of the per-token key/value latent
    q_lora_rank: Optional[int] = None  # mla: low-rank queries (None: a full query projection)
    qk_nope_head_dim: Optional[int] = None  # mla: position-free q/k channels per head (None: dim // n_heads)
    qk_rope_head_dim: int = 16  # mla: decoupled rotary channels per head (one key part shared by all heads)
    v_head_dim: Optional[int] = None  # mla: value channels per head (None: dim // n_heads)
    elitekv_kv_dim: int = 32  # elitekv: width of the joint K/V latent c_kv (J-LRD rank; rope_lab/backbones/elitekv.py)
    # chunked_memory (arXiv 2507.00453): chunk_size, memory_slots, paths (rope_lab/backbones/chunked_memory.py)
    chunked_memory: ChunkedMemoryConfig = dataclasses.field(default_factory=ChunkedMemoryConfig)


def mha_geometry(cfg: DecoderConfig) -> AttentionGeometry:
    return AttentionGeometry(cfg.dim, cfg.dim // cfg.n_heads, cfg.n_heads, cfg.n_kv_heads, cfg.depth,
                             cfg.max_tokens)


def mla_geometry(cfg: DecoderConfig) -> AttentionGeometry:
    """MLA heads are [rope | nope] channels wide, only the rope part positional, keys per head."""
    qk = (cfg.qk_nope_head_dim or cfg.dim // cfg.n_heads) + cfg.qk_rope_head_dim
    return AttentionGeometry(cfg.dim, qk, cfg.n_heads, cfg.n_heads, cfg.depth, cfg.max_tokens,
                             rotary_dim=cfg.qk_rope_head_dim)


def latent_attention(cfg: DecoderConfig, layer: int, pe: PositionalEncoding) -> MLAttention:
    head_dim = cfg.dim // cfg.n_heads
    return MLAttention(cfg.dim, cfg.n_heads, layer, pe, kv_lora_rank=cfg.kv_lora_rank,
                       qk_nope_head_dim=cfg.qk_nope_head_dim or head_dim, qk_rope_head_dim=cfg.qk_rope_head_dim,
                       v_head_dim=cfg.v_head_dim or head_dim, q_lora_rank=cfg.q_lora_rank, norm_eps=cfg.norm_eps)


@dataclass(frozen=True)
class AttentionKind:
    """One ``backbone.attention`` choice: the geometry the PE is set up with, and the attention module of a
    block (None: the standard grouped-query ``Attention``)."""

    geometry: Callable[[DecoderConfig], AttentionGeometry]
    module: Optional[Callable[[DecoderConfig, int, PositionalEncoding], nn.Module]] = None


ATTENTIONS: dict[str, AttentionKind] = {
    "mha": AttentionKind(mha_geometry),
    "mla": AttentionKind(mla_geometry, latent_attention),
    "elitekv": AttentionKind(elitekv_geometry, elitekv_attention),
    "chunked_memory": AttentionKind(mha_geometry, chunked_memory_attention),
}


def attention_kind(cfg: DecoderConfig) -> AttentionKind:
    if cfg.attention not in ATTENTIONS:
        raise ValueError(f"unknown backbone.attention '{cfg.attention}'; choose one of {sorted(ATTENTIONS)}")
    return ATTENTIONS[cfg.attention]


def attention_geometry(cfg: DecoderConfig) -> AttentionGeometry:
    """What the PE sees (head width, rotary channels, key heads) for the configured attention."""
    return attention_kind(cfg).geometry(cfg)


class Decoder(nn.Module):
    """Token ids (B, N) + Positions -> logits (B, N, vocab). ``inputs_embeds`` lets a video-LLM feed
    projected vision features instead of ids for some tokens."""

    def __init__(self, cfg: DecoderConfig, pe: PositionalEncoding) -> None:
        super().__init__()
        self.cfg = cfg
        kind = attention_kind(cfg)
        if cfg.qkv_bias and kind.module is not None:
            raise ValueError(f"backbone.qkv_bias=true needs backbone.attention=mha; got attention={cfg.attention}")
        self.pe = pe.setup(kind.geometry(cfg))
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.blocks = nn.ModuleList(
            DecoderBlock(cfg.dim, cfg.n_heads, cfg.n_kv_heads, cfg.mlp_hidden, i, self.pe, True, cfg.norm_eps,
                         attn=kind.module(cfg, i, self.pe) if kind.module is not None else None, qkv_bias=cfg.qkv_bias)
            for i in range(cfg.depth)
        )
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        self.apply(self._init)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight

    def _init(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=self.cfg.init_std)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    def new_cache(self) -> KVCache:
        return KVCache(self.cfg.depth)

    def hidden_states(self, tokens: Tensor | None, positions: Positions, cache: KVCache | None = None,
                      inputs_embeds: Tensor | None = None) -> Tensor:
        x = self.embed_tokens(tokens) if inputs_embeds is None else inputs_embeds
        state = self.pe.prepare(positions, cache)
        x = self.pe.embed(x, state)
        if cache is not None and positions.segment is not None:
            seg = positions.segment
            cache.segments = seg if cache.segments is None else torch.cat([cache.segments, seg], dim=1)
        for block in self.blocks:
            if self.cfg.activation_checkpointing and self.training and cache is None:
                x = checkpoint(block, x, state, use_reentrant=False)
            else:
                x = block(x, state, cache)
        return self.norm(x)

    def forward(self, tokens: Tensor | None, positions: Positions, cache: KVCache | None = None,
                inputs_embeds: Tensor | None = None) -> Tensor:
        return self.lm_head(self.hidden_states(tokens, positions, cache, inputs_embeds))


@register_backbone("llama")
class LlamaDecoder(Decoder):
    """Registry entry: a LLaMA decoder sized by ``backbone=llama`` with vocabulary from the task."""

    Config = DecoderConfig

    def __init__(self, cfg: DecoderConfig, pe: PositionalEncoding, spec=None) -> None:
        if spec is not None and spec.vocab_size is not None:
            cfg = dataclasses.replace(cfg, vocab_size=spec.vocab_size, max_tokens=max(cfg.max_tokens, spec.max_tokens))
        super().__init__(cfg, pe)
