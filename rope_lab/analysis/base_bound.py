"""The RoPE base lower bound of "Base of RoPE Bounds Context Length" (Men, Xu, et al., NeurIPS 2024,
arXiv 2405.14591), computed exactly.

Criterion (long-term decay of the ability to attend more to similar tokens): context length L is supported by base
b only if ``B_m(b) = sum_{i<d/2} cos(m * b^(-2i/d)) >= 0`` for every ``m < L``. The bound is the smallest such b.
Validity is NOT monotone in b (bisection is wrong), so, like Su Jianlin's re-derivation (kexue.fm/archives/10122),
we scan a grid that refines five times: ``B := 1000 L``; for k = 1..5 scan ``b in linspace(0, 1, 10^k + 1)[1:] * B``
upwards and set B to the first valid b. Every grid point below the answer is rejected by a "witness", an m < L with
B_m(b) < 0 evaluated in float64 (unless asked otherwise); the answer itself is accepted only after evaluating every
m < L. So results equal brute force. Speed (1k..1M in ~2 min on a shared 2-core machine; scripts/base_bound.py)
comes from reusing witnesses (B_m(b) is smooth in b: the m refuting one grid point usually refutes its neighbours,
and the one refuting the longest run ahead is kept) and from full scans as two small matrix products (_all_decay).
"""

from __future__ import annotations

import numpy as np

HEAD_DIM = 128
LENGTHS = [1024 * 2**k for k in range(11)]  # 1k .. 1M
#: The paper's lower-bound table (Fig. 1 / the table reproduced in kexue.fm/archives/10122, row "原文"), d = 128.
PAPER = [4.3e3, 1.6e4, 2.7e4, 8.4e4, 3.1e5, 6.4e5, 2.1e6, 7.8e6, 3.6e7, 6.4e7, 5.1e8]
#: Su Jianlin's re-computation (same blog, row "本文"), float32 JAX.
SU = [4.3e3, 1.2e4, 2.7e4, 8.4e4, 2.3e5, 6.3e5, 2.1e6, 4.9e6, 2.4e7, 5.8e7, 6.5e7]

_CHUNK = 1 << 14  # m values per vectorised step of a direct scan
_BLOCK = 1024  # R of the fast scan
_MARGIN = 1e-6
_MAX_WITNESSES = 1024
_CONTENDERS = 64  # refuting witnesses compared for the longest run
_LOOKAHEAD = 16


