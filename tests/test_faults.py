"""Faults a user meets, end to end through ``train.py`` (docs/reliability.md lists every case): Ctrl+C then resume
equals an uninterrupted run (metrics history kept), kill -9 in the middle of a checkpoint save leaves the previous
checkpoint loadable, a diverged run stops with the step and learning rate, a locked or finished run dir is left
untouched, and a resume must find its checkpoint and its config."""

from __future__ import annotations

import hashlib
import json
import signal
from pathlib import Path

import pandas as pd
import pytest
import torch
from filelock import FileLock

from tests.test_train import train

#: checkpoints every step and validation every 2 steps: an interruption always lands between the two
STEPS = ["trainer.max_steps=6", "trainer.val_check_interval=2", "trainer.log_every_n_steps=1"]


def run_dir_of(root: Path) -> Path:
    (hydra_dir,) = root.rglob(".hydra")
    return hydra_dir.parent


def snapshot(run_dir: Path) -> dict[str, str]:
    """Hash of every file of a run except Hydra's record of the latest command (rewritten by design)."""
    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run_dir.rglob("*")) if p.is_file() and ".hydra" not in p.parts and p.name != ".lock"}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """One uninterrupted reference run."""
    root = tmp_path_factory.mktemp("finished")
    train(root, *STEPS)
    return run_dir_of(root)


@pytest.mark.parametrize("every_step", [True, False], ids=["ckpt-every-step", "ckpt-at-validation"])
def test_sigint_then_resume_equals_an_uninterrupted_run_and_keeps_the_history(tmp_path, finished, every_step):
    ckpt = ["callbacks.checkpoint.every_n_train_steps=1"] if every_step else []
    res = train(tmp_path, *STEPS, *ckpt, "+callbacks.stop._target_=tests.train_helpers.SigintAtStep",
                "+callbacks.stop.step=5", check=False)
    assert res.returncode != 0 and "KeyboardInterrupt" in res.stderr + res.stdout
    run = run_dir_of(tmp_path)
    assert not (run / "results.json").exists()  # an interrupted run is not a finished one
    train(tmp_path, *STEPS, *ckpt, f"hydra.run.dir={run}", "ckpt_path=last")
    want = pd.read_csv(finished / "metrics.csv")
    got = pd.read_csv(run / "metrics.csv")
    pd.testing.assert_frame_equal(got[sorted(got.columns)], want[sorted(want.columns)], rtol=1e-5)
    assert json.loads((run / "results.json").read_text())["metrics"] == pytest.approx(
        json.loads((finished / "results.json").read_text())["metrics"], rel=1e-5)


def test_kill_9_during_a_checkpoint_save_leaves_the_previous_one(tmp_path):
    res = train(tmp_path, *STEPS, "callbacks.checkpoint.every_n_train_steps=1",
                "+callbacks.kill._target_=tests.train_helpers.KillDuringSaveAtStep", "+callbacks.kill.step=3",
                check=False)
    assert res.returncode == -signal.SIGKILL
    run = run_dir_of(tmp_path)
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == 2  # the save at step 3 was killed; step 2's checkpoint is whole
    assert list((run / "checkpoints").glob(".*.tmp"))  # the killed save's temp file, not the checkpoint
    train(tmp_path, *STEPS, "callbacks.checkpoint.every_n_train_steps=1", f"hydra.run.dir={run}", "ckpt_path=last")
    assert (run / "results.json").exists() and not list((run / "checkpoints").glob(".*.tmp"))


def test_a_diverged_run_stops_naming_the_step_and_lr_and_writes_no_result(tmp_path):
    res = train(tmp_path, *STEPS, "+callbacks.nan._target_=tests.train_helpers.PoisonWeightsAtStep",
                "+callbacks.nan.step=2", "optim.lr=0.002", check=False)
    assert res.returncode == 1
    assert "error: train/loss is NaN at step 2 (optim.lr=" in res.stderr
    assert "Traceback" not in res.stderr
    assert not (run_dir_of(tmp_path) / "results.json").exists()


def test_a_refused_rerun_leaves_the_finished_run_untouched(tmp_path, finished):
    before = snapshot(finished)
    res = train(tmp_path, *STEPS, f"hydra.run.dir={finished}", "pe.base=100", check=False)
    assert res.returncode == 2 and "already holds a finished run" in res.stderr
    assert snapshot(finished) == before
    from rope_lab.run_dir import stored_config

    assert stored_config(finished).pe.base == 10000.0  # what eval and resume read


def test_a_second_process_on_the_same_run_dir_is_refused(tmp_path):
    run = tmp_path / "busy"
    run.mkdir()
    with FileLock(str(run / ".lock")):
        res = train(tmp_path, *STEPS, f"hydra.run.dir={run}", check=False)
    assert res.returncode == 2 and "in use by another process" in res.stderr
    assert not (run / "checkpoints").exists() and not (run / "metrics.csv").exists()


@pytest.mark.parametrize(("override", "message"), [
    ("ckpt_path=last", "ckpt_path=last: "),
    ("trainer.max_steps=0", "trainer.max_steps=0: a run needs at least one optimizer step"),
])
def test_no_silent_fresh_start_or_empty_result(tmp_path, override, message):
    res = train(tmp_path, override, "debug=fast", check=False)
    assert res.returncode == 2 and f"error: {message}" in res.stderr and "Traceback" not in res.stderr
    assert not list(tmp_path.rglob("results.json"))


def test_an_unwritable_checkpoint_dir_fails_loudly(tmp_path):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the checkpoints dir should go")
    res = train(tmp_path, *STEPS, f"callbacks.checkpoint.dirpath={blocker}/checkpoints", check=False)
    assert res.returncode != 0
    assert not list(tmp_path.rglob("results.json"))
