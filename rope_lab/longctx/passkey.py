"""Passkey retrieval with the model's tokenizer (Mohtashami & Jaggi 2023, arXiv 2305.16300; the reference is
``epfml/landmark-attention``'s ``llama/run_test.py``), on a length x depth grid.

The prompt has the original five parts: the task description, filler, the information line with the key, more
filler, and the question ending in "The pass key is". Unlike the original (random depth, a filler cut
mid-sentence, length in characters), the length is in the model's tokens including the generation budget, and the
key line goes between filler sentences at the requested depth, the usual length x depth extension; the depth
actually reached (key line start / prompt tokens) is recorded per trial. Score: the first integer in the greedy
continuation equals the key (as the reference scores it).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from rope_lab.longctx.causal_lm import CausalLM
from rope_lab.longctx.prompts import NOISE, fit_units, insert_at_depths

TASK = ("There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. I will quiz "
        "you about the important information there.")
INFO = "The pass key is {key}. Remember it. {key} is the pass key."
QUESTION = "What is the pass key? The pass key is"
FILLER = NOISE.split(". ")


@dataclass
class PasskeyPrompt:
    text: str
    key: int
    depth: float  # requested
    key_depth: float  # reached: tokens before the key line / prompt tokens


def _sentence(i: int) -> str:
    s = FILLER[i % len(FILLER)]
    return s if s.endswith(".") else s + "."


def passkey_prompt(lm: CausalLM, length: int, depth: float, key: int, budget: int) -> PasskeyPrompt:
    if not 0.0 <= depth <= 1.0:
        raise ValueError(f"passkey depth must be in [0, 1], got {depth}")

    def build(n: int) -> tuple[str, int]:
        units, (at,) = insert_at_depths([_sentence(i) for i in range(n)], [INFO.format(key=key)], [depth])
        head = TASK + "\n" + " ".join(units[:at])
        return head + " " + " ".join(units[at:]) + "\n" + QUESTION, len(head)

    # a sentence is at least one token, so at most `length` of them fit
    n = fit_units(lambda k: build(k)[0], lambda t: len(lm.encode(t)), length, budget, available=length)
    text, key_at = build(n)
    key_depth = len(lm.encode(text[:key_at])) / len(lm.encode(text))
    return PasskeyPrompt(text, key, depth, key_depth)


def first_integer_matches(generated: str, key: int) -> bool:
    found = re.search(r"\d+", generated)
    return found is not None and int(found.group()) == key


def run_passkey(lm: CausalLM, lengths: list[int], depths: list[float], trials: int, seed: int,
                max_new_tokens: int = 10) -> tuple[dict[str, float], list[dict]]:
    """{``passkey/len=L/depth=d``: accuracy, ``passkey/len=L``: mean over depths} and one record per trial."""
    metrics, records = {}, []
    for length in lengths:
        per_length = []
        for depth in depths:
            rng = random.Random(f"{seed}/{length}/{depth}")  # the same keys on every run and for every model
            hits = []
            for _ in range(trials):
                prompt = passkey_prompt(lm, length, depth, rng.randint(1, 50000), max_new_tokens)
                generated = lm.generate_text(prompt.text, max_new_tokens)
                hits.append(first_integer_matches(generated, prompt.key))
                records.append({"task": "passkey", "length": length, "depth": depth, "key": prompt.key,
                                "key_depth": prompt.key_depth, "prediction": generated, "correct": hits[-1]})
            metrics[f"passkey/len={length}/depth={depth}"] = sum(hits) / len(hits)
            per_length.append(metrics[f"passkey/len={length}/depth={depth}"])
        metrics[f"passkey/len={length}"] = sum(per_length) / len(per_length)
    return metrics, records
