"""DiT (Peebles & Xie, ICCV 2023; facebookresearch/DiT ``models.py``) with an MM-DiT option (FLUX double-stream
blocks, Black Forest Labs ``flux/modules/layers.py``), for flow matching / diffusion on images.

- Patchify (Conv2d, kernel = stride = patch; rectangular patches allowed), adaLN-Zero blocks conditioned on
  ``c = t_embed(t) + y_embed(y)`` (the label table has a null row for classifier-free guidance), a zero-initialised
  adaLN final layer, unpatchify. Initialisation as in DiT ``initialize_weights``.
- The positional encoding is used only through ``pe.prepare / pe.embed / pe.attend``; the task builds the
  (row, col) positions (or FLUX's 3-axis ids (0, row, col) with all-zero ids for the text stream).
- ``mmdit=true``: every block is a FLUX double-stream block: the text/condition stream (``spec.extra['text_tokens']``
  byte tokens) and the image stream have their own modulation, QKV, QK-RMSNorm and MLP, and attend jointly
  ([text, image] order, as FLUX) through ``pe.attend``.
- ``spec.extra['control_dim'] > 0`` adds MuseControlLite's decoupled cross-attention (rope_lab.pe.variants.musecontrol)
  to every block: it shares the self-attention query and adds its zero-initialised output before the output projection.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from einops import rearrange
from timm.layers import Mlp
from torch import Tensor, nn

from rope_lab.backbones.blocks import RMSNorm
from rope_lab.backbones.registry import register_backbone
from rope_lab.backbones.shared_pe import SharedPE
from rope_lab.pe import AttentionGeometry, PEState, PositionalEncoding, Positions
from rope_lab.pe.variants.musecontrol import DecoupledCrossAttention, MuseControlConfig

TEXT_VOCAB = 257  # UTF-8 bytes + one padding id (256)


@dataclass
class DiTConfig:
    patch_size: list[int] = field(default_factory=lambda: [4, 4])  # (height, width) of a patch
    dim: int = 128
    depth: int = 4
    n_heads: int = 4
    mlp_ratio: float = 4.0
    qk_norm: bool = False  # DiT: no; FLUX/MM-DiT: RMSNorm on q and k (always on when mmdit)
    mmdit: bool = False
    control: MuseControlConfig = field(default_factory=MuseControlConfig)
    # filled from the task's spec
    in_channels: int = 1
    num_classes: int = 10


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """DiT ``TimestepEmbedder.timestep_embedding``: [cos(t f), sin(t f)], f = max_period^(-k/half)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedder(nn.Module):
    def __init__(self, dim: int, freq_dim: int = 256) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: Tensor) -> Tensor:
        # flow-matching t in [0, 1] is scaled to DiT's 0..1000 range so the sinusoid spans its frequencies
        emb = timestep_embedding(t * 1000.0, self.freq_dim)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))


class QKV(nn.Module):
    """Fused qkv projection (bias, as DiT/FLUX) + optional QK-RMSNorm; returns (B, H, N, D) each."""

    def __init__(self, dim: int, n_heads: int, qk_norm: bool) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = RMSNorm(dim // n_heads) if qk_norm else nn.Identity()
        self.k_norm = RMSNorm(dim // n_heads) if qk_norm else nn.Identity()

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        q, k, v = rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.n_heads)
        return self.q_norm(q), self.k_norm(k), v


class DiTBlock(SharedPE):
    """adaLN-Zero block: x + gate * attn(modulate(norm(x))); x + gate * mlp(modulate(norm(x)))."""

    def __init__(self, cfg: DiTConfig, layer: int, pe: PositionalEncoding, control_dim: int) -> None:
        super().__init__()
        d = cfg.dim
        self.layer = layer
        self.share_pe(pe)
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.attn = QKV(d, cfg.n_heads, cfg.qk_norm)
        self.proj = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(d, int(d * cfg.mlp_ratio), act_layer=lambda: nn.GELU(approximate="tanh"))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))
        self.control = DecoupledCrossAttention(control_dim, d, cfg.n_heads, cfg.control) if control_dim else None

    def forward(self, x: Tensor, c: Tensor, state: PEState, control: tuple | None = None) -> Tensor:
        sh1, sc1, g1, sh2, sc2, g2 = self.adaLN_modulation(c).chunk(6, dim=-1)
        h = modulate(self.norm1(x), sh1, sc1)
        q, k, v = self.attn(h)
        out = rearrange(self.pe.attend(q, k, v, state=state, layer=self.layer, causal=False, x=h),
                        "b h n d -> b n (h d)")
        if self.control is not None:
            if control is None:
                raise ValueError("this DiT has a control branch: pass control=(features, query_pos, key_pos)")
            out = out + self.control(q, *control)
        x = x + g1[:, None] * self.proj(out)
        return x + g2[:, None] * self.mlp(modulate(self.norm2(x), sh2, sc2))


