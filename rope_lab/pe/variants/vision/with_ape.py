"""RoPE + APE compositions of RoPE-ViT (``rope_axial_ape_*`` / ``rope_mixed_ape_*`` in naver-ai/rope-vit
``models/vit_rope.py``; timm ``vit_*_patch16_rope[_mixed]_ape_224``): the rotary variant rotates q/k in every
block and a learned absolute table (``ape``, resized bicubically to other grids) is added to the patch tokens
at the input; prefix tokens (CLS) get neither.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from torch import Tensor

from rope_lab.pe.registry import register_pe
from rope_lab.pe.types import PEState
from rope_lab.pe.variants.absolute import AbsolutePE
from rope_lab.pe.variants.vision.axial import AxialConfig, AxialRoPE
from rope_lab.pe.variants.vision.mixed import MixedConfig, MixedRoPE


class WithAPE:
    """Mixin for a rotary class: adds ``ape`` at the input site (config keys ``ape_kind``, ``ape_init_std``,
    ``ape_antialias``)."""

    def setup(self, geometry):
        super().setup(geometry)
        if geometry.grid is None:  # not on a vision backbone: the largest square grid within max_tokens
            side = math.isqrt(geometry.max_tokens)
            geometry = dataclasses.replace(geometry, grid=(side, side))
        ape_cfg = AbsolutePE.Config(kind=self.cfg.ape_kind, init_std=self.cfg.ape_init_std,
                                    antialias=self.cfg.ape_antialias)
        self.ape = AbsolutePE(ape_cfg).setup(geometry)
        return self

    def embed(self, x: Tensor, state: PEState) -> Tensor:
        return self.ape.embed(x, state)


@dataclass
class AxialAPEConfig(AxialConfig):
    ape_kind: str = "learned"
    ape_init_std: float = 0.02
    ape_antialias: bool = False  # False: rope-vit resizing of the table; True: timm's (see pe/absolute.py)


@dataclass
class MixedAPEConfig(MixedConfig):
    ape_kind: str = "learned"
    ape_init_std: float = 0.02
    ape_antialias: bool = False  # False: rope-vit resizing of the table; True: timm's (see pe/absolute.py)


@register_pe("rope_axial_ape")
class AxialRoPEWithAPE(WithAPE, AxialRoPE):
    """RoPE-Axial + learned APE."""

    Config = AxialAPEConfig


@register_pe("rope_mixed_ape")
class MixedRoPEWithAPE(WithAPE, MixedRoPE):
    """RoPE-Mixed + learned APE."""

    Config = MixedAPEConfig
