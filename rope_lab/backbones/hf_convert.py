"""Convert between transformers Llama / Qwen2 / Mistral causal LMs and our LLaMA decoder
(rope_lab/backbones/decoder.py): configs and state dicts, both ways.

The two architectures are the same computation (pre-norm RMSNorm blocks, SwiGLU, grouped-query attention, Qwen2's
q/k/v biases as ``qkv_bias``); only parameter names differ, plus the rotary pair layout: HF checkpoints rotate
halves (``rotate_half``), so a decoder with ``pe.pair_layout=interleaved`` (Meta / GPT-J) gets its q/k projection
rows permuted per head on the way, as transformers' own ``convert_llama_weights_to_hf`` does for Meta checkpoints.
The rope config goes through rope_lab/pe/hf_rope.py. transformers is needed only to build HF models.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor

from rope_lab.backbones.decoder import Decoder, DecoderConfig
from rope_lab.extras import require
from rope_lab.pe.hf_rope import pe_to_hf, rope_from_hf
from rope_lab.pe.registry import build_pe

log = logging.getLogger(__name__)
FAMILIES = ("llama", "mistral", "qwen2")
#: ours (under ``blocks.{i}.``) -> HF (under ``model.layers.{i}.``)
LAYER_KEYS = {
    "attn_norm.weight": "input_layernorm.weight", "mlp_norm.weight": "post_attention_layernorm.weight",
    "attn.q_proj.weight": "self_attn.q_proj.weight", "attn.k_proj.weight": "self_attn.k_proj.weight",
    "attn.v_proj.weight": "self_attn.v_proj.weight", "attn.o_proj.weight": "self_attn.o_proj.weight",
    "mlp.gate.weight": "mlp.gate_proj.weight", "mlp.up.weight": "mlp.up_proj.weight",
    "mlp.down.weight": "mlp.down_proj.weight",
}
BIAS_KEYS = {"attn.q_proj.bias": "self_attn.q_proj.bias", "attn.k_proj.bias": "self_attn.k_proj.bias",
             "attn.v_proj.bias": "self_attn.v_proj.bias"}
TOP_KEYS = {"embed_tokens.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight",
            "lm_head.weight": "lm_head.weight"}


def _get(config: Any, key: str, default=None):
    return config.get(key, default) if isinstance(config, dict) else getattr(config, key, default)


def decoder_config_from_hf(config: Any) -> DecoderConfig:
    """A HF config (object or config.json dict) -> our DecoderConfig; refuses what our decoder cannot express."""
    kind = _get(config, "model_type")
    if kind not in FAMILIES:
        raise ValueError(f"model_type {kind!r} has no converter to backbone=llama; supported: {list(FAMILIES)}")
    dim, heads = _get(config, "hidden_size"), _get(config, "num_attention_heads")
    head_dim = _get(config, "head_dim") or dim // heads
    unsupported = {"hidden_act": _get(config, "hidden_act", "silu") != "silu", "head_dim": head_dim * heads != dim,
                   "mlp_bias": bool(_get(config, "mlp_bias")),
                   "attention_bias": kind == "llama" and bool(_get(config, "attention_bias"))}
    bad = [k for k, v in unsupported.items() if v]
    if bad:
        raise ValueError(f"our decoder cannot express this {kind} config's {bad} (needs silu, head_dim = hidden_size"
                         f" / num_attention_heads, no MLP or output-projection bias)")
    if _get(config, "sliding_window") and (kind == "mistral" or _get(config, "use_sliding_window")):
        log.warning("the %s config uses sliding-window attention (window %s); our decoder attends to every earlier "
                    "token, so logits differ beyond the window", kind, _get(config, "sliding_window"))
    return DecoderConfig(vocab_size=_get(config, "vocab_size"), dim=dim, depth=_get(config, "num_hidden_layers"),
                         n_heads=heads, n_kv_heads=_get(config, "num_key_value_heads") or heads,
                         mlp_hidden=_get(config, "intermediate_size"), norm_eps=_get(config, "rms_norm_eps"),
                         qkv_bias=kind == "qwen2", tie_embeddings=bool(_get(config, "tie_word_embeddings")),
                         max_tokens=_get(config, "max_position_embeddings") or 4096)


def key_map(cfg: DecoderConfig) -> dict[str, str]:
    """Every parameter name of our decoder -> its HF name."""
    layer = {**LAYER_KEYS, **(BIAS_KEYS if cfg.qkv_bias else {})}
    out = dict(TOP_KEYS)
    for i in range(cfg.depth):
        out |= {f"blocks.{i}.{ours}": f"model.layers.{i}.{hf}" for ours, hf in layer.items()}
    return out


def _half_from_interleaved(w: Tensor, head_dim: int) -> Tensor:
    """Reorder the output rows of each head from pairs (2j, 2j+1) to halves (j, j + d/2)."""
    return w.reshape(-1, head_dim // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def _interleaved_from_half(w: Tensor, head_dim: int) -> Tensor:
    return w.reshape(-1, 2, head_dim // 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def _permute_qk(sd: dict[str, Tensor], cfg: DecoderConfig, fn) -> dict[str, Tensor]:
    head_dim = cfg.dim // cfg.n_heads
    return {k: fn(v, head_dim) if ".q_proj." in k or ".k_proj." in k else v for k, v in sd.items()}


def state_dict_from_hf(sd: dict[str, Tensor], cfg: DecoderConfig, pair_layout: str = "half") -> dict[str, Tensor]:
    """HF state dict -> ours (every key of our decoder; a tied ``lm_head`` may be absent from the HF dict)."""
    out, missing = {}, []
    for ours, hf in key_map(cfg).items():
        if hf not in sd and ours == "lm_head.weight" and cfg.tie_embeddings:
            hf = TOP_KEYS["embed_tokens.weight"]
        if hf not in sd:
            missing.append(hf)
            continue
        out[ours] = sd[hf]
    if missing:
        raise KeyError(f"the HF state dict lacks {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    return _permute_qk(out, cfg, _interleaved_from_half) if pair_layout == "interleaved" else out


def state_dict_to_hf(sd: dict[str, Tensor], cfg: DecoderConfig, pair_layout: str = "half") -> dict[str, Tensor]:
    """Our decoder's state dict -> HF names (what ``LlamaForCausalLM.load_state_dict`` expects)."""
    sd = _permute_qk(sd, cfg, _half_from_interleaved) if pair_layout == "interleaved" else sd
    return {hf: sd[ours] for ours, hf in key_map(cfg).items()}


