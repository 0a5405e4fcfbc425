"""Passkey retrieval (Mohtashami & Jaggi 2023, "Landmark Attention"), with real text as the haystack.

A random key of ``digits`` digits is stated once at relative depth d of a haystack cut from held-out text; the
sequence ends with the question and the key. The metric is teacher-forced exact match: every key digit after
the question must be the model's argmax. With a tokenizer the pieces (haystack, needle, question, key) are
encoded separately and concatenated, so the key's own tokens are the answer.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

NEEDLE = " The pass key is {key}. Remember it. {key} is the pass key. "
QUESTION = " What is the pass key? The pass key is {key}"
QUESTION_PREFIX = QUESTION.split("{key}")[0]


def utf8_bytes(text: str) -> np.ndarray:
    return np.frombuffer(text.encode(), np.uint8)


class PasskeyDataset:
    """Builds passkey sequences of a given total length from a token stream (the haystack)."""

    def __init__(self, stream: np.ndarray, digits: int = 5, encode: Callable[[str], np.ndarray] = utf8_bytes) -> None:
        if digits <= 0:
            raise ValueError(f"passkey digits must be > 0, got {digits}")
        self.stream, self.digits, self.encode = stream, digits, encode

    def sample(self, rng: np.random.Generator, total: int, depth: float) -> dict:
        if not 0.0 <= depth <= 1.0:
            raise ValueError(f"passkey depth must be in [0, 1], got {depth}")
        key = "".join(str(int(d)) for d in rng.integers(0, 10, self.digits))
        needle = self.encode(NEEDLE.format(key=key))
        answer_ids = self.encode(key)
        question = np.concatenate([self.encode(QUESTION_PREFIX), answer_ids])
        filler_len = total - len(needle) - len(question)
        if filler_len < 0:
            raise ValueError(f"passkey length {total} is shorter than the needle and question ({total - filler_len})")
        start = int(rng.integers(0, len(self.stream) - filler_len))
        filler = self.stream[start : start + filler_len]
        at = int(round(depth * filler_len))
        seq = np.concatenate([filler[:at], needle, filler[at:], question]).astype(np.int64)
        answer = torch.zeros(total - 1, dtype=torch.bool)
        answer[-len(answer_ids) :] = True
        return {"tokens": torch.from_numpy(seq), "loss_mask": torch.ones(total - 1, dtype=torch.bool),
                "answer_mask": answer}

    def fixed(self, total: int, depth: float, count: int, seed: int) -> list[dict]:
        """``count`` samples, the same on every run (a list is a map-style dataset for DataLoader)."""
        rng = np.random.default_rng([seed, total, int(depth * 1000)])
        return [self.sample(rng, total, depth) for _ in range(count)]
