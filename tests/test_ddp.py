"""Multi-process training: rank-sharded resumable loaders, DDP on CPU (gloo, 2 processes), the run dir under DDP's
subprocess launcher, gradient-clipping settings, FSDP (CUDA only)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from rope_lab.cli import UserError
from rope_lab.run import _check_grad_clip
from rope_lab.tasks.data import ResumableLoader, ResumableSampler
from rope_lab.tasks.lm.datamodule import TrainWindows
from tests.test_train import CONFIGS, results, train

STREAM = (torch.arange(5000) % 251).numpy().astype("uint8")
DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.max_steps=4",
       "trainer.val_check_interval=2", "callbacks.checkpoint.every_n_train_steps=1"]


def _record(out: Path) -> list[str]:
    return ["+callbacks.rec._target_=tests.train_helpers.RecordSampleHashes", f"+callbacks.rec.out_dir={out}"]


def _samples(out: Path, rank: int) -> list[tuple[int, str]]:
    lines = (out / f"samples_rank{rank}.txt").read_text().split()
    return list(zip(map(int, lines[::2]), lines[1::2]))


# --- sharding without processes ------------------------------------------------------------------------------------

def test_sampler_shards_are_disjoint_equal_and_cover_a_single_process_global_batch():
    shards = [list(ResumableSampler(20, rank=r, world_size=3)) for r in range(3)]
    assert [len(s) for s in shards] == [6, 6, 6] and len(ResumableSampler(20, rank=1, world_size=3)) == 6
    assert sorted(sum(shards, [])) == list(range(18))  # equal shards: the last 20 % 3 samples are never read
    assert list(ResumableSampler(7)) == list(range(7))  # single process: unchanged
    # the k-th batches of all ranks together = the k-th batch of one process with a W times larger batch
    ds = TrainWindows(STREAM, 16, 24, seed=0, passkey=None, passkey_fraction=0.0)
    single = [b["tokens"] for b in ResumableLoader(ds, 4)]
    ranks = [[b["tokens"] for b in ResumableLoader(ds, 2, rank=r, world_size=2)] for r in range(2)]
    for k, big in enumerate(single):
        together = torch.cat([ranks[0][k], ranks[1][k]])
        assert sorted(map(tuple, together.tolist())) == sorted(map(tuple, big.tolist()))


def test_resume_is_exact_on_every_rank_from_rank_zeros_state():
    """Lightning saves rank 0's loader state and every rank loads it: the state is the global position."""
    ds = TrainWindows(STREAM, 16, 24, seed=0, passkey=None, passkey_fraction=0.0)
    full = [[b["tokens"] for b in ResumableLoader(ds, 2, rank=r, world_size=2)] for r in range(2)]
    first = [ResumableLoader(ds, 2, rank=r, world_size=2) for r in range(2)]
    its = [iter(loader) for loader in first]
    seen = [[next(it)["tokens"] for _ in range(2)] for it in its]
    state = first[0].state_dict()
    assert state == first[1].state_dict() == {"consumed": 8, "world_size": 2}
    for r in range(2):
        resumed = ResumableLoader(ds, 2, rank=r, world_size=2)
        resumed.load_state_dict(state)
        rest = [b["tokens"] for b in resumed]
        assert len(seen[r] + rest) == len(full[r]) and all(torch.equal(x, y) for x, y in zip(seen[r] + rest, full[r]))
    with pytest.raises(ValueError, match="ran on 2 process"):
        ResumableLoader(ds, 2).load_state_dict(state)
    ResumableLoader(ds, 2).load_state_dict({"consumed": 4})  # checkpoints from before sharding: one process


# --- gradient clipping settings ------------------------------------------------------------------------------------

def _compose(*overrides: str):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


def test_trainer_config_exposes_strategy_accumulation_and_clipping_and_refuses_double_clipping():
    cfg = _compose("trainer.strategy=ddp", "trainer.accumulate_grad_batches=2", "trainer.gradient_clip_val=0.5",
                   "optim.grad_clip=null")
    assert cfg.trainer.strategy == "ddp" and cfg.trainer.precision
    _check_grad_clip(cfg)
    _check_grad_clip(_compose())  # optim.grad_clip=1.0 alone
    with pytest.raises(UserError, match="both clip gradients"):
        _check_grad_clip(_compose("trainer.gradient_clip_val=0.5"))
    assert _compose("trainer=fsdp").trainer.strategy == "fsdp"