class DoubleStreamBlock(SharedPE):
    """FLUX ``DoubleStreamBlock``: per-stream modulation/QKV/MLP, one joint attention over [text, image]."""

    def __init__(self, cfg: DiTConfig, layer: int, pe: PositionalEncoding) -> None:
        super().__init__()
        self.layer = layer
        self.share_pe(pe)
        self.streams = nn.ModuleList(_Stream(cfg) for _ in range(2))  # 0: text, 1: image

    def forward(self, txt: Tensor, img: Tensor, c: Tensor, state: PEState) -> tuple[Tensor, Tensor]:
        mods = [s.adaLN_modulation(c).chunk(6, dim=-1) for s in self.streams]
        hs = [modulate(s.norm1(x), m[0], m[1]) for s, x, m in zip(self.streams, (txt, img), mods)]
        qkvs = [s.attn(h) for s, h in zip(self.streams, hs)]
        q, k, v = (torch.cat(parts, dim=2) for parts in zip(*qkvs))
        out = self.pe.attend(q, k, v, state=state, layer=self.layer, causal=False, x=torch.cat(hs, dim=1))
        out = rearrange(out, "b h n d -> b n (h d)")
        outs = out.split([txt.shape[1], img.shape[1]], dim=1)
        new = []
        for s, x, m, o in zip(self.streams, (txt, img), mods, outs):
            x = x + m[2][:, None] * s.proj(o)
            new.append(x + m[5][:, None] * s.mlp(modulate(s.norm2(x), m[3], m[4])))
        return new[0], new[1]


class _Stream(nn.Module):
    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        d = cfg.dim
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.attn = QKV(d, cfg.n_heads, qk_norm=True)
        self.proj = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(d, int(d * cfg.mlp_ratio), act_layer=lambda: nn.GELU(approximate="tanh"))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))


class FinalLayer(nn.Module):
    def __init__(self, dim: int, out: int) -> None:
        super().__init__()
        self.norm_final = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, out)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


