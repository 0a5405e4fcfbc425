"""LightningModule of V-NIAH / V-NIAH-D: answer-only loss, teacher-forced exact match per (length, depth)
cell (VideoRoPE ``eval_vision_niah.py``: ``(pred == answer_ids).all()``), and a depth x length heat-map."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric

from rope_lab.analysis.heatmaps import plot_heatmap
from rope_lab.loggers import log_image_file
from rope_lab.optim import OptimConfig
from rope_lab.tasks.base import TaskModule
from rope_lab.tasks.vniah.datamodule import ANSWER_LEN, ANSWERS, PAD
from rope_lab.tasks.vniah.metrics import (answer_exact_match, answer_outcomes, cell_name, classify_answers,
                                          greedy_answer)
from rope_lab.tasks.vniah.positions import vniah_positions


class VNIAHModule(TaskModule):
    def __init__(self, model, optim: OptimConfig, total_steps: int, prefix: str, cells: list[tuple[int, float]],
                 fps: float, train_frames: int | None = None, answer_choice: bool = False) -> None:
        super().__init__(model, optim, total_steps)
        self.prefix, self.cells, self.fps, self.train_frames = prefix, cells, fps, train_frames
        self.acc = torch.nn.ModuleList(MeanMetric() for _ in cells)
        self.outcomes = torch.nn.ModuleDict({k: MeanMetric() for k in ("correct", "distractor", "other", "invalid")}
                                            if answer_choice else {})

    def _forward(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = batch["tokens"]
        positions = vniah_positions(batch["coords"][:, :-1], batch["modality"][:, :-1], self.fps, self.training)
        if "pixel_values_videos" in batch:  # a checkpoint's processor made this batch (task.processor)
            vision = {"pixel_values_videos": batch["pixel_values_videos"], "video_grid_thw": batch["video_grid_thw"]}
        else:
            vision = {"video": batch["video"]}
        logits = self.model(tokens[:, :-1], positions, **vision)
        return logits, tokens[:, 1:]

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        logits, targets = self._forward(batch)
        mask = batch["answer_mask"]
        loss = F.cross_entropy(logits[mask].float(), targets[mask])
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        logits, targets = self._forward(batch)
        correct = answer_exact_match(logits, targets, batch["answer_mask"])
        self.acc[dataloader_idx].update(correct.float())
        if self.outcomes:
            self._answer_outcomes(batch)

    def _answer_outcomes(self, batch: dict) -> None:
        start = int(batch["answer_mask"][0].nonzero()[0]) + 1  # token index of the first answer byte
        decoded = greedy_answer(lambda tokens: self._forward({**batch, "tokens": tokens})[0], batch["tokens"],
                                start, ANSWER_LEN, PAD)
        chosen = classify_answers(decoded, ANSWERS)
        shares = answer_outcomes(chosen, batch["label"].tolist(), batch["distractor"].tolist())
        for name, share in shares.items():
            self.outcomes[name].update(torch.tensor(share), weight=len(chosen))

    def on_validation_epoch_end(self) -> None:
        values = {}
        for metric, (n, d) in zip(self.acc, self.cells):
            value = metric.compute()
            metric.reset()
            values[(n, d)] = float(value)
            self.log(cell_name(self.prefix, n, d), value, sync_dist=True)
        mean = sum(values.values()) / len(values)
        self.log(f"{self.prefix}/acc", mean, prog_bar=True, sync_dist=True)
        for name, metric in self.outcomes.items():
            self.log(f"{self.prefix}/answer/{name}", metric.compute(), sync_dist=True)
            metric.reset()
        trainer = self.trainer
        if not trainer.sanity_checking and trainer.is_global_zero:
            title = f"{self.prefix} {self.model.pe.name} (step {trainer.global_step}): mean {mean:.3f}"
            path = Path(trainer.default_root_dir) / f"{self.prefix}_heatmap.png"
            plot_heatmap(values, path, title, self.train_frames)
            log_image_file(trainer, path, f"plots/{self.prefix}_heatmap")
