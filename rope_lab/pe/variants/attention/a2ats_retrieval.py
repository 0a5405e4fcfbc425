"""A²ATS retrieval (He et al., ACL Findings 2025, arXiv 2502.12665): which keys each query attends to.

Windowed RoPE (WRoPE): keys are scored before RoPE, and the query is rotated by one fixed relative position w, so
every key outside the local window is scored as if it sat w tokens back: ``s_j = q̃ · k̂_j / sqrt(d)`` with
``q̃ = R_w q`` (k̂_j: the quantized pre-RoPE key, or the exact one in the WRoPE-only ablation). Because
``<R_m q, R_n k> = <R_(m-n) q, k>``, s_j is the exact RoPE logit whenever m - n = w. Per query head the top-k
candidates by s_j are chosen, the choices are united over the heads of a GQA group, and the local window
(distance < local_window) and the first ``sinks`` keys are always kept. Reference implementation: junhuihe-hjh/A2ATS
``vqkey/models/llama_masked.py`` (decoding: ``wrope_mask``, ``attention_sink_mask``, ``topk(int(topk * seq_len))``,
``any(dim=-3)`` over the group). There it runs for one decoded token; here every query of a causal chunk gets its
own selection (its own seq_len = index + 1), so a full forward pass equals decoding token by token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from rope_lab.pe.kernels import eager
from rope_lab.pe.kernels.eager import math_dtype

#: rows of queries whose candidate scores are sorted at once (bounds memory at long lengths)
QUERY_BLOCK = 256


@dataclass(frozen=True)
class Budget:
    """How many candidates a query retrieves: ``floor(fraction * seq_len)`` (the official ``int(topk * seq_len)``)
    or a fixed ``tokens`` count; the local window and sinks come on top."""

    fraction: float
    tokens: int | None = None

    def per_query(self, seq_len: Tensor) -> Tensor:
        """(Nq,) long budgets for queries that see ``seq_len`` keys (float64, as Python's float product)."""
        if self.tokens is not None:
            return torch.full_like(seq_len, self.tokens)
        return torch.floor(seq_len.to(torch.float64) * self.fraction).long()


def wrope_query(q: Tensor, inv_freq: Tensor, relative_pos: int, layout: str) -> Tensor:
    """q̃ = R_w q: the pre-RoPE query rotated by the fixed relative position w (first 2P channels; P = len(inv_freq)),
    in the math dtype (fp32, or float64 for float64 inputs)."""
    wide = math_dtype(q.dtype)
    angles = relative_pos * inv_freq.to(torch.float64)  # one position: float64 costs nothing
    return eager.rotate(q.to(wide), angles.cos().to(wide)[None, None, None], angles.sin().to(wide)[None, None, None],
                        layout)


def always_kept(q_pos: Tensor, k_pos: Tensor, local_window: int, sinks: int) -> tuple[Tensor, Tensor]:
    """(causal, always) bool (Nq, Nk): keys at or before the query; of those, the local window and the sinks."""
    dist = q_pos[:, None] - k_pos[None, :]
    causal = dist >= 0
    return causal, causal & ((dist < local_window) | (k_pos < sinks)[None, :])


def retrieval_mask(q_w: Tensor, k_hat: Tensor, past: int, local_window: int, sinks: int, budget: Budget) -> Tensor:
    """(B, H, Nq, Nk) bool keep-mask for queries at cache indices past..past+Nq-1 over keys 0..Nk-1.

    q_w (B, H, Nq, D): WRoPE queries; k_hat (B, Hkv, Nk, D): pre-RoPE (quantized) keys. Candidate ties are broken
    toward the earlier key (stable sort), so a query selects the same keys in a full pass and in decoding."""
    b, h, nq, d = q_w.shape
    hkv, nk = k_hat.shape[1], k_hat.shape[2]
    group = h // hkv
    device = q_w.device
    q_pos, k_pos = torch.arange(past, past + nq, device=device), torch.arange(nk, device=device)
    causal, always = always_kept(q_pos, k_pos, local_window, sinks)
    counts = budget.per_query(q_pos + 1)
    qg = q_w.reshape(b, hkv, group, nq, d)
    kt = k_hat.to(q_w.dtype)[:, :, None].transpose(-1, -2)  # (B, Hkv, 1, D, Nk)
    blocks = []
    for s in range(0, nq, QUERY_BLOCK):
        e = min(s + QUERY_BLOCK, nq)
        candidate = causal[s:e] & ~always[s:e]
        scores = (qg[:, :, :, s:e] @ kt / math.sqrt(d)).masked_fill(~candidate, float("-inf"))
        order = scores.sort(dim=-1, descending=True, stable=True).indices
        take = (torch.arange(nk, device=device) < counts[s:e, None]).expand_as(order)
        chosen = torch.zeros_like(take).scatter_(-1, order, take) & candidate
        blocks.append(chosen.any(dim=2))  # union over the query heads sharing a key head
    keep = torch.cat(blocks, dim=2) | always
    return keep.repeat_interleave(group, dim=1)
