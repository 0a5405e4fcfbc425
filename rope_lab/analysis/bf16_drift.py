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

Two ways to rotate the bf16 path (``rotation``); the fp32 and float64 references always use our exact rotation:

- ``fp32`` (default): our rotation (exactly reduced fp32 angles, fp32 arithmetic), then q/k cast to bf16;
- ``bf16_tables``: the common path of HF ``LlamaRotaryEmbedding`` + ``apply_rotary_pos_emb``
  (transformers ``models/llama/modeling_llama.py``) and FlashAttention's ``RotaryEmbedding`` cos/sin cache
  (Dao-AILab/flash-attention ``flash_attn/layers/rotary.py``): angles ``position * inv_freq`` in fp32, cos/sin
  tables cast to bf16, and ``q * cos + rotate_half(q) * sin`` computed in bf16 (half pair layout only).

``drift_vs_length`` / ``run_vs_length`` give the same series as a function of the sequence length T (the first T
tokens of one q/k draw, all shifted by one offset) instead of the offset.

    python -m rope_lab.analysis.bf16_drift [--out bf16_drift.png] [--length 512] [--sink 8]
        [--rotation fp32|bf16_tables] [--lengths 64 128 256 512 --offset 4096]

``--rotation`` picks the bf16 path; ``--lengths`` also writes ``<out>_vs_length.png`` (drift vs T at ``--offset``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import Tensor

from rope_lab.analysis.plots import plot_curve
from rope_lab.pe import AttentionGeometry, Positions, build_pe

ROTATIONS = ("fp32", "bf16_tables")
OFFSETS = [0, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768]


def _coords(length: int, offset: int, anchor: bool) -> Tensor:
    coords = torch.arange(length, dtype=torch.float32) + offset
    if anchor:
        coords[0] = 0.0
    return coords[None, :, None]


def rotate_half(x: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def rotate_with_tables(pe, x: Tensor, coords: Tensor, dtype: torch.dtype) -> Tensor:
    """HF / FlashAttention rotation: fp32 angles ``position * inv_freq``, cos/sin tables (times the scaling's
    attention factor) cast to ``dtype``, ``x * cos + rotate_half(x) * sin`` in ``dtype``."""
    if pe.cfg.pair_layout != "half" or 2 * pe.n_pairs != x.shape[-1]:
        raise ValueError("rotation='bf16_tables' is the HF rotate_half path: it needs pair_layout='half' and a full "
                         f"rotary dim; got pair_layout={pe.cfg.pair_layout!r}, {2 * pe.n_pairs} of {x.shape[-1]} dims")
    state = pe.prepare(Positions(coords=coords))
    freqs = coords[..., :1].float() * state.inv_freq.float()  # (B, T, P), fp32 as HF
    emb, factor = torch.cat((freqs, freqs), dim=-1), state.attention_factor
    cos, sin = (emb.cos() * factor).to(dtype)[:, None], (emb.sin() * factor).to(dtype)[:, None]
    x = x.to(dtype)
    return x * cos + rotate_half(x) * sin


def logits(pe, q: Tensor, k: Tensor, coords: Tensor, dtype: torch.dtype, rotation: str = "fp32") -> Tensor:
    """Causal pre-softmax logits (B, H, T, T) in float64, q.k in ``dtype`` (bf16 as FA2). ``rotation="fp32"``:
    our rotation in fp32 (float64 for ``dtype=float64``: the exact reference), then cast to ``dtype``;
    ``"bf16_tables"``: tables and rotation in ``dtype`` (:func:`rotate_with_tables`)."""
    if rotation not in ROTATIONS:
        raise ValueError(f"rotation must be one of {list(ROTATIONS)}; got {rotation!r}")
    coords = coords.expand(q.shape[0], -1, -1)
    if rotation == "bf16_tables":
        rq, rk = rotate_with_tables(pe, q, coords, dtype), rotate_with_tables(pe, k, coords, dtype)
    else:
        work = torch.float64 if dtype == torch.float64 else torch.float32
        rq, rk = pe.rotate(q.to(work), k.to(work), pe.prepare(Positions(coords=coords)), 0)
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


def drift(pe, q: Tensor, k: Tensor, offsets: list[int] = OFFSETS, reference: int = 16, anchor: bool = False,
          rotation: str = "fp32") -> dict[str, dict[float, float]]:
    """Series {name: {offset: value}} for D (fp32, bf16), E (bf16 vs fp32) and D_logit (first key, bf16).
    ``rotation`` is how the bf16 path rotates; the fp32 path is always our exact fp32 rotation."""
    t = q.shape[-2]
    rot = {torch.float32: "fp32", torch.bfloat16: rotation}
    ref = {dt: logits(pe, q, k, _coords(t, reference, anchor), dt, rot[dt]) for dt in rot}
    out: dict[str, dict[float, float]] = {"D fp32": {}, "D bf16": {}, "E bf16 vs fp32": {}, "D_logit first key bf16": {}}
    for off in offsets:
        cur = {dt: logits(pe, q, k, _coords(t, off, anchor), dt, rot[dt]) for dt in rot}
        for dt, name in ((torch.float32, "D fp32"), (torch.bfloat16, "D bf16")):
            out[name][off] = attention_distance(cur[dt].softmax(-1), ref[dt].softmax(-1))
        out["E bf16 vs fp32"][off] = attention_distance(cur[torch.bfloat16].softmax(-1),
                                                        cur[torch.float32].softmax(-1))
        first = (cur[torch.bfloat16][..., 0] - ref[torch.bfloat16][..., 0]).abs()
        out["D_logit first key bf16"][off] = float(first.sum(1).mean())  # sum over heads, mean over tokens/batch
    return out


def drift_vs_length(pe, q: Tensor, k: Tensor, lengths: list[int], offset: int = 4096, reference: int = 16,
                    anchor: bool = False, rotation: str = "fp32") -> dict[str, dict[float, float]]:
    """:func:`drift`'s series at one ``offset`` as {name: {T: value}}, on the first T tokens of q/k."""
    if max(lengths) > q.shape[-2] or min(lengths) < 1:
        raise ValueError(f"lengths must lie in [1, {q.shape[-2]}] (the q/k length); got {lengths}")
    out: dict[str, dict[float, float]] = {}
    for t in lengths:
        series = drift(pe, q[..., :t, :], k[..., :t, :], [offset], reference, anchor, rotation)
        for name, pts in series.items():
            out.setdefault(name, {})[t] = pts[offset]
    return out


def random_qk(batch: int, heads: int, length: int, head_dim: int, sink: float = 8.0, seed: int = 0):
    """Gaussian q/k; the first key is scaled by ``sink`` so it attracts attention like a trained model's first
    token (the paper: random-init models show little drift, pretrained ones with attention sinks a lot)."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, length, head_dim, generator=g)
    k = torch.randn(batch, heads, length, head_dim, generator=g)
    k[:, :, 0] *= sink
    return q, k


def _rope(head_dim: int, heads: int, base: float):
    pe = build_pe({"name": "rope", "base": base})
    return pe.setup(AttentionGeometry(dim=heads * head_dim, head_dim=head_dim, n_heads=heads, n_kv_heads=heads,
                                      depth=1))


def run(length: int = 512, head_dim: int = 64, heads: int = 4, batch: int = 2, sink: float = 8.0,
        base: float = 10000.0, offsets: list[int] = OFFSETS, rotation: str = "fp32", seed: int = 0
        ) -> dict[str, dict[float, float]]:
    pe = _rope(head_dim, heads, base)
    q, k = random_qk(batch, heads, length, head_dim, sink, seed)
    series = drift(pe, q, k, offsets, rotation=rotation)
    anchored = drift(pe, q, k, offsets, anchor=True, rotation=rotation)
    series["E bf16 vs fp32, anchor at 0"] = anchored["E bf16 vs fp32"]
    return series


def run_vs_length(lengths: list[int], offset: int = 4096, head_dim: int = 64, heads: int = 4, batch: int = 2,
                  sink: float = 8.0, base: float = 10000.0, rotation: str = "fp32", seed: int = 0
                  ) -> dict[str, dict[float, float]]:
    """Drift vs sequence length T at one offset (one q/k draw of the largest T, cut to each T)."""
    q, k = random_qk(batch, heads, max(lengths), head_dim, sink, seed)
    return drift_vs_length(_rope(head_dim, heads, base), q, k, lengths, offset, rotation=rotation)


STUDY_OFFSETS, STUDY_LENGTHS, STUDY_LENGTH_OFFSET = (0, 1024, 32768), (64, 512), 4096
METRIC_NAMES = {"D fp32": "D_fp32", "D bf16": "D_bf16", "E bf16 vs fp32": "E_bf16",
                "E bf16 vs fp32, anchor at 0": "E_bf16_anchor", "D_logit first key bf16": "D_logit_first_key_bf16"}


def study_seed(seed: int, budget: str = "full") -> dict[str, dict[str, float]]:
    """One q/k draw (``seed``) of experiments/bf16_anchor/study.yaml: for both bf16 paths (``fp32 rot``: our exact
    rotation then a cast; ``bf16 tables``: HF/FlashAttention cos/sin tables in bf16), every metric at each offset
    Delta (T = 512) and at each length T (offset 4096). {variant: {metric: value}}; ``budget`` has one tier."""
    out: dict[str, dict[str, float]] = {}
    for rotation, label in (("fp32", "fp32 rot"), ("bf16_tables", "bf16 tables")):
        by_offset = run(length=max(STUDY_LENGTHS), offsets=list(STUDY_OFFSETS), rotation=rotation, seed=seed)
        for off in STUDY_OFFSETS:
            out[f"{label}, Delta={off}"] = {METRIC_NAMES[k]: v[off] for k, v in by_offset.items()}
        by_length = run_vs_length(list(STUDY_LENGTHS), STUDY_LENGTH_OFFSET, rotation=rotation, seed=seed)
        for t in STUDY_LENGTHS:
            out[f"{label}, T={t}"] = {METRIC_NAMES[k]: v[t] for k, v in by_length.items()}
    return out


def plot(series: dict[str, dict[float, float]], out: Path | str) -> Path:
    shown = {k: {max(x, 1.0): v for x, v in pts.items()} for k, pts in series.items()}  # log axis: 0 -> 1
    return plot_curve(shown, out, "position offset Delta (0 plotted at 1)", "attention difference", logy=True,
                      title="bf16 RoPE drift vs absolute position")


def plot_vs_length(series: dict[str, dict[float, float]], out: Path | str, offset: int) -> Path:
    return plot_curve(series, out, "sequence length T", "attention difference", logy=True,
                      title=f"bf16 RoPE drift vs sequence length (offset {offset})")


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bf16_drift.png"))
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--sink", type=float, default=8.0)
    parser.add_argument("--rotation", choices=ROTATIONS, default="fp32", help="how the bf16 path rotates q/k")
    parser.add_argument("--lengths", type=int, nargs="+", help="also plot drift vs these sequence lengths T")
    parser.add_argument("--offset", type=int, default=4096, help="the position offset of the --lengths sweep")
    args = parser.parse_args(argv)
    path = plot(run(length=args.length, sink=args.sink, rotation=args.rotation), args.out)
    print(path)
    if args.lengths:
        series = run_vs_length(args.lengths, args.offset, sink=args.sink, rotation=args.rotation)
        print(plot_vs_length(series, args.out.with_name(f"{args.out.stem}_vs_length.png"), args.offset))
    return path


if __name__ == "__main__":
    main()
