"""PaTH attention (Yang, Shen, Wen, Tan, Mishra, Ren, Panda, Kim; NeurIPS 2025, arXiv 2505.16381), ``pe=path``.

Position enters as a data-dependent product of Householder-like transforms instead of a fixed rotation: each
token t has ``H_t = I - beta_t w_t w_t^T`` (w_t a unit vector, beta_t in (0, 2)), and the logit of query i for key
j <= i is ``q_i^T H_i H_{i-1} ... H_{j+1} k_j`` (``q_i^T k_i`` on the diagonal). PaTH-FoX (``forget_gate``) adds
FoX's forget gate ``sum_{s=j+1..i} log f_s``; as in the official code the whole logit, gate included, is scaled by
1/sqrt(d). No RoPE. The transform of each layer comes from the block's input x: ``w_t = L2norm(silu(ShortConv(W_w
x_t)))`` per key head (W_w low-rank through ``w_rank`` channels), ``beta_t = 2 sigmoid(W_beta x_t)`` per key head,
``f_t = sigmoid(W_f x_t)`` per query head.

All logits at once (``path_logits``): with W the (N, d) matrix of w's and D = diag(beta), the UT transform of the
product gives ``A = tril(Q K^T) - tril(Q W^T) (I + strictLower(D W W^T))^{-1} strictLower(D W K^T)``; the unit
lower-triangular system is solved once per head (O(N^2 d + N^3), fine at CPU scale; the official Triton kernel is
blockwise). Reference implementation: fla-org/flash-linear-attention ``fla/ops/path_attn/naive.py``
(``naive_path_attn``, in the ``fla-core`` wheel), which tests/pe/test_path.py compares against. Decoding keeps the
cached keys transformed up to the last token (each new token applies its H_t to all of them, as the official
decoder does), so a step is plain attention plus an O(N d) update.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rope_lab.pe.interface import PositionalEncoding
from rope_lab.pe.kernels.eager import math_dtype
from rope_lab.pe.kv_cache import KVCache
from rope_lab.pe.registry import register_pe
from rope_lab.pe.types import PEState


def path_logits(q: Tensor, k: Tensor, w: Tensor, beta: Tensor) -> Tensor:
    """(B, H, N, N) unscaled logits q_i^T H_i ... H_{j+1} k_j for j <= i (zero above the diagonal).

    q, k, w (B, H, N, D) with unit-norm rows of w; beta (B, H, N)."""
    n = q.shape[-2]
    strict = torch.ones(n, n, dtype=torch.bool, device=q.device).tril(-1)
    wb = w * beta[..., None]
    system = torch.eye(n, dtype=q.dtype, device=q.device) + (wb @ w.transpose(-1, -2)).masked_fill(~strict, 0.0)
    right = (wb @ k.transpose(-1, -2)).masked_fill(~strict, 0.0)
    solved = torch.linalg.solve_triangular(system, right, upper=False, unitriangular=True)
    return (q @ k.transpose(-1, -2)).tril() - (q @ w.transpose(-1, -2)).tril() @ solved


def path_attention(q: Tensor, k: Tensor, v: Tensor, w: Tensor, beta: Tensor, log_forget: Tensor | None,
                   keep: Tensor | None = None) -> Tensor:
    """Causal PaTH attention. q (B, H, N, D); k, v, w (B, Hkv, N, D); beta (B, Hkv, N); log_forget (B, H, N) or
    None; keep: an optional boolean (.., N, N) mask (e.g. documents of a packed row) on top of causality."""
    rep = q.shape[1] // k.shape[1]
    k, v, w, beta = (t.repeat_interleave(rep, dim=1) for t in (k, v, w, beta))
    wide = math_dtype(q.dtype)
    logits = path_logits(q.to(wide), k.to(wide), w.to(wide), beta.to(wide))
    if log_forget is not None:
        cum = log_forget.to(wide).cumsum(-1)
        logits = logits + cum[..., :, None] - cum[..., None, :]
    n = q.shape[-2]
    allowed = torch.ones(n, n, dtype=torch.bool, device=q.device).tril()
    return softmax_values(logits, allowed if keep is None else allowed & keep, v, q)


def softmax_values(logits: Tensor, allowed: Tensor, v: Tensor, q: Tensor) -> Tensor:
    """softmax(logits / sqrt(d)) over the allowed keys, times v; in q's dtype."""
    attn = (logits / math.sqrt(q.shape[-1])).masked_fill(~allowed, float("-inf")).softmax(dim=-1)
    return (attn.to(v.dtype) @ v).to(q.dtype)


