"""LightningModule of ``task=image_cls``: cross-entropy (label smoothing, optional timm Mixup/CutMix),
torchmetrics top-1 accuracy per validation resolution (``val/acc@res=R``, ``val/loss@res=R``) and the
training-resolution accuracy as ``val/acc``."""

from __future__ import annotations

import zlib

import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from rope_lab.optim import OptimConfig
from rope_lab.tasks.base import TaskModule
from rope_lab.tasks.image_cls.positions import image_positions, patch_grid
from rope_lab.tasks.image_cls.train_order import seeded_global_rngs


class ImageClsModule(TaskModule):
    def __init__(self, model, optim: OptimConfig, total_steps: int, num_classes: int, resolutions: list[int],
                 train_resolution: int, aug, seed: int = 0) -> None:
        super().__init__(model, optim, total_steps)
        self.seed = seed
        self.resolutions, self.train_resolution = list(resolutions), train_resolution
        self.acc = torch.nn.ModuleList(MulticlassAccuracy(num_classes, average="micro") for _ in resolutions)
        self.loss = torch.nn.ModuleList(MeanMetric() for _ in resolutions)
        self.label_smoothing = aug.label_smoothing
        self.mixup = None
        if aug.mixup_alpha > 0 or aug.cutmix_alpha > 0:
            from timm.data import Mixup

            self.mixup = Mixup(mixup_alpha=aug.mixup_alpha, cutmix_alpha=aug.cutmix_alpha,
                               label_smoothing=aug.label_smoothing, num_classes=num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        grid = patch_grid(images.shape[-2:], self.model.patch_size)
        pos = image_positions(images.shape[0], grid, self.model.num_prefix_tokens, images.device)
        return self.model(images, pos)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        images, labels = batch["images"], batch["labels"]
        if self.mixup is not None:
            # timm's Mixup draws from NumPy's global generator: seed it by (seed, step, rank) so a resumed run mixes the
            # same pairs with the same lambda as an uninterrupted one
            with seeded_global_rngs(zlib.crc32(f"mixup/{self.seed}/{self.global_step}/{self.global_rank}".encode())):
                images, soft = self.mixup(images, labels)
            logits = self(images)
            loss = torch.sum(-soft * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
        else:
            logits = self(images)
            loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        logits = self(batch["images"]).float()
        self.acc[dataloader_idx].update(logits, batch["labels"])
        self.loss[dataloader_idx].update(F.cross_entropy(logits, batch["labels"], reduction="none"))

    def on_validation_epoch_end(self) -> None:
        for i, res in enumerate(self.resolutions):
            if self.acc[i].update_count == 0:  # loader not run (e.g. limit_val_batches)
                continue
            acc = self.acc[i].compute()
            self.log(f"val/acc@res={res}", acc, add_dataloader_idx=False)
            self.log(f"val/loss@res={res}", self.loss[i].compute(), add_dataloader_idx=False)
            if res == self.train_resolution:
                self.log("val/acc", acc, prog_bar=True, add_dataloader_idx=False)
            self.acc[i].reset()
            self.loss[i].reset()
