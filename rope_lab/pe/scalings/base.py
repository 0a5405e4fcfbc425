"""Context-extension scalings: rewrite a frequency vector and return an attention factor.

A scaling composes with any rotary variant (``pe/scaling=<name>``). It sees the 1-D inverse frequencies
(one per rotary pair) before the variant assigns pairs to axes, exactly as HF's
``ROPE_INIT_FUNCTIONS`` do before M-RoPE sections are taken.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from torch import Tensor

from rope_lab.pe.registry import register_scaling

#: How a length-dependent scaling treats a KV cache (user_reports.md, "Caching"):
#: "hf"          each forward rotates its own keys with the frequencies of its length; cached keys keep the
#:               rotation they were written with (HF ``dynamic_rope_update`` + generate).
#: "consistent"  the cache holds un-rotated keys and their positions; every forward re-rotates all of them with
#:               the current frequencies, so attention never mixes rotations (rope_lab/pe/scalings/cache.py).
KV_CACHE_MODES = ("hf", "consistent")


class Scaling(ABC):
    """Base class. ``rewrite(inv_freq, seq_len)`` -> (inv_freq', attention_factor).

    ``seq_len`` is a 0-d tensor (max position + 1 of the current forward) for length-dependent scalings;
    it is never turned into a Python number, so there is no host sync and no length-keyed cache.
    ``attention_factor`` multiplies both q and k (HF multiplies cos and sin), i.e. logits get its square.
    """

    name = "base"
    length_dependent = False

    @dataclass
    class Config:
        pass

    def __init__(self, cfg) -> None:
        self.cfg = cfg

    def setup(self, rotary_dim: int, base: float) -> None:
        self.rotary_dim, self.base = rotary_dim, base

    @property
    def rerotates_cache(self) -> bool:
        """True when cached keys must be stored un-rotated and re-rotated every forward ("consistent")."""
        return self.length_dependent and getattr(self.cfg, "kv_cache", "hf") == "consistent"

    @abstractmethod
    def rewrite(self, inv_freq: Tensor, seq_len: Tensor | None = None) -> tuple[Tensor, float | Tensor]:
        """Return the rewritten frequencies and the attention factor."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.cfg})"


@register_scaling("none")
class NoScaling(Scaling):
    """The identity: frequencies unchanged, attention factor 1."""

    @dataclass
    class Config:
        pass

    def rewrite(self, inv_freq: Tensor, seq_len: Tensor | None = None) -> tuple[Tensor, float]:
        return inv_freq, 1.0
