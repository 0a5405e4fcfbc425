"""Build everything from a composed config, train with Lightning, evaluate, return the headline metric."""

from __future__ import annotations

import logging
import math
import os
import secrets
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from rope_lab.adapters import apply_adapter
from rope_lab.backbones.registry import BACKBONE
from rope_lab import run_dir as run_dir_lib
from rope_lab.callbacks import MetricCurvePlot, StopOnNonFiniteLoss, write_results
from rope_lab.cli import RunFailed, UserError
from rope_lab.loggers import TrimLogsOnResume, build_loggers
from rope_lab.optim import OptimConfig
from rope_lab.pe.registry import build_pe
from rope_lab.registry import typed_config
from rope_lab.tasks.base import TASK

log = logging.getLogger(__name__)


def register_resolvers() -> None:
    """``${uid:}``: a random id fixed for the process, so two runs started in the same second never share a dir.
    ``${task_direction:NAME}``: ``minimize`` or ``maximize``, the direction of task NAME's headline metric (the value
    train.py returns to a sweeper such as Optuna)."""
    if not OmegaConf.has_resolver("uid"):
        token = secrets.token_hex(3)
        OmegaConf.register_new_resolver("uid", lambda: token)
    if not OmegaConf.has_resolver("task_direction"):
        OmegaConf.register_new_resolver("task_direction", task_direction)


def task_direction(task_name: str) -> str:
    """``maximize`` when task ``task_name`` monitors a metric to maximise (accuracy), else ``minimize``."""
    return {"max": "maximize", "min": "minimize"}[TASK.get(str(task_name)).mode]


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
    pe.check_compatible(spec.num_axes, spec.causal, multimodal=bool(spec.extra.get("multimodal", False)),
                        axes=spec.axes)
    backbone_cls, backbone_cfg = BACKBONE.config(cfg.backbone)
    allowed = task.backbones
    if allowed and backbone_cls.name not in allowed:
        raise ValueError(f"task={task.name} runs on backbone in {list(allowed)}; got backbone={backbone_cls.name}")
    model = backbone_cls(backbone_cfg, pe, spec)
    if load_init and cfg.get("init_ckpt"):
        load_model_weights(model, cfg.init_ckpt)
    model = apply_adapter(model, cfg.get("adapter"))
    optim = typed_config(_OptimHolder, cfg.optim, "optim")
    total_steps = int(cfg.trainer.max_steps)
    # datasets are sized in micro-batches: max_steps optimizer steps x accumulate_grad_batches batches each
    datamodule = task.datamodule(int(cfg.seed), total_steps * int(cfg.trainer.get("accumulate_grad_batches") or 1))
    module = task.module(model, optim, total_steps, datamodule)
    return task, module, datamodule, model


def _is_launcher_child() -> bool:
    """A process started by a multi-process strategy (rank > 0): the run dir's bookkeeping is rank 0's."""
    return any(int(os.environ.get(k, "0") or 0) > 0 for k in ("LOCAL_RANK", "NODE_RANK"))


def _check_steps(cfg: DictConfig) -> None:
    steps = cfg.trainer.get("max_steps")
    if steps is None or int(steps) < 1:
        raise UserError(f"trainer.max_steps={steps}: a run needs at least one optimizer step (datasets, the "
                        f"schedule and the results are sized by it); choose an integer >= 1")


def _check_grad_clip(cfg: DictConfig) -> None:
    ours, theirs = cfg.get("optim", {}).get("grad_clip"), cfg.trainer.get("gradient_clip_val")
    if ours and float(ours) > 0 and theirs and float(theirs) > 0:
        raise UserError(f"optim.grad_clip={ours} and trainer.gradient_clip_val={theirs} both clip gradients; set one "
                        f"(optim.grad_clip=null to use Lightning's trainer.gradient_clip_val[/_algorithm], or "
                        f"trainer.gradient_clip_val=null to keep rope_lab's global-norm optim.grad_clip)")


