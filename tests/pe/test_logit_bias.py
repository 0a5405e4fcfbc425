"""What the bias / attend-site baselines (ALiBi, T5 bias, xPos, CoPE, FoX) share: a packed row of documents equals the
documents run alone; each builds through ``rope_lab.run.build`` on the default LM task (``python train.py pe=<name>``;
the training run itself is the slow test below); tasks they cannot encode (2-D images, non-causal) are refused at
build with the reason and the compatible variants."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from rope_lab.backbones.decoder import Decoder, DecoderConfig
from rope_lab.pe import Positions, build_pe
from rope_lab.run import build, register_resolvers
from rope_lab.tasks.base import TASK

ROOT = Path(__file__).resolve().parents[2]
VARIANTS = ["alibi", "t5_bias", "xpos", "cope", "fox"]
TINY = ["backbone.dim=32", "backbone.depth=1", "backbone.n_heads=2", "backbone.n_kv_heads=2",
        "backbone.mlp_hidden=64", "task.train_length=32", "task.batch_size=4", "task.eval_lengths=[32,64]",
        "task.eval_windows=2", "task.passkey_lengths=[128]", "task.passkey_depths=[0.5]", "task.passkey_samples=2",
        "trainer.enable_progress_bar=false", "optim.warmup_steps=2"]


def _compose(*overrides: str):
    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


@pytest.mark.parametrize("name", VARIANTS)
def test_packed_rows_equal_their_documents_run_alone(name):
    """Two rows packed differently; row 0 restarts positions per document, row 1 keeps one running index."""
    torch.manual_seed(0)
    cfg = DecoderConfig(vocab_size=64, dim=32, depth=2, n_heads=4, n_kv_heads=2, mlp_hidden=64, max_tokens=64)
    model = Decoder(cfg, build_pe({"name": name})).eval()
    if name == "cope":
        with torch.no_grad():
            model.pe.position_embeddings.normal_()  # zero at init: make the positions matter
    layouts = [(7, 5), (4, 8)]
    tokens = torch.randint(0, 64, (2, 12))
    restart = torch.cat([torch.arange(n, dtype=torch.float32) for n in layouts[0]])
    coords = torch.stack([restart, torch.arange(12.0)])[..., None]
    segment = torch.stack([torch.cat([torch.full((n,), i) for i, n in enumerate(lay)]) for lay in layouts])
    with torch.no_grad():
        packed = model(tokens, Positions(coords=coords, segment=segment))
        for row, lay in enumerate(layouts):
            alone = [model(part, Positions.sequence(1, part.shape[1])) for part in tokens[row : row + 1].split(lay, 1)]
            torch.testing.assert_close(packed[row : row + 1], torch.cat(alone, dim=1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["alibi", "xpos"])
def test_broadcast_positions_with_per_row_documents(name):
    """Batch-broadcast coordinates (one bias for all rows) meet per-row document masks."""
    torch.manual_seed(0)
    cfg = DecoderConfig(vocab_size=64, dim=32, depth=1, n_heads=4, n_kv_heads=2, mlp_hidden=64, max_tokens=64)
    model = Decoder(cfg, build_pe({"name": name})).eval()
    tokens = torch.randint(0, 64, (2, 9))
    segment = torch.tensor([[0] * 3 + [1] * 6, [0] * 6 + [1] * 3])
    broadcast = Positions.sequence(2, 9)
    broadcast.segment = segment
    dense = Positions(coords=torch.arange(9.0).repeat(2, 1), segment=segment)
    with torch.no_grad():
        torch.testing.assert_close(model(tokens, broadcast), model(tokens, dense))


def test_each_builds_on_the_default_lm_task():
    for name in VARIANTS:
        _, _, _, model = build(_compose(f"pe={name}", "debug=fast", *TINY))
        assert model.pe.name == name


def test_image_and_bidirectional_tasks_are_refused_with_the_reason():
    with pytest.raises(ValueError, match=r"pe=alibi encodes 1..1 position axes \('token',\), but the task builds "
                                         r"2-axis positions; compatible variants: \[.*'rope_axial'"):
        build(_compose("pe=alibi", "task=image_cls", "backbone=vit", "debug=fast"))
    images = TASK.build(_compose("task=image_cls").task).spec()
    strips = TASK.build(_compose("task=control_gen").task).spec()  # 1-D token axis, bidirectional
    for name in VARIANTS:
        pe = build_pe({"name": name})
        assert "2-axis positions" in pe.incompatibility(images.num_axes, images.causal, axes=images.axes), name
        reason = pe.incompatibility(strips.num_axes, strips.causal, axes=strips.axes)
        if name in ("alibi", "t5_bias"):  # symmetric ALiBi and bidirectional buckets encode both directions
            assert reason is None, (name, reason)
        else:
            assert reason == f"pe={name} only works with causal attention"


@pytest.mark.slow
def test_train_py_runs_every_variant(tmp_path):
    """``python train.py pe=<name>`` on the default LM task: one fast_dev_run multirun over the five."""
    cmd = [sys.executable, "train.py", "-m", f"pe={','.join(VARIANTS)}", "debug=fast",
           f"paths.output_dir={tmp_path}/outputs", f"paths.multirun_dir={tmp_path}/multirun", *TINY]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert len(list((tmp_path / "multirun").rglob("results.json"))) == len(VARIANTS)
