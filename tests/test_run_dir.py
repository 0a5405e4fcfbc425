"""The run directory's rules (rope_lab/run_dir.py) in-process: the config recorded once and a resume held to it,
no fresh start over an unfinished run's checkpoints, atomic checkpoint writes, and a CSV log that keeps its rows."""

from __future__ import annotations

import csv

import pytest
import torch
from omegaconf import OmegaConf

from rope_lab import run_dir
from rope_lab.cli import UserError
from rope_lab.loggers import KeepingCSVLogger


def cfg(**pe):
    return OmegaConf.create({"seed": 0, "ckpt_path": None, "pe": {"name": "rope", "base": 1e4, **pe},
                             "trainer": {"max_steps": 6, "enable_progress_bar": True}, "logger": {"csv": {}}})


def test_config_is_recorded_once_and_a_resume_must_match_it(tmp_path):
    run_dir.record_config(tmp_path, cfg())
    first = (tmp_path / run_dir.CONFIG_FILE).read_text()
    same = cfg()
    same.ckpt_path, same.trainer.enable_progress_bar, same.logger = "last", False, {"tb": {}}  # how, not what
    run_dir.record_config(tmp_path, same)
    with pytest.raises(UserError, match=r"pe\.base: 10000\.0 -> 100\.0.*init_ckpt="):
        run_dir.record_config(tmp_path, cfg(base=100.0))
    assert (tmp_path / run_dir.CONFIG_FILE).read_text() == first
    assert run_dir.stored_config(tmp_path).pe.base == 1e4


def test_unfinished_checkpoints_are_not_trained_over_and_last_must_exist(tmp_path):
    with pytest.raises(FileNotFoundError, match="ckpt_path=last"):
        run_dir.resolve_ckpt(tmp_path, "last")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="unfinished run.*ckpt_path=last"):
        run_dir.check_not_finished(tmp_path, None)
    assert run_dir.resolve_ckpt(tmp_path, "last") == str(tmp_path / "checkpoints" / "last.ckpt")
    (tmp_path / "results.json").write_text("{}")
    with pytest.raises(FileExistsError, match="already holds a finished run"):
        run_dir.check_not_finished(tmp_path, None)


def test_atomic_checkpoint_write_replaces_whole_files_and_fails_loudly(tmp_path):
    io = run_dir.AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"global_step": 1}, path)
    io.save_checkpoint({"global_step": 2}, path)
    assert torch.load(path, weights_only=False) == {"global_step": 2}
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # no temp file left
    (tmp_path / "blocker").write_text("")
    with pytest.raises(OSError):
        io.save_checkpoint({"global_step": 3}, tmp_path / "blocker" / "last.ckpt")


def test_partial_saves_are_removed(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    partial = tmp_path / "checkpoints" / ".last.ckpt.abc123.tmp"
    partial.write_bytes(b"\0" * 10)
    assert run_dir.remove_partial_saves(tmp_path) == [partial] and not partial.exists()


def test_csv_logger_keeps_rows_and_drops_those_after_a_restored_step(tmp_path):
    first = KeepingCSVLogger(str(tmp_path), name="", version="")
    for step in range(4):
        first.log_metrics({"train/loss": float(step)}, step=step)
    first.save()
    second = KeepingCSVLogger(str(tmp_path), name="", version="")  # a resumed process opens the same dir
    second.experiment.drop_rows_from(2)
    second.log_metrics({"train/loss": 20.0, "val/ppl": 3.0}, step=2)  # a new column too
    second.save()
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [(r["step"], r["train/loss"], r["val/ppl"]) for r in rows] == [("0", "0.0", ""), ("1", "1.0", ""),
                                                                         ("2", "20.0", "3.0")]


def test_keys_a_newer_rope_lab_added_do_not_block_a_resume(tmp_path):
    old = cfg()
    run_dir.record_config(tmp_path, old)
    newer = cfg()
    newer.trainer.accumulate_grad_batches = 1  # a key the run's rope_lab did not have yet
    run_dir.record_config(tmp_path, newer)
    newer.trainer.max_steps = 7  # a key it had: still refused
    with pytest.raises(UserError, match="trainer.max_steps: 6 -> 7"):
        run_dir.record_config(tmp_path, newer)