def _check_finished_fit(trainer: L.Trainer) -> None:
    """A run that took no step or saved no checkpoint has no result to record."""
    if trainer.global_step == 0:
        raise RunFailed(f"no optimizer step was taken (trainer.max_steps={trainer.max_steps}, "
                        f"{trainer.num_training_batches} training batches); no results.json written")
    cb = trainer.checkpoint_callback
    if cb is not None and cb.save_last and not trainer.fast_dev_run and trainer.is_global_zero:
        last = Path(cb.dirpath) / f"{cb.CHECKPOINT_NAME_LAST}{cb.FILE_EXTENSION}"
        if not last.is_file():
            raise RunFailed(f"training ended but {last} was not written; no results.json written")


def run(cfg: DictConfig, run_dir: str | Path) -> float:
    """Train (and validate) one configuration in ``run_dir``; return the task's headline metric.

    The run dir is locked while training; its config is recorded once (``run_config.yaml``) and a resume must
    match it; ``results.json`` is written only after a fit that took steps and saved its last checkpoint."""
    run_dir = Path(run_dir)
    rank0 = not _is_launcher_child()  # a DDP child re-runs train.py in rank 0's dir; rank 0 locks and tidies it
    held = run_dir_lib.lock(run_dir) if rank0 else None
    try:
        return _run_locked(cfg, run_dir, rank0)
    finally:
        if held is not None:
            held.release()


def _run_locked(cfg: DictConfig, run_dir: Path, rank0: bool) -> float:
    run_dir_lib.check_not_finished(run_dir, cfg.get("ckpt_path"))
    if rank0:
        for path in run_dir_lib.remove_partial_saves(run_dir):
            log.warning("removed %s, left by a checkpoint save that was killed midway", path)
    ckpt_path = run_dir_lib.resolve_ckpt(run_dir, cfg.get("ckpt_path"))
    _check_steps(cfg)
    _check_grad_clip(cfg)
    L.seed_everything(int(cfg.seed), workers=True)
    torch.set_float32_matmul_precision(cfg.get("matmul_precision", "highest"))
    task, module, datamodule, model = build(cfg)
    if rank0:
        run_dir_lib.record_config(run_dir, cfg)
    loggers = build_loggers(cfg.logger)
    callbacks = [instantiate(c) for c in (cfg.callbacks or {}).values() if c is not None]
    callbacks += [StopOnNonFiniteLoss(), TrimLogsOnResume()]
    curve = task.curve
    if curve:
        callbacks.append(MetricCurvePlot(str(run_dir), **curve))
    for cb in callbacks:
        if isinstance(cb, L.pytorch.callbacks.ModelCheckpoint) and cb.monitor is None and cfg.get("monitor_task", True):
            cb.monitor, cb.mode = task.monitor, task.mode
    trainer: L.Trainer = instantiate(cfg.trainer, logger=loggers, callbacks=callbacks, default_root_dir=str(run_dir),
                                     plugins=[run_dir_lib.AtomicCheckpointIO()])
    hparams = {"config": OmegaConf.to_container(cfg, resolve=True), "pe_repr": repr(model.pe),
               "n_params": sum(p.numel() for p in model.parameters()),
               "n_trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad)}
    for lg in trainer.loggers:
        lg.log_hyperparams(hparams)
    log.info("positional encoding: %r", model.pe)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    _check_finished_fit(trainer)
    metrics = {k: v.item() for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1}
    source = getattr(datamodule, "source", None)
    if not trainer.is_global_zero:  # the other ranks trained the same run; rank 0 records it once
        return metrics.get(task.monitor, float("nan"))
    write_results(run_dir, metrics, {"task": task.name, "pe": model.pe.name, "data_source": source,
                                     "monitor": task.monitor,
                                     "pe_repr": hparams["pe_repr"], "global_step": trainer.global_step,
                                     "n_params": hparams["n_params"],
                                     "n_trainable_params": hparams["n_trainable_params"]})
    for lg in trainer.loggers:
        lg.finalize("success")
    value = metrics.get(task.monitor, float("nan"))
    if not math.isfinite(value):
        log.error("run diverged: %s = %s", task.monitor, value)
    return value
