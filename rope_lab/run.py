"""Build everything from a composed config, train with Lightning, evaluate, return the headline metric."""

from __future__ import annotations

import logging
import math
import secrets
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from rope_lab.adapters import apply_adapter
from rope_lab.backbones.registry import BACKBONE
from rope_lab.callbacks import MetricCurvePlot, write_results
from rope_lab.optim import OptimConfig
from rope_lab.pe.registry import build_pe
from rope_lab.registry import typed_config
from rope_lab.tasks.base import TASK

log = logging.getLogger(__name__)


def register_resolvers() -> None:
    """``${uid:}``: a random id fixed for the process, so two runs started in the same second never share a dir."""
    if not OmegaConf.has_resolver("uid"):
        token = secrets.token_hex(3)
        OmegaConf.register_new_resolver("uid", lambda: token)


class _OptimHolder:
    name = "optim"
    Config = OptimConfig


def load_model_weights(model: torch.nn.Module, ckpt: str) -> None:
    """``model``'s weights from a rope_lab checkpoint (Lightning, ``model.``-prefixed keys) or a plain state dict;
    every key must match (a checkpoint of another backbone or size is an error, never a partial load)."""
    path = Path(ckpt)
    if not path.is_file():
        raise FileNotFoundError(f"init_ckpt={ckpt} is not a file (expected <run dir>/checkpoints/last.ckpt)")
    state = torch.load(path, map_location="cpu", weights_only=False)
    state = state.get("state_dict", state)
    prefixed = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    try:
        model.load_state_dict(prefixed or state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"init_ckpt={ckpt} does not fit this model (same backbone/pe/task sizes needed): {err}") from err


def build(cfg: DictConfig, load_init: bool = True):
    """(task, lightning module, datamodule, model) from a composed config; all validation happens here.
    ``init_ckpt`` weights are loaded before the adapter is applied (``load_init=False``: the caller restores a
    checkpoint of this very run instead, as evaluate does)."""
    task = TASK.build(cfg.task)
    spec = task.spec()
    pe = build_pe(cfg.pe)
    pe.check_compatible(spec.num_axes, spec.causal, multimodal=bool(spec.extra.get("multimodal", False)))
    backbone_cls, backbone_cfg = BACKBONE.config(cfg.backbone)
    allowed = getattr(task, "backbones", None)
    if allowed and backbone_cls.name not in allowed:
        raise ValueError(f"task={task.name} runs on backbone in {list(allowed)}; got backbone={backbone_cls.name}")
    model = backbone_cls(backbone_cfg, pe, spec)
    if load_init and cfg.get("init_ckpt"):
        load_model_weights(model, cfg.init_ckpt)
    model = apply_adapter(model, cfg.get("adapter"))
    optim = typed_config(_OptimHolder, cfg.optim, "optim")
    total_steps = int(cfg.trainer.max_steps)
    datamodule = task.datamodule(int(cfg.seed), total_steps)
    module = task.module(model, optim, total_steps, datamodule)
    return task, module, datamodule, model


def _check_run_dir(run_dir: Path, ckpt_path: str | None) -> None:
    if (run_dir / "results.json").exists() and ckpt_path is None:
        raise FileExistsError(
            f"{run_dir} already holds a finished run (results.json). Nothing is overwritten: pass ckpt_path=last "
            f"to continue it, or choose another hydra.run.dir."
        )


def run(cfg: DictConfig, run_dir: str | Path) -> float:
    """Train (and validate) one configuration; return the task's headline metric (NaN if it diverged)."""
    run_dir = Path(run_dir)
    _check_run_dir(run_dir, cfg.get("ckpt_path"))
    L.seed_everything(int(cfg.seed), workers=True)
    torch.set_float32_matmul_precision(cfg.get("matmul_precision", "highest"))
    task, module, datamodule, model = build(cfg)
    loggers = [instantiate(c) for c in (cfg.logger or {}).values() if c is not None]
    callbacks = [instantiate(c) for c in (cfg.callbacks or {}).values() if c is not None]
    curve = getattr(task, "curve", None)
    if curve:
        callbacks.append(MetricCurvePlot(str(run_dir), **curve))
    for cb in callbacks:
        if isinstance(cb, L.pytorch.callbacks.ModelCheckpoint) and cb.monitor is None and cfg.get("monitor_task", True):
            cb.monitor, cb.mode = task.monitor, task.mode
    trainer: L.Trainer = instantiate(cfg.trainer, logger=loggers, callbacks=callbacks, default_root_dir=str(run_dir))
    hparams = {"config": OmegaConf.to_container(cfg, resolve=True), "pe_repr": repr(model.pe),
               "n_params": sum(p.numel() for p in model.parameters()),
               "n_trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad)}
    for lg in trainer.loggers:
        lg.log_hyperparams(hparams)
    log.info("positional encoding: %r", model.pe)
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = {k: v.item() for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1}
    source = getattr(datamodule, "source", None)
    write_results(run_dir, metrics, {"task": task.name, "pe": model.pe.name, "data_source": source,
                                     "global_step": trainer.global_step, "n_params": hparams["n_params"],
                                     "n_trainable_params": hparams["n_trainable_params"]})
    for lg in trainer.loggers:
        lg.finalize("success")
    value = metrics.get(task.monitor, float("nan"))
    if not math.isfinite(value):
        log.error("run diverged: %s = %s", task.monitor, value)
    return value
