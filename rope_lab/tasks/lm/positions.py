"""Positions for the LM task: token indices (optionally offset), one axis; packed rows carry document ids."""

from __future__ import annotations

from torch import Tensor

from rope_lab.pe import Positions


def lm_positions(tokens: Tensor, offset: int = 0, segment: Tensor | None = None) -> Positions:
    """(B, N) tokens -> positions offset..offset+N-1 on one axis (continuous across packed documents, as
    AnchorAttention keeps them); ``segment`` (B, N) document ids of packed rows (0 marks an anchor token)."""
    b, n = tokens.shape
    pos = Positions.sequence(b, n, start=offset, device=tokens.device)
    pos.segment = segment
    return pos
