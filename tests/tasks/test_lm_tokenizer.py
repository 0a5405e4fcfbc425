"""``task.tokenizer=<dir>``: the LM task reads a Hugging Face tokenizer saved locally (byte-level stays the
default); streams, packing offsets and passkey answers are in its tokens; ``train.py backbone=hf_causal_lm
backbone.pretrained=<dir> task.tokenizer=<dir>`` fine-tunes end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from transformers import AutoModelForCausalLM, AutoTokenizer

from rope_lab.run import register_resolvers, run
from rope_lab.tasks.base import TASK
from rope_lab.tasks.lm.datamodule import LMDataConfig, LMDataModule, encode
from rope_lab.tasks.lm.tokens import ByteCodec

from ..backbones.hf_checkpoints import TEXTS, save_checkpoint, save_tokenizer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    return save_tokenizer(tmp_path_factory.mktemp("tok"))


def corpus(tmp_path: Path) -> Path:
    folder = tmp_path / "texts"
    folder.mkdir()
    for i in range(12):
        (folder / f"doc{i}.txt").write_text(" ".join(TEXTS[i % 4 :] + TEXTS[: i % 4]) * 3)
    return folder


def datamodule(tmp_path: Path, **cfg) -> LMDataModule:
    c = LMDataConfig(corpus="files", data_path=str(corpus(tmp_path)), data_dir=str(tmp_path), val_fraction=0.3,
                     train_length=32, batch_size=2, eval_lengths=[32], passkey_lengths=[96], **cfg)
    dm = LMDataModule(c, seed=0, total_steps=2)
    dm.setup()
    return dm


def test_byte_level_stays_the_default():
    task = TASK.build({"name": "lm_longctx", "data_dir": "unused"})
    assert task.spec().vocab_size == 256 and task.spec().extra["tokenizer"] is None
    texts = ["héllo", "wörld", "!"]
    stream, starts = ByteCodec().stream(texts, "\n\n")
    assert np.array_equal(stream, encode("\n\n".join(texts))) and list(starts) == [0, 8, 16]


def test_streams_and_packing_are_in_the_tokenizers_ids(tmp_path, tokenizer_dir):
    reference = AutoTokenizer.from_pretrained(tokenizer_dir)
    dm = datamodule(tmp_path, tokenizer=str(tokenizer_dir), packing=True)
    assert dm.codec.vocab_size == len(reference) == TASK.build(
        {"name": "lm_longctx", "data_dir": "unused", "tokenizer": str(tokenizer_dir)}).spec().vocab_size
    assert dm.train_stream.max() < len(reference)
    first = dm.train_packer.doc_starts[1]
    text = reference.decode(dm.train_stream[:first].tolist())
    assert text.endswith("\n\n") and text[:-2] in " ".join(TEXTS) * 3  # the first document, then the separator
    window = dm.train_dataloader().dataset[0]
    assert window["tokens"].shape == (33,) and window["segment"].min() >= 1


def test_passkey_answer_is_the_keys_tokens(tmp_path, tokenizer_dir):
    reference = AutoTokenizer.from_pretrained(tokenizer_dir)
    dm = datamodule(tmp_path, tokenizer=str(tokenizer_dir))
    item = dm.passkey.sample(np.random.default_rng(0), 96, 0.5)
    assert item["tokens"].shape == (96,)
    answer = item["tokens"][1:][item["answer_mask"]].tolist()
    key = reference.decode(answer)
    assert key.isdigit() and len(key) == 5
    assert f"The pass key is {key}." in reference.decode(item["tokens"].tolist())


def test_missing_tokenizer_dir_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="task.tokenizer='.*missing' is not a directory"):
        TASK.build({"name": "lm_longctx", "data_dir": "unused", "tokenizer": str(tmp_path / "missing")})


def test_train_fine_tunes_a_pretrained_checkpoint_with_its_tokenizer(tmp_path, tokenizer_dir):
    """``python train.py backbone=hf_causal_lm backbone.pretrained=<dir> task.tokenizer=<dir> trainer.max_steps=2``,
    composed and run in this process (rope_lab.run, as train.py does; a subprocess would spend most of its time
    importing)."""
    ckpt = save_checkpoint(tmp_path / "ckpt", "qwen2")
    for f in Path(tokenizer_dir).iterdir():
        (ckpt / f.name).write_bytes(f.read_bytes())
    run_dir = tmp_path / "run"
    overrides = ["backbone=hf_causal_lm", f"backbone.pretrained={ckpt}", f"task.tokenizer={ckpt}", "task.corpus=files",
                 f"task.data_path={corpus(tmp_path)}", "task.val_fraction=0.3", "task.train_length=32",
                 "task.batch_size=2", "task.eval_lengths=[32,64]", "task.eval_windows=2", "task.passkey_lengths=[96]",
                 "task.passkey_depths=[0.5]", "task.passkey_samples=2", "trainer.max_steps=2",
                 "trainer.val_check_interval=2", "trainer.enable_progress_bar=false", "optim.warmup_steps=1",
                 f"paths.output_dir={tmp_path}/outputs",
                 f"logger.csv.save_dir={run_dir}", f"callbacks.checkpoint.dirpath={run_dir}/checkpoints"]
    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    before = AutoModelForCausalLM.from_pretrained(ckpt).state_dict()
    run(cfg, run_dir)
    result = json.loads((run_dir / "results.json").read_text())
    assert result["global_step"] == 2 and np.isfinite(result["metrics"]["val/ppl@64"])
    assert "base=10000.0" in result["pe_repr"]
    tuned = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    weight = "model.hf.model.layers.0.self_attn.q_proj.weight"
    assert tuned[weight].shape == before[weight[len("model.hf."):]].shape
    assert not torch.equal(tuned[weight], before[weight[len("model.hf."):]])  # fine-tuned from the checkpoint