def householder(x: Tensor, w: Tensor, beta: Tensor) -> Tensor:
    """H x = x - beta (w . x) w for x (B, H, M, D), w (B, H, 1, D), beta (B, H, 1)."""
    return x - beta[..., None] * (x * w).sum(-1, keepdim=True) * w


def transform_keys(past: Tensor, new: Tensor, w: Tensor, beta: Tensor) -> Tensor:
    """Keys for the cache after a chunk: every key j becomes H_last ... H_{j+1} k_j. ``past`` keys already carry the
    transforms up to the chunk; new (B, H, M, D) keys and their w (B, H, M, D), beta (B, H, M)."""
    keys = torch.cat([past, new], dim=-2)
    start = past.shape[-2]
    for r in range(new.shape[-2]):  # H of chunk token r acts on every earlier key
        s = start + r
        earlier = householder(keys[..., :s, :], w[..., r : r + 1, :], beta[..., r : r + 1])
        keys = torch.cat([earlier, keys[..., s:, :]], dim=-2)
    return keys


def queries_to_past(q: Tensor, w: Tensor, beta: Tensor) -> Tensor:
    """q_i -> H_chunk_start ... H_i q_i, so that q_i^T (H_i ... H_chunk_start) k = (that)^T k for the cached keys."""
    for r in reversed(range(q.shape[-2])):  # H_r reaches the queries at r and after, latest transform first
        q = torch.cat([q[..., :r, :], householder(q[..., r:, :], w[..., r : r + 1, :], beta[..., r : r + 1])], -2)
    return q


