"""Registries of positional encodings (``@register_pe``) and scalings (``@register_scaling``), and their defaults as
Hydra configs (``dataclass_defaults/pe/<name>``, ``dataclass_defaults/pe/scaling/<name>``) for configs/pe to extend."""

from __future__ import annotations

from typing import Any

from rope_lab.registry import Registry

PE = Registry("positional encoding (pe)", "rope_lab.pe")
SCALING = Registry("scaling (pe/scaling)", "rope_lab.pe")

register_pe = PE.register
register_scaling = SCALING.register

#: ConfigStore groups holding each variant's (each scaling's) dataclass defaults: configs/pe/<name>.yaml starts
#: from ``/dataclass_defaults/pe/<name>`` and configs/pe/scaling/<name>.yaml from ``.../pe/scaling/<name>``
PE_DEFAULTS_GROUP = "dataclass_defaults/pe"
SCALING_DEFAULTS_GROUP = "dataclass_defaults/pe/scaling"


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


def store_dataclass_defaults() -> None:
    """Store every registered pe's and scaling's ``Config`` defaults (plus its ``name``) in Hydra's ConfigStore.

    The dataclass is the one source of a default: configs/pe/*.yaml list the node in their defaults and hold only
    the name and deliberate overrides, yet the composed ``pe`` still has every option, so ``pe.base=1e5`` needs no
    ``+`` and a mistyped key is still refused. The nodes are plain values, untyped as the yaml files were, so a bad
    value is still refused where it always was (``typed_config`` at build, naming the option). A pe's ``scaling``
    option is left out: the ``pe/scaling`` group composes it. Called by Hydra through hydra_plugins/rope_lab_defaults
    before it loads a config; idempotent.
    """
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for registry, group in ((PE, PE_DEFAULTS_GROUP), (SCALING, SCALING_DEFAULTS_GROUP)):
        for name in registry.names():
            options = registry.defaults(name)
            if registry is PE:
                options.pop("scaling", None)
            store.store(group=group, name=name, node={"name": name, **options})
