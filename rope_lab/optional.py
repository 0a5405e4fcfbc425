"""Optional dependencies, imported only by the features that need them, with one clear error when missing."""

from __future__ import annotations

from types import ModuleType

from rope_lab.cli import UserError


def require_transformers(feature: str) -> ModuleType:
    """``transformers``, or an error naming the feature and the install command (the ``[hf]`` extra)."""
    try:
        import transformers
    except ImportError as err:
        raise UserError(f"{feature} needs Hugging Face transformers, which is not installed: "
                        f"pip install 'rope_lab[hf]'") from err
    return transformers
