"""Passkey retrieval (Mohtashami & Jaggi 2023, "Landmark Attention"), with real text as the haystack.

A random key of ``digits`` digits is stated once at relative depth d of a haystack cut from held-out text; the
sequence ends with the question and the key. The metric is teacher-forced exact match: every key digit after
the question must be the model's argmax.
"""

from __future__ import annotations

import numpy as np
import torch

NEEDLE = " The pass key is {key}. Remember it. {key} is the pass key. "
QUESTION = " What is the pass key? The pass key is {key}"


class PasskeyDataset:
    """Builds passkey sequences of a given total length from a token stream (the haystack)."""

    def __init__(self, stream: np.ndarray, digits: int = 5) -> None:
        if digits <= 0:
            raise ValueError(f"passkey digits must be > 0, got {digits}")
        self.stream, self.digits = stream, digits

    def sample(self, rng: np.random.Generator, total: int, depth: float) -> dict:
        if not 0.0 <= depth <= 1.0:
            raise ValueError(f"passkey depth must be in [0, 1], got {depth}")
        key = "".join(str(int(d)) for d in rng.integers(0, 10, self.digits))
        needle = np.frombuffer(NEEDLE.format(key=key).encode(), np.uint8)
        question = np.frombuffer(QUESTION.format(key=key).encode(), np.uint8)
        filler_len = total - len(needle) - len(question)
        if filler_len < 0:
            raise ValueError(f"passkey length {total} is shorter than the needle and question ({total - filler_len})")
        start = int(rng.integers(0, len(self.stream) - filler_len))
        filler = self.stream[start : start + filler_len]
        at = int(round(depth * filler_len))
        seq = np.concatenate([filler[:at], needle, filler[at:], question]).astype(np.int64)
        answer = torch.zeros(total - 1, dtype=torch.bool)
        answer[-self.digits :] = True
        return {"tokens": torch.from_numpy(seq), "loss_mask": torch.ones(total - 1, dtype=torch.bool),
                "answer_mask": answer}

    def fixed(self, total: int, depth: float, count: int, seed: int) -> list[dict]:
        """``count`` samples, the same on every run (a list is a map-style dataset for DataLoader)."""
        rng = np.random.default_rng([seed, total, int(depth * 1000)])
        return [self.sample(rng, total, depth) for _ in range(count)]
