"""``task=control_gen``'s LightningModule: rectified-flow training with label and control dropout, MuseControlLite's
multi-CFG sampling and the frame-accuracy metric next to its baselines (see task.py)."""

from __future__ import annotations

import zlib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from rope_lab.analysis.plots import save_labelled_grid
from rope_lab.data.fashion_mnist import CLASSES
from rope_lab.loggers import log_image_file
from rope_lab.optim import OptimConfig
from rope_lab.tasks.base import TaskModule
from rope_lab.tasks.control_gen.control import frame_accuracy, melody, one_hot
from rope_lab.tasks.control_gen.datamodule import SIZE, ControlGenConfig
from rope_lab.tasks.control_gen.positions import control_positions, strip_positions
from rope_lab.tasks.image_gen.flow import interpolate, sample, sample_t


class ControlGenModule(TaskModule):
    def __init__(self, model, optim: OptimConfig, total_steps: int, cfg: ControlGenConfig, seed: int) -> None:
        super().__init__(model, optim, total_steps)
        rows, self.n_strips = model.token_grid(SIZE, SIZE)
        if rows != 1:
            raise ValueError(f"control_gen reads the image as a sequence of full-height column strips: set "
                             f"backbone.patch_size=[{SIZE}, w]; got {list(model.cfg.patch_size)}")
        self.cfg, self.seed, self.null_label = cfg, seed, model.cfg.num_classes

    def velocity(self, x: Tensor, t: Tensor, labels: Tensor, control: Tensor) -> Tensor:
        b = x.shape[0]
        qpos, kpos = control_positions(b, self.n_strips, control.shape[1], device=x.device)
        return self.model(x, t, labels, strip_positions(b, self.n_strips, x.device), control=(control, qpos, kpos))

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        x0, labels = batch["image"], batch["label"]
        control = one_hot(melody((x0 + 1) / 2, self.cfg.bins, self.cfg.silence), self.cfg.bins)
        drop_y = torch.rand(labels.shape, device=x0.device) < self.cfg.class_dropout
        drop_c = torch.rand(labels.shape, device=x0.device) < self.cfg.control_dropout
        labels = torch.where(drop_y, torch.full_like(labels, self.null_label), labels)
        control = control * (~drop_c)[:, None, None]
        noise = torch.randn_like(x0)
        t = sample_t(x0.shape[0], self.cfg.t_sampling, device=x0.device)
        xt, target = interpolate(x0, noise, t)
        loss = F.mse_loss(self.velocity(xt, t, labels, control).float(), target.float())
        self.log("train/loss", loss, prog_bar=True)
        return loss

    @torch.no_grad()
    def generate(self, labels: Tensor, control: Tensor, noise: Tensor, g_text: float, g_con: float) -> Tensor:
        """MuseControlLite multi-CFG sampling; images in [0, 1]."""
        null = torch.full_like(labels, self.null_label)
        zero = torch.zeros_like(control)

        def v(x: Tensor, t: Tensor) -> Tensor:
            v_u = self.velocity(x, t, null, zero)
            v_t = self.velocity(x, t, labels, zero)
            v_tc = self.velocity(x, t, labels, control)
            return v_u + g_text * (v_t - v_u) + g_con * (v_tc - v_t)

        x = sample(v, noise, self.cfg.sample_steps, self.cfg.sampler)
        return ((x.clamp(-1, 1) + 1) / 2).float()

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        images, labels = batch["image"], batch["label"]
        target = melody(images, self.cfg.bins, self.cfg.silence)
        gen = torch.Generator().manual_seed(zlib.crc32(f"{self.seed}/control/{batch_idx}".encode()))
        noise = torch.randn(images.shape, generator=gen).to(images.device)
        c = self.cfg
        out = self.generate(labels, one_hot(target, c.bins), noise, c.guidance_text, c.guidance_control)
        free = self.generate(labels, one_hot(target, c.bins), noise, c.guidance_text, 0.0)
        self.log("val/frame_acc", frame_accuracy(out, target, c.bins, c.silence).mean(), prog_bar=True)
        self.log("val/frame_acc@control=off", frame_accuracy(free, target, c.bins, c.silence).mean())
        baselines = self.trainer.datamodule.baselines().accuracies(labels, target, noise, c.bins, c.silence)
        for name, acc in baselines.items():
            self.log(f"val/frame_acc@baseline={name}", acc.mean())
        if batch_idx == 0 and self._trainer is not None:
            path = Path(self.trainer.default_root_dir) / "samples" / f"control_step={self.global_step}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            k = min(10, len(images))
            names = [CLASSES[int(y)] for y in labels[:k]]
            save_labelled_grid(torch.cat([images[:k], out[:k], free[:k]]), path, names * 3,
                               row_labels=["request (real)", "control on", "control off"], ncol=k,
                               title=f"control_gen step {self.global_step}: the real image whose melody is the "
                                     f"control, and samples with / without it")
            log_image_file(self.trainer, path, "samples/control")
