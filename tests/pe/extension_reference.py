"""A deliberately naive reference for the training-free extensions (ReRoPE, SelfExtend, LM-Infinite): attention
computed pair by pair, each logit from transformers' own RoPE rotation at the distance the paper / official code
assigns to that pair. Independent of rope_lab's rotary core."""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import Tensor
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

HEAD_DIM = 16


def qkv(n: int, heads: int = 2, kv_heads: int = 2, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    shape = lambda h: (1, h, n, HEAD_DIM)  # noqa: E731
    return (torch.randn(*shape(heads), generator=g, dtype=torch.float64),
            torch.randn(*shape(kv_heads), generator=g, dtype=torch.float64),
            torch.randn(*shape(kv_heads), generator=g, dtype=torch.float64))


def hf_rotated(x: Tensor, position: float, base: float = 10000.0) -> Tensor:
    """x (.., D) rotated to ``position`` by transformers' LLaMA ``apply_rotary_pos_emb`` (rotate-half layout)."""
    exponent = torch.arange(0, HEAD_DIM, 2, dtype=torch.int64).float() / HEAD_DIM
    inv_freq = (1.0 / base**exponent).double()  # computed in fp32 as HF does, then exact
    angle = torch.cat([position * inv_freq, position * inv_freq])[None, None]  # HF's (B, N, D) tables
    rotated, _ = apply_rotary_pos_emb(x[None, None, None], x[None, None, None], angle.cos(), angle.sin())
    return rotated[0, 0, 0]


def pairwise_attention(q: Tensor, k: Tensor, v: Tensor, positions: list[float],
                       distance: Callable[[float, float], Optional[float]],
                       query_scale: Callable[[float], float] = lambda p: 1.0) -> Tensor:
    """softmax_j(q_i . R(d_ij) k_j / sqrt(D)) v_j over keys j <= i, d_ij = distance(p_i, p_j) (None: masked).

    q (1, H, N, D), k/v (1, Hkv, N, D); a pair's logit is <R(d) q_i, R(0) k_j>, the RoPE logit at distance d."""
    heads, n = q.shape[1], q.shape[2]
    k, v = (t.repeat_interleave(heads // t.shape[1], 1) for t in (k, v))
    logits = torch.full((1, heads, n, n), float("-inf"), dtype=torch.float64)
    for h in range(heads):
        for i in range(n):
            for j in range(i + 1):
                d = distance(positions[i], positions[j])
                if d is not None:
                    rotated = hf_rotated(q[0, h, i] * query_scale(positions[i]), d)
                    logits[0, h, i, j] = rotated @ k[0, h, j] / math.sqrt(HEAD_DIM)
    return logits.softmax(-1) @ v


def attend(pe, positions: list[float], q: Tensor, k: Tensor, v: Tensor, cache=None) -> Tensor:
    from rope_lab.pe import Positions

    coords = torch.tensor(positions, dtype=torch.float32)[None, :, None]
    return pe.attend(q, k, v, state=pe.prepare(Positions(coords=coords)), layer=0, causal=True, cache=cache)
