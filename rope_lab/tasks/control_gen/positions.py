"""Positions for ``task=control_gen``: the image is a sequence of full-height column strips (frames), so
self-attention positions are 1-D strip indices; the decoupled cross-attention uses MuseControlLite's
timeline (query strip i at i * L_c / L_q, control frame j at j;
:func:`rope_lab.pe.variants.musecontrol.timeline_positions`)."""

from __future__ import annotations

from torch import Tensor

from rope_lab.pe import Positions
from rope_lab.pe.variants.musecontrol import timeline_positions


def strip_positions(batch: int, n_strips: int, device=None) -> Positions:
    return Positions.sequence(batch, n_strips, device=device)


def control_positions(batch: int, n_strips: int, n_frames: int, device=None) -> tuple[Tensor, Tensor]:
    return timeline_positions(batch, n_strips, n_frames, device=device)
