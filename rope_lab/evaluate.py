"""Evaluate a trained checkpoint under (possibly changed) task settings, e.g. new lengths or resolutions."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

import lightning as L
import torch
from omegaconf import OmegaConf

from rope_lab.run import build



def parse_overrides(argv: list[str]) -> dict:
    """Hydra override grammar (``a.b=[1,2]``, ``x=null``, ``+a.new=1``) -> {dotted key (``+`` kept): value}."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(argv)
    return {("+" if o.is_add() else "") + o.key_or_group: o.value() for o in parsed}


def run_dir_of(ckpt_path: Path) -> Path:
    """<run>/checkpoints/x.ckpt -> <run> (the folder holding .hydra/config.yaml)."""
    for parent in ckpt_path.resolve().parents:
        if (parent / ".hydra" / "config.yaml").exists():
            return parent
    raise FileNotFoundError(f"no .hydra/config.yaml above {ckpt_path}; was it written by train.py?")


def evaluate(ckpt_path: str, overrides: dict) -> dict[str, float]:
    ckpt = Path(ckpt_path)
    if not ckpt.is_file():
        raise FileNotFoundError(f"ckpt_path={ckpt_path} is not a file")
    run_dir = run_dir_of(ckpt)
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    for key, value in overrides.items():
        add, name = key.startswith("+"), key.lstrip("+")
        exists = OmegaConf.select(cfg, name, default="__missing__") != "__missing__"
        if not add and not exists:
            raise ValueError(f"eval override '{name}' is not a key of the run's config ({run_dir}/.hydra/config.yaml); "
                             f"add a new key with '+{name}=...' (e.g. an option of another pe: +pe.split=0.3)")
        if add and exists:
            raise ValueError(f"eval override '+{name}': the run's config already has '{name}'; drop the '+'")
        OmegaConf.update(cfg, name, value, merge=False, force_add=add)
    changes = [f"{k}={v}" for k, v in overrides.items()]
    L.seed_everything(int(cfg.seed), workers=True)
    task, module, datamodule, _ = build(cfg, load_init=False)
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    module.load_state_dict(state)
    out_dir = run_dir / "eval" / f"{time.strftime('%Y-%m-%d_%H-%M-%S')}_{secrets.token_hex(3)}"
    logger = L.pytorch.loggers.CSVLogger(str(out_dir), name="", version="")
    trainer = L.Trainer(accelerator=cfg.trainer.get("accelerator", "auto"), devices=1, logger=logger,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.validate(module, datamodule=datamodule)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(
        {"metrics": metrics, "ckpt_path": str(ckpt), "overrides": changes, "task": task.name, "pe": cfg.pe.name},
        indent=2, sort_keys=True))
    curve = getattr(task, "curve", None)
    if curve:
        from rope_lab.callbacks import MetricCurvePlot

        MetricCurvePlot(str(out_dir), **curve).on_validation_end(trainer, module)
    print(json.dumps(metrics, indent=2, sort_keys=True))
    return metrics
