"""eval.py without ckpt_path on timm RoPE-ViT weights: a tiny timm model saved to a file, a tiny ImageFolder with
only val/ (ImageNet's validation layout), several resolutions -> results.json + accuracy-vs-resolution plot, and
every accuracy and mean loss equal the ones timm's own model and timm's own eval transform give on the same images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from timm.data import create_transform
from torchvision.datasets import ImageFolder

from rope_lab.evaluate import evaluate_from_configs

CLASSES, RESOLUTIONS, CROP = 3, [24, 32, 48], 0.875


def val_only_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for c in ("n01", "n02", "n03")[:CLASSES]:  # sorted folder names give the class index, as for ImageNet
        (root / "val" / c).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (40, 52, 3), dtype=np.uint8)).save(root / "val" / c / f"{i}.png")
    return root


def timm_accuracy_and_loss(model, root: Path, res: int) -> tuple[float, float]:
    tf = create_transform(input_size=(3, res, res), is_training=False, crop_pct=CROP, interpolation="bicubic")
    ds = ImageFolder(str(root / "val"), transform=tf)
    images = torch.stack([ds[i][0] for i in range(len(ds))])
    labels = torch.tensor(ds.targets)
    with torch.no_grad():
        logits = model(images)
    return (logits.argmax(-1) == labels).float().mean().item(), torch.nn.functional.cross_entropy(logits, labels).item()


def test_eval_pretrained_timm_weights_on_imagefolder_at_several_resolutions(tmp_path):
    torch.manual_seed(0)
    ref = timm.create_model("vit_small_patch16_rope_mixed_224", pretrained=False, embed_dim=32, depth=2, num_heads=2,
                            patch_size=8, img_size=32, num_classes=CLASSES, dynamic_img_size=True).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.3 * torch.randn_like(p))
    torch.save(ref.state_dict(), tmp_path / "weights.pth")
    data = val_only_folder(tmp_path / "imagenet")
    argv = ["backbone=vit", "backbone.patch_size=8", "backbone.dim=32", "backbone.depth=2", "backbone.n_heads=2",
            f"backbone.timm_weights={tmp_path / 'weights.pth'}", "pe=rope_mixed", "task=image_cls",
            "task.dataset=imagefolder", f"task.data_path={data}", "task.train_resolution=32",
            f"task.eval_resolutions=[{','.join(map(str, RESOLUTIONS))}]", f"task.crop_pct={CROP}",
            "task.val_samples=null", "trainer.accelerator=cpu"]
    metrics = evaluate_from_configs(argv, str(tmp_path / "out"))
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["metrics"] == metrics and saved["weights"] == str(tmp_path / "weights.pth")
    assert saved["pe"] == "rope_mixed" and saved["data_source"] == f"imagefolder:{data}"
    assert (tmp_path / "out" / "acc_vs_resolution.png").stat().st_size > 0
    for res in RESOLUTIONS:  # the mean loss is continuous: it pins the logits, the transform and the labels
        acc, loss = timm_accuracy_and_loss(ref, data, res)
        assert metrics[f"val/acc@res={res}"] == pytest.approx(acc, abs=1e-6), res
        assert metrics[f"val/loss@res={res}"] == pytest.approx(loss, rel=1e-4), res
    assert metrics["val/acc"] == metrics["val/acc@res=32"]


def test_eval_without_weights_or_checkpoint_is_refused(tmp_path):
    data = val_only_folder(tmp_path / "imagenet")
    argv = ["backbone=vit", "pe=rope_axial", "task=image_cls", "task.dataset=imagefolder", f"task.data_path={data}"]
    with pytest.raises(ValueError, match="none were given: pass ckpt_path=.*backbone.timm_weights"):
        evaluate_from_configs(argv, str(tmp_path / "out"))
    with pytest.raises(ValueError, match="eval overrides .*pe=warp"):
        evaluate_from_configs(["pe=warp"], str(tmp_path / "out"))
