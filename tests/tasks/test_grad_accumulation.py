"""Gradient accumulation: ``max_steps`` counts optimizer steps, each of ``accumulate_grad_batches`` micro-batches,
so the step-sized training datasets must hold max_steps x accumulation x batch samples. They were sized
max_steps x batch, and with accumulation the loader ran out half-way and the second half re-used the first
half's samples."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
from hydra import compose, initialize_config_dir

from rope_lab.run import build, register_resolvers

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TINY_LM = ["backbone.dim=16", "backbone.depth=1", "backbone.n_heads=2", "backbone.n_kv_heads=2",
           "backbone.mlp_hidden=32", "task.train_length=16", "task.batch_size=2", "task.eval_lengths=[16]",
           "task.eval_windows=1", "task.passkey_lengths=[]", "task.corpus=files", "optim.warmup_steps=1"]


def _compose(*overrides: str):
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


def _corpus(tmp_path: Path) -> list[str]:
    for i in range(20):
        (tmp_path / f"doc{i}.txt").write_text(f"document {i}: " + "the quick brown fox jumps over the dog. " * 20)
    return [f"task.data_path={tmp_path}", f"task.data_dir={tmp_path}"]


@pytest.mark.parametrize("accumulate", [1, 2, 3])
def test_lm_dataset_holds_every_micro_batch(tmp_path, accumulate):
    cfg = _compose(*TINY_LM, *_corpus(tmp_path), "trainer.max_steps=5",
                   f"trainer.accumulate_grad_batches={accumulate}")
    _, module, datamodule, _ = build(cfg)
    datamodule.setup()
    assert len(datamodule.train_dataloader().dataset) == 5 * accumulate * 2
    assert module.total_steps == 5  # the LR schedule still counts optimizer steps


def test_lm_training_with_accumulation_never_repeats_a_sample(tmp_path, monkeypatch):
    from rope_lab.tasks.lm import datamodule as lm_data

    seen: list[int] = []
    original = lm_data.TrainWindows.__getitem__

    def recording(self, i):
        seen.append(int(i))
        return original(self, i)

    monkeypatch.setattr(lm_data.TrainWindows, "__getitem__", recording)
    cfg = _compose(*TINY_LM, *_corpus(tmp_path), "trainer.max_steps=4", "trainer.accumulate_grad_batches=2")
    _, module, datamodule, _ = build(cfg)
    trainer = L.Trainer(max_steps=4, accumulate_grad_batches=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        num_sanity_val_steps=0, default_root_dir=str(tmp_path))
    trainer.fit(module, datamodule=datamodule)
    assert trainer.global_step == 4
    assert len(seen) == 4 * 2 * 2 and len(set(seen)) == len(seen), sorted(seen)


@pytest.mark.parametrize("overrides", [
    ["task=trajectory", "backbone=traj_transformer", "pe=drope"],
    ["task=image_gen", "backbone=dit", "pe=rope_axial"],
    ["experiment=musecontrollite/control"],
    ["task=vniah", "backbone=video_llm", "pe=videorope"],
], ids=lambda o: o[0].split("=")[1])
def test_step_sized_datamodules_get_micro_batches(overrides):
    cfg = _compose(*overrides, "trainer.max_steps=7", "trainer.accumulate_grad_batches=3")
    _, module, datamodule, _ = build(cfg)
    assert datamodule.total_steps == 21 and module.total_steps == 7