# --- two processes on CPU ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    train(tmp, *DDP, *_record(tmp / "samples"))
    (res,) = (tmp / "outputs").rglob("results.json")
    return tmp, res.parent


def test_ddp_two_processes_read_disjoint_shards_and_sync_metrics(ddp_run):
    tmp, run_dir = ddp_run
    metrics = results(run_dir)
    assert {"val/ppl", "val/ppl@32", "val/ppl@64", "train/loss"} <= set(metrics)
    assert all(math.isfinite(v) for v in metrics.values())
    s0, s1 = _samples(tmp / "samples", 0), _samples(tmp / "samples", 1)
    # 4 steps x batch 4 on each rank: the datasets were sized for both shards
    assert len(s0) == len(s1) == 16 and sorted({step for step, _ in s0}) == [0, 1, 2, 3]
    hashes = [h for _, h in s0 + s1]
    assert len(set(hashes)) == len(hashes)  # each rank its own samples, none read twice
    # one run dir: rank 0 locked it and wrote the config and results; the child logged beside it, wrote no .hydra
    assert len(list((tmp / "outputs").rglob("results.json"))) == 1
    assert len(list((tmp / "outputs").rglob("run_config.yaml"))) == 1
    assert (run_dir / "train_ddp_process_1.log").exists() and not list(run_dir.glob("*.tmp"))


def test_ddp_resume_continues_exactly_on_every_rank(ddp_run, tmp_path):
    ref, ref_dir = ddp_run
    stop = ["+callbacks.stop._target_=tests.train_helpers.InterruptAtStep", "+callbacks.stop.step=3"]
    res = train(tmp_path, *DDP, *_record(tmp_path / "a"), *stop, check=False)
    assert res.returncode != 0
    (ckpt,) = (tmp_path / "outputs").rglob("last.ckpt")
    run_dir = ckpt.parent.parent
    assert not (run_dir / "results.json").exists()
    train(tmp_path, *DDP, *_record(tmp_path / "b"), f"hydra.run.dir={run_dir}", "ckpt_path=last")
    for rank in (0, 1):
        a, b, full = (_samples(d, rank) for d in (tmp_path / "a", tmp_path / "b", ref / "samples"))
        assert a == full[: len(a)], rank  # the interrupted run read a prefix of this rank's shard
        # the resumed one reads the rest from its checkpoint on (the batch after the checkpoint again, if the
        # interrupted process had read it): no gap, no other samples
        assert b[0][0] <= a[-1][0] + 1 and b == [x for x in full if x[0] >= b[0][0]], rank
    ra, rb = results(ref_dir), results(run_dir)
    for key in ("train/loss", "val/ppl@32", "val/ppl@64"):
        assert ra[key] == pytest.approx(rb[key], rel=1e-5, abs=1e-6), key


IMAGE_CLS = ["task=image_cls", "backbone=vit", "pe=rope_mixed", "backbone.dim=16", "backbone.depth=1",
             "backbone.n_heads=2", "task.train_resolution=16", "task.eval_resolutions=[16]", "task.val_samples=16",
             "task.train_samples=64", "task.batch_size=4", "trainer.enable_progress_bar=false"]


def test_ddp_image_cls_ranks_read_disjoint_shards_of_the_seeded_order(tmp_path):
    """image_cls trains from the same rank-sharded resumable loader as the other tasks (issue 22)."""
    train(tmp_path, *DDP, *_record(tmp_path / "samples"), tiny=IMAGE_CLS)
    (res,) = (tmp_path / "outputs").rglob("results.json")
    assert math.isfinite(results(res.parent)["val/acc@res=16"])
    s0, s1 = _samples(tmp_path / "samples", 0), _samples(tmp_path / "samples", 1)
    assert len(s0) == len(s1) == 16
    hashes = [h for _, h in s0 + s1]
    assert len(set(hashes)) == len(hashes)


# --- FSDP ----------------------------------------------------------------------------------------------------------

@pytest.mark.gpu
def test_fsdp_trains(tmp_path):
    """Lightning's FSDP needs CUDA (``accelerator=cpu`` is refused). Two GPUs when there are, else one."""
    devices = min(2, torch.cuda.device_count())
    train(tmp_path, "trainer=fsdp", f"trainer.devices={devices}", "trainer.max_steps=4", "trainer.val_check_interval=2")
    (res,) = (tmp_path / "outputs").rglob("results.json")
    metrics = results(res.parent)
    assert "val/ppl" in metrics and all(math.isfinite(v) for v in metrics.values())
