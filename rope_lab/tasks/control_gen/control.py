"""The control signal: a "melody" read from an image seen as a spectrogram (columns = frames, rows = pitch).

Frame j's label is the row bin (``bins`` equal bands, top band = 0) holding the intensity-weighted centroid of
column j, or ``bins`` ("silent") when the column's mean intensity is below ``silence``. The same function
extracts the control from generated images, so frame accuracy = MuseControlLite's frame-level melody accuracy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def melody(images: Tensor, bins: int, silence: float = 0.05) -> Tensor:
    """(B, 1, H, W) in [0, 1] -> (B, W) long frame labels in [0, bins]."""
    x = images[:, 0].float()
    h = x.shape[-2]
    mass = x.sum(-2)
    rows = torch.arange(h, dtype=x.dtype, device=x.device)[:, None]
    centroid = (x * rows).sum(-2) / mass.clamp_min(1e-8)
    label = (centroid * bins / h).floor().clamp(0, bins - 1).long()
    return torch.where(mass / h < silence, torch.full_like(label, bins), label)


def one_hot(labels: Tensor, bins: int) -> Tensor:
    """(B, L) frame labels -> (B, L, bins + 1) condition features."""
    return F.one_hot(labels, bins + 1).float()


def frame_accuracy(generated: Tensor, target: Tensor, bins: int, silence: float = 0.05) -> Tensor:
    """(B,) fraction of frames whose extracted label equals the requested one."""
    return (melody(generated, bins, silence) == target).float().mean(-1)
