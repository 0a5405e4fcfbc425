"""The shared rotary core: every rotary variant is a position map x a frequency plan (+ scaling).

    angles[b, h, n, j] = sum_a coords'[b, n, a] * freq[h, a, j]       (float32, autocast off)
    q', k' = rotate(q, k, angles, pair_layout) * attention_factor

Pair layouts (see RoFormer arXiv 2104.09864 and HF `rotate_half` vs GPT-J `rotate_every_two`):
  "half"        pair j = (j, j + P)      HF LLaMA / GPT-NeoX
  "interleaved" pair j = (2j, 2j + 1)    RoFormer, GPT-J, Meta LLaMA, timm / rope-vit
Only the first 2P channels of a head are rotated (partial rotary); the rest pass through.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from rope_lab.pe.base import NO_POSITION, KVCache, PEState, PositionalEncoding, Positions
from rope_lab.pe.frequencies import rope_inv_freq, rotary_pairs
from rope_lab.pe.registry import build_scaling

PAIR_LAYOUTS = ("half", "interleaved")


def compute_angles(coords: Tensor, freq: Tensor) -> Tensor:
    """coords (B, N, A) x freq (H|1, A, P) -> angles (B, H|1, N, P) in float32, autocast disabled."""
    with torch.autocast(device_type=coords.device.type, enabled=False):
        return torch.einsum("bna,hap->bhnp", coords.float(), freq.float())


def apply_rotation(x: Tensor, cos: Tensor, sin: Tensor, layout: str) -> Tensor:
    """Rotate the first 2P channels of x (B, H, N, D) by cos/sin (B, H|1, N, P); math in fp32, one cast back."""
    pairs = cos.shape[-1]
    rot, rest = x[..., : 2 * pairs].float(), x[..., 2 * pairs :]
    if layout == "half":
        x1, x2 = rot[..., :pairs], rot[..., pairs:]
        out = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
    elif layout == "interleaved":
        x1, x2 = rot[..., 0::2], rot[..., 1::2]
        out = torch.stack((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).flatten(-2)
    else:
        raise ValueError(f"unknown pair_layout '{layout}'; choose one of {PAIR_LAYOUTS}")
    out = out.to(x.dtype)
    return out if rest.shape[-1] == 0 else torch.cat((out, rest), dim=-1)


@dataclass
class RotaryConfig:
    """Options shared by every rotary variant."""

    base: float = 10000.0
    pair_layout: str = "half"
    rotary_fraction: float = 1.0  # partial rotary (HF partial_rotary_factor); exponent uses rotary dim
    scaling: Any = field(default_factory=lambda: {"name": "none"})


class Rotary(PositionalEncoding):
    """Base class of all rotary variants. Subclasses override ``position_map`` and/or ``frequency_plan``.

    Frequencies are fp32 buffers built at setup (model casts leave them alone: ``_apply`` is guarded);
    angles are recomputed from positions every forward, so offsets, packing and KV-cache decoding need no
    special cases and there is no length-keyed cache.
    """

    is_rotary = True
    Config = RotaryConfig
    #: True when frequency_plan depends on the layer (e.g. RoPE-Mixed learnable per-block frequencies)
    per_layer_plan = False

    def __init__(self, cfg: RotaryConfig) -> None:
        super().__init__()
        if cfg.pair_layout not in PAIR_LAYOUTS:
            raise ValueError(f"unknown pair_layout '{cfg.pair_layout}'; choose one of {list(PAIR_LAYOUTS)}")
        self.cfg = cfg
        self.scaling = build_scaling(cfg.scaling)

    # -- build time -------------------------------------------------------------------------------
    def setup(self, geometry) -> Rotary:
        super().setup(geometry)
        self.n_pairs = rotary_pairs(geometry.head_dim, self.cfg.rotary_fraction)
        self.scaling.setup(2 * self.n_pairs, self.cfg.base)
        self.register_buffer("inv_freq", self.base_inv_freq(), persistent=False)
        return self

    def base_inv_freq(self) -> Tensor:
        """The 1-D per-pair frequencies before scaling: RoFormer's base^(-2j/d_rot)."""
        return rope_inv_freq(2 * self.n_pairs, self.cfg.base)

    def _apply(self, fn, recurse=True):
        # Keep frequency buffers/parameters fp32 under model.to(bf16) / .half() (user_reports: dtype).
        keep = {n: b for n, b in self._buffers.items() if b is not None and b.is_floating_point()}
        super()._apply(fn, recurse)
        for n, b in keep.items():
            self._buffers[n] = self._buffers[n].to(dtype=b.dtype)
        return self

    # -- variant hooks ----------------------------------------------------------------------------
    def frequency_plan(self, inv_freq: Tensor, layer: int) -> Tensor:
        """Scaled 1-D frequencies (P,) -> plan (H|1, A, P). Default: one axis, every head the same."""
        return inv_freq[None, None, :]

    def position_free_mask(self, state: PEState) -> Tensor | None:
        """(B, N) bool: tokens that are never rotated (prefix tokens have modality NO_POSITION)."""
        mod = state.positions.modality
        return None if mod is None else mod == NO_POSITION

    # -- forward ----------------------------------------------------------------------------------
    def prepare(self, positions: Positions, cache: KVCache | None = None) -> PEState:
        state = PEState(positions=positions, coords=self.position_map(positions, cache))
        seq_len = None
        if self.scaling.length_dependent:
            seq_len = state.coords.detach().amax() + 1
        inv_freq, factor = self.scaling.rewrite(self.inv_freq, seq_len)
        state.extra["inv_freq"], state.extra["attention_factor"] = inv_freq, factor
        if not self.per_layer_plan:
            state.extra["cos_sin"] = self.cos_sin(state, 0)
        return state

    def cos_sin(self, state: PEState, layer: int) -> tuple[Tensor, Tensor]:
        angles = compute_angles(state.coords, self.frequency_plan(state.extra["inv_freq"], layer))
        free = self.position_free_mask(state)
        if free is not None:
            angles = angles.masked_fill(free[:, None, :, None], 0.0)
        return angles.cos(), angles.sin()

    def rotate(self, q: Tensor, k: Tensor, state: PEState, layer: int) -> tuple[Tensor, Tensor]:
        cos, sin = state.extra["cos_sin"] if not self.per_layer_plan else self.cos_sin(state, layer)
        factor = state.extra["attention_factor"]
        q = apply_rotation(q, cos, sin, self.cfg.pair_layout)
        if cos.shape[1] != 1:
            cos, sin = self._kv_heads(cos, k), self._kv_heads(sin, k)
        k = apply_rotation(k, cos, sin, self.cfg.pair_layout)
        if not (isinstance(factor, float) and factor == 1.0):
            q, k = q * factor, k * factor
        return q, k

    @staticmethod
    def _kv_heads(table: Tensor, k: Tensor) -> Tensor:
        """Per-head tables must match the key heads: grouped keys serve several query heads."""
        if table.shape[1] != k.shape[1]:
            raise ValueError(
                f"a per-head frequency plan ({table.shape[1]} heads) needs n_kv_heads == n_heads; got "
                f"{k.shape[1]} key heads. Use a shared plan or set n_kv_heads = n_heads."
            )
        return table

    def extra_repr(self) -> str:
        return (f"name={self.name}, base={self.cfg.base}, pair_layout={self.cfg.pair_layout}, "
                f"rotary_fraction={self.cfg.rotary_fraction}, scaling={self.scaling!r}")
