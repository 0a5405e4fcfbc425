"""J-LRD: joint low-rank decomposition of position-free keys and values (EliteKV, arXiv 2503.01586, §3.2).

Official code: github.com/CiaranZhou/EliteKV ``convert/convert.py::FUSE.rank_lh_concat``. Per head, the key rows of
the chunks RoPElite keeps become ``k_rope_proj``; the other key rows and the value rows are concatenated per head,
``W_kv = [W_k_nope | W_v]`` over all heads (hidden x sum_h (D - 2r + D)), and a truncated SVD
``W_kv = U S V^T`` gives ``kv_a_proj = U_r`` and ``kv_b_proj = S_r V_r^T``. With ``kv_dim`` = rank(W_kv) the
converted attention equals the original one. Grouped key/value heads are repeated for their query heads first
(EliteKV keys are per query head). Which rows are rope rows is decided by the target attention module (from its
PE's frequency plan), so weights and rotation always agree.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rope_lab.backbones.blocks import Attention
from rope_lab.backbones.elitekv import EliteKVAttention


def svd_factors(w_kv: Tensor, kv_dim: int) -> tuple[Tensor, Tensor]:
    """nn.Linear weight (cols, hidden) of [W_k_nope | W_v] -> weights of kv_a (kv_dim, hidden), kv_b (cols, kv_dim)."""
    u, s, vh = torch.linalg.svd(w_kv.T, full_matrices=False)  # the official factorises hidden x cols
    return u[:, :kv_dim].T.contiguous(), (s[:kv_dim, None] * vh[:kv_dim]).T.contiguous()


def _per_head(linear: nn.Linear, heads: int, head_dim: int) -> Tensor:
    """(H, D, hidden) rows of a key/value projection, grouped heads repeated for their query heads."""
    w = linear.weight.detach().view(-1, head_dim, linear.in_features)
    return w.repeat_interleave(heads // w.shape[0], dim=0)


@torch.no_grad()
def convert_attention(src: Attention, dst: EliteKVAttention) -> None:
    h, d = dst.n_heads, dst.head_dim
    if (src.n_heads, src.head_dim) != (h, d):
        raise ValueError(f"J-LRD needs the same heads: source {src.n_heads} x {src.head_dim}, target {h} x {d}")
    w_k, w_v = _per_head(src.k_proj, h, d), _per_head(src.v_proj, h, d)
    rows = lambda w, idx: w.gather(1, idx[..., None].expand(-1, -1, w.shape[-1]))  # noqa: E731
    w_kv = torch.cat([rows(w_k, dst.nope_idx), w_v], dim=1).reshape(-1, w_k.shape[-1])
    kv_dim, limit = dst.kv_a_proj.out_features, min(w_kv.shape)
    if kv_dim > limit:
        raise ValueError(f"backbone.elitekv_kv_dim={kv_dim} exceeds the rank bound {limit} of [W_k_nope | W_v] "
                         f"({w_kv.shape[1]} x {w_kv.shape[0]}); choose 1..{limit}")
    kv_a, kv_b = svd_factors(w_kv.double(), kv_dim)
    dst.kv_a_proj.weight.copy_(kv_a)
    dst.kv_b_proj.weight.copy_(kv_b)
    dst.k_rope_proj.weight.copy_(rows(w_k, dst.rope_idx).reshape(-1, w_k.shape[-1]))
    dst.q_proj.weight.copy_(src.q_proj.weight)
    dst.o_proj.weight.copy_(src.o_proj.weight)


@torch.no_grad()
def convert_model(src: nn.Module, dst: nn.Module) -> nn.Module:
    """Every non-attention weight copied, every attention J-LRD converted; ``dst`` is returned."""
    attention = {f"blocks.{i}.attn." for i in range(len(dst.blocks))}
    shared = {k: v for k, v in src.state_dict().items() if not any(k.startswith(a) for a in attention)}
    missing = [k for k in dst.state_dict() if not any(k.startswith(a) for a in attention) and k not in shared]
    if missing:
        raise ValueError(f"source and target decoders differ outside attention: {missing}")
    dst.load_state_dict(shared, strict=False)
    for i, (s, t) in enumerate(zip(src.blocks, dst.blocks)):
        if not isinstance(s.attn, Attention) or not isinstance(t.attn, EliteKVAttention):
            raise ValueError(f"layer {i}: J-LRD converts standard attention (backbone.attention=mha) into "
                             f"backbone.attention=elitekv; got {type(s.attn).__name__} -> {type(t.attn).__name__}")
        convert_attention(s.attn, t.attn)
    return dst
