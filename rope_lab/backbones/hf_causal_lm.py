"""``backbone=hf_causal_lm``: a transformers Llama / Qwen2 / Mistral causal LM (pretrained weights from a local
directory, or random for smoke runs) whose positions are a rope_lab PE's.

The HF model keeps its embeddings, projections, MLPs, norms and head; attention goes through ``pe.attend`` (see
rope_lab/backbones/hf_attention.py), so every PE applies to real weights through the same interface as our own
decoder. With ``rope_from=checkpoint`` (default) a rotary PE takes the checkpoint's geometry from its config
(``rope_theta`` as ``pe.base``, ``partial_rotary_factor``, HF's rotate-half layout) and, when ``pe.scaling`` is
``none``, its rope scaling (rope_lab/pe/hf_rope.py): ``pe=rope`` then gives the unmodified model's logits, and
``pe/scaling=yarn ...`` applies YaRN instead of the checkpoint's own. ``rope_from=pe`` uses the PE as configured.

Reference: transformers ``LlamaForCausalLM`` / ``Qwen2ForCausalLM`` / ``MistralForCausalLM`` (tests compare logits).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from rope_lab.backbones import hf_attention
from rope_lab.backbones.registry import register_backbone
from rope_lab.extras import require
from rope_lab.pe import AttentionGeometry, KVCache, PositionalEncoding, Positions
from rope_lab.pe.hf_rope import HFRope, rope_from_hf

log = logging.getLogger(__name__)
FAMILIES = ("llama", "mistral", "qwen2")
ROPE_FROM = ("checkpoint", "pe")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}


@dataclass
class HFCausalLMConfig:
    pretrained: str | None = None  # a local checkpoint dir (config.json + safetensors) or hub id; None: random
    rope_from: str = "checkpoint"  # checkpoint | pe (see the module docstring)
    dtype: str = "float32"  # float32 | bfloat16 | float16 | auto (the checkpoint's)
    gradient_checkpointing: bool = False
    # random initialisation (pretrained=None): a model of this family and size, vocabulary from the task
    family: str = "llama"
    hidden_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    intermediate_size: int = 256
    rope_theta: float = 10000.0
    max_position_embeddings: int = 4096


def _choice(key: str, value: str, valid) -> None:
    if value not in valid:
        raise ValueError(f"backbone.{key}={value!r} is not one of {list(valid)}")


def load_hf_model(cfg: HFCausalLMConfig, vocab_size: int | None) -> nn.Module:
    """The transformers causal LM: ``from_pretrained`` of ``cfg.pretrained``, or random of ``cfg``'s sizes."""
    transformers = require("transformers", "backbone=hf_causal_lm")
    dtype = DTYPES[cfg.dtype]
    if cfg.pretrained is None:
        config = transformers.AutoConfig.for_model(
            cfg.family, vocab_size=vocab_size or 256, hidden_size=cfg.hidden_size,
            num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
            num_key_value_heads=cfg.num_key_value_heads, intermediate_size=cfg.intermediate_size,
            max_position_embeddings=cfg.max_position_embeddings, tie_word_embeddings=False,
            rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta})
        model = transformers.AutoModelForCausalLM.from_config(config)
        return model if dtype == "auto" else model.to(dtype)
    local = Path(cfg.pretrained).expanduser()
    if cfg.pretrained.startswith((".", "/", "~")) and not local.is_dir():
        raise FileNotFoundError(f"backbone.pretrained={cfg.pretrained!r} is not a directory (a checkpoint dir with "
                                f"config.json and *.safetensors, or a hub id)")
    config = transformers.AutoConfig.from_pretrained(str(local) if local.is_dir() else cfg.pretrained)
    _choice("pretrained model_type", config.model_type, FAMILIES)
    return transformers.AutoModelForCausalLM.from_pretrained(str(local) if local.is_dir() else cfg.pretrained,
                                                             dtype=dtype)


def with_checkpoint_rope(pe: PositionalEncoding, rope: HFRope) -> PositionalEncoding:
    """``pe`` rebuilt with the checkpoint's base, rotary fraction and half layout, and its scaling if ``pe`` has
    none; a PE without those options (not rotary) is returned as it is."""
    if not pe.is_rotary:
        return pe
    fields = {f.name for f in dataclasses.fields(pe.cfg)}
    own = (pe.cfg.scaling or {}).get("name", "none") if "scaling" in fields else "none"
    changes = {"base": rope.base, "rotary_fraction": rope.rotary_fraction, "pair_layout": "half"}
    if own == "none":
        changes["scaling"] = rope.scaling
    else:
        log.info("pe.scaling=%s replaces the checkpoint's rope scaling %s", own, rope.scaling)
    return type(pe)(dataclasses.replace(pe.cfg, **{k: v for k, v in changes.items() if k in fields}))


