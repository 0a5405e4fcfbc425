"""Route a transformers decoder's attention through a rope_lab positional encoding, without patching transformers.

Two documented extension points of transformers 5 are used:

- ``AttentionInterface.register("rope_lab", fn)``: every Llama/Qwen2/Mistral attention layer calls
  ``fn(module, q, k, v, mask, scaling=, dropout=, **kwargs)`` after its projections; the model's own rotation
  has been given an identity table (cos 1, sin 0: ``q * 1 + rotate_half(q) * 0`` is q exactly), so ``fn`` receives
  un-rotated q/k and hands them to ``pe.attend`` (rotation, bias/mask, KV cache, SDPA);
- a forward pre-hook on each ``self_attn`` adds the layer's input (``hidden_states``) to the call, for PEs that
  read it (PaTH).

The per-forward PE state travels as the keyword ``rope_lab`` (a :class:`PECall`) through the decoder layers' own
``**kwargs``. Without it (the HF model called directly) ``fn`` is transformers' SDPA attention, so the wrapped
model still works as a plain HF model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from rope_lab.pe import KVCache, PEState, PositionalEncoding

ATTN_IMPLEMENTATION = "rope_lab"


@dataclass
class PECall:
    """What one forward hands every attention layer: the PE, its state, our KV cache and the layer input."""

    pe: PositionalEncoding
    state: PEState
    cache: KVCache | None = None
    x: Tensor | None = None


def rope_lab_attention(module: nn.Module, query: Tensor, key: Tensor, value: Tensor, attention_mask, scaling=None,
                       dropout: float = 0.0, **kwargs) -> tuple[Tensor, None]:
    """transformers attention-interface function: (B, H, N, D) q/k/v -> ((B, N, H, D), no weights)."""
    call: PECall | None = kwargs.pop("rope_lab", None)
    if call is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                      **kwargs)
    layer = module.layer_idx
    window = kwargs.get("sliding_window")
    if window is not None:
        past = 0 if call.cache is None or call.cache.keys[layer] is None else call.cache.keys[layer].shape[-2]
        if past + key.shape[-2] > window:
            raise ValueError(f"layer {layer} uses sliding-window attention (window {window}) and this input has "
                             f"{past + key.shape[-2]} keys; backbone=hf_causal_lm applies full causal attention "
                             f"only: keep inputs within the window or use a model without sliding_window")
    default = query.shape[-1] ** -0.5
    if scaling is not None and scaling != default:  # pe.attend uses SDPA's 1/sqrt(d); fold the model's into q
        query = query * (scaling / default)
    out = call.pe.attend(query, key, value, state=call.state, layer=layer, causal=True, x=call.x, cache=call.cache)
    return out.transpose(1, 2), None


def _with_layer_input(module: nn.Module, args: tuple, kwargs: dict):
    """Forward pre-hook of ``self_attn``: put the layer input into the ``rope_lab`` call (PEs that read it)."""
    call = kwargs.get("rope_lab")
    if call is not None:
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        kwargs["rope_lab"] = dataclasses.replace(call, x=hidden)
    return args, kwargs


def register() -> None:
    """Register the attention function (and SDPA's mask for direct HF calls) under ``rope_lab``; idempotent."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    AttentionInterface.register(ATTN_IMPLEMENTATION, rope_lab_attention)
    AttentionMaskInterface.register(ATTN_IMPLEMENTATION, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])


def attach(model: nn.Module) -> None:
    """Switch a loaded HF causal LM to the ``rope_lab`` attention and hook its attention layers."""
    register()
    model.set_attn_implementation(ATTN_IMPLEMENTATION)
    for layer in model.model.layers:
        layer.self_attn.register_forward_pre_hook(_with_layer_input, with_kwargs=True)


def identity_rotation(x: Tensor, head_dim: int) -> tuple[Tensor, Tensor]:
    """(cos, sin) = (1, 0) broadcastable to every token: the model's own ``apply_rotary_pos_emb`` leaves q/k as is."""
    ones = torch.ones(1, 1, head_dim, dtype=x.dtype, device=x.device)
    return ones, torch.zeros_like(ones)
