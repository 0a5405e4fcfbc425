"""Training-free context extension of a trained RoPE model: the shared core of ReRoPE, SelfExtend and LM-Infinite.

These variants own ``attend`` and read a checkpoint trained with ``pe=rope`` unchanged (same parameters, none
added): at evaluation they only re-map the relative distance a (query i, key j) pair is scored at, so that no pair
sees a distance the model never trained on. Every pair is scored with one of two rotations:

    near, |p_i - p_j| < window:  plain RoPE, the logit q_i^T R(p_j - p_i) k_j
    far, otherwise:              q_i rotated at ``far_coords``' query position a_i, k_j at its key position b_j:
                                 q_i^T R(b_j - a_i) k_j, a re-mapped distance a_i - b_j

and a variant may drop pairs (LM-Infinite's Lambda mask, :meth:`pair_keep`). Both rotations depend on one token's
own position only, so keys are cached rotated both ways and KV-cache decoding equals the parallel pass. The two
score matrices are computed explicitly and merged per pair (as the official implementations do), which costs
O(Nq * Nk) memory: an evaluation path, not a training kernel. With a context shorter than the window every pair is
near and the result is plain RoPE.

``log_scale_length`` (L > 1) multiplies query i by max(1, log(p_i + 1) / log L) before rotating it, the log-n
scaling that the official ReRoPE patch applies with L = the training length (SelfExtend's ``scale_base``).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Optional

import torch
from torch import Tensor

from rope_lab.pe.kv_cache import KVCache
from rope_lab.pe.rotary import RotaryConfig, RotaryState
from rope_lab.pe.types import PEState, Positions
from rope_lab.pe.variants.text.rope import RoPE


@dataclass
class ExtensionConfig(RotaryConfig):
    window: int = 128  # pairs closer than this many tokens are scored with plain RoPE (each variant sets its own)
    #: the context the RoPE model was trained at (configs: the run's task.train_length); when known, the window
    #: must fit in it. None: unknown, not checked
    train_length: Optional[int] = None
    log_scale_length: int = 0  # L of the log-n query scaling max(1, log(p + 1) / log L); 0: off


@dataclass
class ExtensionState(RotaryState):
    """A RoPE state plus the states far pairs rotate queries and keys with (built once per forward)."""

    far_queries: RotaryState | None = None
    far_keys: RotaryState | None = None


class ExtendedRoPE(RoPE, ABC):
    """Base class: plain RoPE's parameters and rotation, with far pairs scored at re-mapped distances."""

    Config = ExtensionConfig
    causal_only = True  # the far rotations and masks are defined for keys at or before the query
    multimodal = False
    axes = ("token",)  # distances are token distances in one sequence
    State: ClassVar[type[ExtensionState]] = ExtensionState

    def __init__(self, cfg: ExtensionConfig) -> None:
        if cfg.window < 1:
            raise ValueError(f"pe={self.name} needs pe.window >= 1 tokens; got window={cfg.window}")
        if cfg.train_length is not None and cfg.train_length < 1:
            raise ValueError(f"pe={self.name} needs pe.train_length >= 1 tokens (or null: unknown); "
                             f"got train_length={cfg.train_length}")
        self._check_fits_training(cfg, "window", cfg.window)
        if cfg.log_scale_length < 0 or cfg.log_scale_length == 1:
            raise ValueError(f"pe={self.name} needs pe.log_scale_length = 0 (off) or >= 2 (log L must be > 0); "
                             f"got log_scale_length={cfg.log_scale_length}")
        super().__init__(cfg)
        if self.scaling.rerotates_cache:  # its cache path re-rotates raw keys; ours caches keys rotated two ways
            raise ValueError(f"pe={self.name} caches keys rotated at their near and far positions, so it cannot "
                             f"re-rotate them: use pe.scaling.kv_cache=hf (or a static scaling) with it")

    def _check_fits_training(self, cfg: ExtensionConfig, key: str, value: int) -> None:
        """A distance option must be one the model saw in training: 1..train_length (when that is known)."""
        if cfg.train_length is not None and value > cfg.train_length:
            raise ValueError(f"pe={self.name}: pe.{key}={value} is larger than the training context "
                             f"train_length={cfg.train_length}; choose {key} in 1..{cfg.train_length}")

    # -- variant hooks ----------------------------------------------------------------------------
    @abstractmethod
    def far_coords(self, position: Tensor) -> tuple[Tensor, Tensor]:
        """Token positions (B, N, 1) -> (a, b): where far pairs rotate a query and a key, (B|1, N, 1) each."""

    def pair_keep(self, query_position: Tensor, key_position: Tensor, near: Tensor) -> Tensor | None:
        """Which pairs a variant attends, before causality: bool broadcastable to (B, 1, Nq, Nk), from the query
        positions (B|1, 1, Nq, 1), key positions (B|1, 1, 1, Nk) and the near mask. None: every pair."""
        return None

    def example_positions(self, batch: int, length: int, start: int = 0,
                         generator: torch.Generator | None = None) -> Positions:
        """Tokens start, start + s, start + 2s, ... with s = window // 3 (>= 1): a 10-token example has pairs on
        both sides of the window, so the registry's property tests exercise both rotations."""
        stride = max(1, self.cfg.window // 3)
        coords = start + stride * torch.arange(length, dtype=torch.float32)
        return Positions(coords=coords[None, :, None].expand(batch, length, 1).clone())

    # -- forward ----------------------------------------------------------------------------------
    def prepare(self, positions: Positions, cache: KVCache | None = None) -> ExtensionState:
        state = super().prepare(positions, cache)
        far_query, far_key = self.far_coords(state.coords[..., :1])
        state.far_queries = self._rotation_state(state, far_query)
        state.far_keys = self._rotation_state(state, far_key)
        return state

    def _rotation_state(self, state: ExtensionState, coords: Tensor) -> RotaryState:
        """A state rotating by ``coords`` with the same (scaled) frequencies and attention factor as ``state``."""
        return self.with_tables(state, Positions(coords=coords, modality=state.positions.modality), coords)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, *, state: ExtensionState, layer: int, causal: bool,
               x: Tensor | None = None, cache: KVCache | None = None) -> Tensor:
        if not causal:
            raise ValueError(f"pe={self.name} only works with causal attention (its far-distance rules are defined "
                             f"for keys before the query)")
        query_position = state.coords[..., 0]
        q = self._log_scaled(q, query_position)
        far_queries, far_keys = state.far_queries, state.far_keys
        q_near, k_near = self.rotate(q, k, state, layer)
        q_far, _ = self.rotate(q, k, far_queries, layer)
        _, k_far = self.rotate(q, k, far_keys, layer)
        key_position = query_position
        if cache is not None:  # near keys in the cache itself, far keys and key positions beside it
            k_near, v = cache.append(layer, k_near, v)
            k_far = self._extend(cache, f"{self.name}/far_keys/{layer}", k_far, -2)
            key_position = self._extend(cache, f"{self.name}/key_positions/{layer}", key_position, -1)
        query_position, key_position = query_position[:, None, :, None], key_position[:, None, None, :]
        near = (query_position - key_position).abs() < self.cfg.window
        keep = self._keep(state, layer, query_position, key_position, near, cache)
        return self._two_region_attention(q_near, q_far, k_near, k_far, v, near, keep)

    @staticmethod
    def _extend(cache: KVCache, slot: str, new: Tensor, dim: int) -> Tensor:
        """``new`` appended to what ``cache.pe_state[slot]`` holds along ``dim``; stored back and returned."""
        old = cache.pe_state.get(slot)
        cache.pe_state[slot] = new if old is None else torch.cat([old, new], dim)
        return cache.pe_state[slot]

    def _log_scaled(self, q: Tensor, position: Tensor) -> Tensor:
        length = self.cfg.log_scale_length
        if length == 0:
            return q
        wide = torch.promote_types(q.dtype, torch.float32)  # fp32 at least, float64 for float64 queries
        scale = (torch.log1p(position.to(wide)) / math.log(length)).clamp(min=1.0)
        return q * scale[:, None, :, None].to(q.dtype)

    def _keep(self, state: PEState, layer: int, query_position: Tensor, key_position: Tensor, near: Tensor,
              cache: KVCache | None) -> Tensor:
        """(B|1, 1, Nq, Nk) bool: causal (the newest keys are the queries), same packed document, the variant's."""
        nq, nk, device = query_position.shape[-2], key_position.shape[-1], near.device
        keep = torch.arange(nk, device=device)[None, :] <= torch.arange(nq, device=device)[:, None] + nk - nq
        documents = self._mask(state, layer, nq, nk, nk - nq, False, cache, device)  # segments only (or None)
        if documents is not None:
            keep = keep & documents
        variant = self.pair_keep(query_position, key_position, near)
        return keep if variant is None else keep & variant

    @staticmethod
    def _two_region_attention(q_near, q_far, k_near, k_far, v, near: Tensor, keep: Tensor) -> Tensor:
        groups = q_near.shape[1] // k_near.shape[1]  # grouped-query attention: expand key heads explicitly
        k_near, k_far, v = (t.repeat_interleave(groups, 1) for t in (k_near, k_far, v))
        scores = torch.where(near, q_near @ k_near.transpose(-1, -2), q_far @ k_far.transpose(-1, -2))
        scores = (scores / math.sqrt(q_near.shape[-1])).masked_fill(~keep, float("-inf"))
        return scores.softmax(-1, dtype=torch.promote_types(scores.dtype, torch.float32)).to(v.dtype) @ v

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", window={self.cfg.window}, train_length={self.cfg.train_length}, "
                f"log_scale_length={self.cfg.log_scale_length}")
