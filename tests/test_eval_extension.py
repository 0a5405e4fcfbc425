"""eval.py reads a tiny pe=rope run with each training-free extension (ReRoPE, SelfExtend, LM-Infinite), end to end:
the checkpoint loads unchanged, a window covering the evaluated context reproduces RoPE's perplexity exactly, a
shorter one changes it, and a window larger than the run's training context is refused."""

from __future__ import annotations

import math

import pytest

from rope_lab.evaluate import evaluate

EVAL = {"task.eval_lengths": [64], "task.passkey_lengths": []}


@pytest.fixture
def rope_ckpt(tiny_rope_run):
    return str(tiny_rope_run / "checkpoints" / "last.ckpt")


def test_each_extension_evaluates_a_rope_checkpoint(rope_ckpt):
    rope = evaluate(rope_ckpt, EVAL)["val/ppl@64"]
    same = evaluate(rope_ckpt, {**EVAL, "pe.name": "rerope", "+pe.window": 64})["val/ppl@64"]
    assert same == pytest.approx(rope, rel=1e-5)  # every pair inside the window: plain RoPE
    for overrides in ({"pe.name": "rerope", "+pe.window": 8, "+pe.slope": 0.0625},  # Leaky ReRoPE
                      {"pe.name": "self_extend", "+pe.window": 8, "+pe.group": 4},
                      {"pe": "lm_infinite", "pe.window": 16, "pe.n_global": 2}):  # group swap: train_length checked
        ppl = evaluate(rope_ckpt, {**EVAL, **overrides})["val/ppl@64"]
        assert math.isfinite(ppl) and ppl != pytest.approx(rope, rel=1e-6), overrides


def test_a_window_larger_than_the_training_context_is_refused(rope_ckpt):
    with pytest.raises(ValueError, match=r"pe=rerope: pe.window=64 is larger than the training context "
                                         r"train_length=32; choose window in 1..32"):
        evaluate(rope_ckpt, {**EVAL, "pe": "rerope", "pe.window": 64})
