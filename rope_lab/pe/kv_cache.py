"""The key/value cache of incremental decoding, shared by every positional encoding."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class KVCache:
    """Per-layer key/value cache plus the per-sequence PE state (e.g. M-RoPE rope deltas).

    Keys are stored after rotation, so decoding never re-rotates old keys; variants that must re-rotate
    (consistent dynamic NTK) store what they need in ``pe_state``.
    """

    def __init__(self, depth: int) -> None:
        self.keys: list[Tensor | None] = [None] * depth
        self.values: list[Tensor | None] = [None] * depth
        self.segments: Tensor | None = None
        self.pe_state: dict[str, Any] = {}

    @property
    def length(self) -> int:
        return 0 if self.keys[0] is None else self.keys[0].shape[-2]

    def append(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        if self.keys[layer] is not None:
            k = torch.cat([self.keys[layer], k], dim=-2)
            v = torch.cat([self.values[layer], v], dim=-2)
        self.keys[layer], self.values[layer] = k, v
        return k, v
