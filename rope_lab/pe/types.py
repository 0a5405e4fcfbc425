"""The data types of the positional-encoding interface (see docs/architecture.md).

``Positions`` is what a task builds (raw coordinates of every token), ``AttentionGeometry`` is what a backbone tells
its PE once at build time, ``PEState`` is what ``prepare`` computes once per forward and every layer shares.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

# Modality codes carried in ``Positions.modality``.
TEXT, IMAGE, VIDEO = 0, 1, 2
#: What a task's coordinate axes can mean (a task lists its axes in ``TaskSpec.axes``; a variant that
#: gives axes a meaning lists the ones it reads in ``PositionalEncoding.axes``).
AXIS_NAMES = {
    "token": "index in a 1-D sequence (text tokens, frames or strips in order)",
    "unit": "index of the higher-level unit a token belongs to (HiRoPE: function/class, segment)",
    "index": "flattened index of an interleaved text/vision sequence (rope_lab.pe.variants.video.multimodal)",
    "t": "time / frame index",
    "row": "image patch row",
    "col": "image patch column",
    "x": "metric x (metres)",
    "y": "metric y (metres)",
    "heading": "heading angle (radians)",
}
NO_POSITION = -1  # prefix tokens (CLS, registers): never rotated, never given an absolute embedding


@dataclass
class Positions:
    """Raw structure of a batch, built by the task.

    coords:   (B, N, A) float32 raw coordinates (token index; (row, col); (t, row, col); (x, y, heading)).
    modality: (B, N) long, TEXT/IMAGE/VIDEO or NO_POSITION for prefix tokens; None means all TEXT.
    segment:  (B, N) long document / segment ids for packed sequences (tokens attend within a segment);
              None means one segment per row.
    meta:     per-batch facts a position map may need (e.g. fps, the training length); plain values only.
    """

    coords: Tensor
    modality: Tensor | None = None
    segment: Tensor | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.coords.dim() == 2:
            self.coords = self.coords.unsqueeze(-1)
        if self.coords.dim() != 3:
            raise ValueError(f"Positions.coords must be (B, N, A); got shape {tuple(self.coords.shape)}")
        self.coords = self.coords.float()

    @property
    def num_axes(self) -> int:
        return self.coords.shape[-1]

    @classmethod
    def sequence(cls, batch: int, length: int, start: int = 0, device=None) -> Positions:
        """1-D token indices start..start+length-1 for every row, as a batch-broadcast view (rows share storage, so
        rotary tables are built once for all rows, as HF builds them for shared position ids; clone to write)."""
        idx = torch.arange(start, start + length, device=device, dtype=torch.float32)
        return cls(coords=idx.expand(batch, length).unsqueeze(-1))

    def slice(self, start: int, end: int | None = None) -> Positions:
        """Positions of tokens start:end (used by incremental decoding)."""
        cut = lambda t: None if t is None else t[:, start:end]  # noqa: E731
        return Positions(cut(self.coords), cut(self.modality), cut(self.segment), dict(self.meta))

    def to(self, device) -> Positions:
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Positions(move(self.coords), move(self.modality), move(self.segment), dict(self.meta))


@dataclass
class AttentionGeometry:
    """What a PE needs to know about the backbone it lives in (given once, at build time)."""

    dim: int
    head_dim: int
    n_heads: int
    n_kv_heads: int
    depth: int
    max_tokens: int = 4096  # only absolute (table-based) PEs use it; rotary PEs have no length limit
    grid: tuple[int, ...] | None = None  # training patch grid (rows, cols) of vision backbones (learned 2-D APE)
    #: leading channels of each q/k head that positions may rotate (MLA's decoupled RoPE part); None: all of them
    rotary_dim: int | None = None

    @property
    def positional_dim(self) -> int:
        """Channels of a head a rotary PE works on (before its own ``rotary_fraction``)."""
        return self.head_dim if self.rotary_dim is None else self.rotary_dim


@dataclass
class PEState:
    """Per-forward state computed once by ``prepare`` and shared by every layer (opaque to backbones).

    A variant that keeps more per forward declares a subclass with typed fields (``RotaryState``: frequencies and
    the rotation; ``LogitBiasState``: token coordinates) and names it in ``PositionalEncoding.State``.
    """

    positions: Positions
    coords: Tensor  # mapped coords (B, N, A')
