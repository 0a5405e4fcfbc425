"""eval.py overrides: a run's keys are changed in place, new keys need Hydra's '+' (e.g. swapping in another pe
whose options the run's config lacks: HiRoPE read training-free from a RoPE run), and both mistakes are clear."""

from __future__ import annotations

import pytest

from rope_lab.evaluate import evaluate, parse_overrides


def test_parse_keeps_the_add_marker():
    assert parse_overrides(["pe.name=hirope", "+pe.split=0.25", "task.eval_lengths=[32]"]) == {
        "pe.name": "hirope", "+pe.split": 0.25, "task.eval_lengths": [32]}


def test_a_rope_run_evaluated_as_hirope_and_bad_keys(tiny_rope_run):
    run_dir = tiny_rope_run
    ckpt = str(run_dir / "checkpoints" / "last.ckpt")
    metrics = evaluate(ckpt, {"pe.name": "hirope", "+pe.split": 0.25, "+pe.segment": 8, "task.eval_lengths": [64]})
    assert "val/ppl@64" in metrics
    written = [p for p in (run_dir / "eval").glob("*/results.json") if "pe.name=hirope" in p.read_text()]
    assert len(written) == 1  # the run is shared by the session's eval tests: find this evaluation's folder
    with pytest.raises(ValueError, match=r"'pe.split' is not a key of the run's config.*'\+pe.split=...'"):
        evaluate(ckpt, {"pe.split": 0.25})
    with pytest.raises(ValueError, match=r"already has 'pe.base'; drop the '\+'"):
        evaluate(ckpt, {"+pe.base": 10.0})
