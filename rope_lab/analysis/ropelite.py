"""RoPElite: greedy per-head choice of the RoPE chunks to keep (EliteKV, Zhou et al., arXiv 2503.01586, §3.1).

Official code: github.com/CiaranZhou/EliteKV ``RoPElite/analysis.py::rewrite_to_get_attn_score_RopeDimPreserveGreedy``
(score), ``RoPElite/post_process.py`` (ascending argsort), ``RoPElite/cal_then_rank.sh`` (one round per chunk).
With S a head's chunks so far, candidate c is scored by the distance between the RoPE logits and the logits of q', k'
(un-rotated q, k except that the chunks S + {c} take their rotated values):

    dist(c) = mean_{i, j} |q'_i . k'_j - q^R_i . k^R_j| / sqrt(d)

over the whole L x L logit matrix of a sequence (causally masked entries count as 0, as the official additive
mask leaves them), averaged over calibration sequences; the chunk with the smallest distance joins S. Chunks
already in S score 0. Since a logit is a sum of per-chunk terms, the difference is the sum over the chunks outside
S + {c} of (un-rotated term - rotated term); we form those terms once per layer. The official ``rank_0.py`` starts
from an all-zero rank table, so its first round scores chunk 0 repeatedly; we score every unselected chunk in every
round, as the paper describes.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from rope_lab.backbones.blocks import Attention
from rope_lab.pe import Positions
from rope_lab.pe.variants.text.elitekv import pair_channels


@torch.no_grad()
def attention_qk(model, tokens: Tensor) -> list[tuple[Tensor, Tensor, Tensor, Tensor]]:
    """Per layer (q, k, q^R, k^R), each (B, H, N, D), of a standard-attention decoder on ``tokens`` at positions
    0..N-1 (grouped key heads repeated for their query heads)."""
    b, n = tokens.shape
    positions = Positions.sequence(b, n, device=tokens.device)
    state = model.pe.prepare(positions)
    x = model.pe.embed(model.embed_tokens(tokens), state)
    out = []
    for i, block in enumerate(model.blocks):
        attn = block.attn
        if not isinstance(attn, Attention):
            raise ValueError(f"RoPElite calibrates a standard-attention model (backbone.attention=mha); layer {i} "
                             f"holds {type(attn).__name__}")
        h = block.attn_norm(x)
        q = attn.q_proj(h).view(b, n, attn.n_heads, attn.head_dim).transpose(1, 2)
        k = attn.k_proj(h).view(b, n, attn.n_kv_heads, attn.head_dim).transpose(1, 2)
        k = k.repeat_interleave(attn.n_heads // attn.n_kv_heads, dim=1)
        out.append((q, k, *model.pe.rotate(q, k, state, i)))
        x = block(x, state)
    return out


def chunk_deltas(q: Tensor, k: Tensor, qr: Tensor, kr: Tensor, pairs: Tensor) -> Tensor:
    """(B, H, P, N, N): per chunk, (un-rotated - rotated) logit term / sqrt(d), zero above the diagonal."""
    def terms(a: Tensor, b: Tensor) -> Tensor:
        return torch.einsum("bhipc,bhjpc->bhpij", a[..., pairs], b[..., pairs])

    n = q.shape[-2]
    causal = torch.ones(n, n, dtype=torch.bool, device=q.device).tril()
    return ((terms(q, k) - terms(qr, kr)) / math.sqrt(q.shape[-1])).masked_fill(~causal, 0.0)


def round_scores(deltas: list[Tensor], selected: Tensor) -> Tensor:
    """(H, P) dist of adding each chunk to ``selected`` (H, P) bool, averaged over sequences; selected chunks 0."""
    total, count = 0.0, 0
    for d in deltas:  # one calibration batch at a time bounds memory
        rest = (d * (~selected)[None, :, :, None, None].to(d.dtype)).sum(2, keepdim=True)
        total = total + (rest - d).abs().mean(dim=(-1, -2)).sum(0)
        count += d.shape[0]
    return (total / count).masked_fill(selected, 0.0)


def greedy_order(deltas: list[Tensor], rounds: int) -> tuple[Tensor, Tensor]:
    """(order (H, P), last round's scores (H, P)): ``rounds`` greedy picks per head in the order they were made,
    then the remaining chunks by ascending last-round score (post_process.py's argsort)."""
    h, p = deltas[0].shape[1:3]
    if not 1 <= rounds <= p:
        raise ValueError(f"RoPElite rounds must be in 1..{p} (chunks per head); got {rounds}")
    selected = torch.zeros(h, p, dtype=torch.bool, device=deltas[0].device)
    picks = []
    for _ in range(rounds):
        scores = round_scores(deltas, selected)
        pick = scores.masked_fill(selected, float("inf")).argmin(-1)
        picks.append(pick)
        selected[torch.arange(h), pick] = True
    rest = torch.argsort(scores.masked_fill(selected, float("inf")), dim=-1, stable=True)[:, : p - rounds]
    return torch.cat([torch.stack(picks, dim=-1), rest], dim=-1), scores


def ropelite_ranking(model, batches: list[Tensor], rounds: int) -> Tensor:
    """(L, H, P) RoPElite order of every layer and head from calibration token batches (B, N); one layer's
    per-chunk logit terms at a time (they take B * H * P * N^2 numbers)."""
    pe = model.pe
    pairs = pair_channels(pe.n_pairs, pe.cfg.pair_layout)
    per_batch = [attention_qk(model, tokens) for tokens in batches]
    orders = []
    for layer in range(len(model.blocks)):
        deltas = [chunk_deltas(*qk[layer], pairs) for qk in per_batch]
        orders.append(greedy_order(deltas, rounds)[0])
    return torch.stack(orders)
