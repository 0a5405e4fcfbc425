"""task=image_gen and task=control_gen: positions, rectified flow and samplers, CFG, metrics, bad input, and a
tiny end-to-end Hydra run of each."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from rope_lab.pe import IMAGE, TEXT
from rope_lab.tasks.control_gen.control import frame_accuracy, melody
from rope_lab.tasks.image_gen.classifier import FashionCNN
from rope_lab.tasks.image_gen.datamodule import class_text
from rope_lab.experiment import run_config
from rope_lab.tasks.image_gen.flow import guided, interpolate, sample
from rope_lab.tasks.image_gen.metrics import GenerationScores
from rope_lab.tasks.image_gen.positions import generation_positions

def test_positions_2d_row_major_and_flux_ids():
    p = generation_positions(2, (3, 4))
    assert p.coords.shape == (2, 12, 2) and p.coords[0, 5].tolist() == [1.0, 1.0] and p.meta["grid"] == (3, 4)
    f = generation_positions(1, (2, 2), text_tokens=3, id_axes=3)
    assert f.coords[0].tolist() == [[0, 0, 0]] * 3 + [[0, 0, 0], [0, 0, 1], [0, 1, 0], [0, 1, 1]]
    assert f.modality[0].tolist() == [TEXT] * 3 + [IMAGE] * 4
    with pytest.raises(ValueError, match="id_axes=3"):
        generation_positions(1, (2, 2), text_tokens=3, id_axes=2)


def test_interpolation_endpoints_and_target():
    x0, noise = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    xt, v = interpolate(x0, noise, torch.tensor([0.0, 1.0, 0.5]))
    assert torch.equal(xt[0], x0[0]) and torch.equal(xt[1], noise[1]) and torch.equal(v, noise - x0)


@pytest.mark.parametrize("sampler", ["euler", "heun"])
def test_samplers_follow_the_exact_flow(sampler):
    """For data x0 fixed, the true velocity of x_t = (1-t) x0 + t eps is (x_t - x0) / t: both samplers land on x0."""
    x0 = torch.randn(2, 1, 3, 3)
    out = sample(lambda x, t: (x - x0) / t.view(-1, 1, 1, 1), torch.randn(2, 1, 3, 3), steps=4, sampler=sampler)
    torch.testing.assert_close(out, x0)
    with pytest.raises(ValueError, match="euler"):
        sample(lambda x, t: x, x0, 2, "ddim")


def test_cfg_formula_and_bad_guidance():
    v = lambda x, t, cond: x + (2.0 if cond else 0.5)  # noqa: E731
    x, t = torch.zeros(1), torch.zeros(1)
    assert guided(v, 3.0)(x, t).item() == pytest.approx(0.5 + 3.0 * 1.5)
    assert guided(v, 0.0)(x, t).item() == 0.5 and guided(v, 1.0)(x, t).item() == 2.0
    with pytest.raises(ValueError, match=r"guidance must be >= 0.*-1"):
        guided(v, -1.0)


def test_class_text_bytes_and_null():
    t = class_text(torch.tensor([0, 10]), 12)
    assert bytes(t[0, :11].tolist()) == b"T-shirt/top" and t[0, 11] == 256 and (t[1] == 256).all()


def test_scores_real_vs_real_and_noise():
    torch.manual_seed(0)
    clf = FashionCNN().eval()
    real = torch.rand(60, 1, 28, 28)
    s = GenerationScores(clf, real, kid_subset=20)
    s.update(real[:40], clf(real[:40]).argmax(-1))
    same = s.compute()
    assert same["acc"] == 1.0 and same["fid"] < 1.0
    s.reset()
    s.update(torch.zeros(40, 1, 56, 56), torch.zeros(40, dtype=torch.long))  # resized to 28 by area
    assert s.compute()["fid"] > same["fid"]


def test_generation_baselines_are_disjoint_from_the_reference_and_follow_the_requests():
    from rope_lab.tasks.image_gen.baselines import GenerationBaselines

    rng = np.random.default_rng(0)
    train = (rng.integers(0, 256, (50, 28, 28), dtype=np.uint8), np.arange(50) % 10)
    test = (np.arange(30, dtype=np.uint8)[:, None, None].repeat(28, 1).repeat(28, 2), np.arange(30) % 10)
    b = GenerationBaselines.from_splits(train, test, reference_count=20, count=10)
    mean_of_class_3 = torch.from_numpy(train[0][3::10].astype(np.float32) / 255).mean(0)
    torch.testing.assert_close(b.class_mean[3, 0], mean_of_class_3)
    labels, noise = torch.tensor([3, 4]), torch.full((2, 1, 28, 28), 5.0)
    out = b.batches(labels, noise, start=2)
    assert out["real"][0][:, 0, 0, 0].mul(255).round().tolist() == [22.0, 23.0]  # after the 20 reference images
    assert out["real"][1].tolist() == [2, 3] and torch.equal(out["class_mean"][1], labels)
    assert torch.equal(out["class_mean"][0][0], b.class_mean[3]) and (out["noise"][0] == 1.0).all()
    with pytest.raises(ValueError, match=r"real_samples \+ eval_samples <= 30 test images; got 20 \+ 11"):
        GenerationBaselines.from_splits(train, test, reference_count=20, count=11)


def test_melody_extraction_and_accuracy():
    img = torch.zeros(1, 1, 28, 28)
    img[0, 0, 0:4, 3] = 1.0  # top band
    img[0, 0, 24:28, 5] = 1.0  # bottom band
    m = melody(img, bins=7)
    assert m[0, 3] == 0 and m[0, 5] == 6 and m[0, 0] == 7  # 7 = silent
    assert frame_accuracy(img, m, 7).item() == 1.0


def _run(overrides, tmp_path):
    return run_config(overrides + ["trainer.fast_dev_run=true"], tmp_path)


TINY = ["backbone.dim=16", "backbone.depth=2", "backbone.n_heads=2"]


def test_image_gen_tiny_end_to_end(tmp_path):
    m = _run(["backbone=dit", "task=image_gen", "pe=rope_axial", "task.eval_sizes=[28,36]", "task.eval_samples=4",
              "task.eval_batch=4", "task.sample_steps=1", "task.real_samples=8", "task.classifier_steps=1",
              f"task.data_dir={tmp_path / 'cache'}", "task.batch_size=4"] + TINY, tmp_path)
    assert {"val/acc@res=28", "val/fid@res=36", "val/fid", "val/classifier_acc"} <= set(m)
    assert {f"val/{k}@baseline={b}" for k in ("acc", "fid") for b in ("real", "class_mean", "noise")} <= set(m)
    assert (tmp_path / "samples" / "res=36_step=1.png").exists()


def test_control_gen_tiny_end_to_end(tmp_path):
    m = _run(["backbone=dit_strip", "task=control_gen", "pe=rope", "task.eval_samples=4", "task.eval_batch=4",
              "task.sample_steps=1", "task.batch_size=4", "backbone.control.layout=half"] + TINY, tmp_path)
    assert 0.0 <= m["val/frame_acc"] <= 1.0
    assert {f"val/frame_acc@baseline={b}" for b in ("class_mean", "constant", "noise")} <= set(m)


def test_bad_generation_size_and_strip_patch(tmp_path):
    with pytest.raises(ValueError, match="30x30 is not divisible by the patch size 4x4"):
        _run(["backbone=dit", "task=image_gen", "pe=rope_axial", "task.eval_sizes=[28,30]"] + TINY, tmp_path / "a")
    with pytest.raises(ValueError, match=r"patch_size=\[28, w\]"):
        _run(["backbone=dit", "task=control_gen", "pe=rope"] + TINY, tmp_path / "b")
    with pytest.raises(ValueError, match="guidance must be >= 0"):
        _run(["backbone=dit", "task=image_gen", "pe=rope_axial", "task.guidance=-0.5"] + TINY, tmp_path / "c")


def test_table_maker_reads_runs(tmp_path):
    from rope_lab.analysis.results import RunResult
    from rope_lab.analysis.tables import load_makers

    baselines = {"val/acc@baseline=real": 0.91, "val/fid@baseline=real": 0.5, "val/fid@baseline=noise": 80.0}
    runs = [RunResult(tmp_path, "image_gen", pe, {"val/acc@res=28": a, "val/acc@res=56": a / 2, "val/fid@res=28": 3.0,
                                                  **baselines},
                      {"task": {"image_size": 28}}, []) for pe, a in (("ape", 0.8), ("rope_axial", 0.9))]
    paths = load_makers()["image_gen"](runs, tmp_path)
    text = paths[0].read_text()
    assert "| rope_axial | 0.9 | 0.45 |" in text and paths[1].exists()
    assert "| real | 0.91 | 0.5 |" in text and "| noise |" in text


def _reproduce(name, argv):
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "experiments" / name / "reproduce.py"
    spec = importlib.util.spec_from_file_location(f"reproduce_{name}", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main(argv)


@pytest.mark.slow
def test_reproduce_dit(tmp_path):
    res = _reproduce("dit", ["--steps", "400", "--out", str(tmp_path)])
    assert all(0.0 <= m["val/acc@res=56"] <= 1.0 for m in res.values()) and (tmp_path / "results.md").exists()


@pytest.mark.slow
def test_reproduce_musecontrollite(tmp_path):
    res = _reproduce("musecontrollite", ["--steps", "400", "--out", str(tmp_path)])
    assert set(res) == {"none", "musecontrollite_compat", "half"}


@pytest.mark.slow
def test_reproduce_freeflux(tmp_path):
    res = _reproduce("freeflux", ["--steps", "400", "--out", str(tmp_path)])
    assert len(res["ranking"]) == 6 and (tmp_path / "move_object.png").exists()
