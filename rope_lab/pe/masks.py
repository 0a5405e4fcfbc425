"""The attention mask builder: causal, segment (packing) and a variant's bias combined into one SDPA mask."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from rope_lab.pe.interface import PositionalEncoding
    from rope_lab.pe.kv_cache import KVCache
    from rope_lab.pe.types import PEState


def attention_mask(pe: PositionalEncoding, state: PEState, layer: int, nq: int, nk: int, past: int, causal: bool,
                   cache: KVCache | None, device) -> Tensor | None:
    """Combine causal, segment (packing) and ``pe``'s bias into one SDPA mask (None if not needed).

    ``nq`` queries follow ``past`` cached tokens and attend to ``nk`` keys; a boolean bias is a keep-mask, a float
    bias is added to the logits with the masked-out entries set to -inf.
    """
    keep = None
    if causal and (past > 0 or state.positions.segment is not None or pe._has_bias(state, layer)):
        qi = torch.arange(nq, device=device)[:, None] + past
        keep = torch.arange(nk, device=device)[None, :] <= qi
    seg = state.positions.segment
    if seg is not None:
        key_seg = seg if cache is None or cache.segments is None else cache.segments
        same = seg[:, None, :, None] == key_seg[:, None, None, -nk:]
        keep = same if keep is None else keep & same
    bias = pe.bias(state, layer, nq, nk)
    if bias is None:
        return keep
    if bias.dtype == torch.bool:
        return bias if keep is None else bias & keep
    if keep is None:
        return bias
    return bias.masked_fill(~keep, float("-inf"))
