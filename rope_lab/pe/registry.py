"""Registries of positional encodings (``@register_pe``) and scalings (``@register_scaling``)."""

from __future__ import annotations

from typing import Any

from rope_lab.registry import Registry

PE = Registry("positional encoding (pe)", "rope_lab.pe")
SCALING = Registry("scaling (pe/scaling)", "rope_lab.pe")

register_pe = PE.register
register_scaling = SCALING.register


def build_pe(cfg: Any):
    """Build an (un-setup) positional encoding from a config with a ``name`` key."""
    return PE.build(cfg)


def build_scaling(cfg: Any):
    return SCALING.build(cfg if cfg is not None else {"name": "none"})


def available_pes() -> list[str]:
    return PE.names()


def available_scalings() -> list[str]:
    return SCALING.names()


def compatible_pes(num_axes: int, causal: bool, multimodal: bool = False,
                   axes: tuple[str, ...] | None = None) -> list[str]:
    """Registered variants that, in their default configuration, can encode a task's positions (its number of
    axes, what they mean, causality, multimodal layout); what a refused ``check_compatible`` suggests instead."""
    ok = []
    for name in PE.names():
        try:
            pe = PE.build({"name": name})
        except Exception:  # noqa: BLE001 -- a variant whose defaults need a file or option is judged by its class
            pe = PE.get(name).__new__(PE.get(name))
        if pe.incompatibility(num_axes, causal, multimodal, axes) is None:
            ok.append(name)
    return ok
