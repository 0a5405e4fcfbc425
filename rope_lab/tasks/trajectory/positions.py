"""Positions and local frames for ``task=trajectory``.

Attention positions are each agent's current state (x, y, heading): x, y in metres in the scene frame (the
tracks' local metric frame shifted to the scene's centroid, never rotated), heading in radians in (-pi, pi].
Padded agent slots get segment 1 (real agents segment 0), so no real agent attends to padding.
Per-agent inputs and regression targets live in each agent's own frame (origin at its current position,
x along its current heading) -- QCNet's query-centric convention; the scene itself is never rotated.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rope_lab.pe import Positions


def agent_positions(current: Tensor, agent_mask: Tensor) -> Positions:
    """(B, N, 3) current (x, y, heading), (B, N) bool real-agent mask -> Positions with padding segments."""
    coords = current.masked_fill(~agent_mask[..., None], 0.0)
    return Positions(coords=coords, segment=(~agent_mask).long())


def rotation(heading: Tensor) -> Tensor:
    """(...,) heading -> (..., 2, 2) matrix R(heading) (columns: the agent's forward and left axes)."""
    c, s = heading.cos(), heading.sin()
    return torch.stack((torch.stack((c, -s), -1), torch.stack((s, c), -1)), -2)


def to_local(points: Tensor, current: Tensor) -> Tensor:
    """(B, N, T, 2) scene-frame points -> each agent's frame R(-phi) (p - p0); current is (B, N, 3)."""
    rot = rotation(current[..., 2])  # (B, N, 2, 2)
    return torch.einsum("bnji,bntj->bnti", rot, points - current[:, :, None, :2])


def to_global(points: Tensor, current: Tensor) -> Tensor:
    """Inverse of :func:`to_local`; points (B, N, ..., T, 2) in agent frames -> scene frame."""
    rot = rotation(current[..., 2])
    extra = points.dim() - 4  # dims between the agent and the time axis (e.g. modes)
    rot = rot.view(*rot.shape[:2], *([1] * extra), 2, 2)
    origin = current[..., :2].view(*current.shape[:2], *([1] * extra), 1, 2)
    return torch.einsum("...ij,...tj->...ti", rot, points) + origin


def agent_features(past: Tensor, past_mask: Tensor, current: Tensor, scale: float) -> Tensor:
    """Per-step history in the agent's frame: (dx, dy) / scale, cos/sin of the relative heading, valid flag.

    past (B, N, P, 3), past_mask (B, N, P) -> (B, N, P * 5). Missing steps are zeros with flag 0 (inputs only;
    the loss never sees them).
    """
    xy = to_local(past[..., :2], current) / scale
    dphi = past[..., 2] - current[..., 2:3]
    feats = torch.cat((xy, dphi.cos()[..., None], dphi.sin()[..., None], past_mask[..., None].float()), -1)
    return feats.masked_fill(~past_mask[..., None], 0.0).flatten(-2)
