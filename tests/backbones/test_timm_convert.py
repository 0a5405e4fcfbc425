"""timm RoPE-ViT weights in ``backbone=vit``: for every family (axial, mixed, with and without APE) a tiny model of
timm's own registered architecture (``vit_small_patch16_rope*_224`` with small width/depth, pretrained=False,
weights perturbed so LayerScale and CLS matter) saved to a file gives the same logits in rope_lab as in timm, at
the native grid, a larger one and a smaller one; naver-ai/rope-vit's checkpoint layout loads too; a mismatched
pe, pe setting or size is refused with a message naming the fix."""

from __future__ import annotations

import argparse

import pytest
import timm
import torch
from safetensors.torch import save_file

from rope_lab.backbones.timm_convert import FAMILIES, load_timm_weights
from rope_lab.backbones.vit import VisionTransformer, ViTConfig
from rope_lab.pe.registry import build_pe
from rope_lab.tasks.image_cls.positions import image_positions

TIMM_NAMES = {"rope_axial": "vit_small_patch16_rope_224", "rope_mixed": "vit_small_patch16_rope_mixed_224",
              "rope_axial_ape": "vit_small_patch16_rope_ape_224",
              "rope_mixed_ape": "vit_small_patch16_rope_mixed_ape_224"}
DIM, DEPTH, HEADS, PATCH, IMG, CLASSES = 32, 2, 2, 8, 32, 4


