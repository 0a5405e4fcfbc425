"""The positional-encoding interface every backbone talks to (see docs/architecture.md).

Backbones call only ``setup``, ``prepare``, ``embed`` and ``attend``; they never learn which variant they
hold. A variant overrides one of four sites: ``embed`` (absolute PEs), ``rotate`` (rotary variants, through
:class:`rope_lab.pe.rotary.Rotary`), ``bias`` (additive logits bias / masks) or ``attend`` as a whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Modality codes carried in ``Positions.modality``.
TEXT, IMAGE, VIDEO = 0, 1, 2
#: What a task's coordinate axes can mean (a task lists its axes in ``TaskSpec.axes``; a variant that
#: gives axes a meaning lists the ones it reads in ``PositionalEncoding.axes``).
AXIS_NAMES = {
    "token": "index in a 1-D sequence (text tokens, frames or strips in order)",
    "unit": "index of the higher-level unit a token belongs to (HiRoPE: function/class, segment)",
    "index": "flattened index of an interleaved text/vision sequence (rope_lab.pe.multimodal)",
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


class PositionalEncoding(nn.Module):
    """Base class: the identity at every site (this is exactly NoPE)."""

    name: str = "base"
    #: capability flags, checked at build time by :func:`check_compatible`
    causal_only: bool = False
    supports_kv_cache: bool = True
    min_axes: int = 1
    max_axes: int | None = None  # None: any number of axes
    is_rotary: bool = False
    #: reads interleaved text/vision positions (4 axes: flattened index n, then t, h, w; rope_lab.pe.multimodal)
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
        """Combine causal, segment (packing) and variant bias into one SDPA mask (None if not needed)."""
        keep = None
        if causal and (past > 0 or state.positions.segment is not None or self._has_bias(state, layer)):
            qi = torch.arange(nq, device=device)[:, None] + past
            keep = torch.arange(nk, device=device)[None, :] <= qi
        seg = state.positions.segment
        if seg is not None:
            key_seg = seg if cache is None or cache.segments is None else cache.segments
            same = seg[:, None, :, None] == key_seg[:, None, None, -nk:]
            keep = same if keep is None else keep & same
        bias = self.bias(state, layer, nq, nk)
        if bias is None:
            return keep
        if bias.dtype == torch.bool:
            return bias if keep is None else bias & keep
        if keep is None:
            return bias
        return bias.masked_fill(~keep, float("-inf"))

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