@register_backbone("dit")
class DiT(nn.Module):
    """(x (B, C, H, W), t (B,), y (B,), positions) -> velocity/noise prediction (B, C, H, W).

    ``y == num_classes`` is the null label (classifier-free guidance). With ``mmdit`` the forward also takes
    ``text`` (B, L) byte ids (256 = padding), whose tokens come first in ``positions``.
    """

    Config = DiTConfig

    def __init__(self, cfg: DiTConfig, pe: PositionalEncoding, spec=None) -> None:
        super().__init__()
        extra = dict(spec.extra) if spec is not None else {}
        if spec is not None:
            cfg.in_channels = int(extra.get("in_channels", cfg.in_channels))
            cfg.num_classes = int(spec.num_classes or cfg.num_classes)
        if len(cfg.patch_size) != 2 or min(cfg.patch_size) < 1:
            raise ValueError(f"patch_size must be [height, width] of positive ints; got {cfg.patch_size}")
        if cfg.mmdit and not extra.get("text_tokens", 0):
            raise ValueError("backbone.mmdit=true needs a text/condition stream: set task.text_tokens > 0")
        if extra.get("text_tokens", 0) and not cfg.mmdit:
            raise ValueError(f"task.text_tokens={extra['text_tokens']} is a joint text stream: use backbone=dit_mm "
                             f"(mmdit=true) or set task.text_tokens=0")
        if cfg.mmdit and extra.get("control_dim", 0):
            raise ValueError("the decoupled control branch is built on single-stream DiT blocks; set mmdit=false")
        self.cfg, self.text_tokens = cfg, int(extra.get("text_tokens", 0))
        max_tokens = int(spec.max_tokens) if spec is not None else 4096
        ph, pw = cfg.patch_size
        size = extra.get("image_size")
        grid = self.token_grid(*size) if isinstance(size, (list, tuple)) else (
            self.token_grid(size, size) if size else None)
        self.pe = pe.setup(AttentionGeometry(cfg.dim, cfg.dim // cfg.n_heads, cfg.n_heads, cfg.n_heads, cfg.depth,
                                             max_tokens, grid=grid))
        self.x_embedder = nn.Conv2d(cfg.in_channels, cfg.dim, kernel_size=(ph, pw), stride=(ph, pw))
        self.t_embedder = TimestepEmbedder(cfg.dim)
        self.y_embedder = nn.Embedding(cfg.num_classes + 1, cfg.dim)  # last row: null label (CFG)
        if cfg.mmdit:
            self.txt_embedder = nn.Embedding(TEXT_VOCAB, cfg.dim)
            self.blocks = nn.ModuleList(DoubleStreamBlock(cfg, i, self.pe) for i in range(cfg.depth))
        else:
            control_dim = int(extra.get("control_dim", 0))
            self.blocks = nn.ModuleList(DiTBlock(cfg, i, self.pe, control_dim) for i in range(cfg.depth))
        self.final_layer = FinalLayer(cfg.dim, ph * pw * cfg.in_channels)
        self._init_weights()

    @property
    def num_attention_layers(self) -> int:
        return len(self.blocks)

    def token_grid(self, height: int, width: int) -> tuple[int, int]:
        """Token grid of an image; an image size that is not a multiple of the patch is an error."""
        ph, pw = self.cfg.patch_size
        if height % ph or width % pw or height <= 0 or width <= 0:
            raise ValueError(f"image size {height}x{width} is not divisible by the patch size {ph}x{pw}; valid sizes "
                             f"are positive multiples of {ph} (height) and {pw} (width)")
        return height // ph, width // pw

    def _init_weights(self) -> None:
        """DiT ``initialize_weights``: xavier linears, zeroed adaLN modulations and output layer."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        w = self.x_embedder.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.bias)
        nn.init.normal_(self.y_embedder.weight, std=0.02)
        if self.cfg.mmdit:
            nn.init.normal_(self.txt_embedder.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        for m in self.modules():
            if hasattr(m, "adaLN_modulation"):
                nn.init.zeros_(m.adaLN_modulation[-1].weight)
                nn.init.zeros_(m.adaLN_modulation[-1].bias)
            if isinstance(m, DecoupledCrossAttention):
                m.reset_parameters()
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    def forward(self, x: Tensor, t: Tensor, y: Tensor, positions: Positions, text: Tensor | None = None,
                control: tuple | None = None) -> Tensor:
        gh, gw = self.token_grid(x.shape[-2], x.shape[-1])
        img = rearrange(self.x_embedder(x), "b d h w -> b (h w) d")
        n_txt = self.text_tokens
        if positions.coords.shape[1] != n_txt + gh * gw:
            raise ValueError(f"positions cover {positions.coords.shape[1]} tokens; this input has {n_txt} text + "
                             f"{gh}x{gw} image tokens")
        c = self.t_embedder(t) + self.y_embedder(y)
        state = self.pe.prepare(positions)
        if self.cfg.mmdit:
            if text is None or text.shape[1] != n_txt:
                raise ValueError(f"mmdit needs text ids of shape (B, {n_txt}); got "
                                 f"{None if text is None else tuple(text.shape)}")
            seq = self.pe.embed(torch.cat([self.txt_embedder(text), img], dim=1), state)
            txt, img = seq[:, :n_txt], seq[:, n_txt:]
            for block in self.blocks:
                txt, img = block(txt, img, c, state)
        else:
            img = self.pe.embed(img, state)
            for block in self.blocks:
                img = block(img, c, state, control)
        out = self.final_layer(img, c)
        ph, pw = self.cfg.patch_size
        return rearrange(out, "b (h w) (p q c) -> b c (h p) (w q)", h=gh, w=gw, p=ph, q=pw)
