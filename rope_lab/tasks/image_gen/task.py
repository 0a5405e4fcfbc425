"""``task=image_gen``: class-conditional rectified flow on Fashion-MNIST, evaluated at several resolutions."""

from __future__ import annotations

from rope_lab.tasks.base import Task, TaskSpec, register_task
from rope_lab.tasks.image_gen.datamodule import ImageGenConfig, ImageGenDataModule
from rope_lab.tasks.image_gen.flow import T_SAMPLING, check_guidance
from rope_lab.tasks.image_gen.module import ImageGenModule
from rope_lab.tasks.image_gen.positions import ID_AXES


@register_task("image_gen")
class ImageGenTask(Task):
    Config = ImageGenConfig
    backbones = ("dit",)
    monitor, mode = "val/fid", "min"
    curve = {"prefix": "val/acc@res=", "xlabel": "generation resolution (px)", "ylabel": "classifier accuracy",
             "filename": "acc_vs_resolution.png", "logx": False}

    def __init__(self, cfg: ImageGenConfig) -> None:
        check_guidance(cfg.guidance)
        if cfg.id_axes not in ID_AXES:
            raise ValueError(f"id_axes must be one of {ID_AXES}; got {cfg.id_axes}")
        if cfg.t_sampling not in T_SAMPLING:
            raise ValueError(f"unknown t_sampling '{cfg.t_sampling}'; choose one of {list(T_SAMPLING)}")
        if cfg.image_size not in cfg.eval_sizes:
            raise ValueError(f"eval_sizes {cfg.eval_sizes} must include the training size {cfg.image_size}")
        if not 0.0 <= cfg.class_dropout < 1.0:
            raise ValueError(f"class_dropout must be in [0, 1); got {cfg.class_dropout}")
        if cfg.eval_samples < 2:
            raise ValueError(f"eval_samples must be >= 2 (FID needs two samples); got {cfg.eval_samples}")
        self.cfg = cfg

    def spec(self) -> TaskSpec:
        # the largest grid assumes patches of at least 1 pixel; learned absolute tables get room for any patch
        longest = max(self.cfg.eval_sizes) ** 2 + self.cfg.text_tokens
        return TaskSpec(num_axes=self.cfg.id_axes, causal=False, num_classes=10, max_tokens=longest,
                        extra={"in_channels": 1, "text_tokens": self.cfg.text_tokens,
                               "image_size": self.cfg.image_size},
                        axes=("row", "col") if self.cfg.id_axes == 2 else ("t", "row", "col"))

    def datamodule(self, seed: int, total_steps: int) -> ImageGenDataModule:
        return ImageGenDataModule(self.cfg, seed, total_steps)

    def module(self, model, optim, total_steps: int, datamodule: ImageGenDataModule) -> ImageGenModule:
        return ImageGenModule(model, optim, total_steps, self.cfg, datamodule, datamodule.seed)
