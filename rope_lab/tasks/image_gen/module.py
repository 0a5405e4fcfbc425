"""LightningModule of ``task=image_gen``: rectified-flow training loss, class-conditional sampling with CFG at
every evaluation resolution, classifier accuracy / FID / KID per resolution and a sample grid PNG per
resolution and validation."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from rope_lab.analysis.plots import save_labelled_grid
from rope_lab.data.fashion_mnist import CLASSES
from rope_lab.loggers import log_image_file
from rope_lab.optim import OptimConfig
from rope_lab.tasks.base import TaskModule
from rope_lab.tasks.image_gen.baselines import GenerationBaselines
from rope_lab.tasks.image_gen.classifier import accuracy, load_or_train
from rope_lab.tasks.image_gen.datamodule import ImageGenConfig, ImageGenDataModule, class_text
from rope_lab.tasks.image_gen.flow import SAMPLERS, check_guidance, guided, interpolate, sample, sample_t
from rope_lab.tasks.image_gen.metrics import GenerationScores
from rope_lab.tasks.image_gen.positions import generation_positions


def velocity_fn(model, labels: Tensor, text_tokens: int, id_axes: int, null_label: int
                ) -> Callable[[Tensor, Tensor, bool], Tensor]:
    """velocity(x, t, conditional) of a DiT for fixed labels; the null label (and empty text) when unconditional."""

    def fn(x: Tensor, t: Tensor, conditional: bool) -> Tensor:
        y = labels if conditional else torch.full_like(labels, null_label)
        grid = model.token_grid(x.shape[-2], x.shape[-1])
        pos = generation_positions(x.shape[0], grid, text_tokens, id_axes, device=x.device)
        text = class_text(y, text_tokens) if text_tokens else None
        return model(x, t, y, pos, text=text)

    return fn


@torch.no_grad()
def generate(model, labels: Tensor, noise: Tensor, *, guidance: float, steps: int, sampler: str = "euler",
             text_tokens: int = 0, id_axes: int = 2, null_label: int = 10,
             on_step: Callable[[int], None] | None = None) -> Tensor:
    """Class-conditional samples in [0, 1] (B, C, H, W) from ``noise`` (its size sets the resolution)."""
    velocity = guided(velocity_fn(model, labels, text_tokens, id_axes, null_label), guidance)
    x = sample(velocity, noise, steps, sampler, on_step)
    return ((x.clamp(-1, 1) + 1) / 2).float()


def request_noise(seed: int, size: int, batch_idx: int, n: int, device) -> Tensor:
    """Noise for evaluation batch ``batch_idx`` at ``size``: the same on every run and every validation."""
    gen = torch.Generator().manual_seed(zlib.crc32(f"{seed}/{size}/{batch_idx}".encode()))
    return torch.randn(n, 1, size, size, generator=gen).to(device)


class ImageGenModule(TaskModule):
    def __init__(self, model, optim: OptimConfig, total_steps: int, cfg: ImageGenConfig,
                 datamodule: ImageGenDataModule, seed: int = 0) -> None:
        super().__init__(model, optim, total_steps)
        check_guidance(cfg.guidance)
        if cfg.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler '{cfg.sampler}'; choose one of {list(SAMPLERS)}")
        for s in [cfg.image_size] + list(cfg.eval_sizes):
            model.token_grid(s, s)  # a size the patch does not divide fails here, before training
        self.cfg, self.dm, self.seed = cfg, datamodule, seed
        self.null_label = model.cfg.num_classes
        self.scores: dict[int, GenerationScores] = {}  # plain dict: scoring tools stay out of checkpoints

    def setup(self, stage: str) -> None:
        if self.scores:
            return
        self.dm.setup(stage)
        train = (self.dm.train_images, self.dm.train_labels)
        self.classifier = [load_or_train(self.cfg.data_dir, train, self.cfg.classifier_steps, seed=0)]
        clf = self.classifier[0]
        n = self.cfg.real_samples  # the same test images as the FID reference
        self.classifier_acc = accuracy(clf, self.dm.test_images[:n], self.dm.test_labels[:n])
        real = self.dm.real_images()
        kid_subset = min(50, self.cfg.eval_samples)
        self.scores = {s: GenerationScores(clf, real, kid_subset) for s in self.cfg.eval_sizes}
        self.baseline_scores = self.score_baselines(clf, real, kid_subset)

    def score_baselines(self, clf, real: Tensor, kid_subset: int) -> dict[str, Tensor]:
        """{"acc@baseline=real", "fid@baseline=class_mean", ...}: the trivial generators of baselines.py on the same
        requests (labels, noise at the training size) as the model's evaluation; they need no model, so once."""
        c, dm = self.cfg, self.dm
        baselines = GenerationBaselines.from_splits((dm.train_images, dm.train_labels),
                                                    (dm.test_images, dm.test_labels), c.real_samples, c.eval_samples)
        scores: dict[str, GenerationScores] = {}
        for batch_idx, start in enumerate(range(0, c.eval_samples, c.eval_batch)):
            labels = torch.arange(start, min(start + c.eval_batch, c.eval_samples)) % 10
            noise = request_noise(self.seed, c.image_size, batch_idx, labels.shape[0], "cpu")
            for name, (images, image_labels) in baselines.batches(labels, noise, start).items():
                scores.setdefault(name, GenerationScores(clf, real, kid_subset)).update(images, image_labels)
        return {f"{metric}@baseline={name}": value
                for name, score in scores.items() for metric, value in score.compute().items()}

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        x0, labels = batch["image"], batch["label"]
        drop = torch.rand(labels.shape, device=labels.device) < self.cfg.class_dropout
        labels = torch.where(drop, torch.full_like(labels, self.null_label), labels)
        noise = torch.randn_like(x0)
        t = sample_t(x0.shape[0], self.cfg.t_sampling, device=x0.device)
        xt, target = interpolate(x0, noise, t)
        v = velocity_fn(self.model, labels, self.cfg.text_tokens, self.cfg.id_axes, self.null_label)(xt, t, True)
        loss = F.mse_loss(v.float(), target.float())
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def generate(self, labels: Tensor, noise: Tensor, **overrides) -> Tensor:
        c = self.cfg
        kw = dict(guidance=c.guidance, steps=c.sample_steps, sampler=c.sampler, text_tokens=c.text_tokens,
                  id_axes=c.id_axes, null_label=self.null_label)
        kw.update(overrides)
        return generate(self.model, labels, noise, **kw)

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        size = self.cfg.eval_sizes[dataloader_idx]
        labels = batch["label"]
        images = self.generate(labels, request_noise(self.seed, size, batch_idx, labels.shape[0], self.device))
        self.scores[size].update(images.cpu(), labels.cpu())
        if batch_idx == 0 and self._trainer is not None:
            out = Path(self.trainer.default_root_dir) / "samples" / f"res={size}_step={self.global_step}.png"
            out.parent.mkdir(parents=True, exist_ok=True)
            shown = images[:50]
            save_labelled_grid(shown, out, [CLASSES[int(y)] for y in labels[: len(shown)]],
                               title=f"{self.model.pe.name}: samples at {size} px (step {self.global_step}), "
                                     f"titled with the requested class")
            log_image_file(self.trainer, out, f"samples/res={size}")

    def on_validation_epoch_end(self) -> None:
        self.log("val/classifier_acc", self.classifier_acc)
        for name, value in self.baseline_scores.items():
            self.log(f"val/{name}", value)
        for size, scores in self.scores.items():
            for name, value in scores.compute().items():
                self.log(f"val/{name}@res={size}", value)
                if size == self.cfg.image_size:
                    self.log(f"val/{name}", value, prog_bar=name == "fid")
            scores.reset()
