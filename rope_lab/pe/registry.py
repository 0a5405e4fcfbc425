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
