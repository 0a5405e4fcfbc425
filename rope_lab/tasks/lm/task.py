"""``task=lm_longctx``: a causal LM (UTF-8 bytes, or ``task.tokenizer``'s tokens) trained at one length, evaluated
at several (val/ppl@L) + passkey."""

from __future__ import annotations

from pathlib import Path

from rope_lab.tasks.base import Task, TaskSpec, register_task
from rope_lab.tasks.lm.datamodule import LMDataConfig, LMDataModule
from rope_lab.tasks.lm.generation import check_ruler_config, ruler_metrics
from rope_lab.tasks.lm.module import LMModule
from rope_lab.tasks.lm.tokens import build_codec


@register_task("lm_longctx")
class LMLongContextTask(Task):
    Config = LMDataConfig
    backbones = ("llama", "hf_causal_lm")  # token ids in, next-token logits out
    #: metric to monitor for checkpoints, and the headline metric returned to sweeps
    monitor, mode = "val/ppl", "min"
    curve = {"prefix": "val/ppl@", "xlabel": "evaluation length (tokens)", "ylabel": "perplexity",
             "filename": "ppl_vs_length.png", "logy": True}

    def __init__(self, cfg: LMDataConfig) -> None:
        for n in cfg.eval_lengths + cfg.passkey_lengths + [cfg.train_length]:
            if n <= 0:
                raise ValueError(f"lengths must be positive; got {n}")
        if not cfg.passkey_answer_weight > 0:
            raise ValueError(f"task.passkey_answer_weight must be > 0; got {cfg.passkey_answer_weight}")
        if cfg.passkey_answer_weight != 1.0 and cfg.packing:
            raise ValueError("task.passkey_answer_weight needs task.packing=false (packed samples carry no answer "
                             f"positions); got passkey_answer_weight={cfg.passkey_answer_weight} with packing=true")
        if cfg.ruler_tasks:
            check_ruler_config(cfg.ruler_tasks, cfg.ruler_lengths, cfg.ruler_samples)
        self.cfg = cfg
        self.codec = build_codec(cfg.tokenizer)

    def spec(self) -> TaskSpec:
        longest = max(self.cfg.eval_lengths + self.cfg.passkey_lengths + [self.cfg.train_length])
        return TaskSpec(num_axes=1, causal=True, vocab_size=self.codec.vocab_size,
                        max_tokens=longest + self.cfg.position_offset, axes=("token",),
                        extra={"tokenizer": self.codec.source})

    def datamodule(self, seed: int, total_steps: int) -> LMDataModule:
        return LMDataModule(self.cfg, seed, total_steps, self.codec)

    def module(self, model, optim, total_steps: int, datamodule: LMDataModule) -> LMModule:
        return LMModule(model, optim, total_steps, datamodule.val_names(), self.cfg.position_offset,
                        self.cfg.train_length, self.cfg.passkey_answer_weight)

    def generation_metrics(self, model, datamodule: LMDataModule, out_dir: Path) -> dict[str, float]:
        if not self.cfg.ruler_tasks:
            return {}
        datamodule.setup()
        return ruler_metrics(model, self.codec, self.cfg, datamodule.val_texts, datamodule.seed, out_dir)
