"""AnchorAttention (Wang et al., "When Precision Meets Position: BFloat16 Breaks Down RoPE in Long-Context
Training", TMLR 2025, arXiv 2411.13476).

Packed documents share ONE anchor token whose position id is fixed (0); every token attends causally within its
own document plus to the anchor; rotary positions stay continuous across documents (not reset). Reference
implementation: haonan3/AnchorContext (flex engine): doc ids ``1 + doc_id`` for documents and 0 for the anchor,
``mask = (doc[q] == doc[kv] | doc[kv] == 0) & (q >= kv)``, ``rotary position ids = arange(T)`` with the anchor at 0.

Here that is a position map (anchor tokens -> position 0) and a mask, with no backbone change. The task marks
anchor tokens with ``Positions.segment == ANCHOR_SEGMENT`` (``task=lm_longctx task.packing=true
task.anchor_token=<byte>``). Without segments (one unpacked document per row) it is exactly RoPE.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rope_lab.pe.kv_cache import KVCache
from rope_lab.pe.registry import register_pe
from rope_lab.pe.types import PEState, Positions
from rope_lab.pe.variants.text.rope import RoPE

ANCHOR_SEGMENT = 0


def anchor_keep_mask(q_seg: Tensor, k_seg: Tensor, past: int = 0) -> Tensor:
    """(B, Nq), (B, Nk) segment ids -> (B, 1, Nq, Nk) bool: causal & (same document | key is the anchor)."""
    nq, nk = q_seg.shape[1], k_seg.shape[1]
    causal = torch.arange(nk, device=q_seg.device)[None, :] <= torch.arange(nq, device=q_seg.device)[:, None] + past
    same = q_seg[:, :, None] == k_seg[:, None, :]
    anchor = (k_seg == ANCHOR_SEGMENT)[:, None, :]
    return ((same | anchor) & causal)[:, None]


@register_pe("anchor")
class AnchorRoPE(RoPE):
    """RoPE + AnchorAttention's anchor position map and document-plus-anchor mask (causal only)."""

    causal_only = True

    def position_map(self, positions: Positions, cache: KVCache | None = None) -> Tensor:
        coords = positions.coords
        if positions.segment is None:
            return coords
        return coords.masked_fill((positions.segment == ANCHOR_SEGMENT)[..., None], 0.0)

    def _mask(self, state: PEState, layer, nq, nk, past, causal, cache, device) -> Tensor | None:
        seg = state.positions.segment
        if seg is None:
            return super()._mask(state, layer, nq, nk, past, causal, cache, device)
        if not causal:
            raise ValueError("pe=anchor is causal only (AnchorAttention masks documents causally)")
        key_seg = seg if cache is None or cache.segments is None else cache.segments[:, -nk:]
        return anchor_keep_mask(seg, key_seg, past)
