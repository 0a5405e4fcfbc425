"""The lm-evaluation-harness adapter on a tiny saved Llama: log-likelihoods against hand computations from the
model's logits, rolling windows against the full-context sum, generation cut at ``until``, and a local harness task
(no hub data) through ``lm_eval.simple_evaluate``. Skipped where lm_eval is not installed (an optional extra)."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch

lm_eval = pytest.importorskip("lm_eval")

from rope_lab.longctx.causal_lm import load_pretrained_causal_lm  # noqa: E402
from rope_lab.longctx.lm_eval_adapter import RopeLabHarnessLM  # noqa: E402
from tests.longctx.helpers import save_tiny_llama  # noqa: E402


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    path = save_tiny_llama(tmp_path_factory.mktemp("tiny"))
    return RopeLabHarnessLM(load_pretrained_causal_lm(str(path), "cpu", "float32"), max_length=16)


def _req(*args):
    return SimpleNamespace(args=args)


def _hand_logprobs(model, ids: list[int]) -> list[float]:
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
    return [float(logp[i - 1, ids[i]]) for i in range(1, len(ids))]


def test_loglikelihood_matches_the_logits(harness):
    lm = harness.lm
    ctx, cont = "The sky is", " blue."
    whole = lm.encode(ctx + cont)
    n_ctx = len(lm.encode(ctx))
    expected = sum(_hand_logprobs(lm.model, whole)[n_ctx - 1 :])
    (got, greedy), (empty, _) = harness.loglikelihood([_req(ctx, cont), _req("", "The sky")])
    assert got == pytest.approx(expected, rel=1e-5) and isinstance(greedy, bool)
    ids = [harness.prefix_token_id] + lm.encode("The sky")
    assert empty == pytest.approx(sum(_hand_logprobs(lm.model, ids)), rel=1e-5)


def test_rolling_loglikelihood_uses_disjoint_windows(harness):
    lm, text = harness.lm, "It was a bright cold day in April, and the clocks were striking thirteen."
    ids = [harness.prefix_token_id] + lm.encode(text)
    assert len(ids) > 2 * harness.max_length
    (got,) = harness.loglikelihood_rolling([_req(text)])
    expected, n = 0.0, harness.max_length
    for start in range(0, len(ids) - 1, n):  # targets ids[start+1 : start+n+1], given ids[start : start+n]
        expected += sum(_hand_logprobs(lm.model, ids[start : start + n + 1]))
    assert got == pytest.approx(expected, rel=1e-5)
    wide = RopeLabHarnessLM(lm, max_length=4096)  # one window: the plain full-context sum
    assert wide.loglikelihood_rolling([_req(text)])[0] == pytest.approx(sum(_hand_logprobs(lm.model, ids)), rel=1e-5)


def test_generate_until_cuts_at_the_stop_string(harness):
    full = harness.lm.generate_text("The pass key is", 8)
    stop = full[2:4] if len(full) >= 4 else "\n"
    (got,) = harness.generate_until([_req("The pass key is", {"until": [stop], "max_gen_toks": 8})])
    assert got == full[: full.index(stop)] if stop in full else got == full
    with pytest.raises(ValueError, match="greedily"):
        harness.generate_until([_req("x", {"do_sample": True})])


@pytest.mark.slow  # ~40 s on 2 cores: the TaskManager indexes every task YAML the harness ships
def test_local_task_through_simple_evaluate(harness, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    docs = tmp_path / "docs.jsonl"
    docs.write_text("\n".join(json.dumps({"text": t}) for t in ["The grass is green.", "The sky is blue."]))
    (tmp_path / "tiny_ppl.yaml").write_text(
        "task: tiny_ppl\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {docs}\n"
        "test_split: test\noutput_type: loglikelihood_rolling\ndoc_to_text: ''\ndoc_to_target: '{{text}}'\n"
        "metric_list:\n  - metric: word_perplexity\n  - metric: bits_per_byte\n")
    from lm_eval.tasks import TaskManager

    out = lm_eval.simple_evaluate(model=harness, tasks=["tiny_ppl"], bootstrap_iters=0,
                                  task_manager=TaskManager(include_path=str(tmp_path)))
    res = out["results"]["tiny_ppl"]
    total = sum(harness.loglikelihood_rolling([_req(t)])[0] for t in ["The grass is green.", "The sky is blue."])
    n_bytes = len("The grass is green.".encode()) + len("The sky is blue.".encode())
    assert res["bits_per_byte,none"] == pytest.approx(-total / n_bytes / math.log(2), rel=1e-5)