class PaTHGates(nn.Module):
    """One layer's w_t, beta_t (per key head) and optional forget gate (per query head), computed in fp32."""

    def __init__(self, dim: int, n_heads: int, n_kv_heads: int, head_dim: int, w_rank: int, conv_size: int,
                 forget_gate: bool) -> None:
        super().__init__()
        kv_dim = n_kv_heads * head_dim
        self.n_kv_heads, self.head_dim = n_kv_heads, head_dim
        self.w_proj = (nn.Sequential(nn.Linear(dim, w_rank, bias=False), nn.Linear(w_rank, kv_dim, bias=False))
                       if w_rank else nn.Linear(dim, kv_dim, bias=False))
        self.conv = (nn.Conv1d(kv_dim, kv_dim, conv_size, groups=kv_dim, padding=conv_size - 1, bias=False)
                     if conv_size else None)
        self.beta_proj = nn.Linear(dim, n_kv_heads)
        self.forget_proj = nn.Linear(dim, n_heads) if forget_gate else None

    def forward(self, x: Tensor, past: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
        """(w, beta, log forget gate or None, the projections the next chunk's convolution needs). ``past``: the
        projections of the tokens before x (decoding), or None at the start of a sequence."""
        b, n, _ = x.shape
        with torch.autocast(x.device.type, enabled=False):
            x = x.to(self.beta_proj.weight.dtype)
            w = self.w_proj(x)
            tail = w
            if self.conv is not None:  # causal depthwise short convolution over time, then SiLU
                width = self.conv.kernel_size[0] - 1
                seq = w if past is None else torch.cat([past, w], dim=1)
                tail = seq[:, -width:] if width else seq[:, :0]
                w = F.silu(self.conv(seq.transpose(1, 2))[..., seq.shape[1] - n : seq.shape[1]].transpose(1, 2))
            w = F.normalize(w.float().view(b, n, self.n_kv_heads, self.head_dim), dim=-1).transpose(1, 2)
            beta = 2.0 * torch.sigmoid(self.beta_proj(x).float()).transpose(1, 2)
            forget = None if self.forget_proj is None else F.logsigmoid(self.forget_proj(x).float()).transpose(1, 2)
        return w, beta, forget, tail


@register_pe("path")
class PaTH(PositionalEncoding):
    """Data-dependent Householder position encoding; owns ``attend`` (causal; KV-cache decoding supported)."""

    causal_only = True
    max_axes = 1  # positions are the token order itself; coordinates are not read

    @dataclass
    class Config:
        w_rank: int = 32  # rank of W_w (the official default); 0: a full projection
        conv_size: int = 3  # causal short convolution on w (the official default); 0: none
        forget_gate: bool = False  # PaTH-FoX

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        if cfg.w_rank < 0 or cfg.conv_size < 0:
            raise ValueError(f"pe=path needs w_rank >= 0 and conv_size >= 0; got w_rank={cfg.w_rank}, "
                             f"conv_size={cfg.conv_size}")
        self.cfg = cfg

    def setup(self, geometry) -> PaTH:
        super().setup(geometry)
        g, c = geometry, self.cfg
        self.gates = nn.ModuleList(PaTHGates(g.dim, g.n_heads, g.n_kv_heads, g.head_dim, c.w_rank, c.conv_size,
                                             c.forget_gate) for _ in range(g.depth))
        return self

    def attend(self, q: Tensor, k: Tensor, v: Tensor, *, state: PEState, layer: int, causal: bool,
               x: Tensor | None = None, cache: KVCache | None = None) -> Tensor:
        if x is None:
            raise ValueError("pe=path computes its transforms from the block's hidden states: the backbone must "
                             "pass x to pe.attend")
        if cache is None:
            w, beta, forget, _ = self.gates[layer](x)
            keep = self._mask(state, layer, q.shape[-2], k.shape[-2], 0, False, None, q.device)  # documents only
            return path_attention(q, k, v, w, beta, forget, keep)
        return self._decode(q, k, v, x, state, layer, cache)

    def _decode(self, q: Tensor, k: Tensor, v: Tensor, x: Tensor, state: PEState, layer: int,
                cache: KVCache) -> Tensor:
        """A chunk after ``cache``: the cache holds keys already transformed up to its last token (so decoding is
        plain attention plus an O(N d) key update per token), values, the convolution's tail and the gate sums."""
        if state.positions.segment is not None:
            raise ValueError("pe=path decodes one document per row; packed rows (segments) need full forward passes")
        mem = cache.pe_state.setdefault("path", {})
        conv_tail, keys_past, gate_past = mem.get((layer, "conv")), mem.get((layer, "keys")), mem.get((layer, "gate"))
        w, beta, forget, mem[(layer, "conv")] = self.gates[layer](x, conv_tail)
        rep = q.shape[1] // k.shape[1]
        wide = math_dtype(q.dtype)
        qf, kf = q.to(wide), k.to(wide)
        wq, bq = w.to(wide).repeat_interleave(rep, 1), beta.to(wide).repeat_interleave(rep, 1)
        kq = kf.repeat_interleave(rep, 1)
        logits = path_logits(qf, kq, wq, bq)  # within the chunk
        n = q.shape[-2]
        allowed = torch.ones(n, n, dtype=torch.bool, device=q.device).tril()
        gates = None
        if forget is not None:  # running sums of log f over the whole sequence, continued from the cache
            gates = forget.to(wide).cumsum(-1) + (0.0 if gate_past is None else gate_past[..., -1:])
            logits = logits + gates[..., :, None] - gates[..., None, :]
        if keys_past is not None:  # earlier tokens: their keys are already transformed up to the chunk
            cross = queries_to_past(qf, wq, bq) @ keys_past.to(wide).repeat_interleave(rep, 1).transpose(-1, -2)
            if gates is not None:
                cross = cross + gates[..., :, None] - gate_past[..., None, :]
            logits = torch.cat([cross, logits], dim=-1)
            allowed = torch.cat([torch.ones(n, keys_past.shape[-2], dtype=torch.bool, device=q.device), allowed], -1)
        past_keys = kf[..., :0, :] if keys_past is None else keys_past.to(wide)
        mem[(layer, "keys")] = transform_keys(past_keys, kf, w.to(wide), beta.to(wide))
        if gates is not None:
            mem[(layer, "gate")] = gates if gate_past is None else torch.cat([gate_past, gates], dim=-1)
        _, values = cache.append(layer, k, v)  # values as usual; the keys live transformed in pe_state
        return softmax_values(logits, allowed, values.repeat_interleave(rep, 1), q)

    def extra_repr(self) -> str:
        return f"name={self.name}, w_rank={self.cfg.w_rank}, conv_size={self.cfg.conv_size}, " \
               f"forget_gate={self.cfg.forget_gate}"
