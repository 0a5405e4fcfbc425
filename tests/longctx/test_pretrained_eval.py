"""A pretrained directory end to end: a tiny random Llama saved with ``save_pretrained`` plus a locally trained
tokenizer, loaded by ``eval.py pretrained=<dir>``; greedy decoding with HF's KV cache equals argmax re-forwarding."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from eval import main
from rope_lab.longctx.causal_lm import CausalLM, load_pretrained_causal_lm
from tests.longctx.helpers import save_tiny_llama


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_llama(tmp_path_factory.mktemp("tiny_llama"))


class LogitsOnly(nn.Module):
    """The same HF model seen through the bare interface (no ``generate``, no cache): argmax re-forwarding."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids):
        return self.model(input_ids).logits


def test_kv_cache_greedy_equals_argmax_reforward(tiny_dir):
    lm = load_pretrained_causal_lm(str(tiny_dir), device="cpu", dtype="float32")
    plain = CausalLM(LogitsOnly(lm.model), lm.tokenizer)
    prompt = lm.encode("What is the pass key? The pass key is")
    assert lm.greedy(prompt, 12) == plain.greedy(prompt, 12)
    assert len(lm.greedy(prompt, 12)) <= 12


def test_eval_py_pretrained_writes_results_and_plots(tiny_dir, tmp_path):
    out = tmp_path / "eval"
    args = [f"pretrained={tiny_dir}", "eval_lengths=[1024]", "depths=[0.5]", "num_documents=1",
            "passkey_trials=1", "ruler_samples=1", "ruler_tasks=[niah_single_1,vt]", "corpus=files",
            f"corpus_path={tmp_path / 'books'}", "position_buckets=4", "sliding_stride=512", "device=cpu",
            f"out_dir={out}"]
    (tmp_path / "books" / "shelf").mkdir(parents=True)  # a sub-folder is not a document
    (tmp_path / "books" / "book.txt").write_text("It was a bright cold day in April. " * 300)
    metrics = main(args)
    result = json.loads((out / "results.json").read_text())
    assert result["metrics"] == pytest.approx(metrics)
    for key in ("ppl_by_position/len=1024/ppl", "sliding_window/ppl@window=1024/stride=512",
                "passkey/len=1024/depth=0.5", "ruler/vt/len=1024/depth=0.5", "ruler/avg"):
        assert key in metrics
    assert result["model"]["class"] == "LlamaForCausalLM" and result["corpus_source"].startswith("files:")
    assert {"ppl_by_position.png", "passkey_heatmap.png", "ruler_heatmaps.png"} <= set(result["plots"])
    assert all((out / p).stat().st_size > 0 for p in result["plots"])
    assert len((out / "samples.jsonl").read_text().splitlines()) == 3  # 1 passkey + 2 RULER samples
    with pytest.raises(SystemExit) as exit_info:  # a finished result is never overwritten
        main(args)
    assert exit_info.value.code == 2


def test_bad_keys_and_values_name_the_choices(tiny_dir, capsys):
    for arg, message in (("eval_suite=[ppl,ruler]", "choose from ['ppl_by_position'"),
                         ("evals_lengths=[8]", "valid keys: ['pretrained'"),
                         ("ruler_tasks=[qa_1]", "unknown ['qa_1']"),
                         ("eval_lengths=[abc]", "bad value")):
        with pytest.raises(SystemExit):
            main([f"pretrained={tiny_dir}", arg])
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["pretrained=/nonexistent/dir"])
    assert "is not a checkpoint directory" in capsys.readouterr().err


def test_hidden_state_loss_matches_full_logits(tiny_dir):
    lm = load_pretrained_causal_lm(str(tiny_dir), device="cpu", dtype="float32")
    ids = torch.tensor([lm.encode("The grass is green. The sky is blue. " * 4)])
    full = torch.nn.functional.cross_entropy(lm.model(ids).logits[0, :-1], ids[0, 1:], reduction="none")
    assert lm._hidden_path
    torch.testing.assert_close(lm.token_nll(ids), full, rtol=1e-5, atol=1e-5)


def test_rope_lab_positions_on_a_pretrained_dir_match_hf_and_a_scaling_changes_them(tiny_dir):
    """pe / scaling keys route the checkpoint through backbone=hf_causal_lm's attention: plain RoPE gives the HF
    model's token losses; YaRN (factor 4, L0 the checkpoint's) gives other ones (its attention temperature; that
    each scaling equals transformers' own is tests/backbones/test_hf_causal_lm.py)."""
    ids = torch.tensor([list(range(3, 203))])
    hf = load_pretrained_causal_lm(str(tiny_dir), device="cpu", dtype="float32")
    ours = load_pretrained_causal_lm(str(tiny_dir), device="cpu", dtype="float32", pe="rope")
    yarn = load_pretrained_causal_lm(str(tiny_dir), device="cpu", dtype="float32", scaling={"name": "yarn",
                                                                                          "factor": 4.0})
    torch.testing.assert_close(ours.token_nll(ids), hf.token_nll(ids), atol=2e-5, rtol=1e-4)
    assert (yarn.token_nll(ids) - hf.token_nll(ids)).abs().max() > 1e-5  # a random model: small but real
    assert "YaRNScaling" in repr(yarn.model.pe) and "rope" in ours.name and ours.tokenizer is not None
