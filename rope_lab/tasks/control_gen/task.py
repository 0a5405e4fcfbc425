"""``task=control_gen``: Fashion-MNIST images generated under a time-aligned "melody" control given at a
different rate (28 frames vs. L_q column strips), with MuseControlLite's decoupled cross-attention in every
DiT block (``backbone=dit``, ``backbone.patch_size=[28, w]``; ``backbone.control.layout`` picks the rotary
layout of the branch: ``musecontrollite_compat`` | ``half`` | ``none``).

Training: rectified flow; the label and the control are dropped (null label / zero control, as MuseControlLite's
condition dropout) independently. Sampling: MuseControlLite's multi-CFG over [uncond, text, text+control]:
``v = v_u + g_text (v_t - v_u) + g_con (v_tc - v_t)``. Metric: frame-level control accuracy (``val/frame_acc``),
next to the same sampler with the control guidance off (``val/frame_acc@control=off``) and three request-blind
baselines (``val/frame_acc@baseline=class_mean|constant|noise``, control.ControlBaselines).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from rope_lab.analysis.plots import save_labelled_grid
from rope_lab.data.fashion_mnist import CLASSES, load_fashion_mnist
from rope_lab.loggers import log_image_file
from rope_lab.optim import OptimConfig
from rope_lab.tasks.base import Task, TaskModule, TaskSpec, register_task
from rope_lab.tasks.control_gen.control import ControlBaselines, frame_accuracy, melody, one_hot
from rope_lab.tasks.control_gen.positions import control_positions, strip_positions
from rope_lab.tasks.image_gen.datamodule import TrainImages
from rope_lab.tasks.image_gen.flow import SAMPLERS, T_SAMPLING, check_guidance, interpolate, sample, sample_t
from rope_lab.tasks.data import ResumableLoader, TaskDataModule, train_samples

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


@register_task("control_gen")
class ControlGenTask(Task):
    Config = ControlGenConfig
    backbones = ("dit",)
    monitor, mode = "val/frame_acc", "max"

    def __init__(self, cfg: ControlGenConfig) -> None:
        check_guidance(cfg.guidance_text)
        check_guidance(cfg.guidance_control)
        if cfg.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler '{cfg.sampler}'; choose one of {list(SAMPLERS)}")
        if cfg.t_sampling not in T_SAMPLING:
            raise ValueError(f"unknown t_sampling '{cfg.t_sampling}'; choose one of {list(T_SAMPLING)}")
        if not 1 <= cfg.bins <= SIZE:
            raise ValueError(f"bins must be in 1..{SIZE}; got {cfg.bins}")
        self.cfg = cfg

    def spec(self) -> TaskSpec:
        return TaskSpec(num_axes=1, causal=False, num_classes=10, max_tokens=SIZE,
                        axes=("token",),  # column strips in order
                        extra={"in_channels": 1, "control_dim": self.cfg.bins + 1})

    def datamodule(self, seed: int, total_steps: int) -> ControlGenDataModule:
        return ControlGenDataModule(self.cfg, seed, total_steps)

    def module(self, model, optim, total_steps: int, datamodule: ControlGenDataModule) -> ControlGenModule:
        return ControlGenModule(model, optim, total_steps, self.cfg, datamodule.seed)
