"""Positions of a V-NIAH sequence: [prompt text][video: G grids x H' x W' tokens][question][answer].

Raw multimodal coords (``rope_lab.pe.variants.video.multimodal``): axis 0 is the token's index in the flattened
sequence, axes 1-3 the (t, h, w) grid coordinates of a video token (t = temporal grid, h/w = merged patch row/column; 0
for text); modality is TEXT or VIDEO. Every variant turns these into its own ids.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rope_lab.pe import TEXT, VIDEO, Positions


@dataclass(frozen=True)
class Segments:
    """Token counts of one sequence layout (identical for every item of a batch)."""

    prompt: int
    grids: int  # temporal grids of the video (after temporal patching)
    grid_h: int  # H' (after the spatial merge)
    grid_w: int  # W'
    tail: int  # question + answer tokens

    @property
    def video_tokens(self) -> int:
        return self.grids * self.grid_h * self.grid_w

    @property
    def length(self) -> int:
        return self.prompt + self.video_tokens + self.tail


def layout_coords(seg: Segments) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 4) float32 raw coords and (N,) modality for one sequence."""
    t, h, w = torch.meshgrid(torch.arange(seg.grids), torch.arange(seg.grid_h), torch.arange(seg.grid_w),
                             indexing="ij")
    video = torch.stack((t, h, w), dim=-1).reshape(-1, 3)
    thw = torch.cat((torch.zeros(seg.prompt, 3, dtype=torch.long), video,
                     torch.zeros(seg.tail, 3, dtype=torch.long)))
    n = torch.arange(seg.length)[:, None]
    modality = torch.full((seg.length,), TEXT, dtype=torch.long)
    modality[seg.prompt : seg.prompt + seg.video_tokens] = VIDEO
    return torch.cat((n, thw), dim=-1).float(), modality


def vniah_positions(coords: torch.Tensor, modality: torch.Tensor, fps: float, augment: bool) -> Positions:
    """Batch positions (B, N, 4) for the model input; ``augment`` marks training batches (HoPE's DTS)."""
    return Positions(coords=coords, modality=modality, meta={"fps": float(fps), "augment": bool(augment)})
