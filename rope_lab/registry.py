"""A small typed registry: name -> class with a ``Config`` dataclass, validated on build.

Used for positional encodings, scalings, backbones and tasks. A Hydra/dict config is merged into the class's
``Config`` with OmegaConf's structured merge, so an unknown key, or an unknown name, is an error that lists the
valid choices.
"""

from __future__ import annotations

import dataclasses
import importlib
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


def typed_config(cls: type, cfg: Any, kind: str) -> Any:
    """Merge a dict/DictConfig (without its ``name``) into ``cls.Config``; errors name the bad key."""
    raw = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg or {})
    raw.pop("name", None)
    valid = [f.name for f in dataclasses.fields(cls.Config)]
    unknown = sorted(set(raw) - set(valid))
    if unknown:
        raise ValueError(f"{kind} '{cls.name}' has no option(s) {unknown}; valid options: {valid}")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(cls.Config), raw)
    except OmegaConfBaseException as err:
        raise ValueError(f"bad value in {kind} '{cls.name}' config: {err}") from err
    return OmegaConf.to_object(merged)
