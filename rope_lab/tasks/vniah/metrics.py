"""Metric of V-NIAH / V-NIAH-D as a pure function, checked against hand-computed answers
(tests/tasks/test_metric_known_answers.py).

Teacher-forced exact match per (length, depth) cell, as VideoRoPE's ``eval_vision_niah.py``
(``(pred == answer_ids).all()``): a sample counts only if EVERY answer token is the model's argmax.
Logged as ``<prefix>/acc/len=<frames>/depth=<d>`` per cell and ``<prefix>/acc`` (mean over cells).

With ``task.answer_choice=true`` the answer is also decoded greedily (free-running, as a user would read it) and
classified: the needle's class (correct), the distractor's class (misled by the look-alike), another class, or not
a valid answer at all (the decoder broke) -- VideoRoPE's V-NIAH-D question is whether a scheme is *misled*, which
exact match alone cannot tell from a broken decoder.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor


def answer_exact_match(logits: Tensor, targets: Tensor, answer_mask: Tensor) -> Tensor:
    """(B,) bool: every target under ``answer_mask`` (B, N) is the argmax of its logits (B, N, V)."""
    correct = (logits.argmax(-1) == targets) | ~answer_mask
    return correct.all(dim=1)


def cell_name(prefix: str, frames: int, depth: float) -> str:
    """Metric name of one (length, depth) cell, e.g. ``vniah_d/acc/len=64/depth=0.5``."""
    return f"{prefix}/acc/len={frames}/depth={depth:g}"


def greedy_answer(logits_of: Callable[[Tensor], Tensor], tokens: Tensor, start: int, length: int, pad: int = 0
                  ) -> Tensor:
    """Decode ``length`` tokens greedily into ``tokens[:, start:start + length]`` (B, N) and return them.

    ``logits_of(tokens)`` -> (B, N - 1, V) next-token logits of ``tokens[:, :-1]`` (the teacher-forcing layout);
    the answer slots are blanked with ``pad`` first, and a causal model never sees them before they are decoded."""
    work = tokens.clone()
    work[:, start : start + length] = pad
    for i in range(length):
        work[:, start + i] = logits_of(work)[:, start + i - 1].argmax(-1)
    return work[:, start : start + length]


def classify_answers(decoded: Tensor, answers: Sequence[str]) -> list[int]:
    """Index in ``answers`` of each decoded byte row (cut after its first '.'), or -1 if it is none of them."""
    out = []
    for row in decoded.tolist():
        text = bytes(b for b in row if 0 < b < 256).decode("utf-8", errors="replace")
        text = text[: text.index(".") + 1] if "." in text else text
        out.append(answers.index(text) if text in answers else -1)
    return out


def answer_outcomes(chosen: list[int], needle: Sequence[int], distractor: Sequence[int]) -> dict[str, float]:
    """Fractions of samples whose decoded answer is the needle's class, the distractor's class (only samples that
    have a distractor can be misled), another valid class, or invalid; the four add up to 1."""
    n = len(chosen)
    correct = sum(c == t for c, t in zip(chosen, needle))
    misled = sum(c == d and d >= 0 and c != t for c, t, d in zip(chosen, needle, distractor))
    invalid = sum(c < 0 for c in chosen)
    return {"correct": correct / n, "distractor": misled / n, "invalid": invalid / n,
            "other": (n - correct - misled - invalid) / n}
