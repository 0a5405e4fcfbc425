"""Trivial generators scored exactly like the model (issue 20), so that a DiT's accuracy / FID / KID can be read
against what needs no training at all:

- ``real``: held-out real test images (disjoint from the FID reference set, as many as the model generates): the
  floor FID / KID of a perfect generator at this sample count, and the classifier's own accuracy;
- ``class_mean``: the mean training image of the requested class (uses the label, nothing else);
- ``noise``: the sampler's starting noise read as an image (what zero sampling steps would return).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

BASELINES = ("real", "class_mean", "noise")


def _as_images(x: np.ndarray) -> Tensor:
    """(N, 28, 28) uint8 -> (N, 1, 28, 28) float in [0, 1]."""
    return torch.from_numpy(np.asarray(x, dtype=np.float32) / 255.0)[:, None]


@dataclass(frozen=True)
class GenerationBaselines:
    class_mean: Tensor  # (classes, 1, H, W) in [0, 1]
    held_out: Tensor  # (N, 1, H, W) in [0, 1]
    held_out_labels: Tensor  # (N,) long

    @classmethod
    def from_splits(cls, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
                    reference_count: int, count: int, num_classes: int = 10) -> "GenerationBaselines":
        """Class means from ``train``; ``count`` test images after the first ``reference_count`` (the FID
        reference), so the ``real`` baseline never scores the reference against itself."""
        test_images, test_labels = test
        if reference_count + count > len(test_images):
            raise ValueError(f"the real baseline needs real_samples + eval_samples <= {len(test_images)} test images; "
                             f"got {reference_count} + {count}")
        x, y = _as_images(train[0]), torch.from_numpy(np.asarray(train[1], dtype=np.int64))
        sums = torch.zeros(num_classes, *x.shape[1:]).index_add_(0, y, x)
        counts = torch.bincount(y, minlength=num_classes).clamp_min(1).float()
        held = slice(reference_count, reference_count + count)
        return cls(class_mean=sums / counts[:, None, None, None], held_out=_as_images(test_images[held]),
                   held_out_labels=torch.from_numpy(np.asarray(test_labels[held], dtype=np.int64)))

    def batches(self, labels: Tensor, noise: Tensor, start: int) -> dict[str, tuple[Tensor, Tensor]]:
        """Each baseline's (images, labels) for the request batch ``labels`` (B,) whose sampler noise is ``noise``
        (B, 1, H, W) in N(0, 1); ``start`` is the batch's first request index (selects the held-out images)."""
        held = slice(start, start + labels.shape[0])
        return {"real": (self.held_out[held], self.held_out_labels[held]),
                "class_mean": (self.class_mean[labels], labels),
                "noise": ((noise.clamp(-1, 1) + 1) / 2, labels)}
