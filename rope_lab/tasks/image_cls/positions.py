"""Positions for image tasks: (row, col) integer patch coordinates, row-major, plus prefix tokens.

Prefix tokens (CLS, registers) come first with ``modality == NO_POSITION``: rotary variants leave them
unrotated and absolute PEs add nothing to them (RoPE-ViT rotates ``q[:, :, 1:]`` only; its APE has no CLS
entry). The grid shape travels in ``meta["grid"]`` so a learned APE can resize its table without a host sync.
"""

from __future__ import annotations

import torch

from rope_lab.pe import IMAGE, NO_POSITION, Positions


def patch_grid(image_hw: tuple[int, int], patch_size: int) -> tuple[int, int]:
    """(H, W) pixels -> (rows, cols) of patches; a size that the patch does not divide is an error."""
    h, w = int(image_hw[0]), int(image_hw[1])
    if h % patch_size or w % patch_size:
        raise ValueError(f"image size {h}x{w} is not divisible by the patch size {patch_size}; "
                         f"choose a resolution that is a multiple of {patch_size}")
    return h // patch_size, w // patch_size


def grid_coords(rows: int, cols: int, device=None) -> torch.Tensor:
    """(rows*cols, 2) float (row, col), row-major (x = col varies fastest, as rope-vit ``init_t_xy``)."""
    r = torch.arange(rows, device=device, dtype=torch.float32)
    c = torch.arange(cols, device=device, dtype=torch.float32)
    return torch.stack(torch.meshgrid(r, c, indexing="ij"), dim=-1).reshape(-1, 2)


def image_positions(batch: int, grid: tuple[int, int], num_prefix: int = 1, device=None) -> Positions:
    """Positions of ``num_prefix`` prefix tokens followed by a rows x cols patch grid, for every row of a batch: a
    batch-broadcast view (rotary tables are built once for all images, as timm and rope-vit build them; clone to
    write)."""
    rows, cols = int(grid[0]), int(grid[1])
    coords = torch.cat([torch.zeros(num_prefix, 2, device=device), grid_coords(rows, cols, device)])
    modality = torch.full((num_prefix + rows * cols,), IMAGE, dtype=torch.long, device=device)
    modality[:num_prefix] = NO_POSITION
    return Positions(coords=coords.expand(batch, -1, -1), modality=modality.expand(batch, -1),
                     meta={"grid": (rows, cols)})