def decoder_from_hf(model, pe=None, pair_layout: str = "half") -> Decoder:
    """A transformers causal LM -> our Decoder with the same weights. ``pe``: an un-set-up PE or a pe config dict
    (default: ``rope`` with the model's own rope config, so the logits match the HF model's)."""
    cfg = decoder_config_from_hf(model.config)
    if pe is None or isinstance(pe, dict):
        pe = build_pe({**rope_from_hf(model.config).pe_config(), "pair_layout": pair_layout, **(pe or {})})
    decoder = Decoder(cfg, pe)
    decoder.load_state_dict(state_dict_from_hf(model.state_dict(), cfg, pair_layout), strict=True)
    return decoder


def hf_config_from_decoder(cfg: DecoderConfig, pe, model_type: str | None = None):
    """Our DecoderConfig + a set-up rotary pe -> a transformers config of ``model_type`` (default: qwen2 with q/k/v
    biases, else llama)."""
    transformers = require("transformers", "converting to a transformers model")
    model_type = model_type or ("qwen2" if cfg.qkv_bias else "llama")
    if model_type not in FAMILIES:
        raise ValueError(f"model_type {model_type!r} is not one of {list(FAMILIES)}")
    if cfg.attention != "mha" or (cfg.qkv_bias and model_type != "qwen2"):
        raise ValueError(f"a decoder with attention={cfg.attention}, qkv_bias={cfg.qkv_bias} has no {model_type} "
                         f"equivalent (standard attention; q/k/v biases only as qwen2)")
    extra = {"sliding_window": None} if model_type == "mistral" else {}
    fields = {"rope_parameters": None, "max_position_embeddings": cfg.max_tokens, **pe_to_hf(pe)}
    return transformers.AutoConfig.for_model(
        model_type, vocab_size=cfg.vocab_size, hidden_size=cfg.dim, num_hidden_layers=cfg.depth,
        num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_kv_heads, intermediate_size=cfg.mlp_hidden,
        rms_norm_eps=cfg.norm_eps, tie_word_embeddings=cfg.tie_embeddings, hidden_act="silu", **extra, **fields)


def decoder_to_hf(decoder: Decoder, model_type: str | None = None):
    """Our Decoder -> a transformers causal LM with the same weights and rope config (fp32, SDPA attention)."""
    transformers = require("transformers", "converting to a transformers model")
    pe = decoder.pe
    if pe.cfg.pair_layout == "interleaved" and 2 * pe.n_pairs != decoder.cfg.dim // decoder.cfg.n_heads:
        raise ValueError("an interleaved-pair decoder with partial rotary has no rotate-half equivalent here; "
                         "use pe.rotary_fraction=1.0 or pe.pair_layout=half")
    config = hf_config_from_decoder(decoder.cfg, pe, model_type)
    model = transformers.AutoModelForCausalLM.from_config(config)
    sd = state_dict_to_hf(decoder.state_dict(), decoder.cfg, decoder.pe.cfg.pair_layout)
    if config.model_type == "qwen2" and not decoder.cfg.qkv_bias:  # Qwen2 always has the biases: zero = none
        sd |= {f"model.layers.{i}.{hf}": torch.zeros_like(model.state_dict()[f"model.layers.{i}.{hf}"])
               for i in range(decoder.cfg.depth) for hf in BIAS_KEYS.values()}
    missing, unexpected = model.load_state_dict({k: v.detach().clone() for k, v in sd.items()}, strict=False)
    if unexpected or [m for m in missing if not (config.tie_word_embeddings and m == "lm_head.weight")]:
        raise KeyError(f"conversion left HF keys missing {missing} / unexpected {unexpected}")
    return model.eval()
