"""End to end: a train.py RoPE run -> scripts/elitekv_convert.py (RoPElite + J-LRD) -> train.py uptraining from the
converted weights (``init_ckpt``); with every chunk and a full-rank latent the converted run's model computes the same
logits as the RoPE run's."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from rope_lab.analysis.elitekv import convert_run, load_run
from rope_lab.tasks.lm.positions import lm_positions
from tests.test_train import train

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "elitekv_convert.py"


@pytest.fixture(scope="module")
def rope_ckpt(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("rope")
    train(tmp, "trainer.max_steps=3", "trainer.val_check_interval=3")
    (run_dir,) = (tmp / "outputs" / "lm_longctx" / "rope").glob("*/*")
    return run_dir / "checkpoints" / "last.ckpt"


def test_all_chunks_full_rank_conversion_keeps_the_logits(rope_ckpt, tmp_path):
    done = convert_run(rope_ckpt, tmp_path, chunks=8, kv_dim=32, selection="uniform")
    _, source, _ = load_run(rope_ckpt)
    tokens = torch.randint(0, 256, (2, 24))
    with torch.no_grad():
        torch.testing.assert_close(done.model(tokens, lm_positions(tokens)), source(tokens, lm_positions(tokens)),
                                   rtol=1e-4, atol=1e-4)


def test_cli_converts_and_train_py_uptrains(rope_ckpt, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("elitekv_convert", SCRIPT)
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    out = tmp_path / "converted"
    cli.main([str(rope_ckpt), "--out", str(out), "--chunks", "2", "--kv-dim", "8", "--calib-batches", "1"])
    printed = capsys.readouterr().out
    assert "KV cache per token and layer: 16 of 64 values (25.0 %)" in printed  # 2 heads x 2r + 8 of 2 x 2 x 16
    assert (out / "selection.pt").is_file() and (out / "model.pt").is_file()
    overrides = printed.split("uptrain with: python train.py ")[1].split()
    assert f"pe.selection={out / 'selection.pt'}" in overrides and f"init_ckpt={out / 'model.pt'}" in overrides
    train(tmp_path, "trainer.max_steps=2", "trainer.val_check_interval=2", *overrides)
    (run_dir,) = (tmp_path / "outputs" / "lm_longctx" / "elitekv").glob("*/*")
    assert (run_dir / "results.json").exists()


def test_unknown_selection_is_a_clear_error(rope_ckpt, tmp_path):
    with pytest.raises(ValueError, match=r"selection 'greedy' is not one of \['ropelite', 'uniform'\]"):
        convert_run(rope_ckpt, tmp_path, chunks=2, kv_dim=8, selection="greedy")


def test_the_seeded_study_converts_and_uptrains_each_seed_model_with_one_data_order(monkeypatch, tmp_path):
    """rope_lab.analysis.elitekv_study on a tiny LM: the three models' converted and uptrained ppl; the uptraining
    runs share the data order 100 + seed and start from the seed's RoPE run or its conversions."""
    import math

    from rope_lab.analysis import elitekv_study as s
    from tests.test_train import TINY

    monkeypatch.setattr(s, "BUDGETS", {"full": (2, 1)})
    monkeypatch.setattr(s, "CHUNKS", 2)
    monkeypatch.setattr(s, "KV_DIM", 8)
    monkeypatch.setattr(s, "CALIB_BATCHES", 1)
    monkeypatch.setattr(s, "LENGTHS", (32, 64))
    monkeypatch.setattr(s, "COMMON", [o for o in TINY if not o.startswith("task.passkey")] + ["task.passkey_lengths=[]"])
    out = s.study_seed(seed=2, root=tmp_path)
    assert set(out) == {s.ROPE, s.ELITE, s.UNIFORM}
    assert all(math.isfinite(v) and v > 1 for row in out.values() for v in row.values())
    assert set(out[s.ELITE]) == {s.CONVERTED, "val/ppl@32", "val/ppl@64"}
    runs = tmp_path / "seed2"
    assert "seed=2" in (runs / "rope" / ".hydra" / "overrides.yaml").read_text()
    for name in ("rope_uptrained", "elitekv_ropelite", "elitekv_uniform"):
        overrides = (runs / name / ".hydra" / "overrides.yaml").read_text()
        assert "seed=102" in overrides and "init_ckpt=" in overrides
    assert out[s.ELITE][s.CONVERTED] != out[s.UNIFORM][s.CONVERTED]  # different chunks kept
