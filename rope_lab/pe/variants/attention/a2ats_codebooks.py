"""A²ATS query-aware vector quantization of pre-RoPE keys (He et al., ACL Findings 2025, arXiv 2502.12665).

Per layer and key head the calibration (rope_lab/analysis/a2ats.py) stores centroids C̃ (C, D) learned by
Euclidean k-means on ``k @ L`` and the Cholesky factor L of the query second-moment H = E[q̃ q̃^T]. Since
``||(k - c) L||² = (k - c)^T L L^T (k - c) = (k - c)^T H (k - c)``, the code of a key, ``argmin_c ||k L - c̃||``,
minimises the expected squared error of the WRoPE score, and the codebook in key space is ``C̃ L^-1``. Reference
implementation: junhuihe-hjh/A2ATS ``vqkey/notebooks/construct_codebooks.py`` (writes C̃, L and L^-1) and
``vqkey/models/llama_masked.py`` (``argmin(cdist(key_states @ cholesky_factor, codebook))``,
``codebook @ inv_cholesky_factor``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

FORMAT = "rope_lab/a2ats-codebooks/1"


@dataclass
class CodebookFile:
    """What a calibration writes: centroids (depth, Hkv, C, D) in the L-space and Cholesky factors (depth, Hkv, D, D),
    plus how they were made (``relative_pos`` of the WRoPE queries, whether H came from queries or is I)."""

    centroids: Tensor
    cholesky: Tensor
    relative_pos: int
    query_aware: bool
    n_tokens: int

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"format": FORMAT, "centroids": self.centroids.float().contiguous(),
                    "cholesky": self.cholesky.float().contiguous(), "relative_pos": int(self.relative_pos),
                    "query_aware": bool(self.query_aware), "n_tokens": int(self.n_tokens)}, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> CodebookFile:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"pe.codebooks={path}: no such file; write one with `python -m "
                                    f"rope_lab.analysis.a2ats --ckpt <run>/checkpoints/last.ckpt --out {path}`, or "
                                    f"set pe.codebooks=null for WRoPE retrieval on exact keys")
        raw = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise ValueError(f"pe.codebooks={path} is not an A²ATS codebook file of format '{FORMAT}'")
        return cls(raw["centroids"], raw["cholesky"], raw["relative_pos"], raw["query_aware"], raw["n_tokens"])

    def check(self, depth: int, n_kv_heads: int, head_dim: int, source: str) -> None:
        """Refuse a file made for another model: shapes must be (depth, n_kv_heads, ., head_dim)."""
        want = (depth, n_kv_heads, head_dim)
        got = (*self.centroids.shape[:2], self.centroids.shape[-1])
        if got != want or tuple(self.cholesky.shape) != (depth, n_kv_heads, head_dim, head_dim):
            raise ValueError(f"pe.codebooks={source} was calibrated for (depth, n_kv_heads, head_dim) = {got}, but "
                             f"this model has {want}; calibrate codebooks on this model's checkpoint")


def keyspace_codebook(centroids: Tensor, cholesky: Tensor) -> Tensor:
    """C̃ L^-1 (row vectors): the centroids as pre-RoPE keys. (.., C, D), (.., D, D) -> (.., C, D)."""
    return torch.linalg.solve_triangular(cholesky, centroids, upper=False, left=False)


def assign_codes(keys: Tensor, cholesky: Tensor, centroids: Tensor) -> Tensor:
    """argmin_c ||k L - c̃||² per key: keys (B, Hkv, N, D), cholesky (Hkv, D, D), centroids (Hkv, C, D) ->
    codes (B, Hkv, N).

    ||x - c||² = ||x||² - 2 x.c + ||c||²; ||x||² is the same for every c, so it is left out of the argmin."""
    x = keys.to(centroids.dtype) @ cholesky
    return ((centroids * centroids).sum(-1)[:, None, :] - 2.0 * x @ centroids.transpose(-1, -2)).argmin(dim=-1)


def gather_codes(codebook: Tensor, codes: Tensor) -> Tensor:
    """Codebook rows (Hkv, C, D) picked by codes (B, Hkv, N) -> (B, Hkv, N, D): the quantized keys."""
    b, hkv, n = codes.shape
    table = codebook[None].expand(b, -1, -1, -1)
    return table.gather(2, codes[..., None].expand(b, hkv, n, codebook.shape[-1]))
