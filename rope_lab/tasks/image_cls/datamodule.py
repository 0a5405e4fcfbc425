"""Image-classification data: Fashion-MNIST (default, fetched offline-capable), an ImageFolder tree, or an HF
``datasets`` image dataset. Train at one resolution; one validation loader per evaluation resolution.

Evaluation at resolution R resizes the image (the object grows with R), as RoPE-ViT's multi-resolution
evaluation does (timm eval transform: resize to R / crop_pct, centre-crop R; crop_pct 1.0 = plain resize).
Augmentation is timm's ``create_transform`` (random-resized crop, flip, optional RandAugment / colour jitter /
random erasing); Fashion-MNIST uses the same random-resized crop + flip as batched tensor ops (no PIL per image).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from rope_lab.tasks.image_cls.train_order import EpochShuffledSamples
from rope_lab.tasks.data import ResumableLoader, TaskDataModule, train_samples

log = logging.getLogger(__name__)

DATASETS = ("fashion_mnist", "imagefolder", "hf", "imagenet-1k")
FMNIST_MEAN, FMNIST_STD = (0.2860,), (0.3530,)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass
class AugConfig:
    scale: list[float] = field(default_factory=lambda: [0.35, 1.0])  # random-resized-crop area range
    ratio: list[float] = field(default_factory=lambda: [0.75, 1.3333])
    hflip: float = 0.5
    auto_augment: str | None = None  # timm string, e.g. rand-m9-mstd0.5-inc1 (PIL datasets only)
    color_jitter: float | None = None
    re_prob: float = 0.0  # random erasing (PIL datasets only)
    mixup_alpha: float = 0.0  # timm Mixup (all datasets)
    cutmix_alpha: float = 0.0
    label_smoothing: float = 0.1


@dataclass
class ImageClsConfig:
    dataset: str = "fashion_mnist"  # fashion_mnist | imagefolder | hf | imagenet-1k
    data_dir: str = "${paths.data_dir}"  # cache dir (downloads, HF cache)
    data_path: str | None = None  # user data: FMNIST idx folder, ImageFolder root, ImageNet root
    train_split: str = "train"
    val_split: str = "val"  # imagefolder sub-folder / HF split ('test' for Fashion-MNIST is used automatically)
    hf_name: str | None = None  # HF hub name or a save_to_disk folder
    hf_config: str | None = None
    image_key: str = "image"
    label_key: str = "label"
    num_classes: int | None = None  # inferred for fashion_mnist / imagefolder / hf ClassLabel
    channels: int | None = None  # 1 for fashion_mnist, 3 otherwise
    train_resolution: int = 28
    eval_resolutions: list[int] = field(default_factory=lambda: [16, 20, 24, 28, 32, 40, 48, 56, 64])
    crop_pct: float = 1.0  # eval: resize to R/crop_pct then centre-crop R (ImageNet convention 0.875)
    interpolation: str = "bicubic"
    train_samples: int | None = None  # subset sizes (None: all)
    val_samples: int | None = 5000
    batch_size: int = 128
    eval_batch_size: int = 256
    num_workers: int = 0
    aug: AugConfig = field(default_factory=AugConfig)


def check_config(cfg: ImageClsConfig, patch_multiple: int | None = None) -> None:
    """Clear errors for an unknown dataset, missing paths and non-positive resolutions."""
    if cfg.dataset not in DATASETS:
        raise ValueError(f"unknown image dataset '{cfg.dataset}'; choose one of {list(DATASETS)}")
    if cfg.dataset == "imagefolder" and not cfg.data_path:
        raise ValueError("task.dataset=imagefolder needs task.data_path=<root holding train/ and val/ folders>")
    if cfg.dataset == "hf" and not cfg.hf_name:
        raise ValueError("task.dataset=hf needs task.hf_name=<hub name or save_to_disk folder>")
    if cfg.data_path and not Path(cfg.data_path).exists():
        raise FileNotFoundError(f"task.data_path={cfg.data_path} does not exist")
    if cfg.data_path and cfg.dataset == "hf":  # a path the user gave is never silently ignored
        raise ValueError(f"task.data_path={cfg.data_path} is not read by task.dataset=hf; give a save_to_disk folder "
                         f"as task.hf_name, or drop task.data_path")
    if cfg.data_path and cfg.dataset == "imagenet-1k" and not (Path(cfg.data_path) / cfg.val_split).is_dir():
        raise FileNotFoundError(f"task.data_path={cfg.data_path} has no {cfg.val_split}/ folder (imagenet-1k as an "
                                f"ImageFolder tree needs {cfg.val_split}/, and {cfg.train_split}/ to train); drop "
                                f"task.data_path to use the HF hub")
    for r in [cfg.train_resolution, *cfg.eval_resolutions]:
        if r <= 0:
            raise ValueError(f"resolutions must be positive; got {r}")


# -- Fashion-MNIST: tensors in memory ----------------------------------------------------------------
def resize_batch(images: Tensor, size: int, mode: str = "bicubic", crop_pct: float = 1.0) -> Tensor:
    """(N, C, h, w) float -> (N, C, size, size): resize the short side to size/crop_pct, centre-crop size."""
    inner = int(round(size / crop_pct))
    out = F.interpolate(images, size=(inner, inner), mode=mode, align_corners=False if mode != "nearest" else None,
                        antialias=mode in ("bilinear", "bicubic"))
    off = (inner - size) // 2
    return out[..., off : off + size, off : off + size]


class TensorTrainAug:
    """timm's train recipe (RandomResizedCrop + hflip) on a batch of (N, C, H, W) float tensors, per image."""

    def __init__(self, size: int, aug: AugConfig, interpolation: str) -> None:
        from torchvision.transforms import v2

        self.crop = v2.RandomResizedCrop(size, scale=tuple(aug.scale), ratio=tuple(aug.ratio), antialias=True,
                                         interpolation=v2.InterpolationMode(interpolation))
        self.flip = v2.RandomHorizontalFlip(aug.hflip)

    def __call__(self, images: Tensor) -> Tensor:
        return torch.stack([self.one(img) for img in images])

    def one(self, image: Tensor) -> Tensor:
        """(C, H, W) -> (C, size, size)."""
        return self.flip(self.crop(image))


