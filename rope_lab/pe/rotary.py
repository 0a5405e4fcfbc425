"""The shared rotary core: every rotary variant is a position map x a frequency plan (+ scaling).

    angles[b, h, n, j] = sum_a coords'[b, n, a] * freq[h, a, j]       (float32, autocast off)
    q', k' = rotate(q, k, angles, pair_layout) * attention_factor

Pair layouts (see RoFormer arXiv 2104.09864 and HF `rotate_half` vs GPT-J `rotate_every_two`):
  "half"        pair j = (j, j + P)      HF LLaMA / GPT-NeoX
  "interleaved" pair j = (2j, 2j + 1)    RoFormer, GPT-J, Meta LLaMA, timm / rope-vit
Only the first 2P channels of a head are rotated (partial rotary); the rest pass through.

Per forward, ``prepare`` builds a :class:`RotaryState`: the scaled frequencies, the attention factor and, when every
layer shares the plan, the rotation (cos/sin ``Tables``, or ``OnTheFly`` inputs for the Triton kernel). Per layer,
``rotate`` takes that rotation (or builds this layer's) and hands it to ``kernels.rotate_qk``, the one place that
chooses the backend.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from rope_lab.pe.frequencies import rope_inv_freq, rotary_pairs
from rope_lab.pe.interface import FLOATING_BUFFERS, PositionalEncoding
from rope_lab.pe.kernels import (OnTheFly, Tables, check_kernel, eager, precise_angles, rotate_qk, split_plan,
                                 uses_on_the_fly)
from rope_lab.pe.kernels.angles import compute_angles
from rope_lab.pe.kv_cache import KVCache
from rope_lab.pe.registry import build_scaling
from rope_lab.pe.scalings.cache import attend_rerotating
from rope_lab.pe.scalings.psc import PhaseShiftCalibration
from rope_lab.pe.types import NO_POSITION, PEState, Positions

PAIR_LAYOUTS = eager.PAIR_LAYOUTS
Rotation = Tables | OnTheFly

__all__ = ["PAIR_LAYOUTS", "Rotary", "RotaryConfig", "RotaryState", "Rotation", "apply_rotation", "compute_angles"]


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
    psc: bool = False  # phase shift calibration (rope_lab/pe/scalings/psc.py) on q/k before the rotation
    kernel: str = "auto"  # auto | eager | compiled | triton (rope_lab/pe/kernels); same results to fp32 rounding

    #: bounds checked when the config is built (rope_lab.registry.check_numbers): base^(-2j/d) needs base > 1
    greater_than = {"base": 1.0}


@dataclass
class RotaryState(PEState):
    """Per-forward state of a rotary variant."""

    inv_freq: Tensor | None = None  # (P,) the scaled 1-D frequencies (before the variant's frequency plan)
    attention_factor: float | Tensor = 1.0  # the scaling's attention factor (multiplies q and k)
    #: built once per forward when every layer shares the plan (None: per-layer plans, built per layer)
    rotation: Rotation | None = None


class Rotary(PositionalEncoding):
    """Base class of all rotary variants. Subclasses override ``position_map`` and/or ``frequency_plan``.

    Frequencies are fp32 buffers built at setup (model casts leave every floating buffer alone: ``keep_dtype``);
    angles are recomputed from positions every forward, so offsets, packing and KV-cache decoding need no
    special cases and there is no length-keyed cache.
    """

    is_rotary = True
    Config = RotaryConfig
    State: ClassVar[type[RotaryState]] = RotaryState
    keep_dtype = (FLOATING_BUFFERS,)
    #: True when frequency_plan depends on the layer (e.g. RoPE-Mixed learnable per-block frequencies)
    per_layer_plan = False

    def __init__(self, cfg: RotaryConfig) -> None:
        super().__init__()
        eager.check_layout(cfg.pair_layout)
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
    def prepare(self, positions: Positions, cache: KVCache | None = None) -> RotaryState:
        coords = self.position_map(positions, cache)
        seq_len = coords.detach().amax() + 1 if self.scaling.length_dependent else None
        state = self.state_at(positions, coords, seq_len)
        if not self.per_layer_plan:
            state.rotation = self._rotation(state, self.frequency_plan(state.inv_freq, 0))
        return state

    def state_at(self, positions: Positions, coords: Tensor, seq_len: Tensor | None = None) -> RotaryState:
        """A state at already mapped ``coords`` with the scaling's frequencies for ``seq_len`` (None: a static
        scaling's), no rotation built yet: ``prepare``'s first half, also used where the ids come mapped (Qwen2-VL)."""
        inv_freq, factor = self.scaling.rewrite(self.inv_freq, seq_len)
        return self.State(positions=positions, coords=coords, inv_freq=inv_freq, attention_factor=factor)

    def with_tables(self, state: RotaryState, positions: Positions, coords: Tensor) -> RotaryState:
        """A state rotating by ``coords`` with ``state``'s frequencies and attention factor, its cos/sin tables built
        (a shared plan: the far rotations of training-free extensions, the re-rotated keys of a consistent cache)."""
        other = RotaryState(positions=positions, coords=coords, inv_freq=state.inv_freq,
                            attention_factor=state.attention_factor)
        if not self.per_layer_plan:
            other.rotation = self.cos_sin(other, 0)
        return other

    def cos_sin(self, state: RotaryState, layer: int) -> Tables:
        """cos/sin tables (B, H|1, N, P) fp32 of the precisely reduced angles; prefix tokens get angle 0."""
        return self._tables(state, self.frequency_plan(state.inv_freq, layer))

    def rotation(self, state: RotaryState, layer: int, q: Tensor, k: Tensor) -> Rotation:
        """What rotates this layer's q and k: Triton's on-the-fly inputs, or cos/sin tables with the attention factor
        folded in (as HF does: one cast); float64 q/k get exact float64 tables (the precision tests' ground truth)."""
        if torch.float64 in (q.dtype, k.dtype):
            rotation = self._tables(state, self.frequency_plan(state.inv_freq, layer), torch.float64)
        elif state.rotation is not None and not self.per_layer_plan:
            rotation = state.rotation
        else:
            rotation = self._rotation(state, self.frequency_plan(state.inv_freq, layer))
        heads = rotation.plan[0][None] if isinstance(rotation, OnTheFly) else rotation.cos  # (1|B, H|1, ...)
        if heads.shape[1] > 1:  # a per-head plan must match the key heads too
            self._kv_heads(heads, k)
        factor = state.attention_factor
        if isinstance(rotation, OnTheFly) or (isinstance(factor, float) and factor == 1.0):
            return rotation
        return Tables(rotation.cos * factor, rotation.sin * factor)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, *, state: RotaryState, layer: int, causal: bool,
               x: Tensor | None = None, cache: KVCache | None = None) -> Tensor:
        if cache is not None and self.scaling.rerotates_cache:  # consistent dynamic scaling (scalings/cache.py)
            return attend_rerotating(self, q, k, v, state=state, layer=layer, causal=causal, cache=cache)
        q, k = self.rotate(q, k, state, layer)
        return self.scaled_attention(q, k, v, state=state, layer=layer, causal=causal, cache=cache)

    def rotate(self, q: Tensor, k: Tensor, state: RotaryState, layer: int) -> tuple[Tensor, Tensor]:
        """q (B, H, N, D), k (B, Hkv, N, D) -> rotated at the state's positions (PSC first, when on)."""
        if self.psc is not None:
            q, k = self.psc(q, k, layer)
        return rotate_qk(q, k, self.rotation(state, layer, q, k), self.cfg.pair_layout, self.cfg.kernel)

    # -- helpers ----------------------------------------------------------------------------------
    @staticmethod
    def _distinct_rows(coords: Tensor) -> Tensor:
        """coords, or its first row when every row is the same broadcast view (stride 0: no data-dependent check)."""
        return coords[:1] if coords.shape[0] > 1 and coords.stride(0) == 0 else coords

    def _tables(self, state: PEState, plan: Tensor, dtype: torch.dtype = torch.float32) -> Tables:
        coords = self._distinct_rows(state.coords)
        if dtype == torch.float64:  # exact angles for float64 inputs (the precision tests' ground truth)
            angles = compute_angles(coords, plan, torch.float64)
        else:
            angles = precise_angles(coords, plan)
        free = self.position_free_mask(state)
        if free is not None:
            angles = angles.masked_fill(free[:, None, :, None], 0.0)
        return Tables(angles.cos(), angles.sin())

    def _rotation(self, state: RotaryState, plan: Tensor) -> Rotation:
        """Triton's on-the-fly inputs when that kernel applies (no tables are built), else cos/sin tables."""
        factor = state.attention_factor
        needs_grad = torch.is_grad_enabled() and (plan.requires_grad or state.coords.requires_grad
                                                  or (isinstance(factor, Tensor) and factor.requires_grad))
        if not uses_on_the_fly(self.cfg.kernel, state.coords.device, needs_grad):
            return self._tables(state, plan)
        free = self.position_free_mask(state)  # prefix tokens at coordinate 0: angle 0
        coords = self._distinct_rows(state.coords)
        coords = coords if free is None else coords.masked_fill(free[..., None], 0.0)
        factor = torch.as_tensor(factor, dtype=torch.float32, device=coords.device)
        return OnTheFly(coords.float(), tuple(g.contiguous() for g in split_plan(plan)), factor.reshape(1))

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
