"""Perplexity by position and sliding-window perplexity against hand computations from the model's logits and
against Hugging Face's own loss with the perplexity guide's -100 label masking; an oracle model gives ppl 1."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rope_lab.longctx import causal_lm
from rope_lab.longctx.causal_lm import ByteTokenizer, CausalLM
from rope_lab.longctx.perplexity import bucket_edges, perplexity_by_position, sliding_window_perplexity


@pytest.fixture(scope="module")
def llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    return LlamaForCausalLM(cfg).eval()


def _docs(n: int, length: int, vocab: int = 97) -> list[list[int]]:
    g = torch.Generator().manual_seed(1)
    return [torch.randint(0, vocab, (length,), generator=g).tolist() for _ in range(n)]


def _hand_nll(model, doc: list[int]) -> list[float]:
    """NLL of tokens 1..N-1 from the full logits, one log-softmax per position."""
    with torch.no_grad():
        logits = model(torch.tensor([doc])).logits[0].double()
    return [-float(torch.log_softmax(logits[p - 1], -1)[doc[p]]) for p in range(1, len(doc))]


def test_ppl_by_position_equals_hand_computation_from_logits(llama, monkeypatch):
    monkeypatch.setattr(causal_lm, "LOSS_CHUNK", 7)  # several chunks of the hidden-state loss
    lm = CausalLM(llama, ByteTokenizer())
    assert lm._hidden_path  # the loss is computed chunk by chunk from the final hidden states
    docs = _docs(3, 40) + [[1, 2, 3]]  # the short document is skipped at length 32
    result = perplexity_by_position(lm, docs, 32, buckets=4)
    hand = [_hand_nll(llama, d[:32]) for d in docs[:3]]
    assert result.documents == 3 and result.bucket_edges == [1, 9, 17, 24, 32]
    for (lo, hi), nll in zip(zip(result.bucket_edges, result.bucket_edges[1:]), result.bucket_nll):
        expected = sum(h[p - 1] for h in hand for p in range(lo, hi)) / (3 * (hi - lo))
        assert nll == pytest.approx(expected, rel=1e-5)
    total = sum(sum(h) for h in hand) / (3 * 31)
    assert result.metrics()["ppl_by_position/len=32/ppl"] == pytest.approx(math.exp(total), rel=1e-5)
    assert "ppl_by_position/len=32/pos=1-9" in result.metrics()


def test_too_short_corpus_and_bad_buckets_are_clear_errors(llama):
    lm = CausalLM(llama, ByteTokenizer())
    with pytest.raises(ValueError, match="no document has 64 tokens"):
        perplexity_by_position(lm, _docs(1, 10), 64, 4)
    with pytest.raises(ValueError, match="position_buckets must be >= 1"):
        bucket_edges(16, 0)


def test_sliding_window_with_stride_equal_to_window_is_disjoint_chunks(llama):
    lm = CausalLM(llama, ByteTokenizer())
    docs = _docs(2, 50)
    chunks = [d[s : s + 16] for d in docs for s in range(0, 50, 16)]  # 16, 16, 16, 2 tokens per document
    nll = [x for c in chunks for x in _hand_nll(llama, c)]
    assert sliding_window_perplexity(lm, docs, 16, 16) == pytest.approx(math.exp(sum(nll) / len(nll)), rel=1e-6)


def test_sliding_window_matches_the_hf_perplexity_guide_with_hf_loss(llama):
    """The guide's loop (labels -100 on context tokens, HF's own shifted loss), token-weighted exactly."""
    lm = CausalLM(llama, ByteTokenizer())
    ids = torch.tensor([_docs(1, 70)[0]])
    window, stride, total, count, prev_end = 24, 10, 0.0, 0, 0
    for begin in range(0, ids.shape[1], stride):
        end = min(begin + window, ids.shape[1])
        trg = end - prev_end
        inputs = ids[:, begin:end]
        labels = inputs.clone()
        labels[:, :-trg] = -100
        with torch.no_grad():
            loss = llama(inputs, labels=labels).loss
        scored = int((labels[:, 1:] != -100).sum())  # the tokens HF's shifted loss averages over
        total, count, prev_end = total + float(loss) * scored, count + scored, end
        if end == ids.shape[1]:
            break
    assert count == 69  # every token but the first, once
    ours = sliding_window_perplexity(lm, [ids[0].tolist()], window, stride)
    assert ours == pytest.approx(math.exp(total / count), rel=1e-5)


class CountingOracle(nn.Module):
    """Knows the corpus rule (next token = token + 1 mod V) and puts all mass on it."""

    def forward(self, input_ids):
        return F.one_hot((input_ids + 1) % 256, 256).float() * 1e4


def test_oracle_model_has_perplexity_one():
    lm = CausalLM(CountingOracle(), ByteTokenizer())
    docs = [[(s + i) % 256 for i in range(300)] for s in (0, 7)]
    assert sliding_window_perplexity(lm, docs, 64, 16) == pytest.approx(1.0, abs=1e-9)
    assert perplexity_by_position(lm, docs, 128, 4).metrics()["ppl_by_position/len=128/ppl"] == pytest.approx(1.0)


def test_stride_larger_than_window_is_refused(llama):
    with pytest.raises(ValueError, match=r"stride must be in \[1, window=8\]"):
        sliding_window_perplexity(CausalLM(llama, ByteTokenizer()), _docs(1, 20), 8, 9)
