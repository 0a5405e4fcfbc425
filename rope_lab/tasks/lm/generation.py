"""RULER-style evaluation of a ``task=lm_longctx`` model by greedy decoding (``eval.py ckpt_path=... 
task.ruler_tasks=[...]``): the same tasks, prompts and scoring as ``eval.py pretrained=<dir>`` (rope_lab.longctx),
run on rope_lab's own decoder with the task's tokenizer, so every training-free method applied to a trained run
(``pe/scaling=...``, ``pe=rerope``, ...) is scored on retrieval as well as perplexity."""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from rope_lab.longctx.causal_lm import CausalLM, DecoderLM
from rope_lab.longctx.prompts import split_sentences
from rope_lab.longctx.ruler import check_tasks, run_ruler
from rope_lab.tasks.lm.tokens import ByteCodec, HFTokenizerCodec


class CodecTokenizer:
    """The LM task's codec behind the ``encode``/``decode`` interface of rope_lab.longctx (no special tokens,
    exactly the ids the model was trained on)."""

    def __init__(self, codec: ByteCodec | HFTokenizerCodec) -> None:
        self.codec = codec
        hf = getattr(codec, "tokenizer", None)
        self.eos_token_id = None if hf is None else hf.eos_token_id

    def encode(self, text: str) -> list[int]:
        return self.codec.encode(text).tolist()

    def decode(self, ids: list[int]) -> str:
        if isinstance(self.codec, ByteCodec):
            return bytes(int(i) for i in ids).decode("utf-8", errors="replace")
        return self.codec.tokenizer.decode(ids)


def check_ruler_config(tasks: list[str], lengths: list[int], samples: int) -> None:
    check_tasks(list(tasks))
    if any(n < 2 for n in lengths):
        raise ValueError(f"task.ruler_lengths={list(lengths)} must be lengths >= 2 (tokens)")
    if samples < 1:
        raise ValueError(f"task.ruler_samples={samples} must be >= 1")


def ruler_metrics(model: nn.Module, codec: ByteCodec | HFTokenizerCodec, cfg, val_texts: list[str], seed: int,
                  out_dir: Path) -> dict[str, float]:
    """``val/ruler/...`` metrics of ``model`` (a rope_lab decoder) on ``cfg.ruler_tasks``; one JSON line per sample
    in ``out_dir/ruler_samples.jsonl``."""
    lm = CausalLM(DecoderLM(model, cfg.position_offset), CodecTokenizer(codec), name="rope_lab")
    essay = [s for text in val_texts for s in split_sentences(text)]
    lengths = list(cfg.ruler_lengths) or list(cfg.eval_lengths)
    metrics, records = run_ruler(lm, list(cfg.ruler_tasks), lengths, list(cfg.passkey_depths), cfg.ruler_samples,
                                 seed, essay, cfg.ruler_threshold)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "ruler_samples.jsonl", "w") as f:
        for row in records:
            f.write(json.dumps(row) + "\n")
    return {f"val/{k}": float(v) for k, v in metrics.items()}
