"""The in-project Fashion-MNIST classifier whose predictions and features score generated images.

A small CNN (conv-BN-ReLU x3 with two stride-2 stages, global average pool, 64-d feature, linear head; cheap
enough to train on a shared CPU in about a minute) trained on the Fashion-MNIST
training split and cached by its training settings in ``<data_dir>/classifiers/``. Its test accuracy is logged
with every run (``val/classifier_acc``) so a reader can judge how much its scores mean. Generated images of any
size are resized to 28x28 (area interpolation) before scoring.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

log = logging.getLogger(__name__)
FEATURES = 64


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class FashionCNN(nn.Module):
    """Images (B, 1, H, W) in [0, 1] -> logits; ``features`` gives the 64-d penultimate activations."""

    num_features = FEATURES  # read by torchmetrics FID/KID for a custom feature extractor

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv(1, 16, 2), _conv(16, 32, 2), _conv(32, FEATURES),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(FEATURES, 10)

    @staticmethod
    def prepare(images: Tensor) -> Tensor:
        images = images.float()
        if images.shape[-2:] != (28, 28):
            images = F.interpolate(images, size=(28, 28), mode="area")
        return (images - 0.286) / 0.353  # Fashion-MNIST training mean / std

    def features(self, images: Tensor) -> Tensor:
        return self.body(self.prepare(images))

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.features(images))


class FeatureExtractor(nn.Module):
    """torchmetrics feature-extractor view of the classifier (images in [0, 1] -> 64-d features)."""

    num_features = FEATURES

    def __init__(self, classifier: FashionCNN) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, images: Tensor) -> Tensor:
        with torch.no_grad():
            return self.classifier.features(images)


def train_classifier(images: np.ndarray, labels: np.ndarray, steps: int, seed: int, batch_size: int = 128,
                     lr: float = 2e-3) -> FashionCNN:
    """Adam + cosine schedule on random batches drawn with a seeded generator (deterministic on CPU)."""
    torch.manual_seed(seed)
    model = FashionCNN()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, steps))
    gen = torch.Generator().manual_seed(seed)
    x_all, y_all = torch.as_tensor(np.array(images)), torch.as_tensor(np.array(labels))
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x_all), (batch_size,), generator=gen)
        x = x_all[idx, None].float() / 255.0
        loss = F.cross_entropy(model(x), y_all[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


@torch.no_grad()
def accuracy(model: FashionCNN, images: np.ndarray, labels: np.ndarray, batch: int = 1000) -> float:
    correct = 0
    for i in range(0, len(images), batch):
        x = torch.as_tensor(np.array(images[i : i + batch, None])).float() / 255.0
        correct += (model(x).argmax(-1) == torch.as_tensor(np.array(labels[i : i + batch]))).sum()
    return float(correct) / len(images)


def load_or_train(cache_dir: Path | str, train: tuple[np.ndarray, np.ndarray], steps: int, seed: int = 0
                  ) -> FashionCNN:
    """The classifier trained with (steps, seed), from the cache when present, else trained and cached."""
    path = Path(cache_dir) / "classifiers" / f"fashion_cnn_steps{steps}_seed{seed}.pt"
    model = FashionCNN()
    if path.exists():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model.eval()
    log.info("training the Fashion-MNIST scoring classifier (%d steps); cached at %s", steps, path)
    model = train_classifier(*train, steps=steps, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(path)  # atomic: a concurrent run never reads a half-written file
    return model
