"""The positional-encoding interface every backbone talks to (see docs/architecture.md).

Backbones call only ``setup``, ``prepare``, ``embed`` and ``attend``; they never learn which variant they
hold. A variant overrides one of four sites: ``embed`` (absolute PEs), ``rotate`` (rotary variants, through
:class:`rope_lab.pe.rotary.Rotary`), ``bias`` (additive logits bias / masks) or ``attend`` as a whole.
The data types it speaks are in :mod:`rope_lab.pe.types`, the KV cache in :mod:`rope_lab.pe.kv_cache`, the mask
it gives SDPA is built by :mod:`rope_lab.pe.masks`.
"""

from __future__ import annotations

from typing import ClassVar, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rope_lab.pe.kv_cache import KVCache
from rope_lab.pe.masks import attention_mask
from rope_lab.pe.types import AttentionGeometry, PEState, Positions


class PositionalEncoding(nn.Module):
    """Base class: the identity at every site (this is exactly NoPE)."""

    name: str = "base"
    #: capability flags, checked at build time by :func:`check_compatible`
    causal_only: bool = False
    supports_kv_cache: bool = True
    min_axes: int = 1
    max_axes: int | None = None  # None: any number of axes
    is_rotary: bool = False
    #: reads interleaved text/vision positions (4 axes: flattened index n, then t, h, w;
    #: rope_lab.pe.variants.video.multimodal)
    multimodal: bool = False
    #: what each coordinate axis must mean, in order, for a variant that gives axes a meaning (DRoPE's heading is an
    #: angle, rope_2d's x and y are metres, HiRoPE's second level is a unit index): the task's axes (its spec's
    #: ``axes``, names from AXIS_NAMES) must be the first k of these, min_axes <= k <= max_axes.
    #: None: every axis is a generic coordinate and only the count is checked.
    axes: tuple[str, ...] | None = None
    #: scores depend only on coordinate differences (checked by the registry's property tests for rotary variants);
    #: False for variants whose groups, windows or kept tokens depend on absolute positions
    relative: bool = True
    #: the per-forward state type ``prepare`` builds
    State: ClassVar[type[PEState]] = PEState
    #: own buffers/parameters that a model cast (``model.to(bf16)``, ``.half()``) must not round: they take only the
    #: cast's device (user_reports: dtype). ``FLOATING_BUFFERS`` stands for every floating buffer (frequency tables).
    keep_dtype: tuple[str, ...] = ()

    def __init__(self) -> None:
        super().__init__()
        self.geometry: AttentionGeometry | None = None

    # -- build time -------------------------------------------------------------------------------
    def setup(self, geometry: AttentionGeometry) -> PositionalEncoding:
        """Create buffers/parameters for this backbone. Called once by the backbone builder."""
        self.geometry = geometry
        return self

    def check_compatible(self, num_axes: int, causal: bool, multimodal: bool = False,
                         axes: tuple[str, ...] | None = None) -> None:
        """Refuse combinations that cannot work (a 2-D variant on 3-D video positions, a heading variant on token
        indices); the one-line message lists the registered variants that fit the task. ``axes``: what the task's
        coordinate axes mean (None: unknown, only their count is checked)."""
        reason = self.incompatibility(num_axes, causal, multimodal, axes)
        if reason is not None:
            from rope_lab.pe.registry import compatible_pes

            ok = compatible_pes(num_axes, causal, multimodal, axes)
            raise ValueError(f"{reason}; compatible variants: {ok}")

    def incompatibility(self, num_axes: int, causal: bool, multimodal: bool = False,
                        axes: tuple[str, ...] | None = None) -> str | None:
        """Why this variant cannot encode the task's positions (None: it can); see :meth:`check_compatible`."""
        if multimodal and not self.multimodal:
            return (f"pe={self.name} cannot encode this task's interleaved text/video positions "
                    f"(flattened index + 3-D t, h, w)")
        # a multimodal layout is a fixed 4-axis convention: the flag above is its whole check
        if not multimodal and (num_axes < self.min_axes or (self.max_axes is not None and num_axes > self.max_axes)):
            want = f"{self.min_axes}..{self.max_axes}" if self.max_axes else f">= {self.min_axes}"
            described = f" {tuple(self.axes[:self.max_axes or len(self.axes)])}" if self.axes else ""
            return (f"pe={self.name} encodes {want} position axes{described}, but the task builds "
                    f"{num_axes}-axis positions")
        if not multimodal and self.axes is not None and axes is not None and tuple(axes) != self.axes[:len(axes)]:
            return (f"pe={self.name} reads position axes as {self.axes[:max(len(axes), self.min_axes)]}, but the "
                    f"task's axes are {tuple(axes)}")
        if self.causal_only and not causal:
            return f"pe={self.name} only works with causal attention"
        return None

    # -- every forward ----------------------------------------------------------------------------
    def position_map(self, positions: Positions, cache: KVCache | None = None) -> Tensor:
        """Raw coords -> the coords this variant uses. Default: unchanged."""
        return positions.coords

    def prepare(self, positions: Positions, cache: KVCache | None = None) -> PEState:
        return self.State(positions=positions, coords=self.position_map(positions, cache))

    def example_positions(self, batch: int, length: int, start: int = 0,
                          generator: torch.Generator | None = None) -> Positions:
        """Positions this variant can encode, for property tests and benchmarks: ``min_axes`` axes of token indices
        start..start+length-1 (random integers in [start, start + 48) drawn from ``generator`` when one is given).
        Variants with a structured layout (multimodal items, hierarchy levels, windows) return theirs."""
        axes = max(1, self.min_axes)
        if generator is not None:
            coords = torch.randint(0, 48, (batch, length, axes), generator=generator).float() + start
        else:
            coords = torch.arange(start, start + length, dtype=torch.float32)[None, :, None].expand(batch, length, axes)
        return Positions(coords=coords.clone())

    def embed(self, x: Tensor, state: PEState) -> Tensor:
        return x

    def rotate(self, q: Tensor, k: Tensor, state: PEState, layer: int) -> tuple[Tensor, Tensor]:
        return q, k

    def bias(self, state: PEState, layer: int, n_queries: int, n_keys: int) -> Tensor | None:
        """Additive logits bias (or boolean keep-mask) of shape broadcastable to (B, H, Nq, Nk)."""
        return None

    def attend(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        *,
        state: PEState,
        layer: int,
        causal: bool,
        x: Tensor | None = None,
        cache: KVCache | None = None,
    ) -> Tensor:
        """q (B, H, Nq, D), k/v (B, Hkv, Nk, D) -> (B, H, Nq, D): rotate, then :meth:`scaled_attention`."""
        q, k = self.rotate(q, k, state, layer)
        return self.scaled_attention(q, k, v, state=state, layer=layer, causal=causal, cache=cache)

    def scaled_attention(self, q: Tensor, k: Tensor, v: Tensor, *, state: PEState, layer: int, causal: bool,
                         cache: KVCache | None = None) -> Tensor:
        """Rotated q, k -> cache the keys and values, one mask (causal, packing, bias), SDPA."""
        past = 0
        if cache is not None:
            past = 0 if cache.keys[layer] is None else cache.keys[layer].shape[-2]
            k, v = cache.append(layer, k, v)
        gqa = k.shape[1] != q.shape[1]  # grouped-query attention: SDPA shares key heads without copying them
        mask = self._mask(state, layer, q.shape[-2], k.shape[-2], past, causal, cache, q.device)
        if mask is None and causal and past == 0:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)

    # -- helpers ----------------------------------------------------------------------------------
    def _mask(self, state, layer, nq, nk, past, causal, cache, device) -> Tensor | None:
        """Combine causal, segment (packing) and variant bias into one SDPA mask (None if not needed);
        see :func:`rope_lab.pe.masks.attention_mask`."""
        return attention_mask(self, state, layer, nq, nk, past, causal, cache, device)

    def _has_bias(self, state: PEState, layer: int) -> bool:
        return type(self).bias is not PositionalEncoding.bias

    def _apply(self, fn, recurse=True):
        return apply_keeping_dtype(self, self.keep_dtype, lambda: super(PositionalEncoding, self)._apply(fn, recurse))

    def extra_repr(self) -> str:
        return f"name={self.name}"


FLOATING_BUFFERS = "<floating buffers>"


def apply_keeping_dtype(module: nn.Module, names: Iterable[str], apply) -> nn.Module:
    """Run ``apply`` (a module's ``nn.Module._apply``) leaving the named own tensors' dtype and values alone.

    Only the device is taken from the cast; values come from the untouched originals, since a bf16 round trip
    loses bits. A parameter is restored only if the cast changed its dtype (a device move keeps it as it is).
    """
    names = set(names)
    every = FLOATING_BUFFERS in names
    buffers = {n: b for n, b in module._buffers.items()
               if b is not None and b.is_floating_point() and (every or n in names)}
    params = {n: p.data for n, p in module._parameters.items() if p is not None and n in names}
    apply()
    for name, original in buffers.items():
        module._buffers[name] = original.to(device=module._buffers[name].device)
    for name, original in params.items():
        param = module._parameters[name]
        if param.dtype != original.dtype:
            param.data = original.to(device=param.device)
    return module
