"""A²ATS query-aware vector quantization: calibration statistics and codebooks (He et al., ACL Findings 2025,
arXiv 2502.12665, §"Query-Aware Vector Quantization").

The retrieval score error of replacing a key k by a centroid c is q̃^T (k - c); its mean square over calibration
queries is (k - c)^T H (k - c) with H = E[q̃ q̃^T] (q̃ = R_w q, the WRoPE queries; per key head, pooled over the GQA
group). With H normalised by sqrt(mean(H²)) and L = chol(H + 1e-6 I), that is ||(k - c) L||², so Euclidean k-means
on ``k @ L`` minimises it; the centroids C̃ and L are stored (rope_lab/pe/variants/attention/a2ats_codebooks.py).
``query_aware=False`` is the plain-key k-means baseline (H = I, L = I). Reference implementation: junhuihe-hjh/A2ATS
``vqkey/notebooks/construct_codebooks.py`` (``H = q.T @ q``, ``H / (H**2).mean().sqrt()``, ``cholesky(H + eps I)``,
``KMeansPlusPlus(codebook_size).fit(keys @ L)``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from rope_lab.analysis.kmeans import kmeans
from rope_lab.pe.variants.attention.a2ats_codebooks import CodebookFile

EPSILON = 1e-6  # the reference's ridge on the normalised H


class QueryKeyCollector:
    """A ``pe=a2ats`` recorder: accumulates H = sum q̃ q̃^T per (layer, key head) in float64 and keeps the pre-RoPE
    keys (float32) for k-means. Set it as ``pe.recorder`` while running calibration text through the model."""

    def __init__(self, depth: int) -> None:
        self.second_moment: list[Tensor | None] = [None] * depth
        self.keys: list[list[Tensor]] = [[] for _ in range(depth)]

    def __call__(self, layer: int, q_w: Tensor, k: Tensor) -> None:
        b, h, n, d = q_w.shape
        hkv = k.shape[1]
        q = q_w.detach().double().reshape(b, hkv, h // hkv, n, d)
        moment = torch.einsum("bhgnd,bhgne->hde", q, q)
        prev = self.second_moment[layer]
        self.second_moment[layer] = moment if prev is None else prev + moment
        self.keys[layer].append(k.detach().float().transpose(0, 1).reshape(hkv, b * n, d))

    def layer_keys(self, layer: int) -> Tensor:
        """(Hkv, N, D) every pre-RoPE key seen by ``layer``."""
        if not self.keys[layer]:
            raise ValueError(f"no calibration keys were recorded for layer {layer}; run text through a pe=a2ats model "
                             f"with this collector as pe.recorder")
        return torch.cat(self.keys[layer], dim=1)

    @property
    def n_tokens(self) -> int:
        return self.layer_keys(0).shape[1]


def query_aware_factor(second_moment: Tensor) -> Tensor:
    """L = chol(H / sqrt(mean(H²)) + 1e-6 I) for H (.., D, D); lower triangular, float64."""
    h = second_moment.double()
    h = h / (h * h).mean(dim=(-2, -1), keepdim=True).sqrt()
    eye = torch.eye(h.shape[-1], dtype=h.dtype, device=h.device)
    return torch.linalg.cholesky(h + EPSILON * eye)


def build_codebooks(collector: QueryKeyCollector, codebook_size: int, relative_pos: int, query_aware: bool = True,
                    max_iter: int = 300, tol: float = 1e-4, seed: int = 0) -> CodebookFile:
    """Centroids (depth, Hkv, C, D) of k-means on k @ L per layer and key head, with their factors L."""
    centroids, factors = [], []
    for layer in range(len(collector.keys)):
        keys = collector.layer_keys(layer)
        hkv, _, d = keys.shape
        if query_aware:
            chol = query_aware_factor(collector.second_moment[layer]).float()
        else:
            chol = torch.eye(d).expand(hkv, d, d)
        fits = [kmeans(keys[i] @ chol[i], codebook_size, max_iter, tol, seed=seed + 1000 * layer + i)
                for i in range(hkv)]
        centroids.append(torch.stack([f.centroids for f in fits]))
        factors.append(chol)
    return CodebookFile(torch.stack(centroids), torch.stack(factors), relative_pos, query_aware, collector.n_tokens)


def relative_score_error(collector: QueryKeyCollector, book: CodebookFile) -> list[float]:
    """Per layer, the mean squared WRoPE-score error of the quantized keys relative to the mean squared score,
    sum_(q,k) (q̃ . (k - k̂))² / sum_(q,k) (q̃ . k)², over every query/key pair of the same key head recorded by
    ``collector`` (held-out text): with H = sum q̃ q̃^T both sums are quadratic forms of the keys."""
    from rope_lab.pe.variants.attention.a2ats_codebooks import assign_codes, gather_codes, keyspace_codebook

    errors = []
    for layer, moment in enumerate(collector.second_moment):
        keys = collector.layer_keys(layer).double()
        chol, cent = book.cholesky[layer].double(), book.centroids[layer].double()
        k_hat = gather_codes(keyspace_codebook(cent, chol), assign_codes(keys[None], chol, cent))[0]
        form = lambda x: torch.einsum("hnd,hde,hne->", x, moment, x)  # noqa: E731
        errors.append(float(form(keys - k_hat) / form(keys)))
    return errors
