"""Positions for image generation: (row, col) patch coordinates, or FLUX's 3-axis ids.

- ``id_axes=2``: image token (row, col), row-major, integers from 0 (DiT / RoPE-ViT convention).
- ``id_axes=3``: FLUX ids (Black Forest Labs ``flux/sampling.py: prepare``): image tokens ``(0, row, col)``,
  text tokens all ``(0, 0, 0)`` (so RoPE is the identity on them) and they come first ([text, image]).
Larger generation resolutions simply see larger integer positions (extrapolation, no rescaling).
"""

from __future__ import annotations

import torch

from rope_lab.pe import IMAGE, TEXT, Positions
from rope_lab.tasks.image_cls.positions import grid_coords

ID_AXES = (2, 3)


def generation_positions(batch: int, grid: tuple[int, int], text_tokens: int = 0, id_axes: int = 2,
                         device=None) -> Positions:
    """Positions of ``text_tokens`` text tokens (all-zero ids) followed by a rows x cols image grid, for every row of
    a batch: a batch-broadcast view (rotary tables are built once for all images; clone to write)."""
    if id_axes not in ID_AXES:
        raise ValueError(f"id_axes must be one of {ID_AXES}; got {id_axes}")
    if text_tokens and id_axes != 3:
        raise ValueError(f"a text stream ({text_tokens} tokens) uses FLUX's 3-axis ids: set id_axes=3")
    rows, cols = int(grid[0]), int(grid[1])
    img = grid_coords(rows, cols, device)
    if id_axes == 3:
        img = torch.cat([torch.zeros(rows * cols, 1, device=device), img], dim=-1)
    coords = torch.cat([torch.zeros(text_tokens, id_axes, device=device), img])
    modality = torch.full((text_tokens + rows * cols,), IMAGE, dtype=torch.long, device=device)
    modality[:text_tokens] = TEXT
    return Positions(coords=coords.expand(batch, -1, -1), modality=modality.expand(batch, -1),
                     meta={"grid": (rows, cols)})
