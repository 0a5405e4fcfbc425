"""The eager rotation: the parity oracle every other backend is tested against.

Pair layouts (RoFormer arXiv 2104.09864; HF ``rotate_half`` vs GPT-J ``rotate_every_two``):
  "half"        pair j = (j, j + P)      HF LLaMA / GPT-NeoX
  "interleaved" pair j = (2j, 2j + 1)    RoFormer, GPT-J, Meta LLaMA, timm / rope-vit
Only the first 2P channels of a head are rotated (partial rotary); the rest pass through.
"""

from __future__ import annotations

import torch
from torch import Tensor

PAIR_LAYOUTS = ("half", "interleaved")


def check_layout(layout: str) -> None:
    if layout not in PAIR_LAYOUTS:
        raise ValueError(f"unknown pair_layout '{layout}'; choose one of {list(PAIR_LAYOUTS)}")


def math_dtype(dtype: torch.dtype) -> torch.dtype:
    """Rotation math runs in fp32 (float64 inputs keep float64: the precision tests use them)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def rotate(x: Tensor, cos: Tensor, sin: Tensor, layout: str) -> Tensor:
    """Rotate the first 2P channels of x (B, H, N, D) by cos/sin (B|1, H|1, N, P); math in fp32, one cast back."""
    check_layout(layout)
    pairs = cos.shape[-1]
    wide = math_dtype(x.dtype)
    rot, rest = x[..., : 2 * pairs].to(wide), x[..., 2 * pairs :]
    cos, sin = cos.to(wide), sin.to(wide)
    if layout == "half":
        x1, x2 = rot[..., :pairs], rot[..., pairs:]
        out = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
    else:
        x1, x2 = rot[..., 0::2], rot[..., 1::2]
        out = torch.stack((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).flatten(-2)
    out = out.to(x.dtype)
    return out if rest.shape[-1] == 0 else torch.cat((out, rest), dim=-1)
