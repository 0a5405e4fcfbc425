"""ViT backbone: logits equal timm's VisionTransformer (DeiT-III layout, no_embed_class APE, LayerScale) with
copied weights at the training and at a larger resolution; CLS never rotated; clear errors."""

from __future__ import annotations

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer as TimmViT

from rope_lab.backbones.vit import ViT, ViTConfig
from rope_lab.pe.registry import build_pe
from rope_lab.tasks.image_cls.positions import image_positions

CFG = ViTConfig(patch_size=4, dim=32, depth=2, n_heads=2, image_size=16, in_channels=1, num_classes=5,
                layer_scale_init=0.5)


def ours_and_timm():
    torch.manual_seed(0)
    ours = ViT(CFG, build_pe({"name": "ape"})).eval()
    ref = TimmViT(img_size=16, patch_size=4, in_chans=1, num_classes=5, embed_dim=32, depth=2, num_heads=2,
                  qkv_bias=True, init_values=0.5, class_token=True, no_embed_class=True, dynamic_img_size=True).eval()
    state = {k: v for k, v in ref.state_dict().items() if k != "pos_embed"}
    state["pe.table"] = ref.pos_embed.detach().reshape(4, 4, 32)
    with torch.no_grad():
        ref.cls_token.normal_()  # make CLS matter
        state["cls_token"] = ref.cls_token.detach().clone()
    missing, unexpected = ours.load_state_dict(state, strict=True)
    assert not missing and not unexpected
    return ours, ref


@pytest.mark.parametrize("res", [16, 24])  # training grid 4x4; 6x6 needs the bicubic APE resize (upsampling)
def test_matches_timm_vision_transformer(res):
    ours, ref = ours_and_timm()
    x = torch.randn(2, 1, res, res)
    with torch.no_grad():
        ours_out = ours(x, image_positions(2, (res // 4, res // 4), ours.num_prefix_tokens))
        torch.testing.assert_close(ours_out, ref(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pe", ["rope_axial", "rope_mixed", "rope_mixed_ape", "ape"])
def test_variants_run_at_other_resolutions_and_pool(pe):
    for pool in ("token", "avg"):
        cfg = ViTConfig(dim=32, depth=2, n_heads=2, image_size=16, num_classes=3, global_pool=pool)
        model = ViT(cfg, build_pe({"name": pe}))
        for res in (12, 20):
            out = model(torch.randn(2, 1, res, res), image_positions(2, (res // 4, res // 4), model.num_prefix_tokens))
            assert out.shape == (2, 3) and torch.isfinite(out).all()


def test_errors():
    with pytest.raises(ValueError, match="not divisible by the patch size 4"):
        ViT(ViTConfig(image_size=30), build_pe({"name": "ape"}))
    model = ViT(ViTConfig(dim=32, depth=1, n_heads=2, image_size=16), build_pe({"name": "rope_axial"}))
    with pytest.raises(ValueError, match="not divisible by the patch size"):
        model(torch.randn(1, 1, 18, 18), image_positions(1, (4, 4)))
    with pytest.raises(ValueError, match="positions cover"):
        model(torch.randn(1, 1, 16, 16), image_positions(1, (4, 4), num_prefix=0))
    with pytest.raises(ValueError, match="global_pool"):
        ViT(ViTConfig(global_pool="max"), build_pe({"name": "ape"}))


def test_every_block_shares_the_backbones_pe_without_owning_it():
    """rope_lab.backbones.shared_pe: the learnable RoPE-Mixed frequencies live once in state_dict and parameters,
    and every attention block calls that one object."""
    from rope_lab.backbones.shared_pe import pe_users

    model = ViT(ViTConfig(dim=32, depth=3, n_heads=2, image_size=16, num_classes=3), build_pe({"name": "rope_mixed"}))
    users = list(pe_users(model, model.pe))
    assert len(users) == 3 and all(u.pe is model.pe for u in users)
    freq_keys = [k for k in model.state_dict() if k.startswith("pe.") or ".pe." in k]
    assert freq_keys and all(k.startswith("pe.") for k in freq_keys)
    assert sum(p is model.pe.freqs for p in model.parameters()) == 1
