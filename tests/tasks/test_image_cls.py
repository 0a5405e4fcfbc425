"""task=image_cls: positions as rope-vit's init_t_xy, Fashion-MNIST / ImageFolder / HF datasets loaders at several
resolutions, clear errors, and one tiny end-to-end run: train.py -> eval.py at new resolutions -> attention maps
-> make_tables."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rope_lab.pe import NO_POSITION
from rope_lab.tasks.image_cls.datamodule import ImageClsConfig, ImageClsDataModule
from rope_lab.tasks.image_cls.positions import image_positions, patch_grid
from rope_lab.tasks.image_cls.task import ImageClassificationTask

ROOT = Path(__file__).resolve().parents[2]


def test_positions_follow_rope_vit_init_t_xy():
    pos = image_positions(2, (3, 5), num_prefix=1)
    t = torch.arange(15)
    # naver models/vit_rope.py init_t_xy: t_x = t % end_x (column), t_y = t // end_x (row)
    assert torch.equal(pos.coords[0, 1:, 1], (t % 5).float()) and torch.equal(pos.coords[0, 1:, 0], (t // 5).float())
    assert pos.modality[0, 0] == NO_POSITION and (pos.modality[:, 1:] != NO_POSITION).all()
    assert pos.meta["grid"] == (3, 5)
    with pytest.raises(ValueError, match="not divisible by the patch size 4"):
        patch_grid((30, 28), 4)


def test_fashion_mnist_loaders_at_every_resolution():
    cfg = ImageClsConfig(data_dir=str(Path.home() / ".cache" / "rope_lab"), train_resolution=16,
                         eval_resolutions=[12, 20], val_samples=40, train_samples=64, batch_size=8)
    dm = ImageClsDataModule(cfg)
    dm.setup()
    assert dm.source is not None
    batch = next(iter(dm.train_dataloader()))
    assert batch["images"].shape == (8, 1, 16, 16) and batch["labels"].shape == (8,)
    for loader, res in zip(dm.val_dataloader(), [12, 20]):
        b = next(iter(loader))
        assert b["images"].shape[1:] == (1, res, res) and len(loader.dataset) == 40
    assert dm.val_names() == ["res=12", "res=20"]


def _fmnist_dm(total_steps: int | None = 6) -> ImageClsDataModule:
    cfg = ImageClsConfig(data_dir=str(Path.home() / ".cache" / "rope_lab"), train_resolution=16,
                         eval_resolutions=[16], val_samples=8, train_samples=10, batch_size=2)
    dm = ImageClsDataModule(cfg, seed=3, total_steps=total_steps)
    dm.setup()
    return dm


def test_training_order_is_reshuffled_per_epoch_and_each_sample_is_a_function_of_seed_and_index():
    samples = _fmnist_dm().train_dataloader().dataset
    assert len(samples) == 12  # 6 steps x batch 2: more than the 10 training images, so a second epoch starts
    epoch0 = [samples.base_index(i) for i in range(10)]
    assert sorted(epoch0) == list(range(10)) and epoch0 != list(range(10))  # a permutation, shuffled
    assert samples.base_index(10) == int(samples._permutation(1)[0])
    assert list(samples._permutation(1)) != epoch0  # reshuffled for the second epoch
    torch.manual_seed(123)
    a = samples[5][0]
    torch.manual_seed(999)
    b = samples[5][0]
    assert torch.equal(a, b)  # the augmentation does not depend on the global generator's state ...
    assert torch.equal(torch.get_rng_state(), torch.manual_seed(999).get_state())  # ... and leaves it untouched
    assert not torch.equal(samples[5][0], samples[6][0])
    assert len(_fmnist_dm(None).train_dataloader().dataset) == 10  # no step budget: one pass
    with pytest.raises(IndexError, match="sample 12 outside 0..11"):
        samples.base_index(12)


def test_image_cls_training_is_rank_sharded_and_resumes_exactly_mid_epoch():
    """Issue 22: task=image_cls used a plain shuffled DataLoader (a mid-epoch resume replayed other samples)."""
    from rope_lab.tasks.data import ResumableLoader

    dm = _fmnist_dm()
    samples, collate = dm.train_dataloader().dataset, dm._collate
    single = [b["images"] for b in ResumableLoader(samples, 4, collate_fn=collate)]
    ranks = [[b["images"] for b in ResumableLoader(samples, 2, rank=r, world_size=2, collate_fn=collate)]
             for r in range(2)]
    for k, big in enumerate(single):  # the two ranks' k-th batches = one process's k-th batch of twice the size
        together = torch.cat([ranks[0][k], ranks[1][k]])
        assert torch.equal(together[[0, 2, 1, 3]], big)
    first = ResumableLoader(samples, 2, rank=1, world_size=2, collate_fn=collate)
    seen = next(iter(first))["images"]
    resumed = ResumableLoader(samples, 2, rank=1, world_size=2, collate_fn=collate)
    resumed.load_state_dict(first.state_dict())
    rest = [b["images"] for b in resumed]
    assert torch.equal(seen, ranks[1][0]) and all(torch.equal(x, y) for x, y in zip(rest, ranks[1][1:]))
    assert len(rest) == len(ranks[1]) - 1


def _image_folder(root: Path, classes=("a", "b", "c"), per_class=3):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(root / split / c / f"{i}.png")
    return root


def test_imagefolder_and_hf_datasets(tmp_path):
    root = _image_folder(tmp_path / "folder")
    cfg = ImageClsConfig(dataset="imagefolder", data_path=str(root), train_resolution=16, eval_resolutions=[16, 24],
                         batch_size=4, val_samples=None)
    task = ImageClassificationTask(cfg)
    spec = task.spec()
    assert spec.num_classes == 3 and spec.extra["channels"] == 3
    dm = task.datamodule(0, 10)
    dm.setup()
    assert next(iter(dm.train_dataloader()))["images"].shape == (4, 3, 16, 16)
    assert next(iter(dm.val_dataloader()[1]))["images"].shape[1:] == (3, 24, 24)

    import datasets

    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["x", "y"])})
    imgs = [Image.fromarray(np.full((10, 10, 3), i * 20, np.uint8)) for i in range(6)]
    ds = datasets.DatasetDict({s: datasets.Dataset.from_dict({"image": imgs, "label": [0, 1] * 3}, features=feats)
                               for s in ("train", "test")})
    ds.save_to_disk(str(tmp_path / "hf"))
    hf = ImageClassificationTask(ImageClsConfig(dataset="hf", hf_name=str(tmp_path / "hf"), val_split="test",
                                                train_resolution=8, eval_resolutions=[8, 12], batch_size=2))
    assert hf.spec().num_classes == 2
    dm = hf.datamodule(0, 10)
    assert next(iter(dm.val_dataloader()[1]))["images"].shape == (6, 3, 12, 12)


def test_bad_input_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown image dataset 'cifar'.*fashion_mnist"):
        ImageClassificationTask(ImageClsConfig(dataset="cifar"))
    with pytest.raises(ValueError, match="needs task.data_path"):
        ImageClassificationTask(ImageClsConfig(dataset="imagefolder"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageClassificationTask(ImageClsConfig(dataset="imagefolder", data_path=str(tmp_path / "nope")))


def test_imagenet_without_data_names_both_sources(tmp_path, monkeypatch):
    from rope_lab.tasks.image_cls import sources

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(sources, "_hf_load", offline)  # this machine has no hub access; never try the network
    cfg = ImageClsConfig(dataset="imagenet-1k", data_path=None, data_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"no ImageFolder tree.*ILSVRC/imagenet-1k.*no network"):
        ImageClsDataModule(cfg).setup()


def test_a_user_data_path_that_does_not_work_is_an_error_not_a_fallback(tmp_path, monkeypatch):
    """An ImageNet data_path without train/ used to fall back to the HF hub; an unread data_path was ignored."""
    from rope_lab.tasks.image_cls import sources

    def must_not_be_called(*args, **kwargs):
        raise AssertionError("fell back to the HF hub")

    monkeypatch.setattr(sources, "_hf_load", must_not_be_called)
    cfg = ImageClsConfig(dataset="imagenet-1k", data_path=str(tmp_path), data_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match=rf"task.data_path={tmp_path} has no val/ folder"):
        ImageClsDataModule(cfg).setup()
    with pytest.raises(ValueError, match=r"task.data_path=.* is not read by task.dataset=hf"):
        ImageClsDataModule(ImageClsConfig(dataset="hf", hf_name="x", data_path=str(tmp_path)))
    with pytest.raises(ValueError, match=rf"task.data_path='{tmp_path}' does not work: .*lacks the four Fashion-MNIST"):
        ImageClsDataModule(ImageClsConfig(dataset="fashion_mnist", data_path=str(tmp_path),
                                          data_dir=str(tmp_path))).setup()


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, script, *args], cwd=ROOT, capture_output=True, text=True, timeout=900,
                         env={**__import__("os").environ, "ROPE_LAB_KERNEL": "eager"})
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def test_train_eval_attention_tables_end_to_end(tmp_path):
    tiny = ["backbone.dim=16", "backbone.depth=1", "backbone.n_heads=2", "task.train_resolution=16",
            "task.eval_resolutions=[12,16]", "task.val_samples=16", "task.train_samples=64", "task.batch_size=8",
            "trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.enable_progress_bar=false"]
    _run("train.py", "task=image_cls", "backbone=vit", "pe=rope_mixed_ape", f"paths.output_dir={tmp_path}/out", *tiny)
    (run_dir,) = (tmp_path / "out" / "image_cls" / "rope_mixed_ape").glob("*/*")
    metrics = json.loads((run_dir / "results.json").read_text())["metrics"]
    assert {"val/acc@res=12", "val/acc@res=16", "val/acc", "val/loss@res=12"} <= set(metrics)
    assert metrics["val/acc"] == metrics["val/acc@res=16"]
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    from rope_lab.evaluate import evaluate  # what eval.py ckpt_path=... task.eval_resolutions=[20,24] runs

    assert {"val/acc@res=20", "val/acc@res=24"} <= set(evaluate(str(ckpt), {"task.eval_resolutions": [20, 24]}))
    (ev,) = (run_dir / "eval").glob("*/results.json")
    assert "val/acc@res=24" in json.loads(ev.read_text())["metrics"]

    from rope_lab.analysis.attention_maps import main as attention_main

    png = attention_main([str(ckpt), "--resolutions", "16", "24", "--out", str(tmp_path / "att.png")])
    assert png.stat().st_size > 1000

    from scripts.make_tables import main as make_tables

    written = make_tables([str(tmp_path / "out"), "--out", str(tmp_path / "tables")])
    assert any(p.name == "image_cls.md" for p in written) and (tmp_path / "tables" / "acc_vs_resolution.png").exists()


@pytest.mark.slow
def test_reproduce_rope_vit_multires(tmp_path):
    """The CPU-scale reproduction (experiments/rope_vit): all five PEs, table + trend checks + plot."""
    sys.path.insert(0, str(ROOT))
    from experiments.rope_vit.reproduce import main as reproduce

    out = reproduce(["--out", str(tmp_path / "runs"), "--tables", str(tmp_path / "tables")])
    text = (out / "image_cls.md").read_text()
    assert "RoPE-ViT trends" in text and (out / "acc_vs_resolution.png").exists()


def test_mixup_is_a_function_of_seed_and_step_not_of_the_global_generators():
    """timm's Mixup draws from NumPy's global generator, which a resumed run does not restore."""
    from types import SimpleNamespace

    from rope_lab.optim import OptimConfig
    from rope_lab.tasks.image_cls.module import ImageClsModule
    from tests.tasks.test_metric_known_answers import PixelLogitsStub

    aug = SimpleNamespace(label_smoothing=0.0, mixup_alpha=0.8, cutmix_alpha=1.0)
    batch = {"images": torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0)),
             "labels": torch.tensor([0, 1, 2, 0])}

    def loss(seed: int, global_seed: int) -> torch.Tensor:
        module = ImageClsModule(PixelLogitsStub(), OptimConfig(), 1, num_classes=3, resolutions=[8],
                                train_resolution=8, aug=aug, seed=seed)
        module.log = lambda *args, **kwargs: None
        np.random.seed(global_seed)
        return module.training_step({k: v.clone() for k, v in batch.items()}, 0)  # timm mixes in place

    assert torch.equal(loss(0, 1), loss(0, 2))
    assert not torch.equal(loss(0, 1), loss(5, 1))
