"""Load timm RoPE-ViT weights (Heo et al., ECCV 2024, "Rotary Position Embedding for Vision Transformer") into
``backbone=vit``: the 12 ``vit_{small,base,large}_patch16_rope[_mixed][_ape]_224.naver_in1k`` models of timm
(``timm/models/eva.py``, class ``Eva`` with ``attn_type='rope'``) or a checkpoint of naver-ai/rope-vit
(``deit/models_v2_rope.py``, ``rope_vit_models``).

The source is a weights file (``.safetensors`` or a torch pickle, optionally wrapped in ``model``/``state_dict``),
a folder holding one (timm's hub layout), or a timm model name (``timm.create_model(name, pretrained=True)``:
timm's hub cache, so ``HF_HUB_OFFLINE=1`` works once the weights are there).

Which RoPE-ViT family the weights are is read from the keys (``rope.freqs``/``freqs`` = RoPE-Mixed,
``pos_embed`` = + APE); the run's ``pe`` must be that family, with the fixed settings the family was trained
with (``FAMILIES``), otherwise loading is refused naming the pe to use. Key mapping (everything else is
already named alike):

    timm / naver                         rope_lab
    blocks.i.gamma_1 / gamma_2           blocks.i.ls1.gamma / ls2.gamma
    rope.freqs (2, depth, heads, hd/2)   pe.freqs (same layout)
    freqs (2, depth, heads*hd/2)         pe.freqs (naver; reshaped)
    pos_embed (1, rows*cols, dim)        pe.ape.table (rows, cols, dim), no class-token slot
    rope.* buffers, freqs_t_x/y          dropped (rebuilt from positions every forward)
"""

from __future__ import annotations

import argparse
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")
TIMM_NAME = re.compile(r"^vit_(small|base|large)_patch16_rope(_mixed)?(_ape)?_224(\.naver_in1k)?$")
TIMM_HEADS = {"small": 6, "base": 12, "large": 16}  # not in an axial state dict, yet they set the frequencies


@dataclass(frozen=True)
class RopeViTFamily:
    """One RoPE-ViT model family: the rope_lab pe it needs and the pe settings it was trained with."""

    title: str
    pe: str
    fixed: dict = field(default_factory=dict)  # pe config key -> required value


_ROTARY = {"pair_layout": "interleaved", "rotary_fraction": 1.0, "psc": False}
FAMILIES = {  # (mixed, ape) -> family; theta: timm rope_temperature (100 axial; mixed learns its frequencies)
    (False, False): RopeViTFamily("RoPE-Axial", "rope_axial", {**_ROTARY, "base": 100.0, "axis_order": None,
                                                               "axes_dim": None}),
    (True, False): RopeViTFamily("RoPE-Mixed", "rope_mixed", dict(_ROTARY)),
    (False, True): RopeViTFamily("RoPE-Axial + APE", "rope_axial_ape", {**_ROTARY, "base": 100.0, "axis_order": None,
                                                                        "axes_dim": None, "ape_kind": "learned"}),
    (True, True): RopeViTFamily("RoPE-Mixed + APE", "rope_mixed_ape", {**_ROTARY, "ape_kind": "learned"}),
}


def _unwrap(state: dict) -> dict[str, Tensor]:
    for key in ("model_ema", "model", "module", "state_dict"):
        if isinstance(state.get(key), dict):
            state = state[key]
    return {k: v for k, v in state.items() if torch.is_tensor(v)}


