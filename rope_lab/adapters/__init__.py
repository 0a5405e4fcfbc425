"""Parameter-efficient adapters applied to a built backbone (``adapter=road``), next to the positional encodings.

An adapter is not positional: it wraps some of the backbone's ``nn.Linear`` layers and freezes everything else
(except the modules it is told to keep trainable, such as a new task head). Backbones know nothing about it:
``run.build`` applies it after building the model and loading ``init_ckpt`` (the weights to adapt).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from rope_lab.registry import Registry

ADAPTER = Registry("adapter", "rope_lab.adapters")


def apply_adapter(model: nn.Module, cfg: Any) -> nn.Module:
    """``model`` with the adapter of ``cfg`` applied (in place); no-op when ``cfg`` is None (no ``adapter=``)."""
    if cfg is None:
        return model
    return ADAPTER.build(cfg).apply(model)
