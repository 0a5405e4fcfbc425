"""``task=image_cls``: ViT image classification trained at one resolution and validated at several
(``val/acc@res=R``), the multi-resolution protocol of RoPE-ViT (Heo et al., ECCV 2024, Fig. 3)."""

from __future__ import annotations

from rope_lab.tasks.base import Task, TaskSpec, register_task
from rope_lab.tasks.image_cls.datamodule import ImageClsConfig, ImageClsDataModule, check_config
from rope_lab.tasks.image_cls.module import ImageClsModule


@register_task("image_cls")
class ImageClassificationTask(Task):
    Config = ImageClsConfig
    backbones = ("vit",)
    monitor, mode = "val/acc", "max"
    curve = {"prefix": "val/acc@", "xlabel": "test resolution (px)", "ylabel": "top-1 accuracy",
             "filename": "acc_vs_resolution.png", "logy": False,
             "logx": False}

    def __init__(self, cfg: ImageClsConfig) -> None:
        check_config(cfg)
        if cfg.train_resolution not in cfg.eval_resolutions:
            cfg.eval_resolutions = sorted([*cfg.eval_resolutions, cfg.train_resolution])
        self.cfg = cfg

    def num_classes(self) -> int:
        if self.cfg.dataset == "fashion_mnist":
            return 10
        from rope_lab.tasks.image_cls.sources import infer_num_classes

        return infer_num_classes(self.cfg)

    def spec(self) -> TaskSpec:
        channels = self.cfg.channels or (1 if self.cfg.dataset == "fashion_mnist" else 3)
        return TaskSpec(num_axes=2, causal=False, num_classes=self.num_classes(),
                        max_tokens=1 + max(self.cfg.eval_resolutions) ** 2,
                        axes=("row", "col"), extra={"image_size": self.cfg.train_resolution, "channels": channels})

    def datamodule(self, seed: int, total_steps: int) -> ImageClsDataModule:
        return ImageClsDataModule(self.cfg, seed, total_steps)

    def module(self, model, optim, total_steps: int, datamodule: ImageClsDataModule) -> ImageClsModule:
        for res in self.cfg.eval_resolutions:  # every resolution must tile into patches: fail before training
            if res % model.patch_size:
                raise ValueError(f"task.eval_resolutions has {res}, not divisible by the patch size "
                                 f"{model.patch_size}; use multiples of {model.patch_size}")
        if self.cfg.train_resolution % model.patch_size:
            raise ValueError(f"task.train_resolution={self.cfg.train_resolution} is not divisible by the patch "
                             f"size {model.patch_size}")
        return ImageClsModule(model, optim, total_steps, self.spec().num_classes, self.cfg.eval_resolutions,
                              self.cfg.train_resolution, self.cfg.aug, datamodule.seed)
