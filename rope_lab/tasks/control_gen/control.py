"""The control signal: a "melody" read from an image seen as a spectrogram (columns = frames, rows = pitch).

Frame j's label is the row bin (``bins`` equal bands, top band = 0) holding the intensity-weighted centroid of
column j, or ``bins`` ("silent") when the column's mean intensity is below ``silence``. The same function
extracts the control from generated images, so frame accuracy = MuseControlLite's frame-level melody accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
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


@dataclass(frozen=True)
class ControlBaselines:
    """Predictors that never read the control, reported next to the model so that "the control works" needs the
    model to beat them (issue 20: on Fashion-MNIST the class-average image alone already scores well above chance).

    ``class_mean`` (classes, 1, H, W) in [0, 1]: the mean training image of the requested class (label only);
    ``constant`` (W,) long: per frame position, the most frequent training label (the best request-blind guess)."""

    class_mean: Tensor
    constant: Tensor

    @classmethod
    def from_training_set(cls, images: np.ndarray, labels: np.ndarray, num_classes: int, bins: int,
                          silence: float = 0.05) -> "ControlBaselines":
        """``images`` (N, H, W) uint8, ``labels`` (N,) from the training split."""
        x = torch.from_numpy(np.asarray(images, dtype=np.float32) / 255.0)[:, None]
        y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        counts = torch.bincount(y, minlength=num_classes).clamp_min(1).float()
        sums = torch.zeros(num_classes, *x.shape[1:]).index_add_(0, y, x)
        frames = melody(x, bins, silence)  # (N, W)
        per_position = F.one_hot(frames, bins + 1).sum(0)  # (W, bins + 1)
        return cls(class_mean=sums / counts[:, None, None, None], constant=per_position.argmax(-1))

    def accuracies(self, labels: Tensor, target: Tensor, noise: Tensor, bins: int, silence: float = 0.05
                   ) -> dict[str, Tensor]:
        """(B,) frame accuracy of each baseline for requests ``labels`` (B,), ``target`` (B, W) and the sampler's
        starting ``noise`` (B, 1, H, W) in N(0, 1) read as an image (what zero sampling steps would return)."""
        mean_images = self.class_mean.to(target.device)[labels]
        noise_images = (noise.clamp(-1, 1) + 1) / 2
        constant = (self.constant.to(target.device)[None] == target).float().mean(-1)
        return {"class_mean": frame_accuracy(mean_images, target, bins, silence),
                "constant": constant,
                "noise": frame_accuracy(noise_images, target, bins, silence)}
