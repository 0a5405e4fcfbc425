"""Shared machinery of the video-LLM variants (M-RoPE, VideoRoPE, HoPE, VRoPE, TAD-RoPE, vanilla).

Raw multimodal positions (built by a task, e.g. ``rope_lab/tasks/vniah/positions.py``) have four axes:

    coords[..., 0]  n  the token's index in the flattened sequence (what vanilla RoPE uses)
    coords[..., 1:] (t, h, w) grid coordinates of a vision token inside its image/video item (any value for text)
    modality        TEXT / IMAGE / VIDEO per token

Every variant in the VideoRoPE family assigns ids item by item: an *item* is a run of text, or one image or
video. An item starts at ``s = n_first + delta`` where ``delta`` accumulates, over the earlier items, how far
the variant's index advanced beyond the item's token count (``extent - count``: M-RoPE advances a video by
``max(T, H', W')``, VideoRoPE by ``delta*(T-1)+1``, VRoPE by ``(H'+W'-1)*T`` ...). Text is mapped to
``n + delta``: this is exactly how the official code places text after vision and what its ``rope_deltas``
hold for decoding (Qwen2-VL ``get_rope_index``; VideoRoPE ``get_t_scale_rope_index``).

Everything is vectorised (scatter/cumsum over items), so there are no host syncs and the same code serves
training, evaluation and KV-cache decoding: at the first forward with a cache the accumulated ``delta`` is
stored in ``KVCache.pe_state`` (per sequence, never on the module) and later chunks start from it. A decoding
chunk must start at an item boundary or inside text (generation appends text).

Item boundaries: where the modality changes, or where a vision token's (t, h, w) does not increase
lexicographically over the previous token's (a new image/video follows directly). Grid sizes and local
indices are taken relative to each item's minimum, so shifting every raw coordinate by a constant shifts every
mapped id by the same constant (the relative-position property).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor

from rope_lab.pe.kv_cache import KVCache
from rope_lab.pe.rotary import Rotary
from rope_lab.pe.types import IMAGE, NO_POSITION, TEXT, VIDEO, Positions

RAW_AXES = ("n", "t", "h", "w")
CACHE_KEY = "multimodal_delta"


@dataclass
class Layout:
    """Per-token and per-item facts of a multimodal batch; item tensors are (B, M) with M = N slots."""

    n: Tensor  # (B, N) raw flattened index
    vision: Tensor  # (B, N) bool
    item: Tensor  # (B, N) long item index of each token
    local: Tensor  # (B, N, 3) (t, h, w) relative to the item's minimum
    grid: Tensor  # (B, M, 3) (T, H', W') of each item (1 for text items)
    count: Tensor  # (B, M) tokens per item (0 for unused slots)
    n_start: Tensor  # (B, M) raw index of each item's first token
    vision_item: Tensor  # (B, M) bool

    def tokens(self, per_item: Tensor) -> Tensor:
        """Gather a per-item tensor (B, M[, k]) back to tokens (B, N[, k])."""
        if per_item.dim() == 2:
            return per_item.gather(1, self.item)
        return per_item.gather(1, self.item[..., None].expand(-1, -1, per_item.shape[-1]))


def _item_reduce(values: Tensor, item: Tensor, reduce: str, fill: float) -> Tensor:
    """Reduce (B, N[, k]) token values per item -> (B, M[, k]) (unused slots hold ``fill``)."""
    index = item if values.dim() == 2 else item[..., None].expand_as(values)
    out = torch.full_like(values, fill)
    return out.scatter_reduce(1, index, values, reduce=reduce, include_self=True)


def layout(positions: Positions) -> Layout:
    coords = positions.coords
    if coords.shape[-1] != len(RAW_AXES):
        raise ValueError(f"multimodal positions need {len(RAW_AXES)} axes {RAW_AXES} "
                         f"(see rope_lab.pe.variants.video.multimodal); got {coords.shape[-1]}-axis coords")
    b, n_tok, _ = coords.shape
    mod = positions.modality
    if mod is None:
        mod = torch.full((b, n_tok), TEXT, dtype=torch.long, device=coords.device)
    vision = (mod == IMAGE) | (mod == VIDEO)
    n, thw = coords[..., 0], coords[..., 1:]
    prev = thw.roll(1, dims=1)
    t, h, w = thw.unbind(-1)
    pt, ph, pw = prev.unbind(-1)
    increasing = (t > pt) | ((t == pt) & ((h > ph) | ((h == ph) & (w > pw))))
    new = (mod != mod.roll(1, dims=1)) | (vision & ~increasing)
    new[:, 0] = True
    item = new.long().cumsum(1) - 1
    lo = _item_reduce(thw, item, "amin", float("inf"))
    hi = _item_reduce(thw, item, "amax", float("-inf"))
    count = torch.zeros(b, n_tok, device=coords.device).scatter_add(1, item, torch.ones_like(n))
    used = count > 0
    vision_item = _item_reduce(vision.float(), item, "amax", 0.0) > 0
    grid = torch.where((used & vision_item)[..., None], hi - lo + 1, torch.ones_like(hi))
    n_start = torch.where(used, _item_reduce(n, item, "amin", float("inf")), torch.zeros_like(n))
    lo_tok = torch.where(vision[..., None], lo.gather(1, item[..., None].expand(-1, -1, 3)), thw)
    return Layout(n, vision, item, thw - lo_tok, grid, count, n_start, vision_item)


def mrope_sections(n_pairs: int, section: list[int] | None) -> list[int]:
    """(t, h, w) pair counts. Qwen2-VL: [16, 24, 24] for head_dim 128; other heads keep the 2:3:3 ratio."""
    if section is None:
        if n_pairs % 8:
            raise ValueError(f"the default mrope_section [16, 24, 24] scales to {n_pairs} rotary pairs only when "
                             f"they divide by 8; give pe.mrope_section explicitly (3 counts summing to {n_pairs})")
        return [n_pairs // 4, 3 * n_pairs // 8, 3 * n_pairs // 8]
    section = [int(s) for s in section]
    if len(section) != 3 or sum(section) != n_pairs or min(section) < 0:
        raise ValueError(f"mrope_section={section} must be 3 non-negative pair counts (t, h, w) summing to the "
                         f"{n_pairs} rotary pairs (head_dim/2)")
    return section


class MultimodalRotary(Rotary, ABC):
    """Base of the video-LLM variants: item-wise id assignment (see the module docstring) + a frequency plan.

    Subclasses set ``n_rows``, register the ``pair_rows`` buffer at setup and implement ``extent`` and
    ``vision_rows``; ``item_scale``, ``text_rows`` and ``combine`` have defaults.
    """

    multimodal = True
    min_axes = max_axes = len(RAW_AXES)
    #: how many rows of ids the position map produces (R: 1 for TAD-RoPE, 3 for M-RoPE / VideoRoPE, 4 for VRoPE)
    n_rows: int
    #: (R, P) buffer built at setup: pair j reads row r where pair_rows[r, j] == 1 (see ``section_onehot``)
    pair_rows: Tensor

    # -- variant hooks ----------------------------------------------------------------------------------------
    @abstractmethod
    def extent(self, grid: Tensor, scale: Tensor | float, positions: Positions) -> Tensor:
        """grid (B, M, 3) (T, H', W') of each item, temporal ``scale`` (B, M) or a float -> (B, M): how far a
        vision item advances the index."""

    @abstractmethod
    def vision_rows(self, start: Tensor, local: Tensor, grid: Tensor, scale: Tensor | float,
                    positions: Positions) -> Tensor:
        """Item start ids (B, N), local (t, h, w) (B, N, 3), the item's grid (B, N, 3), the token's temporal scale
        -> (B, N, R) the mapped ids of vision tokens."""

    def item_scale(self, lay: Layout, positions: Positions) -> Tensor | float:
        """Temporal spacing per item (B, M) or a float (VideoRoPE's delta, HoPE's dynamic scale)."""
        return 1.0

    def text_rows(self, ids: Tensor) -> Tensor:
        """(B, N) text ids -> (B, N, R): the same id on every row."""
        return ids[..., None].expand(*ids.shape, self.n_rows)

    def combine(self, n: Tensor, rows: Tensor) -> Tensor:
        """Final mapped coords from the raw index and the rows (TAD-RoPE adds the two)."""
        return rows

    # -- the shared position map ------------------------------------------------------------------------------
    def position_map(self, positions: Positions, cache: KVCache | None = None) -> Tensor:
        lay = layout(positions)
        scale = self.item_scale(lay, positions)
        used = lay.count > 0
        vis_extent = self.extent(lay.grid, scale, positions)
        extent = torch.where(lay.vision_item & used, vis_extent, lay.count)
        advance = extent - lay.count
        delta_before = advance.cumsum(1) - advance  # exclusive prefix sum over items
        offset = None if cache is None else cache.pe_state.get(CACHE_KEY)
        if offset is not None:
            delta_before = delta_before + offset[:, None]
        if cache is not None:
            cache.pe_state[CACHE_KEY] = delta_before[:, -1] + advance[:, -1]
        delta = lay.tokens(delta_before)
        text = self.text_rows(lay.n + delta)
        start = lay.tokens(lay.n_start + delta_before)
        tok_scale = lay.tokens(scale) if torch.is_tensor(scale) else scale
        vis = self.vision_rows(start, lay.local, lay.tokens(lay.grid), tok_scale, positions)
        rows = torch.where(lay.vision[..., None], vis, text)
        return self.combine(lay.n, rows)

    # -- property-test layout ---------------------------------------------------------------------------------
    def example_positions(self, batch: int, length: int, start: int = 0,
                          generator: torch.Generator | None = None) -> Positions:
        """2 text tokens, a video (T=2, H'=2, W'=1), then text; cut to ``length`` (used by the property tests).

        Consecutive tokens differ in t or h, never only in w: M-RoPE's w pairs are its lowest frequencies, too
        slow to tell neighbours apart after a bf16 cast of q (the property test's large-position check)."""
        return example_multimodal_positions(batch, length, start)

    @staticmethod
    def section_onehot(axes: list[int], n_rows: int) -> Tensor:
        """(R, P) one-hot: pair j reads row axes[j] (-1: no row, i.e. a position-free pair)."""
        onehot = torch.zeros(n_rows, len(axes))
        for j, a in enumerate(axes):
            if a >= 0:
                onehot[a, j] = 1.0
        return onehot

    def frequency_plan(self, inv_freq: Tensor, layer: int) -> Tensor:
        return (inv_freq[None, :] * self.pair_rows)[None]  # (1, R, P)


def example_multimodal_positions(batch: int, length: int, start: int = 0) -> Positions:
    kinds = [TEXT, TEXT] + [VIDEO] * 4
    thw = [(0, 0, 0), (0, 0, 0), (0, 0, 0), (0, 1, 0), (1, 0, 0), (1, 1, 0)]
    while len(kinds) < length:
        kinds.append(TEXT)
        thw.append((0, 0, 0))
    kinds, thw = kinds[:length], thw[:length]
    coords = torch.tensor([[start + i, *p] for i, p in enumerate(thw)], dtype=torch.float32)
    modality = torch.tensor(kinds, dtype=torch.long)
    return Positions(coords=coords.expand(batch, -1, -1).clone(), modality=modality.expand(batch, -1).clone())


__all__ = ["CACHE_KEY", "NO_POSITION", "Layout", "MultimodalRotary", "RAW_AXES", "example_multimodal_positions",
           "layout", "mrope_sections"]
