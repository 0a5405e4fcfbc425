"""Positional encodings.

The core sits at this level: the interface (``types``, ``kv_cache``, ``interface``, ``masks``), the ``registry``, the
shared rotary core (``rotary``, ``frequencies``, the rotation backends in ``kernels/``) and HF rope-config interop
(``hf_rope``). ``scalings/`` holds the context-extension scalings, ``variants/`` the variants, one folder per family.
"""

from rope_lab.pe.interface import PositionalEncoding  # noqa: F401
from rope_lab.pe.kv_cache import KVCache  # noqa: F401
from rope_lab.pe.registry import available_pes, available_scalings, build_pe, build_scaling  # noqa: F401
from rope_lab.pe.types import (  # noqa: F401
    AXIS_NAMES, IMAGE, NO_POSITION, TEXT, VIDEO, AttentionGeometry, PEState, Positions,
)
