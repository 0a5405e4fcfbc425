"""The long-context LM task: corpora, split, passkey construction, resumable training windows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rope_lab.tasks.lm.corpus import is_validation, load_corpus
from rope_lab.tasks.data import ResumableLoader
from rope_lab.tasks.lm.datamodule import LMDataConfig, LMDataModule, TrainWindows, decode, encode
from rope_lab.tasks.lm.passkey import PasskeyDataset

STREAM = encode("The quick brown fox jumps over the lazy dog. " * 200)


def test_passkey_sample_states_the_key_at_depth_and_asks_for_it():
    ds = PasskeyDataset(STREAM, digits=5)
    item = ds.sample(np.random.default_rng(0), total=400, depth=0.5)
    tokens = item["tokens"]
    assert tokens.shape == (400,)
    text = decode(tokens)
    key = text[-5:]
    assert key.isdigit() and f"The pass key is {key}. Remember it." in text
    from rope_lab.tasks.lm.passkey import NEEDLE, QUESTION

    filler = 400 - len(NEEDLE.format(key=key)) - len(QUESTION.format(key=key))
    assert text.index(" The pass key is") == round(0.5 * filler)  # depth is relative to the haystack
    answer_targets = tokens[1:][item["answer_mask"]]
    assert decode(answer_targets) == key


@pytest.mark.parametrize("depth", [-0.1, 1.5])
def test_passkey_depth_outside_unit_interval_is_an_error(depth):
    with pytest.raises(ValueError, match=r"depth must be in \[0, 1\]"):
        PasskeyDataset(STREAM).sample(np.random.default_rng(0), 300, depth)


def test_document_split_is_deterministic_and_disjoint():
    names = [f"doc{i}" for i in range(1000)]
    val = {n for n in names if is_validation(n, 0.1)}
    assert 50 < len(val) < 150
    assert val == {n for n in names if is_validation(n, 0.1)}


def test_training_windows_depend_only_on_seed_and_index():
    a = TrainWindows(STREAM, 32, 10, seed=3, passkey=None, passkey_fraction=0.0)
    b = TrainWindows(STREAM, 32, 10, seed=3, passkey=None, passkey_fraction=0.0)
    assert all(torch.equal(a[i]["tokens"], b[i]["tokens"]) for i in range(10))
    assert a[0]["tokens"].shape == (33,)


def test_resumable_loader_continues_where_it_stopped():
    ds = TrainWindows(STREAM, 16, 12, seed=0, passkey=None, passkey_fraction=0.0)
    full = [b["tokens"] for b in ResumableLoader(ds, 2)]
    first = ResumableLoader(ds, 2)
    it = iter(first)
    seen = [next(it)["tokens"] for _ in range(2)]
    state = first.state_dict()
    resumed = ResumableLoader(ds, 2)
    resumed.load_state_dict(state)
    rest = [b["tokens"] for b in resumed]
    assert all(torch.equal(x, y) for x, y in zip(seen + rest, full)) and len(seen + rest) == len(full)


def test_files_and_hf_text_corpora(tmp_path):
    for i in range(30):
        (tmp_path / f"doc{i}.txt").write_text(f"document number {i} " * 50)
    docs, source = load_corpus("files", str(tmp_path), data_path=str(tmp_path))
    assert len(docs) == 30 and source.startswith("files:")
    docs, source = load_corpus("hf", str(tmp_path), hf_dataset="text", hf_data_files=str(tmp_path / "*.txt"))
    assert len(docs) == 30 and source == "hf:text"


def test_bad_corpus_settings_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown corpus 'wiki'; choose one of"):
        load_corpus("wiki", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="task.data_path=.*missing' does not exist"):
        load_corpus("files", str(tmp_path), data_path=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="needs task.data_path to be a directory"):
        load_corpus("files", str(tmp_path))
    with pytest.raises(ValueError, match="needs task.hf_dataset"):
        load_corpus("hf", str(tmp_path))


def test_python_docs_corpus_is_real_and_split(tmp_path):
    dm = LMDataModule(LMDataConfig(corpus="python_docs", data_dir=str(tmp_path), eval_lengths=[64]), seed=0,
                      total_steps=2)
    dm.setup()
    assert dm.source == "debian:python3.11-doc"
    assert len(dm.train_stream) > 5_000_000 and len(dm.val_stream) > 300_000
    batch = next(iter(dm.train_dataloader()))
    assert batch["tokens"].shape == (16, 129) and batch["tokens"].max() < 256


def test_answer_weighted_passkey_loss_weights_only_the_key_digits():
    """task.passkey_answer_weight: in a batch mixing text windows and passkey samples, the key digits count w times,
    every other token once: loss = sum(w_i nll_i) / sum(w_i), computed by hand from the model's own token nll."""
    from types import SimpleNamespace

    from rope_lab.optim import OptimConfig
    from rope_lab.tasks.lm.module import LMModule

    stream = encode("the quick brown fox jumps over the lazy dog. " * 40)
    ds = TrainWindows(stream, 160, 8, seed=0, passkey=PasskeyDataset(stream, 5), passkey_fraction=0.5)
    items = [ds[i] for i in range(8)]
    assert any(it["answer"].any() for it in items) and not all(it["answer"].any() for it in items)
    assert all(int(it["answer"].sum()) in (0, 5) for it in items)
    batch = {k: torch.stack([it[k] for it in items]) for k in items[0]}
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(256, 256))
    model.pe = SimpleNamespace(name="stub")
    module = LMModule(lambda tokens, positions: model(tokens), OptimConfig(), 1, ["ppl@160"], train_length=160,
                      answer_weight=10.0)
    module.log = lambda *a, **k: None
    nll, _ = module._nll(batch)
    weights = 1.0 + 9.0 * batch["answer"].float()
    assert module.training_step(batch, 0).item() == pytest.approx(float((nll * weights).sum() / weights.sum()), rel=1e-6)
    module.answer_weight = 1.0
    assert module.training_step(batch, 0).item() == pytest.approx(float(nll.mean()), rel=1e-6)


def test_bad_answer_weight_is_refused():
    from rope_lab.tasks.lm.task import LMLongContextTask as LMTask

    with pytest.raises(ValueError, match="passkey_answer_weight must be > 0; got 0.0"):
        LMTask(LMDataConfig(passkey_answer_weight=0.0))
    with pytest.raises(ValueError, match="needs task.packing=false"):
        LMTask(LMDataConfig(passkey_answer_weight=5.0, packing=True))
