"""``task=vniah`` (V-NIAH, LongVA) and ``task=vniah_d`` (V-NIAH-D with periodic look-alike distractors,
VideoRoPE): train on short videos, evaluate a grid of longer lengths x needle depths."""

from __future__ import annotations

import dataclasses

from rope_lab.tasks.base import TaskSpec, register_task
from rope_lab.tasks.vniah.datamodule import VOCAB_SIZE, VNIAHBuilder, VNIAHConfig, VNIAHDataModule, check_config
from rope_lab.tasks.vniah.module import VNIAHModule


@dataclasses.dataclass
class VNIAHDConfig(VNIAHConfig):
    distractors: bool = True


@register_task("vniah")
class VNIAHTask:
    Config = VNIAHConfig
    backbones = ("video_llm", "hf_qwen2vl")
    monitor, mode = "vniah/acc", "max"

    def __init__(self, cfg: VNIAHConfig) -> None:
        check_config(cfg)
        self.cfg = cfg
        self.prefix = self.monitor.split("/")[0]

    def spec(self) -> TaskSpec:
        c = self.cfg
        longest_grids = max(c.eval_frames + [c.train_frames]) // c.temporal_patch_size + 2
        seg = VNIAHBuilder(c, None, None).segments(longest_grids)
        return TaskSpec(num_axes=4, causal=True, vocab_size=VOCAB_SIZE, max_tokens=seg.length,
                        axes=("index", "t", "row", "col"),
                        extra={"multimodal": True,
                               "frame_size": c.frame_size, "channels": 1,
                               "patch_size": c.patch_size, "temporal_patch_size": c.temporal_patch_size,
                               "merge_size": c.merge_size})

    def datamodule(self, seed: int, total_steps: int) -> VNIAHDataModule:
        return VNIAHDataModule(self.cfg, seed, total_steps)

    def module(self, model, optim, total_steps: int, datamodule: VNIAHDataModule) -> VNIAHModule:
        return VNIAHModule(model, optim, total_steps, self.prefix, datamodule.cells(), self.cfg.fps,
                           self.cfg.train_frames, self.cfg.answer_choice)


@register_task("vniah_d")
class VNIAHDTask(VNIAHTask):
    Config = VNIAHDConfig
    monitor, mode = "vniah_d/acc", "max"
