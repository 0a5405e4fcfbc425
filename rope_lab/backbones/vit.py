"""Vision Transformer (Dosovitskiy et al., ICLR 2021) as DeiT-III / RoPE-ViT build it (timm
``VisionTransformer``; naver-ai/rope-vit ``models/vit_rope.py``): timm PatchEmbed, pre-norm blocks with fused
qkv (bias), LayerScale (DeiT-III init 1e-5), DropPath and a GELU MLP, a CLS token or global average pooling.

Pretrained RoPE-ViT weights of timm / naver-ai/rope-vit load with ``backbone.timm_weights=<file|folder|timm name>``
(key mapping and family checks in ``rope_lab/backbones/timm_convert.py``).

Position-agnostic: the task builds (row, col) positions with the prefix tokens first (``NO_POSITION``); the
backbone calls ``pe.prepare`` once, ``pe.embed`` once (APE is added to the patch tokens; prefix tokens get
nothing) and ``pe.attend`` in every block. Any image size divisible by the patch size works.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from timm.layers import DropPath, LayerScale, Mlp, PatchEmbed, trunc_normal_
from torch import Tensor, nn

from rope_lab.backbones.registry import register_backbone
from rope_lab.backbones.shared_pe import SharedPE
from rope_lab.pe import AttentionGeometry, PEState, PositionalEncoding, Positions

POOLS = ("token", "avg")


@dataclass
class ViTConfig:
    patch_size: int = 4
    dim: int = 128
    depth: int = 6
    n_heads: int = 4
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    layer_scale_init: float | None = 1e-5  # DeiT-III / RoPE-ViT; null disables LayerScale
    drop_path: float = 0.0
    global_pool: str = "token"  # token: CLS token; avg: mean of patch tokens and no CLS
    timm_weights: str | None = None  # timm RoPE-ViT weights file/folder or model name (backbones/timm_convert.py)
    # filled from the task's spec
    image_size: int = 28
    in_channels: int = 1
    num_classes: int = 10


class ViTAttention(SharedPE):
    """timm ``Attention`` (fused qkv, output projection with bias); positions only through ``pe.attend``."""

    def __init__(self, dim: int, n_heads: int, layer: int, pe: PositionalEncoding, qkv_bias: bool) -> None:
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"dim {dim} must be divisible by n_heads {n_heads}")
        self.n_heads, self.head_dim, self.layer = n_heads, dim // n_heads, layer
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.share_pe(pe)

    def _qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, n, _ = x.shape
        return self.qkv(x).view(b, n, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)

    def forward(self, x: Tensor, state: PEState) -> Tensor:
        q, k, v = self._qkv(x)
        out = self.pe.attend(q, k, v, state=state, layer=self.layer, causal=False, x=x)
        return self.proj(out.transpose(1, 2).flatten(2))

    def attention_probs(self, x: Tensor, state: PEState) -> Tensor:
        """(B, H, N, N) attention weights, through the PE's own ``attend`` (values = identity)."""
        q, k, _ = self._qkv(x)
        eye = torch.eye(x.shape[1], dtype=q.dtype, device=q.device).expand(q.shape[0], self.n_heads, -1, -1)
        return self.pe.attend(q, k, eye, state=state, layer=self.layer, causal=False, x=x)


class ViTBlock(nn.Module):
    def __init__(self, cfg: ViTConfig, layer: int, pe: PositionalEncoding, drop_path: float) -> None:
        super().__init__()
        ls = (lambda: LayerScale(cfg.dim, cfg.layer_scale_init)) if cfg.layer_scale_init else nn.Identity
        self.norm1 = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.attn = ViTAttention(cfg.dim, cfg.n_heads, layer, pe, cfg.qkv_bias)
        self.ls1, self.drop_path1 = ls(), DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.mlp = Mlp(cfg.dim, int(cfg.dim * cfg.mlp_ratio), act_layer=nn.GELU)
        self.ls2, self.drop_path2 = ls(), DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor, state: PEState) -> Tensor:
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x), state)))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


class ViT(nn.Module):
    """Images (B, C, H, W) + Positions (prefix tokens then the patch grid) -> logits (B, classes)."""

    def __init__(self, cfg: ViTConfig, pe: PositionalEncoding) -> None:
        super().__init__()
        if cfg.global_pool not in POOLS:
            raise ValueError(f"unknown global_pool '{cfg.global_pool}'; choose one of {list(POOLS)}")
        if cfg.image_size % cfg.patch_size:
            raise ValueError(f"image size {cfg.image_size} is not divisible by the patch size {cfg.patch_size}")
        self.cfg, self.patch_size = cfg, cfg.patch_size
        self.num_prefix_tokens = 1 if cfg.global_pool == "token" else 0
        side = cfg.image_size // cfg.patch_size
        self.pe = pe.setup(AttentionGeometry(cfg.dim, cfg.dim // cfg.n_heads, cfg.n_heads, cfg.n_heads, cfg.depth,
                                             self.num_prefix_tokens + side * side, grid=(side, side)))
        self.patch_embed = PatchEmbed(cfg.image_size, cfg.patch_size, cfg.in_channels, cfg.dim, strict_img_size=False)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim)) if self.num_prefix_tokens else None
        rates = torch.linspace(0, cfg.drop_path, cfg.depth).tolist()
        self.blocks = nn.ModuleList(ViTBlock(cfg, i, self.pe, rates[i]) for i in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.head = nn.Linear(cfg.dim, cfg.num_classes)
        self.apply(self._init)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)  # timm VisionTransformer.init_weights

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def tokens(self, images: Tensor, positions: Positions) -> tuple[Tensor, PEState]:
        """Patch + prefix tokens after the input PE site, and the PE state for the blocks."""
        if images.shape[-2] % self.patch_size or images.shape[-1] % self.patch_size:
            raise ValueError(f"image size {tuple(images.shape[-2:])} is not divisible by the patch size "
                             f"{self.patch_size}")
        x = self.patch_embed(images)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
        if positions.coords.shape[1] != x.shape[1]:
            raise ValueError(f"positions cover {positions.coords.shape[1]} tokens but the image gives {x.shape[1]} "
                             f"({self.num_prefix_tokens} prefix + patches)")
        state = self.pe.prepare(positions)
        return self.pe.embed(x, state), state

    def forward_features(self, images: Tensor, positions: Positions) -> Tensor:
        x, state = self.tokens(images, positions)
        for block in self.blocks:
            x = block(x, state)
        return self.norm(x)

    def forward(self, images: Tensor, positions: Positions) -> Tensor:
        x = self.forward_features(images, positions)
        pooled = x[:, 0] if self.cfg.global_pool == "token" else x[:, self.num_prefix_tokens :].mean(1)
        return self.head(pooled)


@register_backbone("vit")
class VisionTransformer(ViT):
    """Registry entry: ``backbone=vit`` (sizes in configs/backbone/vit*.yaml); image size, channels and classes
    come from the task."""

    Config = ViTConfig

    def __init__(self, cfg: ViTConfig, pe: PositionalEncoding, spec=None) -> None:
        if spec is not None:
            extra = spec.extra or {}
            cfg = dataclasses.replace(cfg, image_size=int(extra.get("image_size", cfg.image_size)),
                                      in_channels=int(extra.get("channels", cfg.in_channels)),
                                      num_classes=int(spec.num_classes or cfg.num_classes))
        super().__init__(cfg, pe)
        self.pretrained_source = cfg.timm_weights  # weights from outside rope_lab (eval.py without ckpt_path)
        if cfg.timm_weights:
            from rope_lab.backbones.timm_convert import load_timm_weights

            load_timm_weights(self, cfg.timm_weights)
