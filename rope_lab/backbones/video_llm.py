"""A small video LLM in the Qwen2-VL mould (Wang et al., arXiv 2409.12191): frame encoder -> projector ->
LLaMA decoder.

Frame encoder (HF ``Qwen2VisionTransformerPretrainedModel``, scaled down): a Conv3d patch embedding over
``temporal_patch_size`` frames x ``patch_size``^2 pixels, ViT blocks (bidirectional, within each temporal grid,
as Qwen2-VL's ``cu_seqlens``) with their own 2-D RoPE (``rope_axial``: row/column of the patch, Qwen2-VL's
vision rotary by default), then the ``PatchMerger``: LayerNorm per patch, concatenate each 2x2 block,
MLP to the decoder width. The decoder (``rope_lab.backbones.decoder.Decoder``) gets the merged tokens through
``inputs_embeds`` at the sequence's vision positions (modality IMAGE/VIDEO, in (t, h, w) order) and stays
position-agnostic: every video variant lives in the decoder's PE.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
from einops import rearrange
from torch import Tensor, nn

from rope_lab.backbones.blocks import DecoderBlock
from rope_lab.backbones.decoder import Decoder, DecoderConfig
from rope_lab.backbones.registry import register_backbone
from rope_lab.pe import IMAGE, VIDEO, AttentionGeometry, KVCache, PositionalEncoding, Positions
from rope_lab.pe.registry import build_pe


def qwen2vl_vision_rope() -> dict:
    """Qwen2-VL's vision rotary (``VisionRotaryEmbedding(head_dim/2, theta=1e4)``): rows on the first half of
    the pairs, columns on the second, rotate_half layout."""
    return {"name": "rope_axial", "base": 10000.0, "pair_layout": "half", "axis_order": [0, 1]}


@dataclass
class VideoLLMConfig:
    # decoder (LLaMA); vocabulary from the task
    vocab_size: int = 256
    dim: int = 128
    depth: int = 4
    n_heads: int = 4
    n_kv_heads: int = 2
    mlp_hidden: int = 352
    norm_eps: float = 1e-6
    init_std: float = 0.02
    # frame encoder; image geometry from the task (TaskSpec.extra) when it gives one
    channels: int = 1
    frame_size: int = 32
    patch_size: int = 8
    temporal_patch_size: int = 2
    merge_size: int = 2
    encoder_dim: int = 64
    encoder_depth: int = 2
    encoder_heads: int = 2
    encoder_mlp_hidden: int = 172
    encoder_pe: dict[str, Any] = field(default_factory=qwen2vl_vision_rope)
    activation_checkpointing: bool = False


class FrameEncoder(nn.Module):
    """(B, F, C, S, S) frames -> (B, G, H'*W', out_dim) merged tokens, G = F / temporal_patch_size."""

    def __init__(self, cfg: VideoLLMConfig, out_dim: int) -> None:
        super().__init__()
        c = cfg
        side = c.frame_size // c.patch_size
        if c.frame_size % c.patch_size or side % c.merge_size:
            raise ValueError(f"frame_size={c.frame_size} must be a multiple of patch_size={c.patch_size} and the "
                             f"patch grid ({side}) a multiple of merge_size={c.merge_size}")
        self.cfg, self.side = c, side
        self.patch = nn.Conv3d(c.channels, c.encoder_dim, (c.temporal_patch_size, c.patch_size, c.patch_size),
                               stride=(c.temporal_patch_size, c.patch_size, c.patch_size), bias=False)
        head_dim = c.encoder_dim // c.encoder_heads
        self.pe = build_pe(c.encoder_pe).setup(AttentionGeometry(c.encoder_dim, head_dim, c.encoder_heads,
                                                                 c.encoder_heads, c.encoder_depth))
        self.pe.check_compatible(2, causal=False)
        self.blocks = nn.ModuleList(
            DecoderBlock(c.encoder_dim, c.encoder_heads, c.encoder_heads, c.encoder_mlp_hidden, i, self.pe,
                         causal=False, norm_eps=c.norm_eps) for i in range(c.encoder_depth))
        self.ln_q = nn.LayerNorm(c.encoder_dim, eps=1e-6)
        merged = c.encoder_dim * c.merge_size**2
        self.mlp = nn.Sequential(nn.Linear(merged, merged), nn.GELU(), nn.Linear(merged, out_dim))
        rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
        self.register_buffer("grid", torch.stack((rows, cols), -1).reshape(1, -1, 2).float(), persistent=False)

    def forward(self, video: Tensor) -> Tensor:
        b, frames = video.shape[:2]
        if frames % self.cfg.temporal_patch_size:
            raise ValueError(f"{frames} frames is not a multiple of temporal_patch_size={self.cfg.temporal_patch_size}")
        x = self.patch(video.transpose(1, 2))  # (B, D, G, side, side)
        g = x.shape[2]
        x = rearrange(x, "b d g h w -> (b g) (h w) d")
        positions = Positions(coords=self.grid.expand(x.shape[0], -1, -1))
        state = self.pe.prepare(positions)
        x = self.pe.embed(x, state)
        for block in self.blocks:
            x = block(x, state)
        m = self.cfg.merge_size
        x = rearrange(self.ln_q(x), "n (h m1 w m2) d -> n (h w) (m1 m2 d)", h=self.side // m, m1=m, m2=m)
        return rearrange(self.mlp(x), "(b g) t d -> b g t d", b=b, g=g)


@register_backbone("video_llm")
class VideoLLM(nn.Module):
    """Frame encoder + projector + LLaMA decoder; ``forward(tokens, positions, cache=None, video=None)``."""

    Config = VideoLLMConfig

    def __init__(self, cfg: VideoLLMConfig, pe: PositionalEncoding, spec=None) -> None:
        super().__init__()
        if spec is not None:
            extra = {k: spec.extra[k] for k in ("frame_size", "channels", "patch_size", "temporal_patch_size",
                                                "merge_size") if k in spec.extra}
            cfg = dataclasses.replace(cfg, **extra, **({"vocab_size": spec.vocab_size} if spec.vocab_size else {}))
        self.cfg = cfg
        dec = DecoderConfig(vocab_size=cfg.vocab_size, dim=cfg.dim, depth=cfg.depth, n_heads=cfg.n_heads,
                            n_kv_heads=cfg.n_kv_heads, mlp_hidden=cfg.mlp_hidden, norm_eps=cfg.norm_eps,
                            init_std=cfg.init_std, max_tokens=spec.max_tokens if spec is not None else 4096,
                            activation_checkpointing=cfg.activation_checkpointing)
        self.decoder = Decoder(dec, pe)
        self.encoder = FrameEncoder(cfg, cfg.dim)

    @property
    def pe(self) -> PositionalEncoding:
        return self.decoder.pe

    def new_cache(self) -> KVCache:
        return self.decoder.new_cache()

    def embed(self, tokens: Tensor, positions: Positions, video: Tensor | None) -> Tensor:
        """Token embeddings with the encoded video written at the vision positions (in sequence order)."""
        x = self.decoder.embed_tokens(tokens)
        if video is None:
            return x
        feats = self.encoder(video).flatten(1, 2).to(x.dtype)  # (B, G*H'*W', D) in (t, h, w) order
        if positions.modality is None:
            raise ValueError("a video was given but positions.modality marks no vision tokens")
        vision = (positions.modality == IMAGE) | (positions.modality == VIDEO)
        return x.masked_scatter(vision[..., None].expand_as(x), feats)

    def forward(self, tokens: Tensor, positions: Positions, cache: KVCache | None = None,
                video: Tensor | None = None) -> Tensor:
        return self.decoder(None, positions, cache, inputs_embeds=self.embed(tokens, positions, video))
