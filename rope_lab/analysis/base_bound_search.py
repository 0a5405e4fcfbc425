"""The exact search behind rope_lab.analysis.base_bound: B_m(b) = sum_{i<d/2} cos(m b^(-2i/d)) and the smallest
valid point of one of Su's grids (valid: B_m >= 0 for every m < L).

Every rejected grid point gets a witness, an m < L with B_m(b) < 0 evaluated directly (float64 unless asked
otherwise); the accepted point gets every m < L evaluated, as two float64 matrix products with the values near 0
re-evaluated directly, so every sign is that of direct evaluation. Witnesses are found cheaply and in batches:
B_m(b) is smooth in b, so the witness of one grid point usually refutes its neighbours and the nearby points of the
next, finer grid; new ones are searched for in m-windows around known witnesses, then from m = L downwards (where
they cluster), with the same matrix products (a search: whatever it finds is checked directly).
"""

from __future__ import annotations

import numpy as np
import torch

HEAD_DIM = 128
_BLOCK = 8192  # grid points resolved together (a grid's first block has 512, then doubling)
_WINDOW = 64  # half-width of the m-windows searched around known witnesses (8x on a point's second try)
_ROW = 32  # consecutive m's per matrix-product row in window searches
_CHUNK = 1 << 15  # m's per chunk of a top-down search
_TOP = 2  # chunks a batched top-down search covers before a point gets a full scan of its own
_BATCH = 64  # points per batched top-down search
_POOL = 128  # recent witnesses, tried directly where the windows fail


