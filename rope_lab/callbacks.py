"""Lightning callbacks of rope_lab: metric-vs-condition plots, the divergence stop and the finished-run record."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import lightning as L
import torch

from rope_lab.cli import RunFailed

from rope_lab.analysis.plots import plot_curve
from rope_lab.loggers import log_image_file


class MetricCurvePlot(L.Callback):
    """After each validation, plot every logged metric ``<prefix><x>`` against x (e.g. val/ppl@L vs L) into a PNG,
    also logged as the image ``plots/<filename stem>`` to the run's TensorBoard / wandb loggers."""

    def __init__(self, out_dir: str, prefix: str, xlabel: str, ylabel: str, filename: str, logy: bool = False,
                 logx: bool = True):
        self.out_dir, self.prefix, self.xlabel, self.ylabel = Path(out_dir), prefix, xlabel, ylabel
        self.filename, self.logy, self.logx = filename, logy, logx

    def points(self, metrics: dict) -> dict[float, float]:
        pat = re.compile(re.escape(self.prefix) + r"(?:[a-z]+=)?([0-9.eE+-]+)$")
        out = {}
        for key, value in metrics.items():
            m = pat.match(key)
            if m:
                out[float(m.group(1))] = float(value)
        return dict(sorted(out.items()))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        pts = self.points(trainer.callback_metrics)
        if pts:
            title = f"{getattr(pl_module.model.pe, 'name', '')} - step {trainer.global_step}"
            path = plot_curve({title: pts}, self.out_dir / self.filename, self.xlabel, self.ylabel, logy=self.logy,
                              logx=self.logx)
            log_image_file(trainer, path, f"plots/{Path(self.filename).stem}")


class StopOnNonFiniteLoss(L.Callback):
    """Stop at the first training loss that is NaN or infinite, before its backward pass, naming the step (as in
    metrics.csv) and the learning rate: a diverged run must not train on to ``max_steps`` and write a finished
    result. (One host sync per step, in a callback, never inside the model's forward.)"""

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        if bool(torch.isfinite(loss.detach()).all()):
            return
        lrs = [group["lr"] for opt in trainer.optimizers for group in opt.param_groups]
        value = "NaN" if bool(torch.isnan(loss.detach()).any()) else "infinite"
        raise RunFailed(f"train/loss is {value} at step {trainer.global_step} (optim.lr={lrs[0] if lrs else '?'}:"
                        f" the run diverged; try a lower optim.lr, more optim.warmup_steps or optim.grad_clip)")


def write_results(run_dir: Path, metrics: dict, extra: dict) -> Path:
    """The finished-run record: final metrics + what ran. Its presence marks the run dir as finished."""
    path = Path(run_dir) / "results.json"
    clean = {k: float(v) for k, v in metrics.items()}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"metrics": clean, **extra}, indent=2, sort_keys=True))
    os.replace(tmp, path)  # whole or absent: a half-written record would mark a broken run as finished
    return path
