"""Fashion-MNIST for generation: random training images (a deterministic function of (seed, index), resumable)
and one validation loader per generation resolution yielding (class label, sample index) to generate."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from rope_lab.data.fashion_mnist import CLASSES, load_fashion_mnist
from rope_lab.tasks.data import ResumableLoader, TaskDataModule, train_samples

log = logging.getLogger(__name__)
PAD = 256


@dataclass
class ImageGenConfig:
    data_dir: str = "${paths.data_dir}"
    data_path: str | None = None
    image_size: int = 28  # training resolution (Fashion-MNIST is 28x28)
    eval_sizes: list[int] = field(default_factory=lambda: [28, 40, 56])
    batch_size: int = 64
    class_dropout: float = 0.1  # label (and text) dropped to the null condition, for CFG
    t_sampling: str = "uniform"  # uniform | logit_normal
    sampler: str = "euler"  # euler | heun
    sample_steps: int = 20
    guidance: float = 2.0
    eval_samples: int = 200  # generated images per resolution (labels cycle through the classes)
    eval_batch: int = 100
    real_samples: int = 1000  # test images for the FID/KID reference statistics
    classifier_steps: int = 600
    text_tokens: int = 0  # > 0: class-name bytes as a text stream (needs backbone mmdit) with FLUX ids
    id_axes: int = 2  # 2: (row, col); 3: FLUX (0, row, col)
    num_workers: int = 0


def class_text(labels: torch.Tensor, length: int) -> torch.Tensor:
    """(B,) labels (10 = null) -> (B, length) UTF-8 bytes of the class name, padded with 256 (null: all pad)."""
    rows = []
    for name in list(CLASSES) + [""]:
        ids = list(name.encode("utf-8"))[:length]
        rows.append(ids + [PAD] * (length - len(ids)))
    table = torch.tensor(rows, dtype=torch.long, device=labels.device)
    return table[labels]


class TrainImages(Dataset):
    def __init__(self, images: np.ndarray, labels: np.ndarray, size: int, seed: int) -> None:
        self.images, self.labels, self.size, self.seed = images, labels, size, seed

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> dict:
        j = int(np.random.default_rng([self.seed, i]).integers(len(self.images)))
        img = torch.from_numpy(np.array(self.images[j], dtype=np.float32)) / 255.0
        return {"image": img[None] * 2 - 1, "label": int(self.labels[j])}


class GenerationRequests(Dataset):
    """Item i: generate class i % 10 with noise seeded by (seed, resolution, i)."""

    def __init__(self, count: int, size: int) -> None:
        self.count, self.size = count, size

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> dict:
        return {"label": i % 10, "index": i, "size": self.size}


class ImageGenDataModule(TaskDataModule):
    def __init__(self, cfg: ImageGenConfig, seed: int, total_steps: int) -> None:
        super().__init__(seed, total_steps)
        self.cfg = cfg

    def load(self) -> str:
        c = self.cfg
        self.train_images, self.train_labels, source = load_fashion_mnist("train", c.data_dir, c.data_path)
        self.test_images, self.test_labels, _ = load_fashion_mnist("test", c.data_dir, c.data_path)
        log.info("Fashion-MNIST from %s", source)
        return source

    def real_images(self) -> torch.Tensor:
        """The first ``real_samples`` test images in [0, 1], (N, 1, 28, 28)."""
        x = np.array(self.test_images[: self.cfg.real_samples], dtype=np.float32) / 255.0
        return torch.from_numpy(x)[:, None]

    def train_dataloader(self) -> DataLoader:
        size = train_samples(self, self.cfg.batch_size)
        ds = TrainImages(self.train_images, self.train_labels, size, self.seed)
        return ResumableLoader(ds, self.cfg.batch_size, self.cfg.num_workers)

    def val_names(self) -> list[int]:
        return list(self.cfg.eval_sizes)

    def val_dataloader(self) -> list[DataLoader]:
        return [DataLoader(GenerationRequests(self.cfg.eval_samples, s), batch_size=self.cfg.eval_batch)
                for s in self.cfg.eval_sizes]
