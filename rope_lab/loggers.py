"""Loggers: building them from the config, Lightning's CSV logger keeping a resumed run's history, and plots sent to
the TensorBoard / wandb loggers as images.

Lightning's ``ExperimentWriter`` deletes an existing ``metrics.csv`` when it opens a directory that is not empty,
so a run resumed with ``ckpt_path=last`` kept only the rows logged after the resume. Here the rows logged before
the checkpoint stay; rows logged after it (by the interrupted process, which the resumed one logs again) are
dropped when training restarts from the checkpoint.
"""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import numpy as np
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from rope_lab.extras import missing

#: the package each optional Lightning logger needs (Lightning raises ModuleNotFoundError without it)
LOGGER_PACKAGES = {"TensorBoardLogger": "tensorboard", "WandbLogger": "wandb"}


def build_loggers(logger_cfg) -> list:
    """The Lightning loggers of ``cfg.logger`` (one entry per name; None entries skipped). A logger whose package
    is missing is a user error naming the extra to install (``pip install 'rope_lab[loggers]'``)."""
    loggers = []
    for key, node in (logger_cfg or {}).items():
        if node is None:
            continue
        try:
            loggers.append(instantiate(node))
        except InstantiationException as err:
            cause = err.__cause__
            target = str(node.get("_target_", ""))
            package = LOGGER_PACKAGES.get(target.rsplit(".", 1)[-1])
            if package and isinstance(cause, ModuleNotFoundError):
                raise missing(package, f"logger.{key} ({target})") from err
            raise
    return loggers


class KeepingExperimentWriter(ExperimentWriter):
    """Appends to an existing metrics.csv instead of deleting it."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = sorted(csv.DictReader(file).fieldnames or [])

    def drop_rows_from(self, step: int) -> None:
        """Forget the rows logged at ``step`` or later (and any not yet written): they are logged again."""
        self.metrics = [row for row in self.metrics if row.get("step", 0) < step]
        if not self._fs.isfile(self.metrics_file_path):
            return
        with self._fs.open(self.metrics_file_path, "r", newline="") as file:
            rows = [row for row in csv.DictReader(file) if int(float(row.get("step") or 0)) < step]
        with self._fs.open(self.metrics_file_path, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=self.metrics_keys)
            writer.writeheader()
            writer.writerows(rows)


class KeepingCSVLogger(CSVLogger):
    """``CSVLogger`` whose metrics.csv survives a resume (see the module docstring)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> KeepingExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = KeepingExperimentWriter(log_dir=self.log_dir)
        return self._experiment


class TrimLogsOnResume(L.Callback):
    """When training restarts from a checkpoint, drop the CSV rows the interrupted process logged after it."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.ckpt_path is None:
            return
        # the step key Lightning logs rows under; the restored process logs from the next one on (the rows at the
        # checkpoint's own step, validation included, are not logged again)
        step = trainer.fit_loop.epoch_loop._batches_that_stepped + 1
        for lg in trainer.loggers:
            if isinstance(lg, KeepingCSVLogger) and trainer.is_global_zero:
                lg.experiment.drop_rows_from(step)


def log_image_file(trainer: L.Trainer | None, path: str | Path, tag: str) -> None:
    """Log a plot or sample grid just written to ``path`` (PNG) as an image to every TensorBoard and wandb logger of
    ``trainer``, at the current step (the file stays the record; this makes it visible in the dashboards)."""
    if trainer is None or not trainer.is_global_zero:
        return
    targets = [lg for lg in trainer.loggers if isinstance(lg, (TensorBoardLogger, WandbLogger))]
    if not targets:
        return
    from PIL import Image

    with Image.open(path) as img:
        pixels = np.asarray(img.convert("RGB"))
    for lg in targets:
        if isinstance(lg, TensorBoardLogger):
            lg.experiment.add_image(tag, pixels, global_step=trainer.global_step, dataformats="HWC")
        else:
            lg.log_image(key=tag, images=[str(path)], step=trainer.global_step)
