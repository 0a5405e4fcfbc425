"""LightningModule of ``task=trajectory``: WTA loss, minADE/minFDE/miss rate per horizon, a scene plot."""

from __future__ import annotations

from pathlib import Path

import torch
from torchmetrics import MeanMetric

from rope_lab.loggers import log_image_file
from rope_lab.optim import OptimConfig
from rope_lab.tasks.base import TaskModule
from rope_lab.tasks.trajectory.datamodule import TrajectoryConfig
from rope_lab.tasks.trajectory.metrics import constant_velocity, horizon_metrics, plot_scene, wta_loss
from rope_lab.tasks.trajectory.positions import agent_features, agent_positions, to_global, to_local


class TrajectoryModule(TaskModule):
    """Metric names: ``<split>/minADE`` etc. at the full horizon, ``<split>/minADE@h=<seconds>`` per horizon,
    ``<split>/cv_minADE`` for the constant-velocity floor (split = val or test)."""

    KINDS = ("minADE", "minFDE", "miss_rate", "cv_minADE", "cv_minFDE")

    def __init__(self, model, optim: OptimConfig, total_steps: int, cfg: TrajectoryConfig, stats: dict | None = None) -> None:
        super().__init__(model, optim, total_steps)
        self.cfg, self.stats = cfg, stats if stats is not None else {}
        self.horizons = {float(h): int(round(h / cfg.interval_s)) for h in cfg.horizons_s}
        names = [f"{s}/{k}@h={h:g}" for s in ("val", "test") for k in self.KINDS for h in self.horizons]
        self.meters = torch.nn.ModuleDict({self._key(n): MeanMetric() for n in names})
        self._plot_batch = None

    @staticmethod
    def _key(name: str) -> str:
        return name.replace("/", "|").replace(".", ",")

    def _forward(self, batch: dict) -> tuple[dict, torch.Tensor]:
        c = self.cfg
        current = batch["current"]
        feats = agent_features(batch["past"], batch["past_mask"], current, c.scale_m)
        out = self.model(feats, agent_positions(current, batch["agent_mask"]))
        gt_local = to_local(batch["future"], current) / c.scale_m
        return out, gt_local

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        out, gt = self._forward(batch)
        loss, reg, cls = wta_loss(out["traj"], out["logits"], gt, batch["target"])
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/reg_loss", reg)
        self.log("train/cls_loss", cls)
        return loss

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        split = ("val", "test")[dataloader_idx]
        out, gt = self._forward(batch)
        target, scale = batch["target"], self.cfg.scale_m
        pred = out["traj"][target] * scale  # metres; agent frames preserve distances
        truth = gt[target] * scale
        past_local = to_local(batch["past"][..., :2], batch["current"])[target]
        cv = constant_velocity(past_local, batch["past_mask"][target], self.cfg.future_steps)[:, None]
        for h, steps in self.horizons.items():
            values = horizon_metrics(pred, cv, truth, steps, self.cfg.miss_threshold_m)
            for kind, v in values.items():
                self.meters[self._key(f"{split}/{kind}@h={h:g}")].update(v)
        if split == "val" and batch_idx == 0:
            self._plot_batch = (batch, out)

    def on_validation_epoch_end(self) -> None:
        full = max(self.horizons)
        for name_key, meter in self.meters.items():
            name = name_key.replace("|", "/").replace(",", ".")
            value = meter.compute()
            self.log(name, value, sync_dist=True)
            if name.endswith(f"@h={full:g}"):
                self.log(name.rsplit("@", 1)[0], value, sync_dist=True, prog_bar=name.startswith("val/minADE"))
            meter.reset()
        for key, count in self.stats.items():
            self.log(f"data/{key}", float(count))
        self._plot()

    def _plot(self) -> None:
        if self._plot_batch is None or self.trainer.sanity_checking or not self.trainer.is_global_zero:
            return
        batch, out = self._plot_batch
        self._plot_batch = None
        i = int(batch["target"].sum(1).argmax())  # the scene with the most prediction targets
        current = batch["current"][i : i + 1]
        modes = to_global(out["traj"][i : i + 1].float() * self.cfg.scale_m, current)[0]
        n = int(batch["agent_mask"][i].sum())
        plot_scene(batch["past"][i, :n, :, :2].cpu(), batch["past_mask"][i, :n].cpu(), batch["future"][i, :n].cpu(),
                   batch["target"][i, :n].cpu(), modes[:n].detach().cpu(), out["logits"][i, :n].softmax(-1).detach().cpu(),
                   Path(self.trainer.default_root_dir) / "scene_modes.png", title=f"{self.model.pe.name} step {self.global_step}")
        log_image_file(self.trainer, Path(self.trainer.default_root_dir) / "scene_modes.png", "plots/scene_modes")
