"""Metric of V-NIAH / V-NIAH-D as a pure function, checked against hand-computed answers
(tests/tasks/test_metric_known_answers.py).

Teacher-forced exact match per (length, depth) cell, as VideoRoPE's ``eval_vision_niah.py``
(``(pred == answer_ids).all()``): a sample counts only if EVERY answer token is the model's argmax.
Logged as ``<prefix>/acc/len=<frames>/depth=<d>`` per cell and ``<prefix>/acc`` (mean over cells).
"""

from __future__ import annotations

from torch import Tensor


def answer_exact_match(logits: Tensor, targets: Tensor, answer_mask: Tensor) -> Tensor:
    """(B,) bool: every target under ``answer_mask`` (B, N) is the argmax of its logits (B, N, V)."""
    correct = (logits.argmax(-1) == targets) | ~answer_mask
    return correct.all(dim=1)


def cell_name(prefix: str, frames: int, depth: float) -> str:
    """Metric name of one (length, depth) cell, e.g. ``vniah_d/acc/len=64/depth=0.5``."""
    return f"{prefix}/acc/len={frames}/depth={depth:g}"
