"""``task=vniah`` (V-NIAH, LongVA) and ``task=vniah_d`` (V-NIAH-D with periodic look-alike distractors,
VideoRoPE): train on short videos, evaluate a grid of longer lengths x needle depths."""

from __future__ import annotations

import dataclasses

from rope_lab.tasks.base import Task, TaskSpec, register_task
from rope_lab.tasks.vniah.datamodule import (VOCAB_SIZE, VNIAHBuilder, VNIAHConfig, VNIAHDataModule, check_config,
                                             make_chat_encoder)
from rope_lab.tasks.vniah.module import VNIAHModule


@dataclasses.dataclass
class VNIAHDConfig(VNIAHConfig):
    distractors: bool = True


def check_chat_model(model, encoder, processor: str) -> None:
    """The processor's inputs need a backbone that takes them, with the processor's vocabulary and video token."""
    expected = getattr(model, "processor_token_ids", None)
    if expected is None:
        raise ValueError(f"task.processor={processor} feeds a checkpoint's processor outputs (its token ids, "
                         f"pixel_values_videos); backbone={getattr(model, 'name', type(model).__name__)} does not take "
                         f"them; use backbone=hf_qwen2vl backbone.pretrained=<the same checkpoint>")
    vocab, video_token_id = expected()
    if encoder.vocab_size > vocab or encoder.video_token_id != video_token_id:
        raise ValueError(f"task.processor={processor} (vocabulary {encoder.vocab_size}, video token id "
                         f"{encoder.video_token_id}) does not belong to the model (vocabulary {vocab}, video token id "
                         f"{video_token_id}); give the model's own checkpoint folder")


@register_task("vniah")
class VNIAHTask(Task):
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
        if c.processor:  # the checkpoint's tokenizer and vision tokens: its vocabulary, its sequence lengths
            vocab, length = None, make_chat_encoder(c).sequence_length(longest_grids * c.temporal_patch_size,
                                                                       c.frame_size)
        else:
            vocab, length = VOCAB_SIZE, VNIAHBuilder(c, None, None).segments(longest_grids).length
        return TaskSpec(num_axes=4, causal=True, vocab_size=vocab, max_tokens=length,
                        axes=("index", "t", "row", "col"),
                        extra={"multimodal": True,
                               "frame_size": c.frame_size, "channels": 1,
                               "patch_size": c.patch_size, "temporal_patch_size": c.temporal_patch_size,
                               "merge_size": c.merge_size})

    def datamodule(self, seed: int, total_steps: int) -> VNIAHDataModule:
        return VNIAHDataModule(self.cfg, seed, total_steps)

    def module(self, model, optim, total_steps: int, datamodule: VNIAHDataModule) -> VNIAHModule:
        if self.cfg.processor:
            check_chat_model(model, make_chat_encoder(self.cfg), self.cfg.processor)
        return VNIAHModule(model, optim, total_steps, self.prefix, datamodule.cells(), self.cfg.fps,
                           self.cfg.train_frames, self.cfg.answer_choice)


@register_task("vniah_d")
class VNIAHDTask(VNIAHTask):
    Config = VNIAHDConfig
    monitor, mode = "vniah_d/acc", "max"
