"""The typed config of ``eval.py pretrained=<dir> ...`` (command-line keys are this dataclass's fields)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from omegaconf import MISSING, OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from rope_lab.data.fetch import DEFAULT_DATA_DIR
from rope_lab.longctx.corpus import CORPORA
from rope_lab.longctx.ruler_tasks import TASKS

SUITE = ("ppl_by_position", "sliding_window", "passkey", "ruler")


@dataclass
class PretrainedEvalConfig:
    pretrained: str = MISSING  # a local HF checkpoint dir: config.json, weights, tokenizer files
    eval_suite: list[str] = field(default_factory=lambda: list(SUITE))
    eval_lengths: list[int] = field(default_factory=lambda: [1024, 2048, 4096])  # in the model's tokens
    depths: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])  # passkey and RULER needles
    seed: int = 42
    device: str = "auto"  # auto: cuda if available
    dtype: str = "auto"  # auto (the checkpoint's) | float32 | bfloat16 | float16
    # positions set by rope_lab instead of the checkpoint's own RoPE (backbone=hf_causal_lm's attention path): a pe
    # name or dict (pe=p_rope, "pe={name:rerope,window:512}") and/or a scaling (scaling=yarn,
    # "scaling={name:yarn,factor:4}"; its L0 defaults to the checkpoint's). Both None: the unmodified HF model.
    pe: Any = None
    scaling: Any = None
    out_dir: str | None = None  # None: outputs/eval_pretrained/<checkpoint dir name>/<date>_<time>_<uid>
    data_dir: str = str(DEFAULT_DATA_DIR)
    corpus: str = "austen"  # long documents for perplexity and RULER's essay haystack
    corpus_path: str | None = None
    num_documents: int = 4  # documents scored by the perplexity evaluations (the first ones of the corpus)
    position_buckets: int = 8
    sliding_stride: int = 256  # window = each eval length
    sliding_tokens: int | None = None  # tokens per document under the sliding window; None: 2 x longest length
    passkey_trials: int = 5  # per (length, depth)
    ruler_tasks: list[str] = field(default_factory=lambda: list(TASKS))
    ruler_samples: int = 5  # per (task, length, depth)
    ruler_threshold: float = 0.856  # effective length: largest length scoring above it (RULER's Llama-2-7B at 4K)

    def validate(self) -> None:
        bad = [s for s in self.eval_suite if s not in SUITE]
        if bad or not self.eval_suite:
            raise ValueError(f"eval_suite={list(self.eval_suite)}: unknown or empty {bad}; choose from {list(SUITE)}")
        if not self.eval_lengths or any(n < 2 for n in self.eval_lengths):
            raise ValueError(f"eval_lengths={list(self.eval_lengths)} must be a non-empty list of lengths >= 2")
        if any(not 0.0 <= d <= 1.0 for d in self.depths) or not self.depths:
            raise ValueError(f"depths={list(self.depths)} must be a non-empty list of values in [0, 1]")
        if self.corpus not in CORPORA:
            raise ValueError(f"corpus={self.corpus!r} is unknown; choose one of {list(CORPORA)}")
        unknown = [t for t in self.ruler_tasks if t not in TASKS]
        if unknown:
            raise ValueError(f"ruler_tasks: unknown {unknown}; choose from {list(TASKS)}")
        for name in ("num_documents", "position_buckets", "sliding_stride", "passkey_trials", "ruler_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if "sliding_window" in self.eval_suite and self.sliding_stride > min(self.eval_lengths):
            raise ValueError(f"sliding_stride={self.sliding_stride} is larger than the window "
                             f"{min(self.eval_lengths)} (every eval length is a window); tokens would be skipped")


def parse_config(values: dict) -> PretrainedEvalConfig:
    """{key: value} from the command line -> a validated config; unknown keys and wrong types name the valid keys."""
    valid = [f.name for f in fields(PretrainedEvalConfig)]
    unknown = [k for k in values if k.lstrip("+") not in valid]
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} for eval.py pretrained=...; valid keys: {valid}")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(PretrainedEvalConfig),
                                 {k.lstrip("+"): v for k, v in values.items()})
        cfg = OmegaConf.to_object(merged)
    except (ConfigKeyError, ValidationError) as err:
        raise ValueError(f"bad value in eval.py pretrained=...: {' '.join(str(err).split())}") from err
    cfg.validate()
    return cfg
