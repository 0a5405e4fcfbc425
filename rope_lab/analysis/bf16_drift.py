"""BFloat16 breaks RoPE's relative property (Wang et al., "When Precision Meets Position: BFloat16 Breaks Down
RoPE in Long-Context Training", TMLR 2025, arXiv 2411.13476, §2).

RoPE is applied in float32, but the rotated q/k are cast to bf16 and q.k is computed in bf16 (as inside
FlashAttention-2). Shifting every position by Delta should not change attention; in bf16 it does, and the error
grows with the absolute position. Measured here on the same q/k at offsets Delta:

- ``D(Delta, Delta_ref) = sum_i n_i sum_j |A_ij(Delta) - A_ij(Delta_ref)|`` (the paper's Eq. 4, causal
  softmax attention, ``n_i = 1/(T - i)`` as printed), summed over heads; exactly 0 in exact arithmetic;
- ``E(Delta) = sum_i n_i sum_j |A^bf16_ij(Delta) - A^fp32_ij(Delta)|``: the bf16 error at that offset;
- ``D_logit``: the mean absolute change of the pre-softmax logits to the FIRST key (Eq. 5), which the paper finds
  dominates the drift (attention sink).
``anchor=True`` keeps the first token at position 0 while the rest shift (AnchorAttention's fixed anchor id).

    python -m rope_lab.analysis.bf16_drift [--out bf16_drift.png] [--length 512] [--sink 8]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import Tensor

from rope_lab.analysis.plots import plot_curve
from rope_lab.pe import AttentionGeometry, Positions, build_pe

OFFSETS = [0, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768]


def _coords(length: int, offset: int, anchor: bool) -> Tensor:
    coords = torch.arange(length, dtype=torch.float32) + offset
    if anchor:
        coords[0] = 0.0
    return coords[None, :, None]


def logits(pe, q: Tensor, k: Tensor, coords: Tensor, dtype: torch.dtype) -> Tensor:
    """Causal pre-softmax logits (B, H, T, T) in float64: rotation in fp32, q.k in ``dtype`` (bf16 as FA2)."""
    rq, rk = pe.rotate(q.float(), k.float(), pe.prepare(Positions(coords=coords.expand(q.shape[0], -1, -1))), 0)
    rq, rk = rq.to(dtype), rk.to(dtype)
    scores = (rq @ rk.transpose(-1, -2)).double() / q.shape[-1] ** 0.5
    t = q.shape[-2]
    return scores.masked_fill(~torch.ones(t, t, dtype=torch.bool).tril(), float("-inf"))


def row_weights(t: int) -> Tensor:
    return 1.0 / (t - torch.arange(t, dtype=torch.float64))


def attention_distance(a: Tensor, b: Tensor) -> float:
    """Eq. 4 between two causal attention-probability tensors (B, H, T, T), averaged over the batch."""
    diff = (a - b).abs().sum(-1)  # (B, H, T)
    return float((diff * row_weights(a.shape[-1])).sum(-1).sum(-1).mean())


def drift(pe, q: Tensor, k: Tensor, offsets: list[int] = OFFSETS, reference: int = 16, anchor: bool = False
          ) -> dict[str, dict[float, float]]:
    """Series {name: {offset: value}} for D (fp32, bf16), E (bf16 vs fp32) and D_logit (first key, bf16)."""
    t = q.shape[-2]
    ref = {dt: logits(pe, q, k, _coords(t, reference, anchor), dt) for dt in (torch.float32, torch.bfloat16)}
    out: dict[str, dict[float, float]] = {"D fp32": {}, "D bf16": {}, "E bf16 vs fp32": {}, "D_logit first key bf16": {}}
    for off in offsets:
        cur = {dt: logits(pe, q, k, _coords(t, off, anchor), dt) for dt in (torch.float32, torch.bfloat16)}
        for dt, name in ((torch.float32, "D fp32"), (torch.bfloat16, "D bf16")):
            out[name][off] = attention_distance(cur[dt].softmax(-1), ref[dt].softmax(-1))
        out["E bf16 vs fp32"][off] = attention_distance(cur[torch.bfloat16].softmax(-1),
                                                        cur[torch.float32].softmax(-1))
        first = (cur[torch.bfloat16][..., 0] - ref[torch.bfloat16][..., 0]).abs()
        out["D_logit first key bf16"][off] = float(first.sum(1).mean())  # sum over heads, mean over tokens/batch
    return out


def random_qk(batch: int, heads: int, length: int, head_dim: int, sink: float = 8.0, seed: int = 0):
    """Gaussian q/k; the first key is scaled by ``sink`` so it attracts attention like a trained model's first
    token (the paper: random-init models show little drift, pretrained ones with attention sinks a lot)."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, length, head_dim, generator=g)
    k = torch.randn(batch, heads, length, head_dim, generator=g)
    k[:, :, 0] *= sink
    return q, k


def run(length: int = 512, head_dim: int = 64, heads: int = 4, batch: int = 2, sink: float = 8.0,
        base: float = 10000.0, offsets: list[int] = OFFSETS) -> dict[str, dict[float, float]]:
    pe = build_pe({"name": "rope", "base": base})
    pe.setup(AttentionGeometry(dim=heads * head_dim, head_dim=head_dim, n_heads=heads, n_kv_heads=heads, depth=1))
    q, k = random_qk(batch, heads, length, head_dim, sink)
    series = drift(pe, q, k, offsets)
    anchored = drift(pe, q, k, offsets, anchor=True)
    series["E bf16 vs fp32, anchor at 0"] = anchored["E bf16 vs fp32"]
    return series


def plot(series: dict[str, dict[float, float]], out: Path | str) -> Path:
    shown = {k: {max(x, 1.0): v for x, v in pts.items()} for k, pts in series.items()}  # log axis: 0 -> 1
    return plot_curve(shown, out, "position offset Delta (0 plotted at 1)", "attention difference", logy=True,
                      title="bf16 RoPE drift vs absolute position")


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bf16_drift.png"))
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--sink", type=float, default=8.0)
    args = parser.parse_args(argv)
    path = plot(run(length=args.length, sink=args.sink), args.out)
    print(path)
    return path


if __name__ == "__main__":
    main()
