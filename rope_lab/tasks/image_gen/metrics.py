"""Offline generation metrics at one resolution: the classifier's accuracy on class-conditional samples and
FID / KID (torchmetrics) on the classifier's 64-d features against real Fashion-MNIST test images."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from rope_lab.tasks.image_gen.classifier import FashionCNN, FeatureExtractor


class GenerationScores:
    """Accumulates generated images (in [0, 1]) of one resolution; ``compute`` -> {acc, fid, kid}."""

    def __init__(self, classifier: FashionCNN, real: Tensor, kid_subset: int = 50) -> None:
        feats = FeatureExtractor(classifier)
        self.classifier = classifier
        self.fid = FrechetInceptionDistance(feature=feats, reset_real_features=False)
        self.kid = KernelInceptionDistance(feature=feats, reset_real_features=False, subsets=20,
                                           subset_size=kid_subset)
        self.fid.update(real, real=True)
        self.kid.update(real, real=True)
        self.kid_subset = kid_subset
        self.correct, self.count = torch.zeros(()), 0

    @torch.no_grad()
    def update(self, images: Tensor, labels: Tensor) -> None:
        self.correct += (self.classifier(images).argmax(-1) == labels).sum().cpu()
        self.count += images.shape[0]
        self.fid.update(images, real=False)
        self.kid.update(images, real=False)

    def compute(self) -> dict[str, Tensor]:
        if self.count < 2:
            raise ValueError(f"FID/KID need at least 2 generated images; got {self.count}")
        out = {"acc": self.correct / self.count, "fid": self.fid.compute().float()}
        if self.count >= self.kid_subset:
            out["kid"] = self.kid.compute()[0].float()
        return out

    def reset(self) -> None:
        self.fid.reset()
        self.kid.reset()
        self.correct, self.count = torch.zeros(()), 0
