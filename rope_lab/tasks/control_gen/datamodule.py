"""``task=control_gen`` data: Fashion-MNIST training images (resumable, rank-sharded) and, for validation, the
first test images, whose labels and melodies are the generation requests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from rope_lab.data.fashion_mnist import load_fashion_mnist
from rope_lab.tasks.control_gen.control import ControlBaselines
from rope_lab.tasks.data import ResumableLoader, TaskDataModule, train_samples
from rope_lab.tasks.image_gen.datamodule import TrainImages

SIZE = 28


@dataclass
class ControlGenConfig:
    data_dir: str = "${paths.data_dir}"
    data_path: str | None = None
    bins: int = 7  # melody row bands (+1 "silent" class)
    silence: float = 0.05
    batch_size: int = 64
    class_dropout: float = 0.1
    control_dropout: float = 0.1
    t_sampling: str = "uniform"
    sampler: str = "euler"
    sample_steps: int = 20
    guidance_text: float = 1.0
    guidance_control: float = 1.5
    eval_samples: int = 200  # first test images: their labels and melodies are the requests
    eval_batch: int = 100
    num_workers: int = 0


class EvalRequests(Dataset):
    def __init__(self, images: np.ndarray, labels: np.ndarray, count: int) -> None:
        self.images, self.labels, self.count = images, labels, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> dict:
        img = torch.from_numpy(np.array(self.images[i], dtype=np.float32))[None] / 255.0
        return {"image": img, "label": int(self.labels[i])}


class ControlGenDataModule(TaskDataModule):
    def __init__(self, cfg: ControlGenConfig, seed: int, total_steps: int) -> None:
        super().__init__(seed, total_steps)
        self.cfg = cfg
        self._baselines: ControlBaselines | None = None

    def load(self) -> str:
        c = self.cfg
        self.train_images, self.train_labels, source = load_fashion_mnist("train", c.data_dir, c.data_path)
        self.test_images, self.test_labels, _ = load_fashion_mnist("test", c.data_dir, c.data_path)
        return source

    def baselines(self) -> ControlBaselines:
        """The request-blind baselines, from the training split (computed once)."""
        if self._baselines is None:
            self.setup()
            self._baselines = ControlBaselines.from_training_set(self.train_images, self.train_labels, 10,
                                                                 self.cfg.bins, self.cfg.silence)
        return self._baselines

    def train_dataloader(self) -> DataLoader:
        ds = TrainImages(self.train_images, self.train_labels, train_samples(self, self.cfg.batch_size), self.seed)
        return ResumableLoader(ds, self.cfg.batch_size, self.cfg.num_workers)

    def val_dataloader(self) -> DataLoader:
        ds = EvalRequests(self.test_images, self.test_labels, self.cfg.eval_samples)
        return DataLoader(ds, batch_size=self.cfg.eval_batch)
