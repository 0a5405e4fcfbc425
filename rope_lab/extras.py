"""Optional dependencies: a feature whose package is not installed says which extra of rope_lab brings it.

The extras are declared in pyproject.toml (``[hf]``, ``[loggers]``, ``[adapters]``, ``[sweeps]``; ``[dev]`` has them
all). Code that needs one imports it through :func:`require` at the point of use, so ``import rope_lab`` and every
feature that does not need the package keep working without it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from rope_lab.cli import UserError

#: the extra of rope_lab that installs each optional package (import name -> extra)
EXTRA_OF = {
    "transformers": "hf",
    "tokenizers": "hf",
    "safetensors": "hf",
    "tensorboard": "loggers",
    "wandb": "loggers",
    "peft": "adapters",
    "optuna": "sweeps",
    "submitit": "sweeps",
}


class MissingExtra(UserError, ImportError):
    """An optional package a chosen feature needs is not installed; the message names the pip command."""


def install_hint(package: str) -> str:
    extra = EXTRA_OF.get(package)
    return f"pip install 'rope_lab[{extra}]'" if extra else f"pip install {package}"


def missing(package: str, feature: str) -> MissingExtra:
    """The error for ``feature`` (e.g. ``backbone=hf_qwen2vl``) lacking ``package``."""
    return MissingExtra(f"{feature} needs the '{package}' package, which is not installed: {install_hint(package)}")


def require(package: str, feature: str) -> ModuleType:
    """Import ``package`` (its top-level module), or raise :class:`MissingExtra` naming the extra to install.

    Only the package's own absence is translated; an ImportError raised inside an installed package (a broken
    or incompatible install) propagates unchanged, since the fix is different."""
    try:
        return importlib.import_module(package)
    except ModuleNotFoundError as err:
        if err.name != package:
            raise
        raise missing(package, feature) from err
