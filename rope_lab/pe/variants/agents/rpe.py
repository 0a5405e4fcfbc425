"""Query-centric relative position encoding for agents: the O(N^2)-memory baseline of DRoPE (Zhao et al., arXiv
2503.15029, Table "complexity": query-centric with RPE), as built by QCNet (Zhou et al., CVPR 2023, "Query-Centric
Trajectory Prediction", github.com/ZikangZhou/QCNet ``layers/attention_layer.py``).

For every query agent i and key agent j, the pair feature r_ij describes j in i's local frame:
    d = R(-phi_i) (p_j - p_i)            relative position, rotated into the query's heading frame
    r_ij = MLP([log1p(|d| / unit), cos a, sin a, cos(phi_j - phi_i), sin(phi_j - phi_i)])   a = angle of d
(QCNet's [distance, angle to the relative position, relative heading]; distance log-compressed because metres
span five orders of magnitude). Every layer projects r_ij into keys and values (QCNet ``to_k_r``, ``to_v_r``):
    logit_ij = q_i . (k_j + W_k^l r_ij) / sqrt(d),      out_i = sum_j softmax_j(logit_ij) (v_j + W_v^l r_ij)
so the memory is O(N^2 * H * d) per layer -- the cost DRoPE-RoPE avoids. Invariant to translating and rotating
the whole scene (headings shifted by the same angle), and exactly 2*pi-periodic in every heading.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from rope_lab.pe.interface import PositionalEncoding
from rope_lab.pe.kv_cache import KVCache
from rope_lab.pe.registry import register_pe
from rope_lab.pe.types import PEState, Positions


def query_frame_features(q_coords: Tensor, k_coords: Tensor, unit: float) -> Tensor:
    """(B, Nq, 3), (B, Nk, 3) (x, y, heading) -> (B, Nq, Nk, 5) relative features in each query's frame."""
    d = k_coords[:, None, :, :2] - q_coords[:, :, None, :2]
    phi_q = q_coords[:, :, None, 2]
    cos_q, sin_q = phi_q.cos(), phi_q.sin()
    dx = cos_q * d[..., 0] + sin_q * d[..., 1]
    dy = -sin_q * d[..., 0] + cos_q * d[..., 1]
    dist = torch.hypot(dx, dy)
    safe = dist.clamp_min(1e-6)  # the angle of a zero vector is taken as 0 (cos 1, sin 0)
    cos_a = torch.where(dist > 1e-6, dx / safe, torch.ones_like(dx))
    sin_a = torch.where(dist > 1e-6, dy / safe, torch.zeros_like(dy))
    dphi = k_coords[:, None, :, 2] - phi_q
    return torch.stack((torch.log1p(dist / unit), cos_a, sin_a, dphi.cos(), dphi.sin()), dim=-1)


@dataclass
class RPEState(PEState):
    pairs: Tensor | None = None  # (B, Nq, Nk, hidden) embedded pair features, shared by every layer


@register_pe("rpe")
class QueryCentricRPE(PositionalEncoding):
    """Pairwise (distance, direction, relative heading) embeddings added to keys and values (overrides attend)."""

    min_axes, max_axes = 3, 3
    axes = ("x", "y", "heading")  # metres and radians in each query's frame

    @dataclass
    class Config:
        hidden: int = 64  # width of the shared pair embedding r_ij
        unit: float = 1000.0  # metres: distances enter as log1p(|d| / unit)

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        if cfg.hidden <= 0 or cfg.unit <= 0:
            raise ValueError(f"rpe needs hidden > 0 and unit > 0; got hidden={cfg.hidden}, unit={cfg.unit}")
        self.cfg = cfg

    def setup(self, geometry) -> QueryCentricRPE:
        super().setup(geometry)
        h = self.cfg.hidden
        self.pair_mlp = nn.Sequential(nn.Linear(5, h), nn.LayerNorm(h), nn.GELU(), nn.Linear(h, h))
        width = geometry.n_heads * geometry.head_dim
        self.to_k = nn.ModuleList(nn.Linear(h, width, bias=False) for _ in range(geometry.depth))
        self.to_v = nn.ModuleList(nn.Linear(h, width, bias=False) for _ in range(geometry.depth))
        return self

    def prepare(self, positions: Positions, cache: KVCache | None = None) -> RPEState:
        coords = positions.coords
        keys = coords
        if cache is not None:  # decoding: the new queries see every cached agent too
            past = cache.pe_state.get("rpe_coords")
            keys = coords if past is None else torch.cat((past, coords), dim=1)
            cache.pe_state["rpe_coords"] = keys
        feats = query_frame_features(coords.float(), keys.float(), self.cfg.unit)
        feats = feats.to(self.pair_mlp[0].weight.dtype)
        return RPEState(positions=positions, coords=coords, pairs=self.pair_mlp(feats))

    def attend(self, q: Tensor, k: Tensor, v: Tensor, *, state: RPEState, layer: int, causal: bool,
               x: Tensor | None = None, cache: KVCache | None = None) -> Tensor:
        past = 0
        if cache is not None:
            past = 0 if cache.keys[layer] is None else cache.keys[layer].shape[-2]
            k, v = cache.append(layer, k, v)
        if k.shape[1] != q.shape[1]:  # grouped-query attention
            rep = q.shape[1] // k.shape[1]
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        b, h, nq, d = q.shape
        nk = k.shape[-2]
        pairs = state.pairs.to(q.dtype)
        rk = self.to_k[layer](pairs).view(b, nq, nk, h, d)
        rv = self.to_v[layer](pairs).view(b, nq, nk, h, d)
        logits = (q @ k.transpose(-1, -2) + torch.einsum("bhid,bijhd->bhij", q, rk)) * d**-0.5
        keep = self._mask(state, layer, nq, nk, past, causal, cache, q.device)
        if causal and keep is None:
            keep = torch.ones(nq, nk, dtype=torch.bool, device=q.device).tril(past)
        if keep is not None:
            logits = logits.masked_fill(~keep, float("-inf"))
        attn = logits.float().softmax(dim=-1).to(q.dtype)
        return attn @ v + torch.einsum("bhij,bijhd->bhid", attn, rv)

    def extra_repr(self) -> str:
        return f"name={self.name}, hidden={self.cfg.hidden}, unit={self.cfg.unit}m"
