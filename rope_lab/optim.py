"""Optimizer + schedule config shared by every task (timm optimizers; warmup + cosine/constant schedule)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from timm.optim import create_optimizer_v2, list_optimizers
from torch import nn

SCHEDULES = ("cosine", "constant", "linear")
#: timm's prefix for a Lookahead wrapper around any optimizer (``lookahead_adamw``)
LOOKAHEAD = "lookahead_"


def optimizer_names() -> list[str]:
    """Every optimizer name timm's ``create_optimizer_v2`` accepts (without the ``lookahead_`` prefix)."""
    return list_optimizers()


def check_optimizer_name(name: str) -> None:
    """Refuse an optimizer timm does not know, naming it and the valid choices (one line)."""
    base = name.lower()
    base = base[len(LOOKAHEAD):] if base.startswith(LOOKAHEAD) else base
    valid = optimizer_names()
    if base not in valid:
        raise ValueError(f"unknown optimizer optim.name='{name}'; choose one of {valid} "
                         f"(optionally prefixed '{LOOKAHEAD}')")


@dataclass
class OptimConfig:
    name: str = "adamw"  # any timm optimizer name: adamw, lamb, sgd, adafactor, ...
    lr: float = 1e-3
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = 50
    schedule: str = "cosine"
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0

    def __post_init__(self) -> None:  # checked when the config is built (rope_lab.run.build), before training
        check_optimizer_name(self.name)
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule optim.schedule='{self.schedule}'; choose one of {list(SCHEDULES)}")


def no_weight_decay_names(model: nn.Module) -> set[str]:
    """Parameters excluded from weight decay: 1-D (norms, biases), embeddings tables, and every PE parameter
    (learned frequencies, APE tables) — RoPE-ViT excludes its frequencies the same way (`no_weight_decay`)."""
    names = set()
    for name, p in model.named_parameters():
        if p.ndim <= 1 or ".pe." in f".{name}" or name.startswith("pe.") or "embed" in name:
            names.add(name)
    return names


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    skip = no_weight_decay_names(model)
    decay = [p for n, p in model.named_parameters() if p.requires_grad and n not in skip]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and n in skip]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    kwargs = {"betas": tuple(cfg.betas)} if cfg.name.lower() in ("adamw", "adam", "lamb", "nadamw") else {}
    return create_optimizer_v2(groups, opt=cfg.name, lr=cfg.lr, weight_decay=cfg.weight_decay, **kwargs)


def lr_lambda(cfg: OptimConfig, total_steps: int):
    """Warmup (linear from 0) then cosine/linear decay to ``min_lr_ratio`` or constant."""

    def fn(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / max(1, cfg.warmup_steps)
        if cfg.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps))
        shape = 0.5 * (1 + math.cos(math.pi * progress)) if cfg.schedule == "cosine" else 1 - progress
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * shape

    return fn
