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


def test_ruler_tasks_score_a_rope_lab_run_by_greedy_decoding(rope_ckpt, tiny_rope_run):
    """Issue 24 item 3: the RULER-style tasks of eval.py pretrained=<dir> also score a rope_lab run, with any
    training-free method applied (here YaRN), through the run's own byte codec."""
    import json

    ruler = {**EVAL, "task.ruler_tasks": ["niah_single_1", "vt"], "task.ruler_lengths": [1024],
             "task.ruler_samples": 1, "task.passkey_depths": [0.5], "pe/scaling": "yarn", "pe.scaling.factor": 8}
    metrics = evaluate(rope_ckpt, ruler)
    for key in ("val/ruler/niah_single_1/len=1024/depth=0.5", "val/ruler/vt/len=1024", "val/ruler/len=1024"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert "val/ppl@64" in metrics  # the validation loaders ran as well
    (samples,) = sorted((tiny_rope_run / "eval").glob("*/ruler_samples.jsonl"))[-1:]
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    assert [r["task"] for r in rows] == ["niah_single_1", "vt"]
    assert all(800 <= r["prompt_tokens"] <= 1024 and isinstance(r["prediction"], str) for r in rows)


def test_unknown_ruler_task_names_the_choices(rope_ckpt):
    with pytest.raises(ValueError, match=r"unknown or empty \['niah_9'\]; choose from \['niah_single_1'"):
        evaluate(rope_ckpt, {**EVAL, "task.ruler_tasks": ["niah_9"]})
