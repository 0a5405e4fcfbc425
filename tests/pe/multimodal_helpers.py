"""Shared builders for the video-variant tests: interleaved text/vision sequences as raw 4-axis positions."""

from __future__ import annotations

import torch

from rope_lab.pe import AttentionGeometry, Positions, build_pe
from rope_lab.pe import IMAGE, TEXT, VIDEO


def sequence(*parts) -> Positions:
    """parts: ("text", L) or ("video"|"image", T, H', W') in order -> Positions (batch 1)."""
    rows, mods = [], []
    for part in parts:
        if part[0] == "text":
            rows += [(0, 0, 0)] * part[1]
            mods += [TEXT] * part[1]
        else:
            kind, t, h, w = part
            rows += [(a, b, c) for a in range(t) for b in range(h) for c in range(w)]
            mods += [VIDEO if kind == "video" else IMAGE] * (t * h * w)
    coords = torch.tensor([[i, *r] for i, r in enumerate(rows)], dtype=torch.float32)[None]
    return Positions(coords=coords, modality=torch.tensor(mods)[None])


WORKED = (("text", 3), ("video", 3, 3, 4), ("text", 2))  # vision_video_variants.md section 2 worked example


def build(name: str, head_dim: int = 128, **cfg):
    geom = AttentionGeometry(dim=2 * head_dim, head_dim=head_dim, n_heads=2, n_kv_heads=2, depth=1)
    return build_pe({"name": name, **cfg}).setup(geom).eval()


def ids(name: str, positions: Positions, **cfg) -> torch.Tensor:
    """Mapped ids (N, R) of batch row 0."""
    return build(name, **cfg).position_map(positions)[0]
