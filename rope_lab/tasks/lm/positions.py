"""Positions for the LM task: token indices (optionally offset), one axis."""

from __future__ import annotations

from torch import Tensor

from rope_lab.pe.base import Positions


def lm_positions(tokens: Tensor, offset: int = 0) -> Positions:
    """(B, N) tokens -> positions offset..offset+N-1 on one axis."""
    b, n = tokens.shape
    return Positions.sequence(b, n, start=offset, device=tokens.device)
