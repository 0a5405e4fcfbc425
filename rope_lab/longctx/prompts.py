"""Fitting a prompt to a length in the evaluated model's own tokens (RULER and passkey count lengths that way).

A prompt is built from ``n`` haystack units (sentences or lines) by a caller's function; :func:`fit_units` finds the
largest ``n`` whose prompt, tokenized as a whole (token boundaries depend on the neighbours), plus the generation
budget fits ``length`` tokens, by binary search as RULER does.
"""

from __future__ import annotations

import re
from typing import Callable

#: RULER's "noise" haystack line and the passkey filler of Mohtashami & Jaggi (2023)
NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."


def fit_units(build: Callable[[int], str], count_tokens: Callable[[str], int], length: int, budget: int,
              available: int) -> int:
    """Largest n in [0, available] with count_tokens(build(n)) + budget <= length; raises if even n = 0 is too long."""
    limit = length - budget
    if count_tokens(build(0)) > limit:
        raise ValueError(f"length {length} tokens is too short: the prompt without any haystack already takes "
                         f"{count_tokens(build(0))} tokens plus {budget} to generate; raise eval_lengths "
                         f"(eval.py pretrained=...) or task.ruler_lengths (a rope_lab run)")
    lo, hi = 0, available
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count_tokens(build(mid)) <= limit:
            lo = mid
        else:
            hi = mid - 1
    return lo


def split_sentences(text: str) -> list[str]:
    """Plain sentence split (end punctuation followed by whitespace); whitespace runs become one space."""
    flat = " ".join(text.split())
    return [s for s in re.split(r"(?<=[.!?])\s+(?=[A-Z\"'])", flat) if s]


def insert_at_depths(units: list[str], needles: list[str], depths: list[float]) -> tuple[list[str], list[int]]:
    """Insert each needle before unit ``int(len(units) * depth)`` (RULER's rule); returns (units, insertion indices
    into the new list), stable for equal depths."""
    order = sorted(range(len(needles)), key=lambda i: (depths[i], i))
    out, where, taken = list(units), [0] * len(needles), 0
    for i in order:
        at = int(len(units) * depths[i]) + taken
        out.insert(at, needles[i])
        where[i], taken = at, taken + 1
    return out, where


def haystack_depths(where: list[int], haystack_units: int) -> list[float]:
    """Per inserted needle: the fraction of the haystack's own units that precede it (other needles not counted)."""
    return [(w - sum(o < w for o in where)) / max(1, haystack_units) for w in where]


def postprocess(prediction: str) -> str:
    """RULER's prediction clean-up: strip, control characters to newlines, strip."""
    return re.sub(r"[\x00-\x1f]", "\n", prediction.strip()).strip()


def string_match_all(prediction: str, references: list[str]) -> float:
    """RULER's ``string_match_all``: the fraction of references contained (case-insensitive) in the prediction."""
    text = postprocess(prediction).lower()
    return sum(ref.lower() in text for ref in references) / len(references)