def _theta(bases, head_dim: int, dtype) -> torch.Tensor:
    """theta_i = b^(-2i/d), i < d/2 (HF / RoFormer frequencies): one row per base, in `dtype`."""
    exponent = (np.arange(head_dim // 2) * 2 / head_dim).astype(dtype)
    bases = np.asarray(bases, dtype=dtype).reshape(-1, 1)
    if dtype == np.float64:
        return torch.from_numpy(bases) ** -torch.from_numpy(exponent)
    # numpy's float32 power, as in the reference float32 run: torch's differs in the last bit, which moves the 2k value
    return torch.from_numpy(bases ** -exponent)


def _direct(theta: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """B_m(b) evaluated directly, for each base (row of theta) and each m of its row of m: (n, k)."""
    return torch.cos_(m.to(theta.dtype)[..., None] * theta[:, None, :]).sum(-1)


def decay(b: float, m, head_dim: int = HEAD_DIM, dtype=np.float64) -> np.ndarray:
    """B_m(b) = sum_i cos(m theta_i), theta_i = b^(-2i/d), i = 0..d/2-1 (HF / RoFormer frequencies)."""
    m = np.asarray(m)
    return _direct(_theta([b], head_dim, dtype), torch.as_tensor(m.reshape(1, -1)))[0].reshape(m.shape).numpy()


def first_negative(b: float, length: int, head_dim: int = HEAD_DIM, dtype=np.float64) -> int | None:
    """The smallest m < length with B_m(b) < 0, or None if b supports the length."""
    theta = _theta([b], head_dim, dtype)
    for start in range(0, length, 1 << 14):
        neg = (_direct(theta, torch.arange(start, min(start + (1 << 14), length))[None])[0] < 0).nonzero()
        if len(neg):
            return start + int(neg[0, 0])
    return None


class BoundSearch:
    """Exact validity checks for one (L, d, dtype) along Su's grids; each grid's witnesses seed the next one."""

    def __init__(self, length: int, head_dim: int = HEAD_DIM, dtype=np.float64) -> None:
        if length < 1 or head_dim < 2 or head_dim % 2:
            raise ValueError(f"need length >= 1 and an even head_dim >= 2; got length={length}, head_dim={head_dim}")
        self.length, self.head_dim, self.dtype = length, head_dim, dtype
        # |matrix form - direct| <= 1.5 d L 2^-53 + O(d 1e-16): both round each angle by <= L 2^-53 rad (3 roundings
        # for d/2 terms); values closer to 0 than 5x that are re-evaluated directly in exact scans
        self.margin = max(1e-6, 8 * head_dim * length * 2.0**-53)
        self.pool = torch.empty(0, dtype=torch.int64)  # recent witnesses, newest first
        self.known_b, self.known_m = np.empty(0), self.pool  # the last grid's rejected points and their witnesses

    def _values(self, theta: torch.Tensor, starts: torch.Tensor, width: int, exact: bool = False) -> torch.Tensor:
        """B_m for each base at m = starts[..., j] + r, r < width: (n, k, width), +inf where m >= L; starts is (k,)
        for all bases or (n, k). float64: cos((s + r) t) expanded into two batched matrix products of cos/sin
        tables; if exact, values within self.margin of 0 are re-evaluated directly: all signs are then those of
        direct evaluation."""
        starts = starts.expand(len(theta), -1) if starts.dim() == 1 else starts
        r = torch.arange(width)
        if self.dtype == np.float64:
            s, t = starts.to(theta.dtype)[..., None] * theta[:, None, :], r[:, None] * theta[:, None, :]
            f = torch.cos(s) @ torch.cos(t).mT
            f.baddbmm_(s.sin_(), t.sin_().mT, alpha=-1)  # in place: large temporaries cost page faults
            close = ((f < self.margin) & (f > -self.margin)).nonzero() if exact else []
            if len(close):
                m = starts[close[:, 0], close[:, 1]] + close[:, 2]
                f[close.unbind(1)] = _direct(theta[close[:, 0]], m[:, None])[:, 0]
        else:  # float32 (Su's rounding): direct evaluation only, a base at a time to bound memory
            m = (starts[..., None] + r).flatten(1)
            f = torch.cat([_direct(theta[i: i + 1], m[i: i + 1]) for i in range(len(theta))])
            f = f.view(len(theta), -1, width)
        if int(starts.max()) + width > self.length:
            f.masked_fill_(r >= (self.length - starts)[..., None], float("inf"))
        return f

    def _search(self, theta: torch.Tensor, starts: torch.Tensor, width: int) -> torch.Tensor:
        """Per base, the m with the smallest _values if B_m < 0 there (evaluated directly), else -1."""
        k = self._values(theta, starts, width).flatten(1).argmin(1, keepdim=True)
        m = (starts.expand(len(theta), -1) if starts.dim() == 1 else starts).gather(1, k // width) + k % width
        return torch.where(_direct(theta, m)[:, 0] < 0, m[:, 0], -1)

    @staticmethod
    def _try(theta: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        """Per base, its candidate (row of cand; -1: none) with the smallest B_m if that is < 0, else -1."""
        f = _direct(theta, cand).masked_fill_(cand < 0, float("inf"))
        k = f.argmin(1, keepdim=True)
        return torch.where(f.gather(1, k)[:, 0] < 0, cand.gather(1, k)[:, 0], -1)

    def _probe(self, theta: torch.Tensor, centers: torch.Tensor, half: int) -> torch.Tensor:
        """Per base, a witness within `half` of one of its centers (row of centers), else in the pool; else -1."""
        if self.length <= 2 * half * centers.shape[1]:
            starts = torch.arange(0, self.length, _ROW)
        else:
            lo = torch.clamp(centers - half, 0, self.length) // _ROW * _ROW
            starts = (lo[..., None] + torch.arange(0, 2 * half + _ROW, _ROW)).flatten(1).clamp_(max=self.length - 1)
        step = max(1, 8192 // starts.shape[-1])  # bounds the tables' memory
        found = torch.cat([self._search(theta[k: k + step], starts if starts.dim() == 1 else starts[k: k + step],
                                        min(_ROW, self.length)) for k in range(0, len(theta), step)])
        miss = (found < 0).nonzero()[:, 0]
        if len(miss) and len(self.pool):
            found[miss] = self._try(theta[miss], self.pool.expand(len(miss), -1))
        return found

    def _chunks(self) -> tuple[list[torch.Tensor], int]:
        """The row starts of the m-chunks of a top-down search, highest first, and the rows' width."""
        width = min(256, self.length)
        return [torch.arange(max(0, hi - _CHUNK), hi, width) for hi in range(self.length, 0, -_CHUNK)], width

    def _scan(self, theta: torch.Tensor) -> torch.Tensor:
        """Per base, a witness from the top _TOP chunks (the smallest B_m of the highest chunk with one), else -1."""
        found, (chunks, width) = torch.full((len(theta),), -1, dtype=torch.int64), self._chunks()
        for starts in chunks[:_TOP]:
            todo = (found < 0).nonzero()[:, 0]
            if not len(todo):
                break
            for part in todo.split(16):
                found[part] = self._search(theta[part], starts, width)
        return found

    def _refute(self, theta: torch.Tensor, skip: int = 0) -> int:
        """A witness for one base (theta of shape (1, d/2)), or -1 if B_m >= 0 for every m < L (exact). The first
        `skip` chunks (searched already) come last."""
        chunks, width = self._chunks()
        for starts in chunks[skip:] + chunks[:skip]:
            f = self._values(theta, starts, width, exact=True).reshape(-1)
            k = int(f.argmin())
            if f[k] < 0:
                return int(starts[k // width]) + k % width
        return -1

    def valid(self, b: float) -> bool:
        return self._refute(_theta([b], self.head_dim, self.dtype)) < 0

    def _remember(self, found: torch.Tensor) -> None:
        found = torch.unique(found[found >= 0])
        self.pool = torch.cat([found, self.pool[~torch.isin(self.pool, found)]])[:_POOL]

    @staticmethod
    def _neighbours(wit: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """The witnesses of the nearest refuted points left and right of each point: (len(points), 2), -1: none."""
        idx, n = torch.arange(len(wit)), len(wit)
        left = torch.where(wit >= 0, idx, -1).cummax(0).values[points]
        right = torch.where(wit >= 0, idx, n).flip(0).cummin(0).values.flip(0)[points]
        return torch.stack([torch.where(left >= 0, wit[left.clamp(min=0)], -1),
                            torch.where(right < n, wit[right.clamp(max=n - 1)], -1)], 1)

    def _spread(self, theta: torch.Tensor, wit: torch.Tensor) -> None:
        """Tries on the unrefuted points their nearest refuted neighbours' witnesses while that helps."""
        for _ in range(4):
            todo = (wit < 0).nonzero()[:, 0]
            if len(todo) in (0, len(wit)):
                return
            found = self._try(theta[todo], self._neighbours(wit, todo))
            if not (found >= 0).any():
                return
            wit[todo] = found

    def _resolve(self, block: np.ndarray) -> tuple[torch.Tensor, int | None]:
        """Witnesses for a block of grid points up to its first valid one, and that one's index (None: all are
        refuted). Cheapest first: the witnesses of the nearest points of the previous grid; those of refuted
        neighbours; windows around both (batched, every 4th point of a run, 8x wider on a second try); a batched
        search down from L; a full scan of the first point left."""
        theta, n = _theta(block, self.head_dim, self.dtype), len(block)
        wit, hist = torch.full((n,), -1, dtype=torch.int64), torch.empty(n, 0, dtype=torch.int64)
        if len(self.known_b):
            at = np.clip(np.searchsorted(self.known_b, block)[:, None] + np.arange(-2, 2), 0, len(self.known_b) - 1)
            hist = self.known_m[torch.from_numpy(at)]
            wit = self._try(theta, hist[:, 1:2])  # the nearest lower point's witness usually does
            miss = (wit < 0).nonzero()[:, 0]
            wit[miss] = self._try(theta[miss], hist[miss])
        tries, deep = torch.zeros(n, dtype=torch.int64), torch.zeros(n, dtype=torch.bool)
        while True:
            self._spread(theta, wit)
            todo = wit < 0
            if not todo.any():
                return wit, None
            run_start = torch.where(todo & torch.cat([torch.tensor([True]), ~todo[:-1]]), torch.arange(n), 0)
            every4th = (torch.arange(n) - run_start.cummax(0).values) % 4 == 0
            attempt = 0 if (todo & every4th & (tries == 0)).any() else 1
            probes = (todo & every4th & (tries == attempt)).nonzero()[:, 0]
            if len(probes):
                centers = torch.cat([self._neighbours(wit, probes), hist[probes]], 1)
                centers = torch.where(centers >= 0, centers, centers.amax(1, keepdim=True))
                wit[probes] = self._probe(theta[probes], centers, _WINDOW * 8**attempt)
                tries[probes] += 1
                self._remember(wit[probes])
                continue
            j = int(todo.nonzero()[0, 0])
            if not deep[j]:
                top = (todo & ~deep).nonzero()[:_BATCH, 0]
                wit[top], deep[top] = self._scan(theta[top]), True
                self._remember(wit[top])
                continue
            wit[j] = self._refute(theta[j: j + 1], _TOP)
            if wit[j] < 0:
                return wit, j
            self._remember(wit[j: j + 1])

    def first_valid(self, grid: np.ndarray) -> float | None:
        """The first valid base of an increasing grid (None if there is none), resolved block by block."""
        done_b, done_m, start, size = [], [], 0, 512
        while start < len(grid):
            block = grid[start: start + size]
            start, size = start + size, min(2 * size, _BLOCK)
            wit, j = self._resolve(block)
            if j is not None:
                self.known_b, self.known_m = np.concatenate(done_b + [block[:j]]), torch.cat(done_m + [wit[:j]])
                return float(block[j])
            done_b.append(block), done_m.append(wit)
        return None
