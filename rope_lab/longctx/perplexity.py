"""Perplexity of a causal LM on long documents, two protocols (reference/evaluation.md section 2):

- **by position** (the recommended protocol of section 2.2; YaRN App. A.2 reports the same per-position view): per
  document and length L, one forward pass over the document's first L tokens; the per-token NLL is pooled over
  documents and averaged per position bucket, and over all positions (``ppl@L``, the "truncated" protocol).
- **sliding window** as in Hugging Face's perplexity guide ("Perplexity of fixed-length models"): windows of
  ``window`` tokens start every ``stride`` tokens; in each window only the tokens not scored by an earlier window
  count (the others are context), so every token is scored once, given up to ``window - 1`` tokens before it.
  The result is exp of the token-weighted mean NLL. With ``stride == window`` this is disjoint chunks (the first
  token of each chunk has no context and is not scored, as in the guide and as ``lm_eval`` rolling windows do not).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from rope_lab.longctx.causal_lm import CausalLM


@dataclass
class PositionPerplexity:
    length: int
    documents: int
    mean_nll: float  # over all scored positions 1..L-1 of all documents
    bucket_edges: list[int]  # bucket i covers target positions [edges[i], edges[i+1])
    bucket_nll: list[float]

    def metrics(self, prefix: str = "ppl_by_position") -> dict[str, float]:
        out = {f"{prefix}/len={self.length}/ppl": math.exp(self.mean_nll)}
        for lo, hi, nll in zip(self.bucket_edges, self.bucket_edges[1:], self.bucket_nll):
            out[f"{prefix}/len={self.length}/pos={lo}-{hi}"] = math.exp(nll)
        return out


def bucket_edges(length: int, buckets: int) -> list[int]:
    """Equal-width buckets over the scored target positions 1..length-1 (position p = the p-th token, 0-based)."""
    if buckets < 1:
        raise ValueError(f"position_buckets must be >= 1, got {buckets}")
    buckets = min(buckets, length - 1)
    return [1 + round(i * (length - 1) / buckets) for i in range(buckets + 1)]


def per_position_nll(lm: CausalLM, documents: list[list[int]], length: int) -> Tensor:
    """(D, length - 1) NLL of target positions 1..length-1 for every document at least ``length`` tokens long."""
    rows = [lm.token_nll(torch.tensor([doc[:length]])).cpu() for doc in documents if len(doc) >= length]
    if not rows:
        longest = max((len(d) for d in documents), default=0)
        raise ValueError(f"no document has {length} tokens (the longest has {longest}); lower eval_lengths or use a "
                         f"corpus of longer documents")
    return torch.stack(rows)


def perplexity_by_position(lm: CausalLM, documents: list[list[int]], length: int, buckets: int) -> PositionPerplexity:
    nll = per_position_nll(lm, documents, length).double()
    edges = bucket_edges(length, buckets)
    by_bucket = [float(nll[:, lo - 1 : hi - 1].mean()) for lo, hi in zip(edges, edges[1:])]
    return PositionPerplexity(length, nll.shape[0], float(nll.mean()), edges, by_bucket)


def sliding_window_nll(lm: CausalLM, ids: list[int], window: int, stride: int) -> tuple[float, int]:
    """(summed NLL, number of scored tokens) of one token sequence under the sliding-window protocol."""
    if not 1 <= stride <= window:
        raise ValueError(f"sliding-window stride must be in [1, window={window}] (a larger stride skips tokens); "
                         f"got stride={stride}")
    if window < 2:
        raise ValueError(f"sliding-window window must be >= 2 tokens, got {window}")
    total, count, scored_until = 0.0, 0, 0  # tokens [0, scored_until) are already scored or were pure context
    for begin in range(0, len(ids), stride):
        end = min(begin + window, len(ids))
        new = end - scored_until  # the tokens this window adds; the earlier ones are context only
        if end - begin >= 2 and new > 0:
            nll = lm.token_nll(torch.tensor([ids[begin:end]]))  # targets begin+1 .. end-1
            take = min(new, end - begin - 1)
            total += float(nll[-take:].double().sum())
            count += take
        scored_until = end
        if end == len(ids):
            break
    return total, count


def sliding_window_perplexity(lm: CausalLM, documents: list[list[int]], window: int, stride: int) -> float:
    """exp(token-weighted mean NLL) over the documents, each scored separately (no window spans two)."""
    total, count = 0.0, 0
    for doc in documents:
        t, c = sliding_window_nll(lm, doc, window, stride)
        total, count = total + t, count + c
    if count == 0:
        raise ValueError("sliding-window perplexity scored no token (every document is shorter than 2 tokens)")
    return math.exp(total / count)
