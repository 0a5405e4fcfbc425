"""The RoPE base lower bound of "Base of RoPE Bounds Context Length" (Men, Xu, et al., NeurIPS 2024,
arXiv 2405.14591), computed exactly.

Criterion (long-term decay of the ability to attend more to similar tokens): context length L is supported by base
b only if ``B_m(b) = sum_{i<d/2} cos(m * b^(-2i/d)) >= 0`` for every ``m < L``. The bound is the smallest such b.
Validity is NOT monotone in b (bisection is wrong), so, like Su Jianlin's re-derivation (kexue.fm/archives/10122),
we scan a grid that refines five times: ``B := 1000 L``; for k = 1..5 scan ``b in linspace(0, 1, 10^k + 1)[1:] * B``
upwards and set B to the first valid b. Every grid point below the answer is rejected by a "witness", an m < L with
B_m(b) < 0 evaluated directly in float64 (unless asked otherwise); the answer itself is accepted only after every
m < L is checked. So results equal brute force. How witnesses are found fast (all of 1k..1M in ~6 s on the shared
2-core machine; scripts/base_bound.py): rope_lab/analysis/base_bound_search.py.
"""

from __future__ import annotations

import numpy as np

from rope_lab.analysis.base_bound_search import HEAD_DIM, BoundSearch, decay, first_negative

__all__ = ["HEAD_DIM", "LENGTHS", "PAPER", "SU", "BoundSearch", "base_bound", "base_sweep_tables", "bound_table",
           "decay", "first_negative"]

LENGTHS = [1024 * 2**k for k in range(11)]  # 1k .. 1M
#: The paper's lower-bound table (Fig. 1 / the table reproduced in kexue.fm/archives/10122, row "原文"), d = 128.
PAPER = [4.3e3, 1.6e4, 2.7e4, 8.4e4, 3.1e5, 6.4e5, 2.1e6, 7.8e6, 3.6e7, 6.4e7, 5.1e8]
#: Su Jianlin's re-computation (same blog, row "本文"), float32 JAX.
SU = [4.3e3, 1.2e4, 2.7e4, 8.4e4, 2.3e5, 6.3e5, 2.1e6, 4.9e6, 2.4e7, 5.8e7, 6.5e7]


def base_bound(length: int, head_dim: int = HEAD_DIM, dtype=np.float64, levels: int = 5) -> float:
    """Su's five-level grid search for the smallest valid base (exact checks; see the module docstring)."""
    search, upper = BoundSearch(length, head_dim, dtype), 1000.0 * length
    if not search.valid(upper):
        raise ValueError(f"no valid base up to 1000 * L = {upper:g} for L={length}, d={head_dim}")
    for k in range(1, levels + 1):
        upper = search.first_valid(np.linspace(0, 1, 10**k + 1)[1:] * upper)
    return upper


def bound_table(lengths: list[int] = LENGTHS, head_dim: int = HEAD_DIM, dtype=np.float64) -> list[float]:
    return [base_bound(n, head_dim, dtype) for n in lengths]


def base_sweep_tables(runs: list, out_dir) -> list:
    """For LM runs that differ only in ``pe.base`` (``experiment=base_bound/sweep``): the paper-style table (base,
    whether it is >= the exact bound for the run's context and head dim, ppl, passkey accuracy per depth) and a
    passkey-accuracy-vs-base plot. Returns [] when the runs do not sweep the base."""
    from pathlib import Path

    from rope_lab.analysis.plots import plot_curve
    from rope_lab.analysis.results import markdown_table

    bases = {r.config.get("pe", {}).get("base") for r in runs}
    if len(bases) < 2 or None in bases:
        return []
    first = runs[0].config
    length = int(first["task"]["train_length"])
    head_dim = int(first["backbone"]["dim"]) // int(first["backbone"]["n_heads"])
    bound = base_bound(length, head_dim)
    depths = sorted({k.split("depth=")[1] for r in runs for k in r.metrics if "passkey@" in k and "depth=" in k})
    rows, acc = [], {}
    for r in sorted(runs, key=lambda r: r.config["pe"]["base"]):
        b = float(r.config["pe"]["base"])
        neg = first_negative(b, length, head_dim)
        pk = [r.metrics.get(f"val/passkey@len={length}/depth={d}", float("nan")) for d in depths]
        rows.append([f"{b:g}", "yes" if neg is None else f"no (B<0 at m={neg})",
                     r.metrics.get(f"val/ppl@{length}", float("nan")), *pk])
        acc[b] = r.metrics.get("val/passkey_acc", float("nan"))
    header = ["base", f"B_m >= 0 for all m < {length}", f"ppl@{length}", *[f"passkey depth={d}" for d in depths]]
    out = Path(out_dir)
    table = out / "base_bound_sweep.md"
    table.write_text(f"Base sweep at context {length}, head_dim {head_dim}: exact bound b* = {bound:.6g}\n\n"
                     + markdown_table(rows, header) + "\n")
    plot = plot_curve({"passkey accuracy (mean over depths)": acc}, out / "passkey_vs_base.png", "RoPE base",
                      "passkey accuracy", logx=True, title=f"context {length}: exact bound b* = {bound:.4g}")
    return [table, plot]
