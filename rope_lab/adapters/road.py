"""RoAd: 2-D rotary adaptation (Liao & Monz, NeurIPS 2024, arXiv 2409.00119), ``adapter=road``.

The output of a frozen linear layer is rotated pair by pair, each rotation scaled: ``y = R (W x + b)``. The output
is split into groups of ``group_size``; in each group element k pairs with element k + group_size/2, and a pair
(x1, x2) becomes

    y1 = c1 * x1 - s1 * x2        y2 = s2 * x1 + c2 * x2

with c = alpha * cos(theta), s = alpha * sin(theta) learned per pair (``road_1``: one (alpha, theta) shared by both
rows of a pair), per element (``road_2``), or separately for the cos and the sin entries (``road_4``); identity at
init. The layers are HF peft's (``tuners/road``), the reference implementation (the official repository is
empty); tests/adapters/test_road.py checks them against the paper's equation computed independently.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from rope_lab.adapters import ADAPTER
from rope_lab.adapters.base import PeftAdapter

VARIANTS = ("road_1", "road_2", "road_4")


@ADAPTER.register("road")
class Road(PeftAdapter):
    """Wrap the target linears with peft's RoAd layers; only RoAd's (theta, alpha) and ``trainable`` train."""

    param_prefix = "road_"

    @dataclass
    class Config:
        variant: str = "road_1"  # road_1 | road_2 | road_4 (the paper's RoAd1/2/4)
        group_size: int = 64  # must be even and divide every target's out_features
        target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])  # peft's LLaMA default
        init_weights: bool = True  # identity at init; False: peft's random init (theta ~ N(0, .5), alpha ~ N(1, .5))
        trainable: list[str] = field(default_factory=list)  # modules that train too, e.g. [head] for a new head

    def __init__(self, cfg: Config) -> None:
        if cfg.variant not in VARIANTS:
            raise ValueError(f"unknown RoAd variant '{cfg.variant}'; choose one of {list(VARIANTS)} "
                             f"(the paper's RoAd1/2/4)")
        super().__init__(cfg)

    def peft_config(self):
        from peft import RoadConfig

        cfg = self.cfg
        return RoadConfig(variant=cfg.variant, group_size=cfg.group_size, init_weights=cfg.init_weights,
                          target_modules=list(cfg.target_modules))

    def check_layer(self, name: str, linear: nn.Linear) -> None:
        g, out = self.cfg.group_size, linear.out_features
        if g < 2 or g % 2 or out % g:
            fits = [d for d in range(2, out + 1, 2) if out % d == 0]
            raise ValueError(f"adapter=road on '{name}': group_size={g} must be even and divide its out_features="
                             f"{out}; choose adapter.group_size from {fits}")
