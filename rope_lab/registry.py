"""A small typed registry: name -> class with a ``Config`` dataclass, validated on build.

Used for positional encodings, scalings, backbones and tasks. A Hydra/dict config is merged into the class's
``Config`` with OmegaConf's structured merge, so an unknown key, or an unknown name, is an error that lists the
valid choices.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import pkgutil
from typing import Any, Callable

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException


class Registry:
    def __init__(self, kind: str, package: str) -> None:
        self.kind, self.package = kind, package
        self._table: dict[str, type] = {}

    def register(self, name: str) -> Callable[[type], type]:
        def deco(cls: type) -> type:
            if name in self._table and self._table[name] is not cls:
                raise ValueError(f"{self.kind} '{name}' registered twice ({self._table[name].__name__}, {cls.__name__})")
            if not dataclasses.is_dataclass(getattr(cls, "Config", None)):
                raise TypeError(f"{self.kind} '{name}' ({cls.__name__}) needs a dataclass `Config`")
            cls.name = name
            self._table[name] = cls
            return cls

        return deco

    def _import_all(self) -> None:
        """Import every module under ``package`` so that all decorators have run."""
        pkg = importlib.import_module(self.package)
        for info in pkgutil.walk_packages(pkg.__path__, prefix=f"{self.package}."):
            importlib.import_module(info.name)

    def names(self) -> list[str]:
        self._import_all()
        return sorted(self._table)

    def get(self, name: str) -> type:
        if name not in self._table:
            self._import_all()
        if name not in self._table:
            raise ValueError(f"unknown {self.kind} '{name}'; choose one of: {self.names()}")
        return self._table[name]

    def config(self, cfg: Any) -> tuple[type, Any]:
        """(class, typed config) from a dict/DictConfig with a ``name`` key."""
        if cfg is None or "name" not in cfg:
            raise ValueError(f"{self.kind} config needs a 'name'; choose one of: {self.names()}")
        cls = self.get(str(cfg["name"]))
        return cls, typed_config(cls, cfg, self.kind)

    def build(self, cfg: Any, *args: Any, **kwargs: Any) -> Any:
        cls, typed = self.config(cfg)
        return cls(typed, *args, **kwargs)

    def defaults(self, name: str) -> dict[str, Any]:
        """Every option of ``name``'s ``Config`` at its default, as plain values after OmegaConf's typed conversion
        (a float field written ``4`` gives ``4.0``): what a config with only ``name`` builds."""
        return OmegaConf.to_container(OmegaConf.structured(self.get(name).Config))


def typed_config(cls: type, cfg: Any, kind: str) -> Any:
    """Merge a dict/DictConfig into ``cls.Config``; errors name the bad key and value.

    ``name`` selects the class; it is dropped unless ``cls.Config`` has a ``name`` field of its own (the optimizer
    config does: its name is the timm optimizer). Every number must be finite (NaN or +-inf is refused unless the
    dataclass field says ``metadata={"allow_nonfinite": True}``), and options named in the Config's class attribute
    ``greater_than`` (``{"base": 1.0}``: base must be > 1) must exceed their bound.
    """
    raw = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg or {})
    valid = [f.name for f in dataclasses.fields(cls.Config)]
    if "name" not in valid:
        raw.pop("name", None)
    unknown = sorted(set(raw) - set(valid))
    if unknown:
        raise ValueError(f"{kind} '{cls.name}' has no option(s) {unknown}; valid options: {valid}")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(cls.Config), raw)
    except OmegaConfBaseException as err:
        raise ValueError(f"bad value in {kind} '{cls.name}' config: {err}") from err
    typed = OmegaConf.to_object(merged)
    check_numbers(typed, f"{kind} '{cls.name}'")
    return typed


def _nonfinite(value: Any, path: str):
    """(path, value) of the first NaN/inf float inside value (nested lists, dicts, dataclasses), else None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else (path, value)
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            if (hit := _nonfinite(v, f"{path}[{i}]")) is not None:
                return hit
    elif isinstance(value, dict):
        for k, v in value.items():
            if (hit := _nonfinite(v, f"{path}.{k}")) is not None:
                return hit
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            if f.metadata.get("allow_nonfinite"):
                continue
            if (hit := _nonfinite(getattr(value, f.name), f"{path}.{f.name}")) is not None:
                return hit
    return None


def check_numbers(typed: Any, where: str) -> None:
    """Refuse NaN/inf anywhere in a typed config (unless its field allows it) and values at or below the
    Config's ``greater_than`` bounds; the message names the option and its value."""
    for f in dataclasses.fields(typed):
        if f.metadata.get("allow_nonfinite"):
            continue
        hit = _nonfinite(getattr(typed, f.name), f.name)
        if hit is not None:
            key, value = hit
            raise ValueError(f"{where}: {key}={value} is not a finite number; give a finite value")
    for key, bound in getattr(type(typed), "greater_than", {}).items():
        value = getattr(typed, key, None)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not value > bound:
            raise ValueError(f"{where}: {key} must be > {bound:g}, got {key}={value}")
