"""LoRA (Hu et al., ICLR 2022, arXiv 2106.09685), ``adapter=lora``: the baseline RoAd is compared with.

``W x + (alpha / r) B A x`` with A (r, in) random and B (out, r) zero at init, so the adapted model starts as the
base model. The layers are HF peft's ``LoraConfig`` layers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rope_lab.adapters import ADAPTER
from rope_lab.adapters.base import PeftAdapter


@ADAPTER.register("lora")
class Lora(PeftAdapter):
    """Wrap the target linears with peft's LoRA layers; only A, B and ``trainable`` train."""

    param_prefix = "lora_"

    @dataclass
    class Config:
        r: int = 8
        alpha: float = 16.0  # the update is scaled by alpha / r
        dropout: float = 0.0
        target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
        trainable: list[str] = field(default_factory=list)

    def __init__(self, cfg: Config) -> None:
        if cfg.r < 1:
            raise ValueError(f"adapter=lora needs r >= 1; got r={cfg.r}")
        super().__init__(cfg)

    def peft_config(self):
        from peft import LoraConfig

        cfg = self.cfg
        return LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                          target_modules=list(cfg.target_modules))
