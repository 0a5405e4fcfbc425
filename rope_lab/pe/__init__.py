"""Positional encodings: the interface, the registry, the shared rotary core and one file per variant family."""

from rope_lab.pe.base import (  # noqa: F401
    IMAGE, NO_POSITION, TEXT, VIDEO, AttentionGeometry, KVCache, PEState, PositionalEncoding, Positions,
)
from rope_lab.pe.registry import available_pes, available_scalings, build_pe, build_scaling  # noqa: F401