@register_backbone("hf_causal_lm")
class HFCausalLM(nn.Module):
    """``forward(tokens, positions=None, cache=None) -> logits (B, N, vocab)``; positions default to 0..N-1 (after
    the cache's length)."""

    Config = HFCausalLMConfig

    def __init__(self, cfg: HFCausalLMConfig, pe: PositionalEncoding, spec=None) -> None:
        super().__init__()
        _choice("rope_from", cfg.rope_from, ROPE_FROM)
        _choice("dtype", cfg.dtype, DTYPES)
        _choice("family", cfg.family, FAMILIES)
        vocab = None if spec is None else spec.vocab_size
        self.cfg, self.hf = cfg, load_hf_model(cfg, vocab).train()  # from_pretrained returns eval mode
        text = self.hf.config
        self.where = cfg.pretrained or f"a random {cfg.family} model"
        if vocab is not None and vocab > text.vocab_size:
            raise ValueError(f"the task's vocabulary ({vocab} tokens) is larger than the model's ({text.vocab_size}) "
                             f"of {self.where}; use the model's tokenizer (task.tokenizer=<checkpoint dir>)")
        if cfg.pretrained and spec is not None and spec.extra.get("tokenizer", "bytes") is None:
            log.warning("backbone.pretrained=%s reads the task's byte tokens, not its own vocabulary: set "
                        "task.tokenizer=<checkpoint dir> for meaningful text", cfg.pretrained)
        if getattr(text, "attention_dropout", 0.0):
            raise ValueError(f"{self.where} has attention_dropout={text.attention_dropout}; pe.attend has no dropout")
        if cfg.rope_from == "checkpoint":
            pe = with_checkpoint_rope(pe, rope_from_hf(text))
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        self.geometry = AttentionGeometry(text.hidden_size, head_dim, text.num_attention_heads,
                                          text.num_key_value_heads, text.num_hidden_layers,
                                          max_tokens=spec.max_tokens if spec is not None else 4096)
        pe.check_compatible(1, True, axes=("token",))
        self.pe = pe.setup(self.geometry)
        self._probe()
        hf_attention.attach(self.hf)
        if cfg.gradient_checkpointing:
            self.hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    def _probe(self) -> None:
        """One attention call on zeros, so a PE that does not fit this model's heads fails here, naming both."""
        g = self.geometry
        q = torch.zeros(1, g.n_heads, 2, g.head_dim)
        kv = torch.zeros(1, g.n_kv_heads, 2, g.head_dim)
        try:
            with torch.no_grad():
                state = self.pe.prepare(Positions.sequence(1, 2))
                self.pe.attend(q, kv, kv, state=state, layer=0, causal=True, x=torch.zeros(1, 2, g.dim))
        except (ValueError, RuntimeError, IndexError) as err:
            raise ValueError(f"pe={self.pe.name} does not fit {self.where} (head_dim={g.head_dim}, n_heads="
                             f"{g.n_heads}, n_kv_heads={g.n_kv_heads}): {err}") from err

    def new_cache(self) -> KVCache:
        return KVCache(self.geometry.depth)

    def forward(self, tokens: Tensor, positions: Positions | None = None, cache: KVCache | None = None) -> Tensor:
        if positions is None:
            start = 0 if cache is None else cache.length
            positions = Positions.sequence(tokens.shape[0], tokens.shape[1], start=start, device=tokens.device)
        state = self.pe.prepare(positions, cache)
        x = self.pe.embed(self.hf.get_input_embeddings()(tokens), state)
        if cache is not None and positions.segment is not None:
            seg = positions.segment
            cache.segments = seg if cache.segments is None else torch.cat([cache.segments, seg], dim=1)
        call = hf_attention.PECall(self.pe, state, cache)
        rotation = hf_attention.identity_rotation(x, self.geometry.head_dim)
        for layer in self.hf.model.layers:
            x = layer(x, attention_mask=None, position_embeddings=rotation, rope_lab=call)
        return self.hf.lm_head(self.hf.model.norm(x))


def load_pretrained_causal_lm(path: str | Path, pe: str | dict | PositionalEncoding | None = None,
                              scaling: str | dict | None = None, *, dtype: str = "float32",
                              rope_from: str = "checkpoint") -> HFCausalLM:
    """A pretrained Llama/Qwen2/Mistral checkpoint dir as a module whose ``forward(input_ids)`` gives logits
    (B, N, vocab), its positions set by rope_lab: ``pe`` (name, config dict or un-set-up PE; default ``rope``) and
    ``scaling`` (name or dict, e.g. ``{"name": "yarn", "factor": 4.0}``). A scaling without
    ``original_max_position_embeddings`` gets the checkpoint's (its rope config's L0, else max_position_embeddings).
    With no ``pe`` and no ``scaling`` the logits are the unmodified HF model's."""
    if not isinstance(pe, PositionalEncoding):
        pe_cfg = {"name": pe} if isinstance(pe, str) else dict(pe or {"name": "rope"})
        if scaling is not None:
            scaling = {"name": scaling} if isinstance(scaling, str) else dict(scaling)
            scaling.setdefault("original_max_position_embeddings", _checkpoint_length(path))
            pe_cfg["scaling"] = scaling
        from rope_lab.pe.registry import build_pe

        pe = build_pe(pe_cfg)
    cfg = HFCausalLMConfig(pretrained=str(path), dtype=dtype, rope_from=rope_from)
    return HFCausalLM(cfg, pe).eval()


def _checkpoint_length(path: str | Path) -> int:
    """The length a checkpoint was trained at: its rope config's L0, else ``max_position_embeddings``."""
    transformers = require("transformers", "load_pretrained_causal_lm")
    config = transformers.AutoConfig.from_pretrained(str(path))
    return rope_from_hf(config).scaling.get("original_max_position_embeddings") or config.max_position_embeddings