def decay(b: float, m: np.ndarray, head_dim: int = HEAD_DIM, dtype=np.float64) -> np.ndarray:
    """B_m(b) = sum_i cos(m theta_i), theta_i = b^(-2i/d), i = 0..d/2-1 (HF / RoFormer frequencies)."""
    theta = dtype(b) ** (-(np.arange(head_dim // 2) * 2 / head_dim).astype(dtype))
    return np.cos(np.asarray(m, dtype=dtype)[..., None] * theta).sum(-1, dtype=dtype)


def first_negative(b: float, length: int, head_dim: int = HEAD_DIM, dtype=np.float64) -> int | None:
    """The smallest m < length with B_m(b) < 0, or None if b supports the length."""
    for start in range(0, length, _CHUNK):
        m = np.arange(start, min(start + _CHUNK, length))
        neg = np.flatnonzero(decay(b, m, head_dim, dtype) < 0)
        if neg.size:
            return int(m[neg[0]])
    return None


class BoundSearch:
    """Exact validity checks for one (L, d, dtype), sharing witnesses across candidates."""

    def __init__(self, length: int, head_dim: int = HEAD_DIM, dtype=np.float64) -> None:
        if length < 1 or head_dim < 2 or head_dim % 2:
            raise ValueError(f"need length >= 1 and an even head_dim >= 2; got length={length}, head_dim={head_dim}")
        self.length, self.head_dim, self.dtype = length, head_dim, dtype
        self.exponent = (np.arange(head_dim // 2) * 2 / head_dim).astype(dtype)
        self.witnesses: list[int] = []  # m values that refuted earlier candidates, most recent first

    def _theta(self, bases) -> np.ndarray:
        return np.asarray(bases, dtype=self.dtype).reshape(-1, 1) ** (-self.exponent)

    def _decay(self, theta: np.ndarray, m: np.ndarray) -> np.ndarray:
        """B_m for one base (theta of shape (d/2,)) and many m."""
        return np.cos(m.astype(self.dtype)[:, None] * theta).sum(-1, dtype=self.dtype)

    def _all_decay(self, theta: np.ndarray) -> np.ndarray:
        """B_m for every m < L at one base, fast: with m = q R + r, cos(m t) = cos(qRt) cos(rt) - sin(qRt) sin(rt),
        so all of B is two (L/R x d/2) @ (d/2 x R) matrix products. Its float64 error is < 1e-7 (angles q R t and
        r t are each rounded to < 1.2e-10 rad for m t < 1e6, over d/2 terms), so values within _MARGIN of 0 are
        re-evaluated directly: every sign decided here equals the direct float64 evaluation's."""
        r = np.arange(_BLOCK, dtype=self.dtype)[:, None] * theta
        q = np.arange(0, self.length, _BLOCK, dtype=self.dtype)[:, None] * theta
        f = (np.cos(q) @ np.cos(r).T - np.sin(q) @ np.sin(r).T).reshape(-1)[: self.length]
        close = np.flatnonzero(np.abs(f) < _MARGIN)
        f[close] = self._decay(theta, close)
        return f

    def _witnesses(self, theta: np.ndarray) -> np.ndarray:
        """Up to _CONTENDERS m < L with B_m < 0, most negative first (empty when the base is valid). Searches near
        recent witnesses first, then every m < L."""
        near = [np.arange(max(0, m0 - 64), min(self.length, m0 + 64)) for m0 in self.witnesses[:8]]
        if near:
            m = np.unique(np.concatenate(near))
            f = self._decay(theta, m)
            if f.min() < 0:
                return m[np.argsort(f)[: min(_CONTENDERS, int((f < 0).sum()))]]
        if self.dtype == np.float64 and self.length > _BLOCK:
            f = self._all_decay(theta)
        else:  # float32 (Su's rounding) or short: direct evaluation of every m
            f = np.concatenate([self._decay(theta, np.arange(s, min(s + _CHUNK, self.length)))
                                for s in range(0, self.length, _CHUNK)])
        neg = np.flatnonzero(f < 0)
        if neg.size > _CONTENDERS:
            neg = neg[np.argpartition(f[neg], _CONTENDERS)[:_CONTENDERS]]
        return neg[np.argsort(f[neg])]

    def _remember(self, m: int) -> None:
        if m in self.witnesses:
            self.witnesses.remove(m)
        self.witnesses.insert(0, m)
        del self.witnesses[_MAX_WITNESSES:]

    def valid(self, b: float) -> bool:
        ms = self._witnesses(self._theta([b])[0])
        if ms.size:
            self._remember(int(ms[0]))
        return not ms.size

    def _run(self, grid: np.ndarray, i: int, ms: np.ndarray) -> tuple[int, int]:
        """For candidate witnesses ``ms`` (all refuting grid[i]): the one refuting the longest run of grid points
        from i on, and where that run ends (the first grid point it does not refute, or len(grid)). Looks ahead
        in doubling steps, keeping only the candidates that refuted everything so far."""
        start, size = i + 1, _LOOKAHEAD
        while start < len(grid):
            end = min(start + size, len(grid))
            ok = np.cos(ms[:, None, None] * self._theta(grid[start:end])[None]).sum(-1, dtype=self.dtype) >= 0
            covering = ~ok.any(1)
            if not covering.any():
                return int(ms[np.argmax(ok.argmax(1))]), start + int(ok.argmax(1).max())
            ms, start, size = ms[covering], end, 2 * size
        return int(ms[0]), len(grid)

    def first_valid(self, grid: np.ndarray) -> float | None:
        """The first valid base of an increasing grid (None if there is none). Walks the grid in runs: at each
        grid point not yet refuted, the remembered witnesses that refute it compete for the longest run of
        refuted grid points ahead; if none refutes it, a witness is searched for (or the point is the answer)."""
        i = 0
        while i < len(grid):
            theta = self._theta(grid[i : i + 1])[0]
            ms = np.array(self.witnesses[:_CONTENDERS], dtype=self.dtype)  # the recent ones usually suffice
            ms = ms[self._decay(theta, ms) < 0] if ms.size else ms
            if not ms.size and len(self.witnesses) > _CONTENDERS:
                ms = np.array(self.witnesses[_CONTENDERS:], dtype=self.dtype)
                ms = ms[self._decay(theta, ms) < 0]
            if not ms.size:
                ms = self._witnesses(theta).astype(self.dtype)
                if not ms.size:
                    return float(grid[i])
            m, i = self._run(grid, i, ms[:_CONTENDERS])
            self._remember(m)
        return None


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
