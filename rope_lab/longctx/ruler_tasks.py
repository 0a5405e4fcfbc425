"""RULER's synthetic retrieval and tracing tasks (Hsieh et al. 2024, arXiv 2404.06654; reference generators:
NVIDIA/RULER ``scripts/data/synthetic/niah.py`` and ``variable_tracking.py``), generated locally.

Kept from RULER (reference/evaluation.md section 1): the needle sentence "One of the special magic numbers for
{key} is: {value}.", 7-digit values, "adjective-noun" keys, the three haystacks (``noise`` lines, ``essay``
sentences, ``needle`` lines that are all distractor needles), distractor keys, several values per key, several
queried keys, the answer prefix appended to the prompt, the length counted in the model's tokens including the
generation budget (128 tokens for NIAH, 30 for VT), and variable tracking's 5-letter names, one chain of 4 hops
and its one-shot example.
Changed (say so when comparing with published numbers): the essay haystack is sentences of the local long corpus
(default Jane Austen) instead of Paul Graham's essays; keys come from a word list written here (RULER uses
``wonderwords``); the instruction wording is ours; and ``depth`` places the first answer needle (VT: the chain's
first line) at a requested depth for length x depth heat-maps (the other needles and lines at seeded random depths,
as RULER places all of them).
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass, field
from typing import Callable

from rope_lab.longctx.prompts import NOISE, fit_units, haystack_depths, insert_at_depths

ADJECTIVES = ("amber ancient brave bright calm clever crimson curious daring distant eager elegant fierce gentle "
              "golden hidden humble icy jolly kind lively lucky mellow misty noble quiet rapid silent silver sturdy "
              "swift tender vivid wise").split()
NOUNS = ("anchor badger beacon candle canyon castle comet compass falcon feather forest garden glacier harbor "
         "lantern meadow mirror orchard otter parrot pebble quarry river saddle harp thistle tiger tower valley "
         "violin walrus willow").split()
NEEDLE = "One of the special magic numbers for {key} is: {value}."


@dataclass
class NIAHSpec:
    haystack: str  # noise | essay | needle
    keys: int = 1  # needles' distinct keys (the first `queries` are asked for, the others are distractors)
    values: int = 1  # needles (values) per key
    queries: int = 1
    gen_tokens: int = 128


NIAH_TASKS = {
    "niah_single_1": NIAHSpec("noise"),
    "niah_multikey_1": NIAHSpec("essay", keys=4),
    "niah_multikey_2": NIAHSpec("needle"),
    "niah_multivalue": NIAHSpec("essay", values=4),
    "niah_multiquery": NIAHSpec("essay", keys=4, queries=4),
}
VT_GEN_TOKENS = 30
TASKS = (*NIAH_TASKS, "vt")


@dataclass
class RulerSample:
    task: str
    length: int
    depth: float  # requested depth of the first answer needle
    prompt: str  # ends with the answer prefix
    references: list[str]
    gen_tokens: int
    needle_depths: list[float] = field(default_factory=list)  # haystack fraction before each needle / chain line
    answer_depth: float = 0.0  # tokens before the first answer needle / prompt tokens


def _key(rng: random.Random) -> str:
    return f"{rng.choice(ADJECTIVES)}-{rng.choice(NOUNS)}"


def _value(rng: random.Random) -> str:
    return str(rng.randint(1_000_000, 9_999_999))


def _joined(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + f", and {items[-1]}"


def _haystack(kind: str, n: int, rng: random.Random, essay: list[str]) -> list[str]:
    if kind == "noise":
        return [NOISE] * n
    if kind == "essay":
        if len(essay) < n:
            raise ValueError(f"the essay haystack has {len(essay)} sentences, fewer than the {n} needed")
        start = rng.randrange(len(essay) - n + 1)
        return essay[start : start + n]
    if kind == "needle":
        return [NEEDLE.format(key=_key(rng), value=_value(rng)) for _ in range(n)]
    raise ValueError(f"unknown haystack {kind!r}; choose one of ['noise', 'essay', 'needle']")


def _distinct_keys(rng: random.Random, count: int) -> list[str]:
    keys: list[str] = []
    while len(keys) < count:
        key = _key(rng)
        keys += [key] if key not in keys else []
    return keys


def niah_sample(task: str, length: int, depth: float, seed: str, count_tokens: Callable[[str], int],
                essay: list[str]) -> RulerSample:
    spec = NIAH_TASKS[task]
    rng = random.Random(seed)
    keys = _distinct_keys(rng, max(spec.keys, spec.queries))
    values = {k: [_value(rng) for _ in range(spec.values)] for k in keys}
    needles = [NEEDLE.format(key=k, value=v) for k in keys for v in values[k]]
    depths = [depth] + [rng.random() for _ in needles[1:]]
    asked = keys[: spec.queries]
    plural = spec.values * spec.queries > 1
    noun, verb = ("numbers", "are") if plural else ("number", "is")
    question = (f"What {verb} all the special magic {noun} for {_joined(asked)} mentioned in the provided text?"
                if plural else f"What is the special magic number for {asked[0]} mentioned in the provided text?")
    prefix = f" The special magic {noun} for {_joined(asked)} mentioned in the provided text {verb}"
    sep = " " if spec.haystack == "essay" else "\n"
    hay_seed = rng.random()

    def build(n: int) -> tuple[str, list[int]]:
        units, where = insert_at_depths(_haystack(spec.haystack, n, random.Random(hay_seed), essay), needles, depths)
        text = ("Some special magic numbers are hidden within the following text. Make sure to memorize them. I "
                f"will quiz you about the numbers afterwards.\n{sep.join(units)}\n{question}{prefix}")
        return text, haystack_depths(where, n)

    available = len(essay) if spec.haystack == "essay" else length
    n = fit_units(lambda k: build(k)[0], count_tokens, length, spec.gen_tokens, min(available, length))
    prompt, needle_depths = build(n)
    answer_at = prompt.index(needles[0])
    return RulerSample(task, length, depth, prompt, [v for k in asked for v in values[k]], spec.gen_tokens,
                       needle_depths, count_tokens(prompt[:answer_at]) / count_tokens(prompt))


def _name(rng: random.Random) -> str:
    return "".join(rng.choice(string.ascii_uppercase) for _ in range(5))


def _vt_text(lines: list[str], value: str) -> str:
    return ("Memorize and track the chain of variable assignments hidden in the following text.\n\n"
            + "\n".join(lines) + f"\nQuestion: Find all variables that are assigned the value {value} in the text "
            f"above. Answer: According to the chain of variable assignments in the text above, 5 variables are "
            f"assigned the value {value}, they are:")


def _vt_chain(rng: random.Random, hops: int = 4) -> tuple[list[str], list[str], str]:
    names: list[str] = []
    while len(names) < hops + 1:
        name = _name(rng)
        names += [name] if name not in names else []
    value = str(rng.randint(10_000, 99_999))
    lines = [f"VAR {names[0]} = {value}"] + [f"VAR {b} = VAR {a}" for a, b in zip(names, names[1:])]
    return names, lines, value


def vt_sample(length: int, depth: float, seed: str, count_tokens: Callable[[str], int]) -> RulerSample:
    rng = random.Random(seed)
    ex_names, ex_lines, ex_value = _vt_chain(random.Random(f"{seed}/example"))
    example = _vt_text(insert_at_depths([NOISE], ex_lines, [0.0] * 5)[0], ex_value)
    example += " " + " ".join(ex_names) + "\n\n"
    names, lines, value = _vt_chain(rng)
    depths = [depth] + sorted(depth + (1.0 - depth) * rng.random() for _ in lines[1:])  # in order, as RULER

    def build(n: int) -> tuple[str, list[int]]:
        units, where = insert_at_depths([NOISE] * n, lines, depths)
        return example + _vt_text(units, value), haystack_depths(where, n)

    n = fit_units(lambda k: build(k)[0], count_tokens, length, VT_GEN_TOKENS, length)
    prompt, needle_depths = build(n)
    answer_at = len(example) + prompt[len(example):].index(lines[0])
    return RulerSample("vt", length, depth, prompt, names, VT_GEN_TOKENS, needle_depths,
                       count_tokens(prompt[:answer_at]) / count_tokens(prompt))


def ruler_sample(task: str, length: int, depth: float, index: int, seed: int, count_tokens: Callable[[str], int],
                 essay: list[str]) -> RulerSample:
    """Sample ``index`` of (task, length, depth): the same text on every run and for every model of one tokenizer."""
    if not 0.0 <= depth <= 1.0:
        raise ValueError(f"RULER depth must be in [0, 1], got {depth}")
    key = f"{seed}/{task}/{length}/{depth}/{index}"
    if task == "vt":
        return vt_sample(length, depth, key, count_tokens)
    if task not in NIAH_TASKS:
        raise ValueError(f"unknown RULER task {task!r}; choose from {list(TASKS)}")
    return niah_sample(task, length, depth, key, count_tokens, essay)