def _read_file(path: Path) -> dict[str, Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    # DeiT / rope-vit training checkpoints also hold the argparse Namespace of the run: allowed, nothing else is
    with torch.serialization.safe_globals([argparse.Namespace]):
        return _unwrap(torch.load(path, map_location="cpu", weights_only=True))


def read_state_dict(source: str) -> dict[str, Tensor]:
    """A RoPE-ViT state dict from a file, a folder holding one, or a timm model name."""
    path = Path(source).expanduser()
    if path.is_file():
        return _read_file(path)
    if path.is_dir():
        for name in WEIGHT_FILES:
            if (path / name).is_file():
                return _read_file(path / name)
        raise FileNotFoundError(f"backbone.timm_weights={source} is a folder without weights; expected one of "
                                f"{list(WEIGHT_FILES)}")
    if TIMM_NAME.match(source):
        import timm

        try:
            return timm.create_model(source, pretrained=True).state_dict()
        except Exception as err:  # noqa: BLE001 - offline hub, missing cache: one message with the way out
            raise FileNotFoundError(f"backbone.timm_weights={source}: timm could not load the pretrained weights "
                                    f"({type(err).__name__}: {err}); download them once with internet, or give the "
                                    f"weights file (e.g. the hub's model.safetensors) instead") from err
    names = sorted(n + ".naver_in1k" for n in _timm_rope_vit_names())
    raise FileNotFoundError(f"backbone.timm_weights={source} is neither a file/folder nor a timm RoPE-ViT model "
                            f"name; names: {names}")


def _timm_rope_vit_names() -> list[str]:
    import timm

    return [n for n in timm.list_models("vit_*_patch16_rope*_224") if TIMM_NAME.match(n)]


def detect_family(state: dict[str, Tensor]) -> RopeViTFamily:
    if "blocks.0.attn.qkv.weight" not in state or "cls_token" not in state:
        raise ValueError("these weights are not a RoPE-ViT (no blocks.0.attn.qkv.weight / cls_token); expected a "
                         "timm vit_*_patch16_rope*_224 or naver-ai/rope-vit checkpoint")
    mixed = "rope.freqs" in state or "freqs" in state
    return FAMILIES[(mixed, "pos_embed" in state)]


def check_pe(family: RopeViTFamily, pe: nn.Module, source: str) -> None:
    """The run's pe must be the weights' family, with the settings it was trained with."""
    if pe.name != family.pe:
        raise ValueError(f"backbone.timm_weights={source} holds a {family.title} model; it needs pe={family.pe} "
                         f"(got pe={pe.name}). Families: "
                         + ", ".join(f"{f.title} -> pe={f.pe}" for f in FAMILIES.values()))
    wrong = {k: getattr(pe.cfg, k, None) for k, v in family.fixed.items() if getattr(pe.cfg, k, None) != v}
    if pe.scaling.name != "none":
        wrong["scaling"] = pe.scaling.name
    if wrong:
        expected = {k: family.fixed.get(k, "none") for k in wrong}
        raise ValueError(f"backbone.timm_weights={source}: {family.title} was trained with pe settings {expected}; "
                         f"the run has {wrong}")


def _grid_table(pos_embed: Tensor, table: Tensor, resize) -> Tensor:
    """timm (1, rows*cols, dim) -> our (rows', cols', dim), resized when the run's grid differs (as timm's
    ``checkpoint_filter_fn`` resizes ``pos_embed`` for another ``img_size``)."""
    side = math.isqrt(pos_embed.shape[1])
    if side * side != pos_embed.shape[1]:
        raise ValueError(f"pos_embed has {pos_embed.shape[1]} rows, not a square grid (a class-token slot?)")
    return resize(pos_embed.reshape(side, side, -1), tuple(table.shape[:2]))


def convert(state: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """timm / naver RoPE-ViT keys -> ``backbone=vit`` keys, shaped for ``model``."""
    ours = model.state_dict()
    out = {}
    for key, value in state.items():
        if key.startswith("rope.") and key != "rope.freqs" or key in ("freqs_t_x", "freqs_t_y", "freqs_cis"):
            continue
        if key in ("rope.freqs", "freqs"):
            target = ours.get("pe.freqs")
            naver = value.dim() == 3 and target is not None and target.numel() == value.numel()
            out["pe.freqs"] = value.reshape(target.shape) if naver else value  # naver: heads flattened
        elif key == "pos_embed":
            from rope_lab.pe.variants.absolute import resize_grid_table

            ape = model.pe.ape
            out["pe.ape.table"] = _grid_table(value, ape.table, lambda t, g: resize_grid_table(t, g, ape.cfg.antialias))
        else:
            out[re.sub(r"\.gamma_([12])$", r".ls\1.gamma", key)] = value
    return out


def _describe(state: dict[str, Tensor]) -> str:
    depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    patch = state["patch_embed.proj.weight"]
    return (f"dim={patch.shape[0]}, depth={depth}, patch_size={patch.shape[-1]}, in_channels={patch.shape[1]}, "
            f"num_classes={state['head.weight'].shape[0] if 'head.weight' in state else 'none'}")


def load_timm_weights(model: nn.Module, source: str) -> None:
    """Load a RoPE-ViT checkpoint into ``model`` (a ``backbone=vit``); every key must fit, else a clear error."""
    state = read_state_dict(source)
    family = detect_family(state)
    check_pe(family, model.pe, source)
    named = TIMM_NAME.match(str(source))
    if named and TIMM_HEADS[named.group(1)] != model.cfg.n_heads:
        raise ValueError(f"backbone.timm_weights={source} has {TIMM_HEADS[named.group(1)]} heads; the backbone has "
                         f"n_heads={model.cfg.n_heads} (use backbone=vit_{named.group(1)})")
    converted = convert(state, model)
    ours = model.state_dict()
    missing, extra = sorted(set(ours) - set(converted)), sorted(set(converted) - set(ours))
    shapes = [k for k in set(ours) & set(converted) if ours[k].shape != converted[k].shape]
    if missing or extra or shapes:
        cfg = model.cfg
        raise ValueError(f"backbone.timm_weights={source} ({family.title}, {_describe(state)}) does not fit "
                         f"backbone=vit (dim={cfg.dim}, depth={cfg.depth}, n_heads={cfg.n_heads}, "
                         f"patch_size={cfg.patch_size}, in_channels={cfg.in_channels}, num_classes={cfg.num_classes})"
                         f"; missing {missing[:4]}, unexpected {extra[:4]}, shape mismatch {sorted(shapes)[:4]}. "
                         f"Use the matching size (backbone=vit_small | vit_base | vit_large) and task classes")
    model.load_state_dict(converted, strict=True)
