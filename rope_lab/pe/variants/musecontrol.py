"""MuseControlLite's decoupled cross-attention with rotary positions on the condition timeline.

Tsai et al., ICML 2025 (arXiv 2506.18729); official code ``fundwotsai2001/MuseControlLite``
``MuseControlLite_setup.py: StableAudioAttnProcessor2_0_rotary``:

- new ``to_k_ip`` / ``to_v_ip`` (Linear, no bias) read the time-aligned condition; the query is the host
  attention's query; the output goes through a zero-initialised ``conv_out`` (a kernel-1 Conv1d over channels,
  i.e. a bias-free Linear, used as such here) and is added, times ``scale``, to the host attention's output
  before its output projection.
- RoPE (``LlamaRotaryEmbedding(dim=head_dim)``, base 10000, cos/sin = cat(freqs, freqs)) on the query, the
  condition keys **and the condition values**. Query token i sits at ``i * L_c / L_q`` (a float), condition
  frame j at ``j`` (:func:`timeline_positions`).

Layouts (``layout``):
- ``musecontrollite_compat``: the official code's ``rotate_half``, which unpacks *adjacent* pairs
  (``view(..., d/2, 2).unbind(-1)``) and writes ``cat(-odd, even)`` while cos/sin are in *half* layout. This is
  not a rotation: it does not preserve norms and the q.k score is not relative-only (tests show both). Kept for
  faithfulness to the released checkpoints' behaviour.
- ``half``: the clean LLaMA rotate-half rotation (a documented deviation from the official code).
- ``none``: the same branch with no RoPE (the paper's 56.6% melody-accuracy baseline).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from rope_lab.pe.frequencies import rope_inv_freq
from rope_lab.pe.interface import apply_keeping_dtype
from rope_lab.pe.rotary import apply_rotation

LAYOUTS = ("musecontrollite_compat", "half", "none")


@dataclass
class MuseControlConfig:
    layout: str = "musecontrollite_compat"
    base: float = 10000.0
    rotate_values: bool = True  # the official code rotates V too
    scale: float = 1.0  # ``ap_scale`` in the official processor


def timeline_positions(batch: int, n_query: int, n_cond: int, device=None) -> tuple[Tensor, Tensor]:
    """(query positions (B, L_q) = i * L_c / L_q as floats, condition positions (B, L_c) = j)."""
    if n_query <= 0 or n_cond <= 0:
        raise ValueError(f"timeline needs positive lengths; got L_q={n_query}, L_c={n_cond}")
    q = torch.arange(n_query, dtype=torch.long, device=device) * (n_cond / n_query)  # as the official code
    k = torch.arange(n_cond, dtype=torch.float32, device=device)
    return q.float().expand(batch, -1), k.expand(batch, -1)


def compat_rotate_half(x: Tensor) -> Tensor:
    """The official ``rotate_half``: adjacent pairs unpacked, written back as cat(-odd, even)."""
    x1, x2 = x.view(*x.shape[:-1], x.shape[-1] // 2, 2).unbind(-1)
    return torch.cat((-x2, x1), dim=-1)


def rotate_timeline(x: Tensor, pos: Tensor, inv_freq: Tensor, layout: str) -> Tensor:
    """x (B, H, N, D) at float positions pos (B, N): angles in fp32 with autocast off, cast back once."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown musecontrol layout '{layout}'; choose one of {list(LAYOUTS)}")
    if layout == "none":
        return x
    with torch.autocast(device_type=x.device.type, enabled=False):
        angles = pos.float()[:, None, :, None] * inv_freq.float()  # (B, 1, N, D/2)
        cos, sin = angles.cos(), angles.sin()
        if layout == "half":
            return apply_rotation(x, cos, sin, "half")
        cos2, sin2 = torch.cat((cos, cos), dim=-1), torch.cat((sin, sin), dim=-1)
        xf = x.float()
        return (xf * cos2 + compat_rotate_half(xf) * sin2).to(x.dtype)


class DecoupledCrossAttention(nn.Module):
    """(host query q (B, H, Nq, D), condition (B, Lc, C), query pos (B, Nq), cond pos (B, Lc)) -> (B, Nq, H*D)."""

    def __init__(self, cond_dim: int, dim: int, n_heads: int, cfg: MuseControlConfig) -> None:
        super().__init__()
        if cfg.layout not in LAYOUTS:
            raise ValueError(f"unknown musecontrol layout '{cfg.layout}'; choose one of {list(LAYOUTS)}")
        self.cfg, self.n_heads, self.head_dim = cfg, n_heads, dim // n_heads
        self.to_k_ip = nn.Linear(cond_dim, dim, bias=False)
        self.to_v_ip = nn.Linear(cond_dim, dim, bias=False)
        self.conv_out = nn.Linear(dim, dim, bias=False)  # == Conv1d(dim, dim, kernel_size=1, bias=False)
        self.register_buffer("inv_freq", rope_inv_freq(self.head_dim, cfg.base), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.conv_out.weight)  # ``zero_module``: the branch starts as a no-op

    def _apply(self, fn, recurse=True):  # inv_freq stays fp32 under model.to(bf16), as PositionalEncoding's buffers
        return apply_keeping_dtype(self, ("inv_freq",),
                                   lambda: super(DecoupledCrossAttention, self)._apply(fn, recurse))

    def forward(self, q: Tensor, cond: Tensor, q_pos: Tensor, k_pos: Tensor) -> Tensor:
        k = rearrange(self.to_k_ip(cond), "b n (h d) -> b h n d", h=self.n_heads)
        v = rearrange(self.to_v_ip(cond), "b n (h d) -> b h n d", h=self.n_heads)
        layout = self.cfg.layout
        q = rotate_timeline(q, q_pos, self.inv_freq, layout)
        k = rotate_timeline(k, k_pos, self.inv_freq, layout)
        if self.cfg.rotate_values:
            v = rotate_timeline(v, k_pos, self.inv_freq, layout)
        out = rearrange(F.scaled_dot_product_attention(q, k, v), "b h n d -> b n (h d)")
        return self.cfg.scale * self.conv_out(out)