def _normalize(images: Tensor, mean, std) -> Tensor:
    m = torch.tensor(mean, dtype=images.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=images.dtype).view(1, -1, 1, 1)
    return (images - m) / s


def _subset(ds: Dataset, n: int | None, seed: int) -> Dataset:
    if n is None or n >= len(ds):
        return ds
    idx = np.random.default_rng(seed).permutation(len(ds))[:n]
    return Subset(ds, sorted(idx.tolist()))



class ImageClsDataModule(TaskDataModule):
    """Yields ``{"images": (B, C, R, R) float, "labels": (B,)}``; validation loader i is at eval_resolutions[i]."""

    def __init__(self, cfg: ImageClsConfig, seed: int = 0, total_steps: int | None = None) -> None:
        super().__init__(seed, total_steps)
        check_config(cfg)
        self.cfg = cfg
        self._train = self._vals = None

    def val_names(self) -> list[str]:
        return [f"res={r}" for r in self.cfg.eval_resolutions]

    # -- setup ------------------------------------------------------------------------------------
    def load(self) -> str:
        return self._load_fashion_mnist() if self.cfg.dataset == "fashion_mnist" else self._load_pil()

    def _load_fashion_mnist(self) -> str:
        from rope_lab.data.fashion_mnist import load_fashion_mnist

        xtr, ytr, source = load_fashion_mnist("train", self.cfg.data_dir, self.cfg.data_path)
        xte, yte, _ = load_fashion_mnist("test", self.cfg.data_dir, self.cfg.data_path)
        log.info("fashion_mnist from %s: %d train / %d test images", source, len(xtr), len(xte))
        to_float = lambda x: torch.from_numpy(np.array(x)).float().div(255.0)[:, None]  # noqa: E731
        self._train = _subset(TensorDataset(to_float(xtr), torch.from_numpy(ytr)), self.cfg.train_samples, self.seed)
        val = _subset(TensorDataset(to_float(xte), torch.from_numpy(yte)), self.cfg.val_samples, self.seed + 1)
        images = torch.stack([val[i][0] for i in range(len(val))])
        labels = torch.stack([val[i][1] for i in range(len(val))])
        self._vals = [TensorDataset(_normalize(resize_batch(images, r, self.cfg.interpolation, self.cfg.crop_pct)
                                               .clamp(0, 1), FMNIST_MEAN, FMNIST_STD), labels)
                      for r in self.cfg.eval_resolutions]
        self._train_aug = TensorTrainAug(self.cfg.train_resolution, self.cfg.aug, self.cfg.interpolation)
        return source

    def _load_pil(self) -> str:
        from rope_lab.tasks.image_cls.sources import open_pil_dataset, pil_transforms

        train, val, source = open_pil_dataset(self.cfg)
        mean, std = (FMNIST_MEAN, FMNIST_STD) if self.channels == 1 else (IMAGENET_MEAN, IMAGENET_STD)
        tf_train, tf_evals = pil_transforms(self.cfg, mean, std)
        self._train = None if train is None else _subset(train.with_transform(tf_train), self.cfg.train_samples,
                                                          self.seed)
        self._vals = [_subset(val.with_transform(tf), self.cfg.val_samples, self.seed + 1) for tf in tf_evals]
        self._train_aug = None
        return source

    @property
    def channels(self) -> int:
        return self.cfg.channels or (1 if self.cfg.dataset == "fashion_mnist" else 3)

    # -- loaders ----------------------------------------------------------------------------------
    def _augment_tensor(self, item: tuple) -> tuple:
        image, label = item
        return _normalize(self._train_aug.one(image)[None].clamp(0, 1), FMNIST_MEAN, FMNIST_STD)[0], label

    @staticmethod
    def _collate(items) -> dict:
        return {"images": torch.stack([i[0] for i in items]), "labels": torch.as_tensor([int(i[1]) for i in items])}

    def train_dataloader(self) -> ResumableLoader:
        """Rank-sharded and resumable mid-epoch: the order and the augmentation of every sample are fixed by
        (seed, sample index), see :mod:`rope_lab.tasks.image_cls.train_order`."""
        self.setup()
        if self._train is None:
            raise FileNotFoundError(f"task.data_path={self.cfg.data_path} has no {self.cfg.train_split}/ folder: "
                                    f"it can be evaluated (eval.py) but not trained on")
        # without a step budget (a datamodule built by hand): one pass over the training set
        size = len(self._train) if self.total_steps is None else train_samples(self, self.cfg.batch_size)
        augment = self._augment_tensor if self._train_aug is not None else None
        samples = EpochShuffledSamples(self._train, size, self.seed, augment)
        return ResumableLoader(samples, self.cfg.batch_size, self.cfg.num_workers, collate_fn=self._collate)

    def val_dataloader(self) -> list[DataLoader]:
        self.setup()
        return [DataLoader(v, batch_size=self.cfg.eval_batch_size, shuffle=False, collate_fn=self._collate,
                           num_workers=self.cfg.num_workers) for v in self._vals]
