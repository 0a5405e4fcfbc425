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
from rope_lab.pe.kernels import (check_kernel, eager, precise_angles, resolve_kernel, rotate_qk_tables, split_plan,
                                 triton_rope, uses_on_the_fly)
from rope_lab.pe.registry import build_scaling
from rope_lab.pe.psc import PhaseShiftCalibration
from rope_lab.pe.scalings.cache import attend_rerotating

PAIR_LAYOUTS = eager.PAIR_LAYOUTS


def compute_angles(coords: Tensor, freq: Tensor) -> Tensor:
    """coords (B, N, A) x freq (H|1, A, P) -> angles (B, H|1, N, P) in float32, autocast disabled."""
    with torch.autocast(device_type=coords.device.type, enabled=False):
        return torch.einsum("bna,hap->bhnp", coords.float(), freq.float())


def apply_rotation(x: Tensor, cos: Tensor, sin: Tensor, layout: str) -> Tensor:
    """Rotate the first 2P channels of x (B, H, N, D) by cos/sin (B, H|1, N, P); math in fp32, one cast back.

    The eager oracle (``rope_lab.pe.kernels.eager.rotate``); the core itself dispatches on ``pe.kernel``.
    """
    return eager.rotate(x, cos, sin, layout)


@dataclass
class RotaryConfig:
    """Options shared by every rotary variant."""

    base: float = 10000.0
    pair_layout: str = "half"
    rotary_fraction: float = 1.0  # partial rotary (HF partial_rotary_factor); exponent uses rotary dim
    scaling: Any = field(default_factory=lambda: {"name": "none"})
    psc: bool = False  # phase shift calibration (rope_lab/pe/psc.py) on q/k before the rotation
    kernel: str = "auto"  # auto | eager | compiled | triton (rope_lab/pe/kernels); same results to fp32 rounding

    #: bounds checked when the config is built (rope_lab.registry.check_numbers): base^(-2j/d) needs base > 1
    greater_than = {"base": 1.0}


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
        check_kernel(cfg.kernel)
        self.cfg = cfg
        self.scaling = build_scaling(cfg.scaling)

    # -- build time -------------------------------------------------------------------------------
    def setup(self, geometry) -> Rotary:
        super().setup(geometry)
        self.n_pairs = rotary_pairs(geometry.positional_dim, self.cfg.rotary_fraction)
        self.scaling.setup(2 * self.n_pairs, self.cfg.base)
        self.register_buffer("inv_freq", self.base_inv_freq(), persistent=False)
        self.psc = None
        if self.cfg.psc:
            self.psc = PhaseShiftCalibration(geometry.n_heads, geometry.n_kv_heads, geometry.head_dim, geometry.depth)
        return self

    def base_inv_freq(self) -> Tensor:
        """The 1-D per-pair frequencies before scaling: RoFormer's base^(-2j/d_rot)."""
        return rope_inv_freq(2 * self.n_pairs, self.cfg.base)

    def _apply(self, fn, recurse=True):
        # Keep frequency buffers fp32 under model.to(bf16) / .half() (user_reports: dtype): take only the
        # device from the cast, the values from the untouched fp32 originals (a bf16 round trip loses bits).
        keep = {n: b for n, b in self._buffers.items() if b is not None and b.is_floating_point()}
        super()._apply(fn, recurse)
        for n, original in keep.items():
            self._buffers[n] = original.to(device=self._buffers[n].device)
        return self

    # -- variant hooks ----------------------------------------------------------------------------
    def frequency_plan(self, inv_freq: Tensor, layer: int) -> Tensor:
        """Scaled 1-D frequencies (P,) -> plan (H|1, A, P). Default: one axis, every head the same."""
        return inv_freq[None, None, :]

    def position_free_mask(self, state: PEState) -> Tensor | None:
        """(B|1, N) bool: tokens that are never rotated (prefix tokens have modality NO_POSITION); one row when the
        modality is a batch-broadcast view, so the tables stay one row too."""
        mod = state.positions.modality
        return None if mod is None else self._distinct_rows(mod) == NO_POSITION

    # -- forward ----------------------------------------------------------------------------------
    def prepare(self, positions: Positions, cache: KVCache | None = None) -> PEState:
        state = PEState(positions=positions, coords=self.position_map(positions, cache))
        seq_len = None
        if self.scaling.length_dependent:
            seq_len = state.coords.detach().amax() + 1
        inv_freq, factor = self.scaling.rewrite(self.inv_freq, seq_len)
        state.extra["inv_freq"], state.extra["attention_factor"] = inv_freq, factor
        if not self.per_layer_plan:
            plan = self.frequency_plan(inv_freq, 0)
            if self._on_the_fly(state, plan):  # Triton computes angles in the kernel: no tables
                state.extra["on_the_fly"] = self._on_the_fly_args(state, plan)
            else:
                state.extra["cos_sin"] = self._tables(state, plan)
        return state

    def cos_sin(self, state: PEState, layer: int) -> tuple[Tensor, Tensor]:
        """cos/sin tables (B, H|1, N, P) fp32 of the precisely reduced angles; prefix tokens get angle 0."""
        return self._tables(state, self.frequency_plan(state.extra["inv_freq"], layer))

    @staticmethod
    def _distinct_rows(coords: Tensor) -> Tensor:
        """coords, or its first row when every row is the same broadcast view (stride 0: no data-dependent check)."""
        return coords[:1] if coords.shape[0] > 1 and coords.stride(0) == 0 else coords

    def _tables(self, state: PEState, plan: Tensor, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
        coords = self._distinct_rows(state.coords)
        if dtype == torch.float64:  # exact angles for float64 inputs (the precision tests' ground truth)
            angles = torch.einsum("bna,hap->bhnp", coords.double(), plan.double())
        else:
            angles = precise_angles(coords, plan)
        free = self.position_free_mask(state)
        if free is not None:
            angles = angles.masked_fill(free[:, None, :, None], 0.0)
        return angles.cos(), angles.sin()

    def _on_the_fly(self, state: PEState, plan: Tensor) -> bool:
        factor = state.extra["attention_factor"]
        needs_grad = torch.is_grad_enabled() and (plan.requires_grad or state.coords.requires_grad
                                                  or (isinstance(factor, Tensor) and factor.requires_grad))
        return uses_on_the_fly(self.cfg.kernel, state.coords.device, needs_grad)

    def _on_the_fly_args(self, state: PEState, plan: Tensor) -> tuple:
        """(coords with prefix tokens at 0, split plan, attention factor as a 1-element tensor) for Triton."""
        free = self.position_free_mask(state)
        coords = self._distinct_rows(state.coords)
        coords = coords if free is None else coords.masked_fill(free[..., None], 0.0)
        factor = torch.as_tensor(state.extra["attention_factor"], dtype=torch.float32, device=coords.device)
        return coords.float(), tuple(g.contiguous() for g in split_plan(plan)), factor.reshape(1)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, *, state: PEState, layer: int, causal: bool,
               x: Tensor | None = None, cache: KVCache | None = None) -> Tensor:
        if cache is not None and self.scaling.rerotates_cache:  # consistent dynamic scaling (scalings/cache.py)
            return attend_rerotating(self, q, k, v, state=state, layer=layer, causal=causal, cache=cache)
        return super().attend(q, k, v, state=state, layer=layer, causal=causal, x=x, cache=cache)

    def rotate(self, q: Tensor, k: Tensor, state: PEState, layer: int) -> tuple[Tensor, Tensor]:
        if self.psc is not None:
            q, k = self.psc(q, k, layer)
        factor = state.extra["attention_factor"]
        plan = lambda: self.frequency_plan(state.extra["inv_freq"], layer)  # noqa: E731
        if torch.float64 in (q.dtype, k.dtype):
            return self._rotate_tables(q, k, *self._tables(state, plan(), torch.float64), factor, "eager")
        fly = state.extra.get("on_the_fly")
        tables = None if self.per_layer_plan else state.extra.get("cos_sin")
        if fly is None and tables is None:
            freq = plan()
            if self._on_the_fly(state, freq):
                fly = self._on_the_fly_args(state, freq)
            else:
                tables = self._tables(state, freq)
        if fly is not None:
            coords, split, factor_t = fly
            if split[0].shape[0] > 1:  # a per-head plan must match the key heads too
                self._kv_heads(split[0][None], k)
            layout = self.cfg.pair_layout
            return triton_rope.rotate_qk(q, k, coords, split, factor_t, layout)
        return self._rotate_tables(q, k, *tables, factor, resolve_kernel(self.cfg.kernel, q.device, q.numel()))

    def _rotate_tables(self, q: Tensor, k: Tensor, cos: Tensor, sin: Tensor, factor, kernel: str):
        if not (isinstance(factor, float) and factor == 1.0):  # folded into the tables as HF does: one cast
            cos, sin = cos * factor, sin * factor
        cos_k, sin_k = (cos, sin) if cos.shape[1] == 1 else (self._kv_heads(cos, k), self._kv_heads(sin, k))
        return rotate_qk_tables(q, k, cos, sin, cos_k, sin_k, self.cfg.pair_layout, kernel)

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
                f"rotary_fraction={self.cfg.rotary_fraction}, scaling={self.scaling!r}, kernel={self.cfg.kernel}")
