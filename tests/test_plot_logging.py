"""Plots written during training are also logged as images to TensorBoard (read back from the event file with
TensorBoard's own EventAccumulator) and wandb; progress lines stay off when stderr is not a terminal."""

from __future__ import annotations

import io
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from rope_lab.callbacks import MetricCurvePlot
from rope_lab.loggers import log_image_file


def tensorboard_images(log_dir: Path) -> dict[str, list]:
    from tensorboard.backend.event_processing.event_accumulator import IMAGES, EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={IMAGES: 0})
    acc.Reload()
    return {tag: acc.Images(tag) for tag in acc.Tags()[IMAGES]}


def fake_trainer(loggers: list, metrics: dict | None = None, step: int = 7) -> SimpleNamespace:
    return SimpleNamespace(loggers=loggers, is_global_zero=True, global_step=step, sanity_checking=False,
                           callback_metrics=metrics or {})


def test_metric_curve_is_logged_to_tensorboard_as_the_png_it_wrote(tmp_path):
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    tb = TensorBoardLogger(str(tmp_path), name="tensorboard", version="")
    trainer = fake_trainer([CSVLogger(str(tmp_path)), tb], {"val/ppl@32": 5.0, "val/ppl@64": 9.0, "val/ppl": 5.0})
    module = SimpleNamespace(model=SimpleNamespace(pe=SimpleNamespace(name="rope")))
    plot = MetricCurvePlot(str(tmp_path), prefix="val/ppl@", xlabel="length", ylabel="ppl", filename="ppl_vs_length.png")
    plot.on_validation_end(trainer, module)
    tb.experiment.flush()
    images = tensorboard_images(Path(tb.log_dir))
    assert list(images) == ["plots/ppl_vs_length"]
    (event,) = images["plots/ppl_vs_length"]
    png = Image.open(tmp_path / "ppl_vs_length.png")
    assert event.step == 7 and (event.width, event.height) == png.size
    logged = np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB"))
    assert np.array_equal(logged, np.asarray(png.convert("RGB")))  # PNG is lossless: the very pixels of the file


def test_wandb_logger_gets_the_file_as_an_image(tmp_path):
    from lightning.pytorch.loggers import WandbLogger

    class Recorder(WandbLogger):  # records the call instead of starting a wandb run
        def __init__(self):
            self.calls = []

        def log_image(self, key, images, step=None, **kwargs):
            self.calls.append((key, images, step))

    path = tmp_path / "heatmap.png"
    Image.new("RGB", (8, 6), (255, 0, 0)).save(path)
    wandb = Recorder()
    log_image_file(fake_trainer([wandb], step=3), path, "plots/heatmap")
    assert wandb.calls == [("plots/heatmap", [str(path)], 3)]


def test_no_image_logger_no_work(tmp_path):
    """CSV only (the default) or no trainer (a module used outside fit): nothing is read or logged."""
    log_image_file(fake_trainer([]), tmp_path / "absent.png", "x")
    log_image_file(None, tmp_path / "absent.png", "x")


def test_progress_line_is_silent_off_a_terminal(monkeypatch):
    from rope_lab.progress import progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    captured = io.StringIO()
    monkeypatch.setattr(sys, "stderr", captured)
    assert list(progress(range(3), desc="study")) == [0, 1, 2]
    assert captured.getvalue() == ""
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert list(progress(range(3), desc="study")) == [0, 1, 2]
    assert "study" in terminal.getvalue() and "3/3" in terminal.getvalue()
