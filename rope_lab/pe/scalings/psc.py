"""PSC, phase shift calibration (Zhu, Xu, Wang, Wu, EMNLP 2024): a learned, data-dependent gain on q and k
applied before the rotary rotation, fine-tuned together with a context-extension scaling.

Reference implementation: WNQzhu/PSC ``PSC_code/lora_llama.py`` class ``Phase`` and ``apply_rotary_pos_emb``
(``q = q_phase(q); k = k_phase(k)`` before ``q * cos + rotate_half(q) * sin``), one ``Phase(num_heads, head_dim)``
for queries and one ``Phase(num_key_value_heads, head_dim)`` for keys in every attention layer:

    coeff = 1 + tanh( SiLU(x @ up[h]) @ down[h] ) / 2,   out = x * coeff      (per head h, row vectors)

``up`` is initialised to zeros and ``down`` with ``kaiming_uniform_(a=sqrt(5))``, so the module starts as the
exact identity and its gain stays in (0.5, 1.5). It acts per token, before rotation, so scores still depend only
on relative position. Enable with ``pe.psc=true`` on any rotary pe (composes with ``pe/scaling=...``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class Phase(nn.Module):
    """One PSC calibration for ``n_heads`` heads of size ``head_dim`` (the official ``Phase``)."""

    def __init__(self, n_heads: int, head_dim: int) -> None:
        super().__init__()
        self.up_phase = nn.Parameter(torch.empty(n_heads, head_dim, head_dim))
        self.down_phase = nn.Parameter(torch.empty(n_heads, head_dim, head_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.up_phase)
        nn.init.kaiming_uniform_(self.down_phase, a=math.sqrt(5))

    def forward(self, x: Tensor) -> Tensor:
        """x (B, H, N, D) -> x * (1 + tanh(SiLU(x up) down) / 2)."""
        hidden = nn.functional.silu(torch.einsum("bnsd,ndr->bnsr", x, self.up_phase.to(x.dtype)))
        coeff = 1.0 + torch.tanh(torch.einsum("bnsr,nrd->bnsd", hidden, self.down_phase.to(x.dtype))) / 2.0
        return x * coeff


class PhaseShiftCalibration(nn.Module):
    """Per-layer query and key ``Phase`` modules (the PSC placement of the official code)."""

    def __init__(self, n_heads: int, n_kv_heads: int, head_dim: int, depth: int) -> None:
        super().__init__()
        self.q_phase = nn.ModuleList(Phase(n_heads, head_dim) for _ in range(depth))
        self.k_phase = nn.ModuleList(Phase(n_kv_heads, head_dim) for _ in range(depth))

    def forward(self, q: Tensor, k: Tensor, layer: int) -> tuple[Tensor, Tensor]:
        return self.q_phase[layer](q), self.k_phase[layer](k)