def tiny_timm(family: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = timm.create_model(TIMM_NAMES[family], pretrained=False, embed_dim=DIM, depth=DEPTH, num_heads=HEADS,
                              patch_size=PATCH, img_size=IMG, num_classes=CLASSES, dynamic_img_size=True).eval()
    with torch.no_grad():  # LayerScale starts at 1e-5 and CLS near 0: perturb so every weight shows in the logits
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model


def ours(family: str, weights: str, **pe_options) -> VisionTransformer:
    cfg = ViTConfig(patch_size=PATCH, dim=DIM, depth=DEPTH, n_heads=HEADS, image_size=IMG, in_channels=3,
                    num_classes=CLASSES, timm_weights=weights)
    return VisionTransformer(cfg, build_pe({"name": family, **pe_options})).eval()


def logits(model: VisionTransformer, images: torch.Tensor) -> torch.Tensor:
    grid = (images.shape[-2] // PATCH, images.shape[-1] // PATCH)
    with torch.no_grad():
        return model(images, image_positions(images.shape[0], grid, model.num_prefix_tokens))


@pytest.mark.parametrize("family", sorted(TIMM_NAMES))
def test_logits_equal_timm_at_native_larger_and_smaller_resolution(family, tmp_path):
    ref = tiny_timm(family)
    path = tmp_path / ("model.safetensors" if "mixed" in family else "weights.pth")
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    else:
        torch.save({"model": ref.state_dict()}, path)  # wrapped, as training scripts save
    # timm resamples pos_embed with antialias (see the next test); rope-vit, our default, without
    model = ours(family, str(path), **({"ape_antialias": True} if "ape" in family else {}))
    torch.manual_seed(1)
    for h, w in [(IMG, IMG), (48, 56), (24, 24)]:  # 4x4 native, 6x7 (non-square, larger), 3x3 (smaller)
        x = torch.randn(2, 3, h, w)
        with torch.no_grad():
            expected = ref(x)
        torch.testing.assert_close(logits(model, x), expected, atol=2e-5, rtol=1e-4)


def test_ape_default_resize_is_rope_vit_which_differs_from_timm_off_the_native_grid(tmp_path):
    """timm resamples pos_embed with antialias=True, whose bicubic kernel is PIL's (a=-0.5) even when upsampling;
    naver-ai/rope-vit (our default) interpolates without antialias (a=-0.75)."""
    ref = tiny_timm("rope_axial_ape")
    torch.save(ref.state_dict(), tmp_path / "w.pth")
    model = ours("rope_axial_ape", str(tmp_path / "w.pth"))  # ape_antialias=false
    with torch.no_grad():
        x = torch.randn(1, 3, IMG, IMG)
        torch.testing.assert_close(logits(model, x), ref(x), atol=2e-5, rtol=1e-4)
        for side in (24, 48):
            x = torch.randn(1, 3, side, side)
            assert not torch.allclose(logits(model, x), ref(x), atol=1e-4)


def test_naver_rope_vit_checkpoint_layout(tmp_path):
    """naver-ai/rope-vit saves {'model': ..., 'args': Namespace} with a top-level ``freqs`` built as stack(per-block (2, heads, hd/2),
    dim=1).view(2, depth, heads*hd/2), plus buffers freqs_t_x / freqs_t_y (deit/models_v2_rope.py)."""
    ref = tiny_timm("rope_mixed_ape")
    state = dict(ref.state_dict())
    per_block = [state["rope.freqs"][:, i] for i in range(DEPTH)]  # (2, heads, hd/2) each
    state["freqs"] = torch.stack(per_block, dim=1).view(2, DEPTH, -1)
    del state["rope.freqs"]
    state["freqs_t_x"], state["freqs_t_y"] = torch.arange(16.0) % 4, torch.arange(16.0) // 4
    args = argparse.Namespace(model="rope_mixed_ape_deit_small_patch16_LS", eval_crop_ratio=1.0)
    torch.save({"model": state, "epoch": 399, "args": args}, tmp_path / "checkpoint.pth")  # as DeiT's main.py
    model = ours("rope_mixed_ape", str(tmp_path / "checkpoint.pth"), ape_antialias=True)  # timm is the reference
    x = torch.randn(2, 3, 40, 40)
    torch.testing.assert_close(logits(model, x), ref(x).detach(), atol=2e-5, rtol=1e-4)


def test_folder_in_timm_hub_layout(tmp_path):
    ref = tiny_timm("rope_axial")
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(tmp_path / "model.safetensors"))
    model = ours("rope_axial", str(tmp_path))
    x = torch.randn(1, 3, IMG, IMG)
    torch.testing.assert_close(logits(model, x), ref(x).detach(), atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("weights, pe", [("rope_axial", "rope_mixed"), ("rope_mixed_ape", "rope_mixed"),
                                         ("rope_axial_ape", "ape"), ("rope_mixed", "rope_axial_ape")])
def test_mismatched_pe_is_refused_naming_the_right_one(weights, pe, tmp_path):
    torch.save(tiny_timm(weights).state_dict(), tmp_path / "w.pth")
    with pytest.raises(ValueError, match=rf"needs pe={weights} \(got pe={pe}\)"):
        ours(pe, str(tmp_path / "w.pth"))


def test_pe_settings_other_than_the_families_are_refused(tmp_path):
    torch.save(tiny_timm("rope_axial").state_dict(), tmp_path / "w.pth")
    with pytest.raises(ValueError, match=r"trained with pe settings \{'base': 100.0\}; the run has \{'base': 10000"):
        ours("rope_axial", str(tmp_path / "w.pth"), base=10000.0)
    with pytest.raises(ValueError, match="pair_layout"):
        ours("rope_axial", str(tmp_path / "w.pth"), pair_layout="half")


def test_wrong_size_or_classes_is_refused(tmp_path):
    torch.save(tiny_timm("rope_mixed").state_dict(), tmp_path / "w.pth")
    cfg = ViTConfig(patch_size=PATCH, dim=DIM, depth=DEPTH + 1, n_heads=HEADS, image_size=IMG, in_channels=3,
                    num_classes=CLASSES + 1, timm_weights=str(tmp_path / "w.pth"))
    with pytest.raises(ValueError, match=r"RoPE-Mixed, dim=32, depth=2.*num_classes=4\) does not fit backbone=vit "
                                         r"\(dim=32, depth=3"):
        VisionTransformer(cfg, build_pe({"name": "rope_mixed"}))


def test_unknown_source_lists_the_timm_names():
    with pytest.raises(FileNotFoundError, match=r"vit_base_patch16_rope_mixed_ape_224\.naver_in1k"):
        ours("rope_axial", "no/such/file.pth")


def test_every_family_maps_to_a_registered_pe():
    from rope_lab.pe.registry import available_pes

    assert {f.pe for f in FAMILIES.values()} == set(TIMM_NAMES) and set(TIMM_NAMES) <= set(available_pes())
