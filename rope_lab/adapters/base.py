"""What every adapter does around its layers (which come from HF peft): check and find its target layers, inject
peft's layers, freeze the rest."""

from __future__ import annotations

from abc import ABC, abstractmethod

from torch import nn

from rope_lab.extras import require


def target_linears(model: nn.Module, names: list[str]) -> dict[str, nn.Linear]:
    """The ``nn.Linear`` modules whose last name component is in ``names`` (peft's ``target_modules`` rule)."""
    linears = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    found = {n: m for n, m in linears.items() if n.rsplit(".", 1)[-1] in names}
    if not found:
        choices = sorted({n.rsplit(".", 1)[-1] for n in linears})
        raise ValueError(f"adapter target_modules={names} match no nn.Linear of {type(model).__name__}; "
                         f"its linear layers are named {choices}")
    return found


def freeze_all_but(model: nn.Module, adapter_params: list[nn.Parameter], trainable: list[str]) -> None:
    """Only the adapter's parameters and the modules named in ``trainable`` (full names or last components) train."""
    model.requires_grad_(False)
    modules = dict(model.named_modules())
    for name in trainable:
        hits = [m for n, m in modules.items() if n == name or n.rsplit(".", 1)[-1] == name]
        if not hits:
            raise ValueError(f"adapter.trainable names '{name}', which is not a module of {type(model).__name__}; "
                             f"top-level modules: {sorted(n for n in modules if n and '.' not in n)}")
        for m in hits:
            m.requires_grad_(True)
    for p in adapter_params:
        p.requires_grad_(True)


class PeftAdapter(ABC):
    """Base of the peft-backed adapters: a subclass gives its typed ``Config`` (with ``target_modules`` and
    ``trainable``), ``peft_config()``, the name prefix of its parameters and ``check_layer``."""

    param_prefix: str

    def __init__(self, cfg) -> None:
        self.cfg = cfg

    @abstractmethod
    def peft_config(self):
        """The peft config (``RoadConfig``, ``LoraConfig``, ...) this adapter injects."""

    def check_layer(self, name: str, linear: nn.Linear) -> None:
        """Raise a ValueError naming ``name`` when this adapter cannot wrap ``linear``."""

    def apply(self, model: nn.Module) -> nn.Module:
        require("peft", f"adapter={self.name}")  # optional: the [adapters] extra
        from peft import inject_adapter_in_model

        for name, linear in target_linears(model, list(self.cfg.target_modules)).items():
            self.check_layer(name, linear)
        inject_adapter_in_model(self.peft_config(), model)
        params = [p for n, p in model.named_parameters() if self.param_prefix in n]
        freeze_all_but(model, params, list(self.cfg.trainable))
        return model
