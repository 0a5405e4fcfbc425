"""What every task shares: the task registry, the Task interface, the TaskSpec handed to backbones, and a
LightningModule base that owns the optimizer/schedule and logs the PE's repr."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch

from rope_lab.optim import OptimConfig, build_optimizer, lr_lambda
from rope_lab.registry import Registry

TASK = Registry("task", "rope_lab.tasks")
register_task = TASK.register


@dataclass
class TaskSpec:
    """Facts a task fixes for the backbone and the PE (checked against the PE's capabilities at build)."""

    def __post_init__(self) -> None:
        if self.axes is not None and len(self.axes) != self.num_axes:
            raise ValueError(f"TaskSpec: axes {self.axes} name {len(self.axes)} axes, num_axes is {self.num_axes}")

    num_axes: int = 1
    causal: bool = True
    vocab_size: int | None = None
    num_classes: int | None = None
    max_tokens: int = 4096
    #: what each of the ``num_axes`` coordinate axes means, in order (names from rope_lab.pe.types.AXIS_NAMES),
    #: checked against the axes a variant reads (``PositionalEncoding.axes``) at build time; None: generic axes
    axes: tuple[str, ...] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Task(ABC):
    """A registered task (``@register_task(name)``): its typed config, the facts it fixes for backbone and PE, its
    data and its LightningModule. Class attributes are the declared hooks; run.py and evaluate.py read nothing else."""

    Config: type
    name: str  # set by the registry
    #: backbones that fit the task's inputs and outputs (None: any)
    backbones: tuple[str, ...] | None = None
    #: metric to monitor for checkpoints, and the headline metric returned to sweeps
    monitor: str
    mode: str  # "min" | "max"
    #: the metric-vs-condition plot written after validation (rope_lab.callbacks.MetricCurvePlot's arguments)
    curve: dict[str, Any] | None = None

    @abstractmethod
    def spec(self) -> TaskSpec: ...

    @abstractmethod
    def datamodule(self, seed: int, total_steps: int) -> L.LightningDataModule: ...

    @abstractmethod
    def module(self, model: torch.nn.Module, optim: OptimConfig, total_steps: int,
               datamodule: L.LightningDataModule) -> L.LightningModule: ...

    def generation_metrics(self, model: torch.nn.Module, datamodule: L.LightningDataModule,
                           out_dir: Path) -> dict[str, float]:
        """Evaluations that generate (greedy decoding, e.g. RULER-style tasks), run by eval.py after the validation
        loaders; may write per-sample records into ``out_dir``. None by default."""
        return {}


class TaskModule(L.LightningModule):
    """Base LightningModule: AdamW/LAMB (timm) + warmup/cosine, grad clipping from the optim config."""

    def __init__(self, model: torch.nn.Module, optim: OptimConfig, total_steps: int) -> None:
        super().__init__()
        self.model, self.optim_cfg, self.total_steps = model, optim, total_steps

    def configure_optimizers(self):
        opt = build_optimizer(self.model, self.optim_cfg)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(self.optim_cfg, self.total_steps))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        """One clipping, never two: ``optim.grad_clip`` (global norm) when set, else Lightning's
        ``trainer.gradient_clip_val``/``gradient_clip_algorithm``; rope_lab.run refuses both at once."""
        if self.optim_cfg.grad_clip and self.optim_cfg.grad_clip > 0:
            from torch.distributed.fsdp import FullyShardedDataParallel

            root = self.trainer.strategy.model
            if isinstance(root, FullyShardedDataParallel):  # a norm over sharded grads needs the root's own method
                root.clip_grad_norm_(self.optim_cfg.grad_clip)
                return
            self.clip_gradients(optimizer, gradient_clip_val=self.optim_cfg.grad_clip, gradient_clip_algorithm="norm")
        elif gradient_clip_val:
            self.clip_gradients(optimizer, gradient_clip_val=gradient_clip_val,
                                gradient_clip_algorithm=gradient_clip_algorithm)
