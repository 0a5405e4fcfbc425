"""Interop with Hugging Face rope configs: a model's ``config.json`` rope fields <-> our RoPE base + ``pe/scaling``.

Reads both formats transformers has used: 5.x ``rope_parameters`` (``rope_type``, ``rope_theta`` and the scaling's
options in one dict) and 4.x ``rope_scaling`` (``type`` or ``rope_type``) next to a top-level ``rope_theta`` and
``partial_rotary_factor``. The rules follow transformers 5 ``modeling_rope_utils`` (``standardize_rope_params`` and
the ``_compute_*_parameters`` functions), so the frequencies we build equal the ones HF builds from the same file:

- rope types: ``default`` -> none, ``linear``, ``dynamic`` -> dynamic_ntk, ``yarn``, ``longrope``, ``llama3``;
  legacy aliases ``su`` (early Phi-3) -> longrope and ``mrope`` (Qwen2-VL) -> default;
- L0 of llama3 / yarn / longrope: a top-level ``original_max_position_embeddings`` (Phi-3) wins, then the rope
  dict's, then ``max_position_embeddings``; dynamic NTK's L0 is always ``max_position_embeddings``;
- yarn / longrope without ``factor``: ``factor = max_position_embeddings / L0`` (the derived-factor rule).

Writing back gives a ``rope_parameters`` dict (or the legacy pair with ``legacy=True``); static ``ntk`` becomes
``default`` with the equivalent base ``base * factor^(d/(d-2))``; ``dynamic_yarn`` has no HF rope type and is refused.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any, Mapping

log = logging.getLogger(__name__)

#: HF rope_type -> our scaling name
HF_TO_SCALING = {"default": "none", "linear": "linear", "dynamic": "dynamic_ntk", "yarn": "yarn",
                 "longrope": "longrope", "llama3": "llama3"}
LEGACY_ALIASES = {"su": "longrope", "mrope": "default"}
#: options copied verbatim from the HF dict into our scaling config (when present and not None)
_PASSTHROUGH = {
    "linear": ("factor",),
    "dynamic_ntk": ("factor",),
    "yarn": ("factor", "beta_fast", "beta_slow", "attention_factor", "mscale", "mscale_all_dim", "truncate"),
    "longrope": ("short_factor", "long_factor", "factor", "attention_factor"),
    "llama3": ("factor", "low_freq_factor", "high_freq_factor"),
}
_WITH_L0 = ("yarn", "longrope", "llama3")


@dataclass
class HFRope:
    """What a HF config says about RoPE, in our terms: ``pe.base``, ``pe.rotary_fraction``, ``pe.scaling``."""

    base: float = 10000.0
    rotary_fraction: float = 1.0
    scaling: dict[str, Any] = field(default_factory=lambda: {"name": "none"})

    def pe_config(self, name: str = "rope") -> dict[str, Any]:
        """A ``pe`` config (HF's rotate-half layout) that reproduces the model's rotary embedding."""
        return {"name": name, "base": self.base, "rotary_fraction": self.rotary_fraction, "pair_layout": "half",
                "scaling": dict(self.scaling)}


def _as_dict(config: Any) -> dict[str, Any]:
    if isinstance(config, Mapping):
        return dict(config)
    if hasattr(config, "to_dict"):  # a transformers PreTrainedConfig
        return config.to_dict()
    raise TypeError(f"expected a config.json dict or a transformers config; got {type(config).__name__}")


def rope_type_of(params: Mapping[str, Any]) -> str:
    """The HF rope type of a rope dict (``rope_type``, else the legacy ``type``; aliases resolved)."""
    kind = params.get("rope_type", params.get("type")) or "default"
    kind = LEGACY_ALIASES.get(kind, kind)
    if kind not in HF_TO_SCALING:
        raise ValueError(f"rope_type {kind!r} has no rope_lab scaling; supported: {sorted(HF_TO_SCALING)} "
                         f"(and the legacy aliases {sorted(LEGACY_ALIASES)})")
    return kind


def rope_from_hf(config: Any) -> HFRope:
    """A HF config (``config.json`` as a dict, or a transformers config) -> :class:`HFRope`."""
    cfg = _as_dict(config)
    if "text_config" in cfg and "rope_parameters" not in cfg and "rope_scaling" not in cfg:
        cfg = _as_dict(cfg["text_config"])  # multimodal wrappers keep the language model's rope there
    params = dict(cfg.get("rope_parameters") or cfg.get("rope_scaling") or {})
    if params and all(isinstance(v, Mapping) or v is None for v in params.values()):
        raise ValueError(f"per-layer-type rope parameters ({sorted(params)}) are not supported: rope_lab applies "
                         f"one rope to every layer")
    base = float(params.get("rope_theta", cfg.get("rope_theta", 10000.0)))
    fraction = float(params.get("partial_rotary_factor") or cfg.get("partial_rotary_factor") or 1.0)
    name = HF_TO_SCALING[rope_type_of(params)]
    scaling: dict[str, Any] = {"name": name}
    for key in _PASSTHROUGH.get(name, ()):
        if params.get(key) is not None:
            scaling[key] = params[key]
    max_pos = cfg.get("max_position_embeddings")
    if name == "dynamic_ntk":
        scaling["original_max_position_embeddings"] = _need(max_pos, "max_position_embeddings", "dynamic")
    if name in _WITH_L0:
        l0 = cfg.get("original_max_position_embeddings") or params.get("original_max_position_embeddings") or max_pos
        scaling["original_max_position_embeddings"] = int(_need(l0, "original_max_position_embeddings", name))
    if name in ("yarn", "longrope") and scaling.get("factor") is None:
        l0 = scaling["original_max_position_embeddings"]
        scaling["factor"] = _need(max_pos, "max_position_embeddings", name) / l0
    if name in ("yarn", "llama3") and "factor" not in scaling:
        raise ValueError(f"rope_type {name!r} needs a 'factor' in the config's rope parameters")
    return HFRope(base, fraction, scaling)


def _need(value: Any, key: str, kind: str) -> Any:
    if value is None:
        raise ValueError(f"rope_type {kind!r}: the config has no {key}, which HF uses for it")
    return value


def _typed_scaling(scaling: Mapping[str, Any] | Any) -> tuple[str, dict[str, Any]]:
    """(name, every option with its default filled in) of a scaling config dict."""
    from rope_lab.pe.registry import SCALING

    cls, typed = SCALING.config(dict(scaling))
    return cls.name, dataclasses.asdict(typed)


def rope_to_hf(base: float, scaling: Mapping[str, Any] | None = None, rotary_fraction: float = 1.0,
               rotary_dim: int | None = None, legacy: bool = False) -> dict[str, Any]:
    """Our base + scaling -> the config.json fields HF reads (``rope_parameters``; with ``legacy=True`` the 4.x
    ``rope_theta`` + ``rope_scaling``). Dynamic NTK also sets ``max_position_embeddings`` (HF's L0 for it).
    ``rotary_dim`` (rotated channels per head) is needed only for static ``ntk``."""
    name, opts = _typed_scaling(scaling or {"name": "none"})
    extra: dict[str, Any] = {}
    if name == "ntk":
        if rotary_dim is None:
            raise ValueError("writing scaling 'ntk' as HF needs rotary_dim (its base is base * factor^(d/(d-2)))")
        base, name = base * opts["factor"] ** (rotary_dim / (rotary_dim - 2)), "none"
    if name == "dynamic_yarn":
        raise ValueError(f"scaling 'dynamic_yarn' has no HF rope_type; HF supports "
                         f"{sorted(set(HF_TO_SCALING.values()) | {'ntk'})}")
    if name == "dynamic_ntk" and opts["kv_cache"] != "hf":
        log.warning("pe.scaling.kv_cache=%s is not expressible in HF; HF decoding keeps cached keys' rotation",
                    opts["kv_cache"])
    kind = {v: k for k, v in HF_TO_SCALING.items()}[name]
    params: dict[str, Any] = {"rope_type": kind}
    for key in _PASSTHROUGH.get(name, ()):
        if opts.get(key) is not None:
            params[key] = opts[key]
    if name == "longrope":  # the factor we use, explicit (HF would derive it from a max_position_embeddings)
        from rope_lab.pe.registry import build_scaling

        params["factor"] = build_scaling({"name": name, **opts}).scale_factor()
    if name in _WITH_L0:
        params["original_max_position_embeddings"] = opts["original_max_position_embeddings"]
    if name == "dynamic_ntk":
        extra["max_position_embeddings"] = opts["original_max_position_embeddings"]
    if legacy:
        theta = {"rope_theta": base}
        fraction = {} if rotary_fraction == 1.0 else {"partial_rotary_factor": rotary_fraction}
        return {**theta, **fraction, "rope_scaling": None if kind == "default" else params, **extra}
    params["rope_theta"] = base
    if rotary_fraction != 1.0:
        params["partial_rotary_factor"] = rotary_fraction
    return {"rope_parameters": params, **extra}


def pe_to_hf(pe, legacy: bool = False) -> dict[str, Any]:
    """A set-up ``pe=rope`` (any scaling, no PSC) -> HF config fields; other variants change positions or
    frequencies in ways no HF rope config expresses."""
    if pe.name != "rope" or pe.geometry is None or pe.cfg.psc:
        raise ValueError(f"only a set-up pe=rope without psc has a HF rope config; got pe={pe.name}")
    return rope_to_hf(pe.cfg.base, pe.cfg.scaling, pe.cfg.rotary_fraction, 2 * pe.n_pairs, legacy)
