"""k-means++ seeding + Lloyd iterations in torch, as A²ATS builds its codebooks (He et al., ACL Findings 2025).

Reference implementation: junhuihe-hjh/A2ATS ``vqkey/kmeans-gpu/kmeans_gpu/kmeans.py`` (``KMeansPlusPlus``): the
first centroid uniformly at random, each next one sampled with probability proportional to the squared distance to
the nearest chosen centroid (one draw, no greedy trials); then Lloyd steps until the Frobenius norm of the centroid
shift is below ``tol`` (1e-4) or ``max_iter`` (300) steps. One deliberate difference: an empty cluster keeps its
previous centroid (the reference divides a zero sum by 1 and moves it to the origin).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

#: rows per block when computing point-to-centroid distances (bounds memory at 4096 centroids)
ROW_BLOCK = 8192


@dataclass
class KMeansResult:
    centroids: Tensor  # (C, D)
    labels: Tensor  # (N,) long
    inertia: float  # sum of squared distances to the assigned centroids
    iterations: int


def squared_distances(x: Tensor, centroids: Tensor) -> Tensor:
    """(N, D), (C, D) -> (N, C) squared Euclidean distances (clamped at 0 against rounding)."""
    cross = x @ centroids.T
    return ((x * x).sum(-1, keepdim=True) - 2.0 * cross + (centroids * centroids).sum(-1)).clamp_min(0.0)


def assign(x: Tensor, centroids: Tensor) -> tuple[Tensor, Tensor]:
    """Nearest centroid of every row and its squared distance, blockwise over rows."""
    labels, dists = [], []
    for s in range(0, x.shape[0], ROW_BLOCK):
        d = squared_distances(x[s : s + ROW_BLOCK], centroids)
        best = d.min(dim=-1)
        labels.append(best.indices)
        dists.append(best.values)
    return torch.cat(labels), torch.cat(dists)


def kmeans_plus_plus(x: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii 2007), one sample per step as the reference does."""
    n = x.shape[0]
    first = torch.randint(0, n, (1,), generator=generator, device=x.device)
    centroids = [x[first[0]]]
    nearest = torch.full((n,), float("inf"), dtype=x.dtype, device=x.device)
    for _ in range(1, k):
        nearest = torch.minimum(nearest, squared_distances(x, centroids[-1][None])[:, 0])
        if nearest.sum() <= 0:  # fewer distinct points than centroids: any point will do
            index = torch.randint(0, n, (1,), generator=generator, device=x.device)
        else:
            index = torch.multinomial(nearest / nearest.sum(), 1, generator=generator)
        centroids.append(x[index[0]])
    return torch.stack(centroids)


def lloyd(x: Tensor, centroids: Tensor, max_iter: int = 300, tol: float = 1e-4) -> KMeansResult:
    """Lloyd's iterations from ``centroids`` until the centroid shift (Frobenius norm) is below ``tol``."""
    k = centroids.shape[0]
    steps = 0
    for steps in range(1, max_iter + 1):
        labels, _ = assign(x, centroids)
        sums = torch.zeros_like(centroids).index_add_(0, labels, x)
        counts = torch.bincount(labels, minlength=k).to(x.dtype)
        new = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], centroids)
        shift = (new - centroids).norm()
        centroids = new
        if shift < tol:
            break
    labels, dists = assign(x, centroids)
    return KMeansResult(centroids, labels, float(dists.sum()), steps)


def kmeans(x: Tensor, k: int, max_iter: int = 300, tol: float = 1e-4, seed: int = 0) -> KMeansResult:
    """Euclidean k-means++ on the rows of x (N, D)."""
    if not 1 <= k <= x.shape[0]:
        raise ValueError(f"k-means needs 1 <= codebook_size <= number of calibration vectors; got codebook_size={k} "
                         f"for {x.shape[0]} vectors (calibrate on more tokens or choose a smaller codebook_size)")
    generator = torch.Generator(device=x.device).manual_seed(seed)
    return lloyd(x, kmeans_plus_plus(x, k, generator), max_iter, tol)
